"""Trigger-time flow control: idempotency, debounce and rate limits, before a run is started.

Concurrency is enforced later, when a worker takes the run (``runner/lease.py``).
"""

from __future__ import annotations

import json
from typing import Any

from loopwright.runner.flow import key_value
from loopwright.runner.records import now_ms
from loopwright.runner.runtime import Runtime
from loopwright.scheduler.catalog import Entry
from loopwright.scheduler.starts import start_once

SEP = "\x1f"

# Atomically: admit a start into a sliding window of ``limit`` starts per ``period``, or say
# how long until a start would fit. Returns {1, 0} or {0, wait_ms}.
# KEYS: window   ARGV: now_ms, period_ms, limit, member, ttl_s
RATE_LUA = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return {1, 0}
end
-- Delayed starts are reserved at their future start time, so the next free slot is one
-- period after the start ``limit`` places from the end.
local n = redis.call('ZCARD', KEYS[1])
local pivot = redis.call('ZRANGE', KEYS[1], n - tonumber(ARGV[3]), n - tonumber(ARGV[3]),
                         'WITHSCORES')
return {0, tonumber(pivot[2]) + tonumber(ARGV[2]) - now}
"""

# Atomically: take a debounced burst whose quiet period has passed (the latest event).
# KEYS: due zset, stored event   ARGV: member, now_ms
TAKE_DEBOUNCE_LUA = """
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due or tonumber(due) > tonumber(ARGV[2]) then return false end
redis.call('ZREM', KEYS[1], ARGV[1])
local ev = redis.call('GET', KEYS[2])
redis.call('DEL', KEYS[2])
return ev
"""


class Admission:
    """Applies a skill's trigger-time flow control and starts (or records) the run."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._rate = rt.redis.register_script(RATE_LUA)
        self._take = rt.redis.register_script(TAKE_DEBOUNCE_LUA)

    def start(
        self, entry: Entry, source_id: str, event: dict[str, Any], trigger: dict[str, Any]
    ) -> str:
        """What happened: started, duplicate, idempotent-skip, debounced, rate-limited..."""
        rt, k, spec = self.rt, self.rt.keys, entry.spec
        if spec.idempotency:
            value = key_value(spec.idempotency["key"], event)
            window = int(spec.idempotency["window"])
            marker = k.idempotency(entry.name, value)
            fresh = rt.redis.set(marker, source_id, nx=True, ex=window)
            # The same source processed again (a router retry) is not a second trigger.
            if not fresh and rt.redis.get(marker) != source_id:
                return "idempotent-skip"
        if spec.debounce:
            value = key_value(spec.debounce["key"], event)
            period_ms = int(spec.debounce["period"] * 1000)
            pipe = rt.redis.pipeline(transaction=True)
            stored = json.dumps({"event": event, "trigger": trigger, "version": entry.version})
            pipe.set(k.debounce(entry.name, value), stored)
            pipe.zadd(k.debounce_due, {f"{entry.name}{SEP}{value}": now_ms() + period_ms})
            pipe.execute()
            return "debounced"
        return self.rate_limited_start(entry, source_id, event, trigger)

    def rate_limited_start(
        self, entry: Entry, source_id: str, event: dict[str, Any], trigger: dict[str, Any]
    ) -> str:
        """Start the run, after the rate limit (drop: a skipped run; delay: a parked run)."""
        rt, spec = self.rt, entry.spec
        rl = spec.rate_limit
        if not rl:
            _, created = start_once(rt, entry, source_id, event, trigger)
            return "started" if created else "duplicate"
        window = rt.keys.rate_window(entry.name, key_value(rl["key"], event))
        period_ms = int(rl["period"] * 1000)
        now = now_ms()
        admitted, wait_ms = self._rate(
            keys=[window],
            args=[now, period_ms, rl["limit"], source_id, int(rl["period"]) + 60],
        )
        if int(admitted):
            _, created = start_once(rt, entry, source_id, event, trigger, admitted_at=now)
            return "started" if created else "duplicate"
        if rl["mode"] == "delay":
            wake = now + int(wait_ms)
            # Reserve the slot at the time the run will start, so delayed runs keep the rate.
            rt.redis.zadd(window, {source_id: wake})
            start_once(rt, entry, source_id, event, trigger, wake_at=wake, admitted_at=wake)
            return "delayed"
        reason = f"rate limited: more than {rl['limit']} starts per {rl['period']:g}s"
        start_once(rt, entry, source_id, event, trigger, skipped=reason)
        return "rate-limited"

    def fire_debounced(self, catalog_entries: dict[str, Entry]) -> int:
        """Start the runs of bursts whose quiet period is over; returns how many."""
        rt, k, started = self.rt, self.rt.keys, 0
        for raw_member in rt.redis.zrangebyscore(k.debounce_due, "-inf", now_ms(), 0, 500):
            member = str(raw_member)
            name, _, value = member.partition(SEP)
            raw = self._take(
                keys=[k.debounce_due, k.debounce(name, value)], args=[member, now_ms()]
            )
            entry = catalog_entries.get(name)
            if not raw or entry is None:
                continue
            stored = json.loads(raw)
            event = stored["event"]
            self.rate_limited_start(entry, f"debounce:{event['id']}", event, stored["trigger"])
            started += 1
        return started
