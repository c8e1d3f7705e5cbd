"""Cron: one leader fires each skill's ticks, each tick at most once across all schedulers.

Two mechanisms, so a split brain cannot double a tick: a leader lease (``SET NX PX``, renewed
by its holder, with an epoch counter bumped at each change of leader) decides who fires, and
the tick time is the run's idempotency key (``start_once``), so each tick starts one run even
if two schedulers fire it. Missed
ticks younger than ``cron_catchup`` all fire (a leader handover loses none); older ones are
coalesced into the latest (policy ``latest``) or dropped (``skip``): never a burst.

Interval triggers (``every("90m")``) ride the same machinery: their ticks lie on a grid of
the interval counted from the cursor (the last fired tick, or when the scheduler first saw the
skill), so they never drift with the scheduler's own timing, are claimed by the same run
idempotency key and survive scheduler restarts and leader changes exactly like cron ticks.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from loopwright.runner.runtime import Runtime
from loopwright.scheduler.admission import Admission
from loopwright.scheduler.catalog import Catalog, Entry
from loopwright.scripts import NAMED, named
from loopwright.sdk.triggers import CronTrigger, IntervalTrigger

log = logging.getLogger(__name__)
MAX_TICKS_PER_PASS = 1000

# Atomically: keep or take the leader lease. Returns the epoch when the caller leads, else 0.
# KEYS: leader, epoch   ARGV: owner, ttl_ms
LEAD_LUA = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
"""

# Atomically: record the last fired tick only while still the leader (a deposed leader's late
# write must not move the cursor backwards or forwards), and with it the outcome of each tick
# it covers in the skill's capped occurrence ledger. One script: a scheduler killed before it
# leaves the cursor and the ledger as they were, and the next pass decides those ticks again
# (their runs found by idempotency), so every tick is written to the ledger exactly once.
ADVANCE_LUA = (
    NAMED
    + """
if redis.call('GET', K.leader) ~= A.owner then return 0 end
local cur = tonumber(redis.call('GET', K.cursor) or '0')
if tonumber(A.tick) <= cur then return 0 end
redis.call('SET', K.cursor, A.tick)
for _, entry in ipairs(A.ledger) do redis.call('LPUSH', K.ledger, entry) end
redis.call('LTRIM', K.ledger, 0, tonumber(A.cap) - 1)
return 1
"""
)
LEDGER_CAP = 200


Timed = CronTrigger | IntervalTrigger


def interval_ticks(trig: IntervalTrigger, after_ms: int, until_ms: int, limit: int) -> list[int]:
    """Interval ticks in (after, until] on the grid ``after + k * interval``, the latest
    ``limit`` of them (computed, not iterated: a long outage costs nothing)."""
    step = max(1, round(trig.seconds * 1000))
    count = (until_ms - after_ms) // step
    if count <= 0:
        return []
    first = max(1, count - limit + 1)
    return [after_ms + k * step for k in range(first, count + 1)]


def ticks_between(trig: Timed, after_ms: int, until_ms: int, limit: int) -> list[int]:
    """Tick times (ms) in (after, until], at most ``limit`` of the latest ones."""
    if isinstance(trig, IntervalTrigger):
        return interval_ticks(trig, after_ms, until_ms, limit)
    tz = ZoneInfo(trig.tz) if trig.tz else UTC
    start = datetime.fromtimestamp(after_ms / 1000, tz)
    it = croniter(trig.expr, start)
    out: list[int] = []
    while True:
        t = int(it.get_next(float) * 1000)
        if t > until_ms:
            return out
        out.append(t)
        if len(out) > limit:
            out.pop(0)


def next_fires(trig: Timed, cursor_ms: int | None, now_ms: int, count: int = 5) -> list[int]:
    """The next ``count`` tick times (ms) after ``now_ms``. Interval ticks lie on the grid from
    the cursor; before the scheduler has seen the skill (no cursor) the grid starts now."""
    if isinstance(trig, IntervalTrigger):
        step = max(1, round(trig.seconds * 1000))
        base = cursor_ms if cursor_ms is not None else now_ms
        k = max(1, (now_ms - base) // step + 1)
        return [base + (k + i) * step for i in range(count)]
    tz = ZoneInfo(trig.tz) if trig.tz else UTC
    it = croniter(trig.expr, datetime.fromtimestamp(now_ms / 1000, tz))
    return [int(it.get_next(float) * 1000) for _ in range(count)]


class CronFirer:
    """Fires due cron ticks while this scheduler holds the leader lease."""

    def __init__(self, rt: Runtime, catalog: Catalog) -> None:
        self.rt = rt
        self.catalog = catalog
        self.epoch = 0
        self.admission = Admission(rt)
        self._lead = rt.redis.register_script(LEAD_LUA)
        self._advance = rt.redis.register_script(ADVANCE_LUA)

    def lead(self) -> bool:
        """Keep or take the lease; True while leading."""
        k, ttl = self.rt.keys, int(self.rt.settings.scheduler_leader_ttl * 1000)
        epoch = int(
            self._lead(
                keys=[k.scheduler_leader, k.scheduler_epoch], args=[self.rt.instance_id, ttl]
            )
        )
        if epoch and epoch != self.epoch:
            log.warning("scheduler %s leads cron (epoch %d)", self.rt.instance_id, epoch)
        self.epoch = epoch
        return epoch > 0

    def tick(self, now_ms: int) -> int:
        """Fire every due tick; returns how many runs were started."""
        if not self.lead():
            return 0
        started = 0
        for entry in self.catalog.entries():
            trig = entry.spec.trigger
            if isinstance(trig, CronTrigger | IntervalTrigger):
                started += self._fire_due(entry, trig, now_ms)
        return started

    def _fire_due(self, entry: Entry, trig: Timed, now_ms: int) -> int:
        rt, k = self.rt, self.rt.keys
        cursor = k.cron_last(entry.name)
        last = rt.redis.get(cursor)
        if last is None:  # a new timed skill starts from now: past ticks are not "missed"
            rt.redis.set(cursor, now_ms, nx=True)
            return 0
        ticks = ticks_between(trig, int(last), now_ms, MAX_TICKS_PER_PASS)
        if not ticks:
            return 0
        horizon = now_ms - int(rt.settings.cron_catchup * 1000)
        recent = [t for t in ticks if t >= horizon]
        older = [t for t in ticks if t < horizon]
        fire = recent
        if older and not recent and trig.missed == "latest":
            fire = [older[-1]]
        ledger: list[dict[str, Any]] = []
        if older:
            log.warning(
                "skill %s: %d cron tick(s) missed while no scheduler ran; policy %s",
                entry.name, len(older), trig.missed,
            )  # fmt: skip
            catchup = f"{rt.settings.cron_catchup:g}s"
            for tick in older[-LEDGER_CAP:]:
                if tick in fire:
                    continue
                why = (
                    f"not fired within the {catchup} catch-up window: no scheduler was leading, "
                    f"or the skill was paused; missed={trig.missed!r}"
                    + (", coalesced into the latest missed tick" if fire and not recent else "")
                )
                ledger.append({"tick_ms": tick, "outcome": "missed", "reason": why})
        count = 0
        for tick in fire:
            outcome = self._fire(entry, trig, tick, now_ms)
            count += outcome in ("started", "delayed", "debounced")
            ledger.append(self._occurrence(entry, tick, outcome, now_ms))
        self._advance(
            *named(
                {
                    "leader": k.scheduler_leader,
                    "cursor": cursor,
                    "ledger": k.cron_ledger(entry.name),
                },
                {
                    "owner": self.rt.instance_id,
                    "tick": ticks[-1],
                    "cap": LEDGER_CAP,
                    "ledger": [json.dumps(e, sort_keys=True) for e in ledger[-LEDGER_CAP:]],
                },
            )
        )
        return count

    def _fire(self, entry: Entry, trig: Timed, tick: int, now_ms: int) -> str:
        """Start the run of one tick through admission; its outcome word."""
        iso = datetime.fromtimestamp(tick / 1000, UTC).isoformat()
        if isinstance(trig, IntervalTrigger):
            what: dict[str, Any] = {"every": trig.every}
            kind = "every"
        else:
            what, kind = {"expr": trig.expr}, "cron"
        event = {
            "name": "loopwright/cron",
            "data": {"tick": iso, "tick_ms": tick, **what},
            "id": f"cron:{entry.name}:{tick}",
            "ts": now_ms,
        }
        trigger = {"type": kind, **what, "tick_ms": tick}
        # The tick time is the run's idempotency key: a tick fired again (by a new leader
        # after a crash, or a deposed one) finds its run and starts nothing.
        return self.admission.start(entry, f"cron:{tick}", event, trigger)

    def _occurrence(self, entry: Entry, tick: int, outcome: str, now_ms: int) -> dict[str, Any]:
        """The ledger entry for a fired tick: its run, or why it started none. The run, when
        there is one, is the truth (a tick fired again after a crash reports its first start,
        whatever admission says the second time)."""
        rt = self.rt
        out: dict[str, Any] = {"tick_ms": tick, "at_ms": now_ms}
        run_id = rt.redis.get(rt.keys.trigger_done(f"cron:{tick}", entry.name))
        status, error = (None, None)
        if run_id is not None:
            status, error = rt.redis.hmget(rt.keys.run(str(run_id)), ["status", "error"])
        if status is not None:  # the run exists
            out["run_id"] = str(run_id)
            if status == "skipped":
                return {**out, "outcome": "skipped", "reason": str(error or "skipped")}
            if outcome == "delayed":
                reason = "rate limit: parked until a slot frees"
                return {**out, "outcome": "delayed", "reason": reason}
            return {**out, "outcome": "started"}
        if outcome == "debounced":
            return {**out, "outcome": "debounced", "reason": "debounce: starts after quiet period"}
        if outcome == "idempotent-skip":
            reason = "idempotency: a start with the same key ran within the window"
            return {**out, "outcome": "skipped", "reason": reason}
        return {**out, "outcome": "skipped", "reason": "skill not runnable (paused or deleted)"}
