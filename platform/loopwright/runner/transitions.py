"""Run state transitions, each one Lua script so a transition is all-or-nothing.

Executor-side transitions (finish, park) carry the fencing token; scheduler-side ones (wake,
reap, redispatch) and cancel re-check the state they expect, so two schedulers or a racing
executor can never apply the same transition twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from loopwright.keys import Keys

# Frees the run's concurrency slot, if it holds one (the slot key is stored on the run).
RELEASE_SLOT = """
local slot = redis.call('HGET', KEYS[1], 'conc_slot')
if slot then redis.call('ZREM', slot, ARGV[1]) end
"""

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Atomically: end a run the caller holds (completed or failed), record output/error and active
# time, drop its lease and announce it.
# KEYS: run, leases   ARGV: run_id, token, status, output, error, active_ms, channel
FINISH_LUA = (
    _NOW
    + """
local cur = redis.call('HMGET', KEYS[1], 'fence', 'status')
if cur[1] ~= ARGV[2] or cur[2] ~= 'running' then return 0 end
"""
    + RELEASE_SLOT
    + """
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'finished_at', now, 'updated_at', now)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'output', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[5]) end
redis.call('HINCRBY', KEYS[1], 'active_ms', ARGV[6])
redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[7], ARGV[1] .. ' ' .. ARGV[3])
return 1
"""
)

# Atomically: park a run the caller holds until wake time (sleep or retry backoff), add the
# active time, drop the lease and register the timer.
# KEYS: run, leases, timers   ARGV: run_id, token, status, wake_ms, active_ms, channel
PARK_LUA = (
    _NOW
    + """
local cur = redis.call('HMGET', KEYS[1], 'fence', 'status')
if cur[1] ~= ARGV[2] or cur[2] ~= 'running' then return 0 end
"""
    + RELEASE_SLOT
    + """
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'wake_at', ARGV[4], 'updated_at', now)
redis.call('HINCRBY', KEYS[1], 'active_ms', ARGV[5])
redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('PUBLISH', ARGV[6], ARGV[1] .. ' ' .. ARGV[3])
return 1
"""
)

# Atomically: park a run the caller holds in 'waiting' (an event or a child run will resolve its
# pending step), register its waiter (when waiting for an event) and its optional deadline
# timer, and index it for the scheduler's sweep.
# KEYS: run, leases, timers, waiting, waiters   ARGV: run_id, token, wake_ms ('' = none),
#   active_ms, channel, waiter field ('' = none), waiter match JSON
PARK_WAITING_LUA = (
    _NOW
    + """
local cur = redis.call('HMGET', KEYS[1], 'fence', 'status')
if cur[1] ~= ARGV[2] or cur[2] ~= 'running' then return 0 end
"""
    + RELEASE_SLOT
    + """
redis.call('HSET', KEYS[1], 'status', 'waiting', 'updated_at', now)
redis.call('HINCRBY', KEYS[1], 'active_ms', ARGV[4])
redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
redis.call('ZREM', KEYS[2], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'wake_at', ARGV[3])
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
end
if ARGV[6] ~= '' then redis.call('HSET', KEYS[5], ARGV[6], ARGV[7]) end
redis.call('ZADD', KEYS[4], now, ARGV[1])
redis.call('PUBLISH', ARGV[5], ARGV[1] .. ' waiting')
return 1
"""
)

# Atomically (compare-and-set): resolve the pending step ``seq`` of a waiting run — with an
# event's payload, or a child run's output or error — and queue the run. Nothing happens when
# the run is no longer waiting or the record is no longer that pending step, so the router,
# the child's executor and the scheduler's sweep can all try without doubling anything.
# KEYS: run, steps, timers, queued, waiting, waiters
# ARGV: run_id, seq, check field ('' = none), check value, new status, output JSON ('' = none),
#   error ('' = none), job prefix, waiter field ('' = none), ended_at ms
RESOLVE_LUA = (
    _NOW
    + """
if ARGV[9] ~= '' then redis.call('HDEL', KEYS[6], ARGV[9]) end
if redis.call('HGET', KEYS[1], 'status') ~= 'waiting' then return false end
local raw = redis.call('HGET', KEYS[2], ARGV[2])
if not raw then return false end
local rec = cjson.decode(raw)
if rec['status'] ~= 'pending' then return false end
if ARGV[3] ~= '' and rec[ARGV[3]] ~= ARGV[4] then return false end
rec['status'] = ARGV[5]
rec['ended_at'] = tonumber(ARGV[10])
rec['output'] = nil
if ARGV[7] ~= '' then rec['error'] = ARGV[7] end
local enc = cjson.encode(rec)
if ARGV[6] ~= '' then enc = string.sub(enc, 1, -2) .. ',"output":' .. ARGV[6] .. '}' end
redis.call('HSET', KEYS[2], ARGV[2], enc)
local jid = ARGV[8] .. redis.call('HINCRBY', KEYS[1], 'dispatches', 1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'dispatch', jid, 'updated_at', now)
redis.call('HDEL', KEYS[1], 'wake_at')
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('ZADD', KEYS[4], now, ARGV[1])
return jid
"""
)

# Atomically: move a due sleeping (or waiting, at its deadline) run back to queued with a new
# dispatch id. Returns the RQ job id to enqueue, or false when the run is no longer parked
# (cancelled, already woken, resolved).
# KEYS: run, timers, queued, waiting   ARGV: run_id, job_prefix
WAKE_LUA = (
    _NOW
    + """
redis.call('ZREM', KEYS[2], ARGV[1])
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'sleeping' and st ~= 'waiting' then return false end
redis.call('ZREM', KEYS[4], ARGV[1])
local jid = ARGV[2] .. redis.call('HINCRBY', KEYS[1], 'dispatches', 1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'dispatch', jid, 'updated_at', now)
redis.call('HDEL', KEYS[1], 'wake_at')
redis.call('ZADD', KEYS[3], now, ARGV[1])
return jid
"""
)

# Atomically: take a run back from an executor whose lease expired. Bumps the fence so the old
# executor's late writes are refused, then re-queues the run (or fails it after too many lost
# executors: a run that keeps killing workers must not loop forever).
# KEYS: run, leases, queued   ARGV: run_id, job_prefix, max_reaps, channel
REAP_LUA = (
    _NOW
    + """
local cur = redis.call('HMGET', KEYS[1], 'status', 'lease_until')
if cur[1] ~= 'running' then redis.call('ZREM', KEYS[2], ARGV[1]) return false end
if tonumber(cur[2] or '0') > now then return false end
"""
    + RELEASE_SLOT
    + """
redis.call('HINCRBY', KEYS[1], 'fence', 1)
local reaps = redis.call('HINCRBY', KEYS[1], 'reaps', 1)
redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
redis.call('ZREM', KEYS[2], ARGV[1])
if reaps > tonumber(ARGV[3]) then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'finished_at', now, 'updated_at', now,
    'error', 'the worker executing this run was lost ' .. reaps .. ' times; giving up')
  redis.call('PUBLISH', ARGV[4], ARGV[1] .. ' failed')
  return 'failed'
end
local jid = ARGV[2] .. redis.call('HINCRBY', KEYS[1], 'dispatches', 1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'dispatch', jid, 'updated_at', now)
redis.call('ZADD', KEYS[3], now, ARGV[1])
return jid
"""
)

# Atomically: give a queued run whose RQ job vanished (worker died between dequeue and lease)
# a fresh dispatch id, but only if nothing else dispatched it meanwhile.
# KEYS: run, queued   ARGV: run_id, job_prefix, expected_dispatch
REDISPATCH_LUA = (
    _NOW
    + """
local cur = redis.call('HMGET', KEYS[1], 'status', 'dispatch')
if cur[1] ~= 'queued' then redis.call('ZREM', KEYS[2], ARGV[1]) return false end
if cur[2] ~= ARGV[3] then return false end
local jid = ARGV[2] .. redis.call('HINCRBY', KEYS[1], 'dispatches', 1)
redis.call('HSET', KEYS[1], 'dispatch', jid, 'updated_at', now)
redis.call('ZADD', KEYS[2], now, ARGV[1])
return jid
"""
)

# Atomically: cancel a run that has not ended: bump the fence (its executor's next write is
# refused), drop it from every index the scheduler scans and announce it.
# KEYS: run, leases, timers, queued, waiting   ARGV: run_id, reason, channel
CANCEL_LUA = (
    _NOW
    + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return -1 end
if st == 'completed' or st == 'failed' or st == 'cancelled' or st == 'skipped' then return 0 end
"""
    + RELEASE_SLOT
    + """
redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'error', ARGV[2], 'finished_at', now,
           'updated_at', now)
redis.call('HDEL', KEYS[1], 'owner', 'lease_until', 'wake_at')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('ZREM', KEYS[5], ARGV[1])
redis.call('PUBLISH', ARGV[3], ARGV[1] .. ' cancelled')
return 1
"""
)


@dataclass(frozen=True, slots=True)
class ReapResult:
    """Outcome of reaping one run: re-queued under ``job_id``, failed, or nothing to do."""

    job_id: str | None
    failed: bool = False


class Transitions:
    """Callable wrappers around the transition scripts."""

    def __init__(self, redis: Redis, keys: Keys, max_reaps: int) -> None:
        self._keys = keys
        self._max_reaps = max_reaps
        self._finish = redis.register_script(FINISH_LUA)
        self._park = redis.register_script(PARK_LUA)
        self._wake = redis.register_script(WAKE_LUA)
        self._reap = redis.register_script(REAP_LUA)
        self._redispatch = redis.register_script(REDISPATCH_LUA)
        self._cancel = redis.register_script(CANCEL_LUA)
        self._park_waiting = redis.register_script(PARK_WAITING_LUA)
        self._resolve = redis.register_script(RESOLVE_LUA)

    def job_prefix(self, run_id: str) -> str:
        """RQ job ids of a run are ``<prefix>-<run id>-<dispatch number>``."""
        return f"{self._keys.prefix}-{run_id}-"

    def finish(
        self, run_id: str, token: str, status: str, output: str, error: str, active_ms: int
    ) -> bool:
        """Complete or fail a held run. False when fenced out."""
        k = self._keys
        return bool(
            self._finish(
                keys=[k.run(run_id), k.leases],
                args=[run_id, token, status, output, error, active_ms, k.notify_channel],
            )
        )

    def park(self, run_id: str, token: str, status: str, wake_ms: int, active_ms: int) -> bool:
        """Park a held run until ``wake_ms``. False when fenced out."""
        k = self._keys
        return bool(
            self._park(
                keys=[k.run(run_id), k.leases, k.timers],
                args=[run_id, token, status, wake_ms, active_ms, k.notify_channel],
            )
        )

    def wake(self, run_id: str) -> str | None:
        """Queue a due sleeping run; the RQ job id to enqueue, or None."""
        k = self._keys
        jid = self._wake(
            keys=[k.run(run_id), k.timers, k.queued, k.waiting],
            args=[run_id, self.job_prefix(run_id)],
        )
        return str(jid) if jid else None

    def reap(self, run_id: str) -> ReapResult:
        """Take back a run whose lease expired."""
        k = self._keys
        res = self._reap(
            keys=[k.run(run_id), k.leases, k.queued],
            args=[run_id, self.job_prefix(run_id), self._max_reaps, k.notify_channel],
        )
        if not res:
            return ReapResult(job_id=None)
        if res == "failed":
            return ReapResult(job_id=None, failed=True)
        return ReapResult(job_id=str(res))

    def redispatch(self, run_id: str, expected_dispatch: str) -> str | None:
        """New dispatch id for a queued run whose RQ job vanished; None if not needed."""
        k = self._keys
        jid = self._redispatch(
            keys=[k.run(run_id), k.queued],
            args=[run_id, self.job_prefix(run_id), expected_dispatch],
        )
        return str(jid) if jid else None

    def cancel(self, run_id: str, reason: str) -> int:
        """1 cancelled, 0 already ended, -1 no such run."""
        k = self._keys
        return int(
            self._cancel(
                keys=[k.run(run_id), k.leases, k.timers, k.queued, k.waiting],
                args=[run_id, reason, k.notify_channel],
            )
        )

    def park_waiting(
        self,
        run_id: str,
        token: str,
        wake_ms: int | None,
        active_ms: int,
        waiter: tuple[str, str, str] | None = None,
    ) -> bool:
        """Park a held run in ``waiting``; ``waiter`` is (event name, field, match JSON)."""
        k = self._keys
        event, field, match = waiter or ("", "", "")
        return bool(
            self._park_waiting(
                keys=[k.run(run_id), k.leases, k.timers, k.waiting, k.waiters(event or "-")],
                args=[
                    run_id,
                    token,
                    "" if wake_ms is None else wake_ms,
                    active_ms,
                    k.notify_channel,
                    field,
                    match,
                ],
            )
        )

    def resolve(
        self,
        run_id: str,
        seq: int,
        *,
        status: str,
        output_json: str = "",
        error: str = "",
        check: tuple[str, str] = ("", ""),
        waiter: tuple[str, str] | None = None,
        ended_at: int = 0,
    ) -> str | None:
        """Resolve a waiting run's pending step (CAS); the RQ job id to enqueue, or None."""
        k = self._keys
        event, field = waiter or ("-", "")
        jid = self._resolve(
            keys=[k.run(run_id), k.steps(run_id), k.timers, k.queued, k.waiting, k.waiters(event)],
            args=[
                run_id,
                seq,
                check[0],
                check[1],
                status,
                output_json,
                error,
                self.job_prefix(run_id),
                field,
                ended_at,
            ],
        )
        return str(jid) if jid else None
