"""The process backend: each guest is a fresh Python process, inside bubblewrap when present.

Layers applied outside the guest, whatever it does inside:
- bubblewrap (when installed): new user, network, pid, ipc, uts and cgroup namespaces; a root
  made only of read-only binds of the Python installation and the guest's code (no /etc, no
  /home, no host data); a private 16 MiB /tmp; no capabilities; ``--die-with-parent``;
  ``--new-session``; an empty environment.
- rlimits: address space, CPU seconds, processes, file size, open files, no core dumps.
- a pids cgroup per guest where the host may create one (see ``cgroup.py``).
- the host kills the whole guest (process group, cgroup, namespace) at the run's deadline
  and after every run; stderr and message sizes are capped.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from loopwright.sandbox.cgroup import PidsCgroup, pids_root, sweep_stale
from loopwright.sandbox.host import SandboxError, wait_ready
from loopwright.sandbox.limits import GuestLimits
from loopwright.sandbox.protocol import LineReader, write_all
from loopwright.sandbox.watchdog import Watchdog

log = logging.getLogger(__name__)

GUEST_MODULE = "loopwright.sandbox.guest"
GUEST_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
PR_SET_PDEATHSIG = 1
NOBODY = "65534"
_SIGNAL_HINTS = {
    signal.SIGXCPU: "it used up its CPU time limit",
    signal.SIGKILL: "it was killed (CPU or memory limit, or by the host)",
    signal.SIGXFSZ: "it exceeded its file size limit",
    signal.SIGSEGV: "it crashed",
    signal.SIGABRT: "it aborted (often: out of memory)",
}


def _guest_code_paths() -> list[str]:
    """Folders the guest reads: Python, the venv, the SDK, the sandbox, RestrictedPython."""
    import RestrictedPython

    import loopwright.sandbox
    import loopwright.sdk

    paths = {
        sys.prefix,
        sys.base_prefix,
        str(Path(loopwright.sdk.__file__).resolve().parent),
        str(Path(loopwright.sandbox.__file__).resolve().parent),
        str(Path(RestrictedPython.__file__).resolve().parent.parent),
        str(Path(sys.executable).resolve().parent),
    }
    return sorted(p for p in paths if not p.startswith("/usr/") and os.path.isdir(p))


def bwrap_argv(bwrap: str, python: str, code_paths: list[str]) -> list[str]:
    """The bubblewrap command line that starts a guest."""
    argv = [
        bwrap,
        "--unshare-all",
        "--die-with-parent",
        "--new-session",
        "--cap-drop", "ALL",
        "--uid", NOBODY,
        "--gid", NOBODY,
        "--hostname", "sandbox",
        "--ro-bind", "/usr", "/usr",
        "--proc", "/proc",
        "--dev", "/dev",
        "--size", str(16 * 1024 * 1024), "--tmpfs", "/tmp",
        "--clearenv",
    ]  # fmt: skip
    for top in ("/bin", "/lib", "/lib64", "/sbin"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for path in code_paths:
        argv += ["--ro-bind", path, path]
    # The root bwrap builds is a tmpfs: make it read-only once every mount point exists, so
    # only the size-capped /tmp is writable.
    argv += ["--remount-ro", "/"]
    for key, value in GUEST_ENV.items():
        argv += ["--setenv", key, value]
    argv += ["--chdir", "/tmp", "--", python, "-I", "-m", GUEST_MODULE]
    return argv


def _preexec(limits: GuestLimits, cgroup_procs: str | None) -> None:
    """In the forked child, before exec: join the cgroup, set rlimits, die with the worker."""
    if cgroup_procs:
        fd = os.open(cgroup_procs, os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
    mem = limits.memory_bytes
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 2))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.file_size_bytes, limits.file_size_bytes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def launcher_argv(limits: GuestLimits, cgroup_procs: str | None) -> list[str] | None:
    """Commands that set up the child before the guest starts, without a ``preexec_fn``.

    ``sh`` joins the pids cgroup, ``setpriv`` sets the parent-death signal and ``prlimit``
    the rlimits, each exec'ing the next. Spawning then needs no Python code in the forked
    child, so ``subprocess`` can use vfork: starting a guest costs the worker under a
    millisecond instead of a full fork of its address space with the GIL held. None when the
    util-linux tools are missing (the ``preexec_fn`` path is used then).
    """
    setpriv, prlimit = shutil.which("setpriv"), shutil.which("prlimit")
    if not setpriv or not prlimit:
        return None
    mem, cpu = limits.memory_bytes, limits.cpu_seconds
    argv = [
        setpriv, "--pdeathsig", "KILL", "--",
        prlimit,
        f"--as={mem}:{mem}",
        f"--cpu={cpu}:{cpu + 2}",
        f"--nproc={limits.max_processes}:{limits.max_processes}",
        f"--fsize={limits.file_size_bytes}:{limits.file_size_bytes}",
        f"--nofile={limits.open_files}:{limits.open_files}",
        "--core=0:0",
        "--",
    ]  # fmt: skip
    if cgroup_procs:
        argv = ["/bin/sh", "-c", 'echo $$ > "$0" && exec "$@"', cgroup_procs, *argv]
    return argv


class ProcessGuest:
    """One guest process and its pipes."""

    def __init__(
        self,
        argv: list[str],
        limits: GuestLimits,
        use_cgroup: Path | None,
        marker: dict[str, str] | None = None,
    ) -> None:
        self.limits = limits
        self.cgroup = PidsCgroup(use_cgroup, limits.max_processes) if use_cgroup else None
        procs = self.cgroup.join_path() if self.cgroup else None
        self.started = time.monotonic()
        launcher = launcher_argv(limits, procs)
        popen: dict[str, Any] = {}
        if launcher is None:
            popen["preexec_fn"] = lambda: _preexec(limits, procs)
        self.proc = subprocess.Popen(
            [*(launcher or []), *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**GUEST_ENV, **(marker or {})},  # bwrap clears it for the guest's Python
            start_new_session=True,
            close_fds=True,
            **popen,
        )
        assert self.proc.stdout and self.proc.stdin and self.proc.stderr
        os.set_blocking(self.proc.stdin.fileno(), False)  # writes honour deadlines (send)
        self._reader = LineReader(self.proc.stdout.fileno(), limits.message_max_bytes)
        self._stderr: collections.deque[bytes] = collections.deque()
        self._stderr_size = 0
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()
        self._killed = False

    def _drain_stderr(self) -> None:
        assert self.proc.stderr
        cap = self.limits.stderr_max_bytes
        fd = self.proc.stderr.fileno()
        while chunk := os.read(fd, 1 << 14):
            if self._stderr_size < cap:  # keep the head; read and drop the rest
                self._stderr.append(chunk[: cap - self._stderr_size])
                self._stderr_size += len(chunk)

    @property
    def pid(self) -> int:
        """Pid of the process the host started (bubblewrap or Python)."""
        return self.proc.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc.poll() is None

    def send(self, data: bytes, deadline: float | None = None) -> None:
        """Write to the guest's stdin by ``deadline``; ``TimeoutError`` if it stops reading."""
        assert self.proc.stdin
        write_all(self.proc.stdin.fileno(), data, deadline)

    def read_line(self, deadline: float | None) -> bytes | None:
        """The next line from the guest's stdout."""
        return self._reader.read_line(deadline)

    def kill(self) -> None:
        """Kill the process group and every process in the guest's cgroup, now.

        The signals are sent before this returns; reaping the process and removing its cgroup
        happen on a background thread so they stay off the run's critical path.
        """
        if self._killed:
            return
        self._killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.cgroup:
            _kill_cgroup(self.cgroup.path / "cgroup.procs")
        threading.Thread(target=self.reap, name="loopwright-guest-reaper", daemon=True).start()

    def reap(self) -> None:
        """Wait for the killed guest, close its pipes, remove its cgroup."""
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                with contextlib.suppress(OSError):
                    stream.close()
        self._drain.join(timeout=2)
        if self.cgroup:
            procs = self.cgroup.path / "cgroup.procs"
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                try:
                    if not procs.read_text().strip():
                        break
                except OSError:
                    break
                _kill_cgroup(procs)
                time.sleep(0.01)
            self.cgroup.remove()

    def describe_exit(self) -> str:
        """Exit status with a hint, and the tail of stderr."""
        try:
            code = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            code = None
        # bubblewrap reports a child killed by a signal as exit code 128 + signal.
        signum = -code if code is not None and code < 0 else None
        if code is not None and 128 < code < 128 + 65:
            signum = code - 128
        if code is None:
            what = "still running"
        elif signum is not None:
            try:
                sig = signal.Signals(signum)
                what = f"killed by {sig.name}: {_SIGNAL_HINTS.get(sig, 'signal')}"
            except ValueError:
                what = f"killed by signal {signum}"
        else:
            what = f"exit code {code}"
        self._drain.join(timeout=1)
        tail = b"".join(self._stderr).decode("utf-8", "replace").strip()[-600:]
        return what + (f"; stderr: {tail}" if tail else "")


def _kill_cgroup(procs_file: Path) -> None:
    try:
        pids = procs_file.read_text().split()
    except OSError:
        return
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


class ProcessBackend:
    """Starts guests (bubblewrap when available) and keeps a warm pool of ready ones."""

    name = "process"

    def __init__(
        self,
        limits: GuestLimits,
        *,
        pool_size: int = 1,
        use_bwrap: bool | None = None,
        use_cgroup: bool | None = None,
    ) -> None:
        self.limits = limits
        self.pool_size = pool_size
        bwrap = shutil.which("bwrap")
        self.bwrap = bwrap if (use_bwrap is None or use_bwrap) else None
        if use_bwrap and not bwrap:
            raise SandboxError("bubblewrap (bwrap) is required but not installed")
        root = pids_root() if use_cgroup is None or use_cgroup else None
        self.cgroup_root = root
        if root is not None and sweep_stale(root):
            log.info("removed stale guest cgroups under %s", root)
        python = sys.executable
        if self.bwrap:
            self.argv = bwrap_argv(self.bwrap, python, _guest_code_paths())
        else:
            self.argv = [python, "-I", "-m", GUEST_MODULE]
        self._pool: collections.deque[ProcessGuest] = collections.deque()
        self._lock = threading.Lock()
        self._starting = 0
        self._keeper: threading.Thread | None = None
        self._wanted = threading.Event()
        self.watchdog = Watchdog()

    def spawn(self) -> ProcessGuest:
        """Start a guest now (it boots in the background until someone waits for ready)."""
        return ProcessGuest(self.argv, self.limits, self.cgroup_root, self.watchdog.env())

    def acquire(self) -> ProcessGuest:
        """A ready guest: from the warm pool when one is there; the pool is refilled at once."""
        with self._lock:
            guest = self._pool.popleft() if self._pool else None
        for attempt in range(2):
            if guest is None or not guest.alive():
                if guest is not None:
                    guest.kill()
                guest = self.spawn()
            try:
                wait_ready(guest, self.limits.start_timeout)
                break
            except SandboxError:
                guest.kill()
                if attempt == 1:
                    raise
                guest = None
        if self.pool_size:
            self._keep_pool()
        assert guest is not None
        return guest

    def refill(self) -> None:
        """Start guests until the pool holds ``pool_size``."""
        while True:
            with self._lock:
                if len(self._pool) + self._starting >= self.pool_size:
                    return
                self._starting += 1
            try:
                guest = self.spawn()  # outside the lock: acquire() must not wait on a fork
            finally:
                with self._lock:
                    self._starting -= 1
            with self._lock:
                self._pool.append(guest)

    def _keep_pool(self) -> None:
        """Ask the pool keeper to refill. One long-lived thread spawns the guests: the kernel
        delivers a child's parent-death signal when the *thread* that forked it ends, so a
        short-lived spawning thread would take its guest with it."""
        with self._lock:
            if self._keeper is None:
                self._keeper = threading.Thread(
                    target=self._keeper_loop, name="loopwright-pool-keeper", daemon=True
                )
                self._keeper.start()
        self._wanted.set()

    def _keeper_loop(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self.pool_size == 0:
                return
            try:
                self.refill()
            except Exception:  # a failed spawn shows up at the next acquire, loudly
                continue

    def close(self) -> None:
        """Kill pooled guests and wait for them."""
        self.pool_size = 0
        self._wanted.set()
        with self._lock:
            while self._pool:
                guest = self._pool.popleft()
                guest.kill()
                guest.reap()
        self.watchdog.close()

    def protections(self) -> dict[str, Any]:
        """Which layers hold on this machine (for ``loopwright doctor``)."""
        return {
            "backend": self.name,
            "bubblewrap": bool(self.bwrap),
            "network_isolation": bool(self.bwrap),
            "filesystem_isolation": bool(self.bwrap),
            "pids_cgroup": bool(self.cgroup_root),
            "rlimits": True,
            "memory_mb": self.limits.memory_bytes // (1024 * 1024),
            "cpu_seconds": self.limits.cpu_seconds,
            "warm_pool": self.pool_size,
        }
