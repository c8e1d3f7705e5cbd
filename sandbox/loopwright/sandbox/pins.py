"""Pinned clock and randomness for a replayed run: the same recording gives the same result.

A skill may read ``datetime.now()`` or draw from ``random`` between its steps (``time`` is not
importable in the sandbox at all). In a live run those are live; in a replay they must not be,
or replaying one version on one recording twice could end differently. The replay's start
message carries ``pin``: the recorded run's start time and a seed derived from its run id.
With it, the guest's ``datetime`` stand-in reads a virtual clock (the recorded start, advanced
by the recorded ``elapsed_ms`` of each tool call answered so far: the host sends the current
value with every reply as ``clock_ms``) and the skill's private ``random`` generator is seeded.

Naive times (``now()``, ``utcnow()``, ``today()``) are UTC wall time, so a replay does not
depend on the time zone of the machine it runs on; ``now(tz)`` is that instant in ``tz``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass
from typing import Any


def seed_of(run_id: str) -> int:
    """The replay seed of a run: stable across processes and Python versions."""
    return int(hashlib.sha256(run_id.encode("utf-8")).hexdigest()[:16], 16)


@dataclass
class PinnedClock:
    """Milliseconds since the epoch, moved only by the host (``clock_ms`` in its replies)."""

    ms: int

    def advance_to(self, ms: int) -> None:
        """Move to ``ms`` (never backwards: a late or repeated reply cannot rewind time)."""
        self.ms = max(self.ms, ms)

    def utc(self) -> _dt.datetime:
        """The clock as an aware UTC datetime."""
        return _dt.datetime.fromtimestamp(self.ms / 1000, _dt.UTC)


@dataclass(frozen=True)
class Pins:
    """What a replayed run's guest pins: its clock and its random seed."""

    clock: PinnedClock
    seed: int

    @classmethod
    def from_start(cls, start: dict[str, Any]) -> Pins | None:
        """The pins of a start message (``{"pin": {"clock_ms": ..., "seed": ...}}``), if any."""
        pin = start.get("pin")
        if not isinstance(pin, dict):
            return None
        return cls(PinnedClock(int(pin.get("clock_ms") or 0)), int(pin.get("seed") or 0))


def pinned_datetime(clock: PinnedClock) -> tuple[type[_dt.datetime], type[_dt.date]]:
    """``datetime`` and ``date`` classes whose ``now``/``utcnow``/``today`` read ``clock``.

    What they return are ordinary ``datetime``/``date`` values, so a skill's comparisons,
    arithmetic and formatting behave as in a live run.
    """

    def now(tz: _dt.tzinfo | None = None) -> _dt.datetime:
        t = clock.utc()
        return t.astimezone(tz) if tz is not None else t.replace(tzinfo=None)

    class datetime(_dt.datetime):  # noqa: N801 - it stands in for datetime.datetime
        """``datetime.datetime`` on the replay's pinned clock."""

        @classmethod
        def now(cls, tz: _dt.tzinfo | None = None) -> _dt.datetime:  # type: ignore[override]
            return now(tz)

        @classmethod
        def utcnow(cls) -> _dt.datetime:  # type: ignore[override]
            return now()

        @classmethod
        def today(cls) -> _dt.datetime:  # type: ignore[override]
            return now()

    class date(_dt.date):  # noqa: N801 - it stands in for datetime.date
        """``datetime.date`` on the replay's pinned clock."""

        @classmethod
        def today(cls) -> _dt.date:  # type: ignore[override]
            return now().date()

    return datetime, date
