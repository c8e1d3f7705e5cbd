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

import logging
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from loopwright.runner.runtime import Runtime
from loopwright.scheduler.admission import Admission
from loopwright.scheduler.catalog import Catalog, Entry
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
# write must not move the cursor backwards or forwards).
# KEYS: leader, cursor   ARGV: owner, tick_ms
ADVANCE_LUA = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) > cur then redis.call('SET', KEYS[2], ARGV[2]) end
return 1
"""


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
        if older:
            log.warning(
                "skill %s: %d cron tick(s) missed while no scheduler ran; policy %s",
                entry.name, len(older), trig.missed,
            )  # fmt: skip
        count = 0
        for tick in fire:
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
            outcome = self.admission.start(entry, f"cron:{tick}", event, trigger)
            count += outcome in ("started", "delayed", "debounced")
        self._advance(keys=[k.scheduler_leader, cursor], args=[self.rt.instance_id, ticks[-1]])
        return count
