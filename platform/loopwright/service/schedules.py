"""Schedules: every skill with a cron or interval trigger, in words, with its next fires and
its occurrence ledger (each decided tick with its run, or skipped/missed and why).

The ledger is written by the cron leader in the same script that moves the skill's cursor
(``scheduler/cron.py``); this module only reads it, so the API, the pages and the CLI show
the same thing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from loopwright.errors import LoopwrightError, NotFoundError
from loopwright.runner.runtime import Runtime
from loopwright.scheduler.cron import LEDGER_CAP, next_fires
from loopwright.sdk.schedule_words import describe_cron, describe_interval
from loopwright.sdk.triggers import CronTrigger, IntervalTrigger
from loopwright.skills_registry.store import Registry, SkillRecord

NEXT_FIRES = 5
LEDGER_MAX = LEDGER_CAP  # the most ledger entries one read returns (all that are kept)


@dataclass(slots=True)
class Occurrence:
    """One decided tick: ``started`` (with its run), ``delayed``, ``debounced``, ``skipped`` or
    ``missed`` (with the reason)."""

    tick_ms: int
    outcome: str
    run_id: str | None = None
    run_status: str | None = None
    reason: str | None = None
    at_ms: int | None = None


@dataclass(slots=True)
class Schedule:
    """A timed skill's schedule as people read it."""

    skill: str
    status: str
    version: str
    kind: str  # "cron" or "every"
    expr: str
    timezone: str | None
    missed_policy: str
    words: str
    last_tick_ms: int | None
    next_fires_ms: list[int]
    ledger: list[Occurrence] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self, with_ledger: bool = True) -> dict[str, Any]:
        """JSON form for the API (the list leaves the ledger out, keeping its counts)."""
        out = asdict(self)
        if not with_ledger:
            out.pop("ledger")
        return out


def _now_ms(rt: Runtime) -> int:
    sec, usec = rt.redis.time()
    return int(sec) * 1000 + int(usec) // 1000


def _schedule(
    rt: Runtime, rec: SkillRecord, now_ms: int, ledger: int, statuses: bool = True
) -> Schedule | None:
    if rec.active is None:
        return None
    try:
        _, spec = rt.sources.declaration(rec.active, rec.name)
    except LoopwrightError:
        return None  # a declaration that does not read has no schedule (the scheduler logs it)
    trig = spec.trigger
    if not isinstance(trig, CronTrigger | IntervalTrigger):
        return None
    raw_cursor = rt.redis.get(rt.keys.cron_last(rec.name))
    cursor = int(raw_cursor) if raw_cursor is not None else None
    if isinstance(trig, CronTrigger):
        kind, expr, tz = "cron", trig.expr, trig.tz or "UTC"
        words = describe_cron(trig.expr, trig.tz)
    else:
        kind, expr, tz = "every", trig.every, None  # a fixed grid: no timezone applies
        words = describe_interval(trig.seconds)
    occurrences = read_ledger(rt, rec.name, ledger, statuses)
    counts: dict[str, int] = {}
    for occ in occurrences:
        counts[occ.outcome] = counts.get(occ.outcome, 0) + 1
    return Schedule(
        skill=rec.name,
        status=rec.status,
        version=rec.active,
        kind=kind,
        expr=expr,
        timezone=tz,
        missed_policy=trig.missed,
        words=words,
        last_tick_ms=cursor,
        next_fires_ms=next_fires(trig, cursor, now_ms, NEXT_FIRES),
        ledger=occurrences,
        counts=counts,
    )


def read_ledger(
    rt: Runtime, skill: str, limit: int = LEDGER_CAP, statuses: bool = True
) -> list[Occurrence]:
    """The newest ``limit`` decided ticks of ``skill``, newest first, with each run's status
    (one pipelined read; left out with ``statuses=False``, as the list needs only counts)."""
    raw = rt.redis.lrange(rt.keys.cron_ledger(skill), 0, max(0, min(limit, LEDGER_CAP)) - 1)
    out: list[Occurrence] = []
    for item in raw:
        try:
            data = json.loads(item)
            occ = Occurrence(
                tick_ms=int(data["tick_ms"]),
                outcome=str(data["outcome"]),
                run_id=data.get("run_id"),
                reason=data.get("reason"),
                at_ms=data.get("at_ms"),
            )
        except (ValueError, KeyError, TypeError):
            continue  # an entry this version cannot read is left out, never fatal
        out.append(occ)
    if out and statuses:
        pipe = rt.redis.pipeline(transaction=False)
        for occ in out:
            pipe.hget(rt.keys.run(occ.run_id or "-"), "status")
        for occ, status in zip(out, pipe.execute(), strict=True):
            occ.run_status = str(status) if occ.run_id and status is not None else None
    return out


def list_schedules(rt: Runtime) -> list[Schedule]:
    """Every skill with a cron or interval trigger on its active version, by name."""
    now = _now_ms(rt)
    out = []
    for rec in Registry(rt.redis, rt.keys).skills():
        sched = _schedule(rt, rec, now, LEDGER_CAP, statuses=False)
        if sched is not None:
            out.append(sched)
    return sorted(out, key=lambda s: s.skill)


def get_schedule(rt: Runtime, skill: str, limit: int = LEDGER_CAP) -> Schedule:
    """One skill's schedule with its ledger; ``NotFoundError`` when it has no timed trigger."""
    rec = Registry(rt.redis, rt.keys).skill(skill)
    sched = _schedule(rt, rec, _now_ms(rt), limit)
    if sched is None:
        raise NotFoundError(f"skill {skill!r} has no cron or interval trigger")
    return sched


@dataclass(frozen=True, slots=True)
class Trouble:
    """A timed skill with ticks that started no run since a moment: for "needs attention"."""

    skill: str
    missed: int
    skipped: int
    last_reason: str


def troubled(rt: Runtime, since_ms: int) -> list[Trouble]:
    """Timed skills with missed or skipped ticks at or after ``since_ms``, most first."""
    out: list[Trouble] = []
    for sched in list_schedules(rt):
        bad = [
            o for o in sched.ledger if o.tick_ms >= since_ms and o.outcome in ("missed", "skipped")
        ]
        if bad:
            missed = sum(o.outcome == "missed" for o in bad)
            out.append(Trouble(sched.skill, missed, len(bad) - missed, bad[0].reason or ""))
    return sorted(out, key=lambda t: (-(t.missed + t.skipped), t.skill))
