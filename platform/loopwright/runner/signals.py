"""Control-flow signals that end an execution early: park the run, or its time is up.

Both derive from ``RunInterrupt`` (a ``BaseException``), so skill code's ``except Exception``
cannot swallow them; the executor (``runner/execute.py``) turns them into a park or a failure.
"""

from __future__ import annotations

from loopwright.sdk.errors import RunInterrupt


class Suspend(RunInterrupt):
    """Control flow: end this execution and park the run until ``wake_ms``.

    ``waiting`` parks it in the waiting state instead (an event or a child run resolves it;
    ``wake_ms`` is then the optional deadline), with an optional event ``waiter``
    (event name, waiter field, match JSON) and a ``child`` to check right after parking.
    """

    def __init__(
        self,
        wake_ms: int | None,
        reason: str,
        *,
        waiting: bool = False,
        waiter: tuple[str, str, str] | None = None,
        child: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(f"suspend until {wake_ms} ({reason})")
        self.wake_ms = wake_ms
        self.reason = reason
        self.waiting = waiting
        self.waiter = waiter
        self.child = child


class RunTimeoutError(RunInterrupt):
    """Control flow: the run used up its active-time budget."""
