"""A guest watchdog: nothing a worker starts outlives it, even when the worker is SIGKILLed.

The parent-death signal alone does not hold. bubblewrap's ``--die-with-parent`` sets it in the
sandbox's init (pid 1 of the guest's pid namespace) after the clone, so an outer bwrap killed
while a guest is still starting (a worker SIGKILLed while its warm pool refills) leaves that
init orphaned under pid 1, forever (seen an hour later on a test machine). So every guest
process carries a marker in its environment (``OWNER_ENV=<token>``; the sandbox's init inherits
the outer bwrap's environment, the guest's own Python gets a clean one inside the namespace,
which dies with its init) and each backend starts one small watchdog process in its own session
(a group kill of the worker does not take it along). The watchdog blocks reading a pipe whose
only writer is the backend's process; the kernel closes that pipe however the process ends,
and the watchdog then kills every process carrying the token, until none is left, and exits.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys

OWNER_ENV = "SANDBOX_GUEST_OWNER"  # no LOOPWRIGHT_ prefix: guests hold no platform setting
# What the watchdog (and the Docker sweep it may run) needs of the worker's environment: never
# its secrets, which a process outside the sandbox would otherwise carry for no reason.
KEPT_ENV = ("PATH", "HOME", "LANG", "DOCKER_HOST", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH")

# Runs with ``python -I -S -c``: no site, no imports beyond os/signal/time (starts in ~10 ms).
WATCHDOG_CODE = r"""
import os, signal, sys, time
marker = ("%s=%s" % (sys.argv[1], sys.argv[2])).encode()
while os.read(0, 4096):
    pass
quiet = 0
for _ in range(200):
    found = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if marker in env:
            found += 1
            try:
                os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
    quiet = quiet + 1 if not found else 0
    if quiet >= 3:
        break
    time.sleep(0.05)
if len(sys.argv) > 3:  # then a backend's own clean-up (Docker: remove the dead owner's guests)
    os.execv(sys.argv[3], sys.argv[3:])
"""


def owned_pids(token: str) -> list[int]:
    """Pids of live processes carrying ``token`` (for tests and diagnostics)."""
    marker = f"{OWNER_ENV}={token}".encode()
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    out.append(int(pid))
        except OSError:
            continue
    return out


class Watchdog:
    """One per backend: its ``token`` goes into every guest's environment; ``then`` is a
    command the watchdog runs after its sweep (the Docker backend's container sweep)."""

    def __init__(self, then: list[str] | None = None) -> None:
        self.token = f"{os.getpid()}-{secrets.token_hex(6)}"
        self.then = list(then or [])
        self._proc: subprocess.Popen[bytes] | None = None

    def env(self) -> dict[str, str]:
        """The marker to add to a guest's environment; starts the watchdog on first use."""
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-I",
                    "-S",
                    "-c",
                    WATCHDOG_CODE,
                    OWNER_ENV,
                    self.token,
                    *self.then,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # a group kill of the worker must not take it along
                close_fds=True,
                env={k: v for k, v in os.environ.items() if k in KEPT_ENV},
            )
        return {OWNER_ENV: self.token}

    def close(self, wait: bool = True) -> None:
        """Let the watchdog sweep now (the backend is closing); ``wait`` for it to finish."""
        if self._proc is None:
            return
        if self._proc.stdin:
            with contextlib.suppress(OSError):
                self._proc.stdin.close()
        if wait:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=15)
