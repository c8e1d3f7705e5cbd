"""Trigger declarations: ``cron(...)``, ``every(...)``, ``event(...)``, or none for manual-only
skills."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loopwright.sdk.durations import parse_duration
from loopwright.sdk.errors import SkillDefinitionError


@dataclass(frozen=True, slots=True)
class CronTrigger:
    """Fire on a cron schedule (five fields), optionally in a timezone."""

    expr: str
    tz: str | None = None
    missed: str = "latest"

    def to_dict(self) -> dict[str, Any]:
        """JSON form stored with the run and the manifest."""
        return {"type": "cron", "expr": self.expr, "tz": self.tz, "missed": self.missed}


@dataclass(frozen=True, slots=True)
class EventTrigger:
    """Fire for every accepted event named ``name`` whose data matches ``match`` (key equality)."""

    name: str
    match: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON form stored with the run and the manifest."""
        return {"type": "event", "name": self.name, "match": dict(self.match)}


@dataclass(frozen=True, slots=True)
class IntervalTrigger:
    """Fire every ``seconds``, on a fixed grid from when the scheduler first saw the skill
    (so "every 90 minutes" is exactly that, which one cron line cannot say, and never drifts)."""

    every: str
    seconds: float
    missed: str = "latest"

    def to_dict(self) -> dict[str, Any]:
        """JSON form stored with the run and the manifest."""
        return {
            "type": "every",
            "every": self.every,
            "seconds": self.seconds,
            "missed": self.missed,
        }


Trigger = CronTrigger | EventTrigger | IntervalTrigger
MIN_INTERVAL_S = 10.0
MAX_INTERVAL_S = 366 * 86400.0


def cron(expr: str, tz: str | None = None, missed: str = "latest") -> CronTrigger:
    """A cron trigger: ``cron("*/30 * * * *")`` or ``cron("0 9 * * 1", tz="Europe/Paris")``.

    Five fields, or six with seconds last. ``missed`` says what happens to ticks missed while
    no scheduler ran (beyond a short catch-up window): ``"latest"`` runs once for the latest
    missed tick, ``"skip"`` runs none; never a burst of all of them.
    """
    if not isinstance(expr, str) or len(expr.split()) not in (5, 6):
        raise SkillDefinitionError(
            f"cron expression {expr!r} must have five fields (or six, seconds last), "
            f"e.g. cron('*/30 * * * *')"
        )
    if missed not in ("latest", "skip"):
        raise SkillDefinitionError("cron missed= must be 'latest' or 'skip'")
    from croniter import croniter

    if not croniter.is_valid(expr):
        raise SkillDefinitionError(f"cron expression {expr!r} does not parse")
    if tz is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise SkillDefinitionError(f"unknown timezone {tz!r} in cron trigger") from exc
    return CronTrigger(expr=expr, tz=tz, missed=missed)


def every(period: str | int | float, missed: str = "latest") -> IntervalTrigger:
    """An interval trigger: ``every("90m")``, ``every("6h")``, ``every(45)`` (seconds).

    From 10 seconds to a year. ``missed`` is the cron policy for intervals missed while no
    scheduler ran: ``"latest"`` runs once, ``"skip"`` none; never a burst.
    """
    try:
        seconds = parse_duration(period)
    except ValueError as exc:
        raise SkillDefinitionError(f"every(): {exc}") from None
    if not MIN_INTERVAL_S <= seconds <= MAX_INTERVAL_S:
        raise SkillDefinitionError(
            f"every({period!r}): the interval must be from 10s to 366d, not {seconds:g}s"
        )
    if missed not in ("latest", "skip"):
        raise SkillDefinitionError("every missed= must be 'latest' or 'skip'")
    return IntervalTrigger(every=str(period), seconds=seconds, missed=missed)


def event(name: str, match: dict[str, Any] | None = None) -> EventTrigger:
    """An event trigger: ``event("incident.opened", match={"severity": "high"})``."""
    if not isinstance(name, str) or not name or len(name) > 128:
        raise SkillDefinitionError("event name must be a non-empty string of at most 128 chars")
    if match is not None and not isinstance(match, dict):
        raise SkillDefinitionError("event match must be a dict of field -> expected value")
    return EventTrigger(name=name, match=dict(match or {}))
