"""Run state transitions, each one Lua script so a transition is all-or-nothing.

Executor-side transitions (finish, park) carry the fencing token; scheduler-side ones (wake,
reap, redispatch) and cancel re-check the state they expect, so two schedulers or a racing
executor can never apply the same transition twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis import Redis

from loopwright.keys import Keys
from loopwright.runner.indexes import sig_index_keys, status_index_key
from loopwright.runner.lua import (
    CHECK_PARENT,
    CHECK_SLOT,
    CHILD_OUTCOME,
    ENDED,
    NOW,
    RESOLVE_PENDING,
    StaleDeclarationError,
    call_named,
    checked,
)
from loopwright.runner.records import now_ms
from loopwright.runner.rollup import AT, Ending, rollup_declaration
from loopwright.scripts import NAMED

# Every script below re-checks the state it expects before writing, so it is safe to call
# twice or from two processes. Keys derived from the run record (``conc_slot``, the parent)
# are declared by the caller and verified by the script (``runner/lua.py``).

# Atomically: end a run the caller holds (completed or failed): record output, error and
# active time, drop its lease, then the shared terminal bookkeeping (``run_ended``: free the
# slot, index it in ``ended``, announce it, resolve its waiting parent's invoke step).
# KEYS (named): run, leases, ended, timers, queued, waiting; slot (when the run holds one);
#   parent_run, parent_steps (when it has a parent)
# ARGV (named): run_id, token, status, output ('' = none), error ('' = none), active_ms, channel;
#   parent, parent_seq, parent_job_prefix (when it has a parent)
# Returns {1, parent job id or ''}, or {0, ''} when fenced out.
FINISH_LUA = (
    NOW
    + NAMED
    + AT
    + CHECK_SLOT
    + CHECK_PARENT
    + ENDED
    + """
local cur = redis.call('HMGET', K.run, 'fence', 'status')
if cur[1] ~= A.token or cur[2] ~= 'running' then return {0, ''} end
local bad = stale(K.run, K.slot) or stale_parent(K.run, A.parent, A.parent_seq)
  or stale_rollup()
if bad then return bad end
redis.call('HSET', K.run, 'status', A.status, 'finished_at', now, 'updated_at', now)
if A.output ~= '' then redis.call('HSET', K.run, 'output', A.output) end
if A.error ~= '' then redis.call('HSET', K.run, 'error', A.error) end
redis.call('HINCRBY', K.run, 'active_ms', A.active_ms)
redis.call('HDEL', K.run, 'owner', 'lease_until')
redis.call('ZREM', K.leases, A.run_id)
return {1, run_ended(A.run_id, A.status, now)}
"""
)

# Atomically: park a run the caller holds until wake time (sleep or retry backoff): free its
# concurrency slot, add the active time, drop the lease and register the timer.
# KEYS: run, leases, timers, [slot: the run's conc_slot, only when it holds one]
# ARGV: run_id, token, status, wake_ms, active_ms, channel
PARK_LUA = (
    NOW
    + CHECK_SLOT
    + """
local cur = redis.call('HMGET', KEYS[1], 'fence', 'status')
if cur[1] ~= ARGV[2] or cur[2] ~= 'running' then return 0 end
local bad = stale(KEYS[1], KEYS[4])
if bad then return bad end
if KEYS[4] then redis.call('ZREM', KEYS[4], ARGV[1]) end
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
# pending step): free its slot, register its event waiter and its optional deadline timer,
# index it in ``waiting``; and when it waits for a child run that has already ended, resolve
# the pending step with the child's outcome at once. Because a child's end (``run_ended``) and
# this park are each one script, one of the two always sees the other: no parent is left
# waiting for a child that ended in between.
# KEYS (named): run, steps, leases, timers, queued, waiting; waiters (when waiting for an
#   event); child (the child run, when waiting for one); slot (when the run holds one)
# ARGV (named): run_id, token, wake_ms (absent = no deadline), active_ms, channel, job_prefix;
#   waiter_field, waiter_match (event); child, seq (child run id and the invoke step)
# Returns {1, job id to enqueue when the child had already ended, else ''}, or {0, ''}.
PARK_WAITING_LUA = (
    NOW
    + NAMED
    + CHECK_SLOT
    + RESOLVE_PENDING
    + CHILD_OUTCOME
    + """
local cur = redis.call('HMGET', K.run, 'fence', 'status')
if cur[1] ~= A.token or cur[2] ~= 'running' then return {0, ''} end
local bad = stale(K.run, K.slot)
if bad then return bad end
if K.slot then redis.call('ZREM', K.slot, A.run_id) end
redis.call('HSET', K.run, 'status', 'waiting', 'updated_at', now)
redis.call('HINCRBY', K.run, 'active_ms', A.active_ms)
redis.call('HDEL', K.run, 'owner', 'lease_until')
redis.call('ZREM', K.leases, A.run_id)
if A.wake_ms then
  redis.call('HSET', K.run, 'wake_at', A.wake_ms)
  redis.call('ZADD', K.timers, A.wake_ms, A.run_id)
end
if K.waiters then redis.call('HSET', K.waiters, A.waiter_field, A.waiter_match) end
redis.call('ZADD', K.waiting, now, A.run_id)
redis.call('PUBLISH', A.channel, A.run_id .. ' waiting')
if not K.child then return {1, ''} end
local cst = redis.call('HGET', K.child, 'status')
if cst ~= 'completed' and cst ~= 'failed' and cst ~= 'cancelled' and cst ~= 'skipped' then
  return {1, ''}
end
local st, out, err = child_outcome(K.child, A.child)
local jid = resolve_pending({run = K.run, steps = K.steps, timers = K.timers, queued = K.queued,
  waiting = K.waiting, run_id = A.run_id, seq = tostring(A.seq), check_field = 'child',
  check_value = A.child, status = st, output = out, error = err, job_prefix = A.job_prefix,
  ended_at = now, now = now})
return {1, jid or ''}
"""
)

# Atomically (compare-and-set): resolve the pending step ``seq`` of a waiting run — with an
# event's payload, or a child run's output or error — and queue the run. Nothing happens when
# the run is no longer waiting or the record is no longer that pending step, so the router,
# a child's end and the scheduler's legacy pass can all try without doubling anything.
# KEYS: run, steps, timers, queued, waiting, [waiters: only when resolving an event waiter]
# ARGV: run_id, seq, check field ('' = none), check value, new status, output JSON ('' = none),
#   error ('' = none), job prefix, waiter field ('' = none), ended_at ms
# Returns the run's new RQ job id, or false.
RESOLVE_LUA = (
    NOW
    + RESOLVE_PENDING
    + """
if KEYS[6] then redis.call('HDEL', KEYS[6], ARGV[9]) end
return resolve_pending({run = KEYS[1], steps = KEYS[2], timers = KEYS[3], queued = KEYS[4],
  waiting = KEYS[5], run_id = ARGV[1], seq = ARGV[2], check_field = ARGV[3],
  check_value = ARGV[4], status = ARGV[5], output = ARGV[6], error = ARGV[7],
  job_prefix = ARGV[8], ended_at = ARGV[10], now = now})
"""
)

# Atomically: move a due sleeping (or waiting, at its deadline) run back to queued with a new
# dispatch id. Returns the RQ job id to enqueue, or false when the run is no longer parked
# (cancelled, already woken, resolved).
# KEYS: run, timers, queued, waiting   ARGV: run_id, job_prefix
WAKE_LUA = (
    NOW
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
# executor's late writes are refused and frees its slot, then re-queues the run — or, after too
# many lost executors, fails it with the shared terminal bookkeeping (``run_ended``): a run
# that keeps killing workers must not loop forever, and its parent must learn it failed.
# KEYS (named): run, leases, queued, ended, timers, waiting; slot; parent_run, parent_steps
# ARGV (named): run_id, job_prefix, max_reaps, channel; parent, parent_seq, parent_job_prefix
# Returns {job id to enqueue, ''}, {'failed', parent job id or ''}, or {'', ''} (nothing to do).
REAP_LUA = (
    NOW
    + NAMED
    + AT
    + CHECK_SLOT
    + CHECK_PARENT
    + ENDED
    + """
local cur = redis.call('HMGET', K.run, 'status', 'lease_until')
if cur[1] ~= 'running' then redis.call('ZREM', K.leases, A.run_id) return {'', ''} end
if tonumber(cur[2] or '0') > now then return {'', ''} end
local bad = stale(K.run, K.slot) or stale_parent(K.run, A.parent, A.parent_seq)
  or stale_rollup()
if bad then return bad end
if K.slot then redis.call('ZREM', K.slot, A.run_id) end
redis.call('HINCRBY', K.run, 'fence', 1)
local reaps = redis.call('HINCRBY', K.run, 'reaps', 1)
redis.call('HDEL', K.run, 'owner', 'lease_until')
redis.call('ZREM', K.leases, A.run_id)
if reaps > tonumber(A.max_reaps) then
  redis.call('HSET', K.run, 'status', 'failed', 'finished_at', now, 'updated_at', now,
    'error', 'the worker executing this run was lost ' .. reaps .. ' times; giving up')
  return {'failed', run_ended(A.run_id, 'failed', now)}
end
local jid = A.job_prefix .. redis.call('HINCRBY', K.run, 'dispatches', 1)
redis.call('HSET', K.run, 'status', 'queued', 'dispatch', jid, 'updated_at', now)
redis.call('ZADD', K.queued, now, A.run_id)
return {jid, ''}
"""
)

# Atomically: give a queued run whose RQ job vanished (worker died between dequeue and lease,
# or a process died between creating or resolving a run and enqueueing it) a fresh dispatch
# id, but only if nothing else dispatched it meanwhile.
# KEYS: run, queued   ARGV: run_id, job_prefix, expected_dispatch
REDISPATCH_LUA = (
    NOW
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
# refused), drop it from every index the scheduler scans, then the shared terminal bookkeeping
# (``run_ended``: free the slot, index it in ``ended``, announce it, resolve a waiting parent).
# KEYS (named): run, leases, timers, queued, waiting, ended; slot; parent_run, parent_steps
# ARGV (named): run_id, reason, channel; parent, parent_seq, parent_job_prefix
# Returns {1, parent job id or ''}, {0, ''} when it had already ended, {-1, ''} when unknown.
CANCEL_LUA = (
    NOW
    + NAMED
    + AT
    + CHECK_SLOT
    + CHECK_PARENT
    + ENDED
    + """
local st = redis.call('HGET', K.run, 'status')
if not st then return {-1, ''} end
if st == 'completed' or st == 'failed' or st == 'cancelled' or st == 'skipped' then
  return {0, ''}
end
local bad = stale(K.run, K.slot) or stale_parent(K.run, A.parent, A.parent_seq)
  or stale_rollup()
if bad then return bad end
redis.call('HINCRBY', K.run, 'fence', 1)
redis.call('HSET', K.run, 'status', 'cancelled', 'error', A.reason, 'finished_at', now,
           'updated_at', now)
redis.call('HDEL', K.run, 'owner', 'lease_until', 'wake_at')
redis.call('ZREM', K.leases, A.run_id)
redis.call('ZREM', K.timers, A.run_id)
redis.call('ZREM', K.queued, A.run_id)
redis.call('ZREM', K.waiting, A.run_id)
return {1, run_ended(A.run_id, 'cancelled', now)}
"""
)


@dataclass(frozen=True, slots=True)
class Declared:
    """What a caller read about a run: the keys its scripts derive from the record.

    ``slot`` is the run's ``conc_slot``; ``parent``/``parent_seq`` the parent run and its
    invoke step (both set, or neither). The scripts verify them (``runner/lua.py``).
    """

    slot: str | None = None
    parent: str | None = None
    parent_seq: int | None = None
    skill: str = ""
    version: str = ""

    @classmethod
    def of(cls, h: dict[str, str]) -> Declared:
        """From the run hash (or the subset ``conc_slot``, ``parent``, ``parent_seq``,
        ``skill``, ``version``; the last two name the run's rollup)."""
        parent, seq = h.get("parent") or None, h.get("parent_seq") or None
        slot, skill, version = h.get("conc_slot") or None, h.get("skill", ""), h.get("version", "")
        if parent is None or seq is None:
            return cls(slot=slot, skill=skill, version=version)
        return cls(slot, parent, int(seq), skill, version)


@dataclass(frozen=True, slots=True)
class Applied:
    """A transition's outcome: applied or not, and a job id the caller must enqueue after it
    (a resumed parent, or the run itself when its child had already ended). A crash before
    that enqueue is harmless: the run sits in ``queued`` and the lost-dispatch check
    re-dispatches it."""

    ok: bool
    job_id: str | None = None

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True, slots=True)
class ReapResult:
    """Outcome of reaping one run: re-queued under ``job_id``, failed, or nothing to do;
    ``parent_job`` is the job of a parent the failure resumed."""

    job_id: str | None
    failed: bool = False
    parent_job: str | None = None


class Transitions:
    """Callable wrappers around the transition scripts."""

    def __init__(self, redis: Redis, keys: Keys, max_reaps: int) -> None:
        self._redis = redis
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

    def declared(self, run_id: str) -> Declared:
        """Read the run's slot and parent, to declare them to a script."""
        names = ["conc_slot", "parent", "parent_seq", "skill", "version"]
        h = self._redis.hmget(self._keys.run(run_id), names)
        return Declared.of(
            {n: str(x) if x is not None else "" for n, x in zip(names, h, strict=True)}
        )

    def _ended_keys(self, run_id: str, d: Declared, status: str) -> dict[str, str | None]:
        """The keys ``run_ended`` touches, for a run with declaration ``d`` ending with
        ``status`` (its rollup's and its signature index are added by :meth:`_rollup`)."""
        k = self._keys
        return {
            "by_status": status_index_key(k, status),
            "run": k.run(run_id),
            "leases": k.leases,
            "ended": k.ended,
            "timers": k.timers,
            "queued": k.queued,
            "waiting": k.waiting,
            "slot": d.slot,
            "parent_run": k.run(d.parent) if d.parent else None,
            "parent_steps": k.steps(d.parent) if d.parent else None,
        }

    def _rollup(
        self, keys: dict[str, str | None], args: dict[str, Any], d: Declared, ending: Ending
    ) -> tuple[dict[str, str | None], dict[str, Any]]:
        """``keys`` and ``args`` plus the rollup's (``runner/rollup.py``), for ``run_ended``."""
        rk, ra = rollup_declaration(self._keys, d.skill, d.version, ending, now_ms())
        # The signature's index (issue 13), when the rollup gives the run one.
        ik = sig_index_keys(self._keys, ra.get("sig"))
        return {**keys, **rk, **ik}, {**args, **ra}

    def _parent_args(self, d: Declared) -> dict[str, Any]:
        if not d.parent:
            return {}
        return {
            "parent": d.parent,
            "parent_seq": d.parent_seq,
            "parent_job_prefix": self.job_prefix(d.parent),
        }

    def _declaring(self, run_id: str, d: Declared | None, call: Callable[[Declared], Any]) -> Any:
        """Call with declaration ``d`` (read first when None); once more after a fresh read when
        the script finds it stale."""
        try:
            return call(d if d is not None else self.declared(run_id))
        except StaleDeclarationError:
            return call(self.declared(run_id))

    def finish(
        self,
        run_id: str,
        token: str,
        status: str,
        output: str,
        error: str,
        active_ms: int,
        declared: Declared | None = None,
        ending: Ending | None = None,
    ) -> Applied:
        """Complete or fail a held run (not applied when fenced out); ``job_id`` is a resumed
        parent's. ``declared`` comes from the acquired run hash; None assumes no slot and no
        parent (one more round trip when the run has either). ``ending`` says who is to blame
        and the failing step, for the rollup (default: the skill; ``error`` is signed)."""
        end = ending or Ending(error=error)

        def call(d: Declared) -> Any:
            return call_named(
                self._finish,
                *self._rollup(self._ended_keys(run_id, d, status), {
                    "run_id": run_id,
                    "token": str(token),
                    "status": status,
                    "output": output,
                    "error": error,
                    "active_ms": int(active_ms),
                    "channel": self._keys.run_changes_channel,
                    **self._parent_args(d),
                }, d, end),
            )  # fmt: skip

        ok, job = self._declaring(run_id, declared or Declared(), call)
        return Applied(bool(int(ok)), str(job) or None)

    def park(
        self,
        run_id: str,
        token: str,
        status: str,
        wake_ms: int,
        active_ms: int,
        slot: str | None = None,
    ) -> bool:
        """Park a held run until ``wake_ms``. False when fenced out."""
        k = self._keys

        def call(d: Declared) -> Any:
            keys = [k.run(run_id), k.leases, k.timers] + ([d.slot] if d.slot else [])
            args = [run_id, token, status, wake_ms, active_ms, k.run_changes_channel]
            return checked(self._park, keys=keys, args=args)

        return bool(self._declaring(run_id, Declared(slot=slot), call))

    def wake(self, run_id: str) -> str | None:
        """Queue a due sleeping run; the RQ job id to enqueue, or None."""
        k = self._keys
        jid = self._wake(
            keys=[k.run(run_id), k.timers, k.queued, k.waiting],
            args=[run_id, self.job_prefix(run_id)],
        )
        return str(jid) if jid else None

    def reap(self, run_id: str) -> ReapResult:
        """Take back a run whose lease expired (reads its declaration first)."""

        def call(d: Declared) -> Any:
            keys = self._ended_keys(run_id, d, "failed")
            args = {
                "run_id": run_id,
                "job_prefix": self.job_prefix(run_id),
                "max_reaps": self._max_reaps,
                "channel": self._keys.run_changes_channel,
                **self._parent_args(d),
            }
            return call_named(self._reap, *self._rollup(keys, args, d, ending))

        # The message the script writes when it gives up (the count is always max_reaps + 1):
        # a platform failure, never the skill's.
        lost = f"the worker executing this run was lost {self._max_reaps + 1} times; giving up"
        ending = Ending(origin="platform", error=lost)

        res, parent_job = (str(x) for x in self._declaring(run_id, None, call))
        if res == "failed":
            return ReapResult(job_id=None, failed=True, parent_job=parent_job or None)
        return ReapResult(job_id=res or None)

    def redispatch(self, run_id: str, expected_dispatch: str) -> str | None:
        """New dispatch id for a queued run whose RQ job vanished; None if not needed."""
        k = self._keys
        jid = self._redispatch(
            keys=[k.run(run_id), k.queued],
            args=[run_id, self.job_prefix(run_id), expected_dispatch],
        )
        return str(jid) if jid else None

    def cancel(
        self, run_id: str, reason: str, ending: Ending | None = None
    ) -> tuple[int, str | None]:
        """(1 cancelled, 0 already ended, -1 no such run; job id of a resumed parent).
        The reason is signed for the rollup; a cancel is not a failure of either origin."""
        end = ending or Ending(error=reason)

        def call(d: Declared) -> Any:
            args = {
                "run_id": run_id,
                "reason": reason,
                "channel": self._keys.run_changes_channel,
                **self._parent_args(d),
            }
            return call_named(
                self._cancel, *self._rollup(self._ended_keys(run_id, d, "cancelled"), args, d, end)
            )

        code, job = self._declaring(run_id, None, call)
        return int(code), str(job) or None

    def park_waiting(
        self,
        run_id: str,
        token: str,
        wake_ms: int | None,
        active_ms: int,
        waiter: tuple[str, str, str] | None = None,
        child: tuple[str, int] | None = None,
        slot: str | None = None,
    ) -> Applied:
        """Park a held run in ``waiting``; ``waiter`` is (event name, field, match JSON),
        ``child`` (child run id, invoke step). ``job_id`` is set when the child had already
        ended and the run is queued again: the caller enqueues it."""
        k = self._keys
        event, field, match = waiter or ("", "", "")
        child_id, seq = child or ("", 0)

        def call(d: Declared) -> Any:
            keys: dict[str, str | None] = {
                "run": k.run(run_id),
                "steps": k.steps(run_id),
                "leases": k.leases,
                "timers": k.timers,
                "queued": k.queued,
                "waiting": k.waiting,
                "waiters": k.waiters(event) if event else None,
                "child": k.run(child_id) if child_id else None,
                "slot": d.slot,
            }
            args = {
                "run_id": run_id,
                "token": str(token),
                "wake_ms": wake_ms,
                "active_ms": int(active_ms),
                "channel": k.run_changes_channel,
                "job_prefix": self.job_prefix(run_id),
                "waiter_field": field if event else None,
                "waiter_match": match if event else None,
                "child": child_id or None,
                "seq": seq if child_id else None,
            }
            return call_named(self._park_waiting, keys, args)

        ok, job = self._declaring(run_id, Declared(slot=slot), call)
        return Applied(bool(int(ok)), str(job) or None)

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
        keys = [k.run(run_id), k.steps(run_id), k.timers, k.queued, k.waiting]
        if waiter is not None:
            keys.append(k.waiters(waiter[0]))
        jid = self._resolve(
            keys=keys,
            args=[
                run_id,
                seq,
                check[0],
                check[1],
                status,
                output_json,
                error,
                self.job_prefix(run_id),
                waiter[1] if waiter is not None else "",
                ended_at,
            ],
        )
        return str(jid) if jid else None
