"""Run a set of child processes, restart the ones that die, stop them all cleanly on a signal."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)
STOP_GRACE_S = 10.0
PR_SET_PDEATHSIG = 1
MAX_RESTART_WAIT_S = 30.0


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGTERM (a warm shutdown) when its parent dies.

    Without it, SIGKILLing a supervisor would leave its workers running with nobody to stop
    them. Linux only; elsewhere it does nothing.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


@dataclass
class Child:
    """One supervised process: its name, command and restart bookkeeping."""

    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    started_at: float = field(default=0.0)


class Supervisor:
    """Keeps children running until SIGINT/SIGTERM, then stops them (SIGTERM, then SIGKILL).

    A child that exits is restarted with exponential backoff (reset after a minute of
    uptime), so a crash loop does not spin the CPU. ``on_tick`` runs about once a second, e.g.
    to check that the managed Redis is still up.
    """

    def __init__(
        self,
        children: list[Child],
        env: dict[str, str] | None = None,
        on_tick: Callable[[], None] | None = None,
        announce: Callable[[str], None] | None = None,
    ) -> None:
        self.children = children
        self.env = env
        self.on_tick = on_tick
        self.announce = announce or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self._stopping = False

    def _start(self, child: Child) -> None:
        child.proc = subprocess.Popen(
            child.argv,
            env=self.env,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - only calls prctl(2), async-signal-safe
        )
        child.started_at = time.monotonic()
        self.announce(f"started {child.name} (pid {child.proc.pid})")

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping = True

    def run(self) -> int:
        """Supervise until signalled; returns the exit code for the CLI."""
        old_int = signal.signal(signal.SIGINT, self._on_signal)
        old_term = signal.signal(signal.SIGTERM, self._on_signal)
        try:
            for child in self.children:
                self._start(child)
            last_tick = 0.0
            while not self._stopping:
                now = time.monotonic()
                for child in self.children:
                    self._check(child, now)
                if self.on_tick and now - last_tick >= 1.0:
                    last_tick = now
                    try:
                        self.on_tick()
                    except Exception as exc:
                        self.announce(f"supervisor check failed: {exc}")
                time.sleep(0.1)
            return self.stop()
        finally:
            signal.signal(signal.SIGINT, old_int)
            signal.signal(signal.SIGTERM, old_term)

    def _check(self, child: Child, now: float) -> None:
        if child.proc is None:
            if now >= child.next_start:
                self._start(child)
            return
        code = child.proc.poll()
        if code is None:
            return
        uptime = now - child.started_at
        if uptime > 60:
            child.restarts = 0
        wait = min(MAX_RESTART_WAIT_S, 0.5 * 2**child.restarts)
        child.restarts += 1
        child.proc = None
        child.next_start = now + wait
        self.announce(f"{child.name} exited with code {code}; restarting in {wait:.1f}s")

    def stop(self) -> int:
        """SIGTERM every child (warm shutdown), SIGKILL the ones still alive after the grace."""
        self.announce("stopping...")
        live = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for p in live:
            p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in live:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.announce("stopped")
        return 0
