"""Leases with fencing tokens: at most one executor writes to a run at a time.

Taking a run increments its ``fence``; every later write (checkpoint, park, finish) passes the
token and is rejected by its Lua script when the fence has moved on. Lease times come from the
Redis server's clock (``TIME``), so workers on machines with skewed clocks still agree.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis
from redis.exceptions import RedisError

from loopwright.keys import Keys
from loopwright.runner.lua import CHECK_SLOT, StaleDeclarationError, checked

log = logging.getLogger(__name__)

# Atomically: take the run if it is queued (or running with an expired lease) and, for a skill
# with a concurrency limit, a slot is free (else park it briefly, with backoff and jitter, and
# let the scheduler retry it); bump the fence and the attempt counter, register the lease, and
# return the run and its checkpoints, so a worker starts executing after one round trip.
# KEYS: run, steps, leases, queued, timers, [slot: the run's conc_slot, only when it holds one;
#   verified against the record, LW-STALE when it differs]
# ARGV: run_id, owner, ttl_ms
# Returns {'ok', token, server now ms, run hash, steps hash} or {reason, status}.
ACQUIRE_LUA = (
    CHECK_SLOT
    + """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return {'missing'} end
if st == 'completed' or st == 'failed' or st == 'cancelled' or st == 'skipped' then
  return {'terminal', st}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if st == 'running' then
  local lu = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if lu > now then return {'busy'} end
elseif st ~= 'queued' then
  return {'parked', st}
end
local bad = stale(KEYS[1], KEYS[6])
if bad then return bad end
local until_ms = now + tonumber(ARGV[3])
local slot = KEYS[6]
if slot then
  redis.call('ZREMRANGEBYSCORE', slot, '-inf', now)
  local limit = tonumber(redis.call('HGET', KEYS[1], 'conc_limit') or '1')
  if not redis.call('ZSCORE', slot, ARGV[1]) and redis.call('ZCARD', slot) >= limit then
    local n = redis.call('HINCRBY', KEYS[1], 'throttles', 1)
    local wake = now + math.min(1000, 20 * 2 ^ math.min(n, 6)) + math.random(0, 40)
    redis.call('HSET', KEYS[1], 'status', 'sleeping', 'wake_at', wake, 'updated_at', now)
    redis.call('ZADD', KEYS[5], wake, ARGV[1])
    redis.call('ZREM', KEYS[4], ARGV[1])
    return {'throttled'}
  end
  redis.call('ZADD', slot, until_ms, ARGV[1])
end
local fence = redis.call('HINCRBY', KEYS[1], 'fence', 1)
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'owner', ARGV[2], 'lease_until', until_ms,
           'updated_at', now)
if not redis.call('HGET', KEYS[1], 'started_at') then
  redis.call('HSET', KEYS[1], 'started_at', now)
end
redis.call('ZADD', KEYS[3], until_ms, ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
return {'ok', tostring(fence), tostring(now), redis.call('HGETALL', KEYS[1]),
        redis.call('HGETALL', KEYS[2])}
"""
)

# Atomically: extend the lease (and the concurrency slot it holds, which expires with it) only
# if the caller still holds the fence and the run is running.
# KEYS: run, leases, [slot: the run's conc_slot, only when it holds one; verified]
# ARGV: run_id, token, ttl_ms
# Returns 1, or 0 when the lease is lost.
RENEW_LUA = (
    CHECK_SLOT
    + """
local cur = redis.call('HMGET', KEYS[1], 'fence', 'status')
if cur[1] ~= ARGV[2] or cur[2] ~= 'running' then return 0 end
local bad = stale(KEYS[1], KEYS[3])
if bad then return bad end
local t = redis.call('TIME')
local until_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'lease_until', until_ms)
redis.call('ZADD', KEYS[2], until_ms, ARGV[1])
if KEYS[3] then redis.call('ZADD', KEYS[3], 'XX', until_ms, ARGV[1]) end
return 1
"""
)


@dataclass(slots=True)
class Acquired:
    """The result of a successful acquire: token, server time, run hash and raw checkpoints."""

    token: str
    server_now_ms: int
    run: dict[str, str]
    steps: dict[str, str]

    @property
    def slot(self) -> str | None:
        """The concurrency slot key the run holds (declared to later scripts), if any."""
        return self.run.get("conc_slot") or None


@dataclass(slots=True)
class AcquireRefused:
    """Why a run was not taken: missing, terminal, busy (leased elsewhere) or parked."""

    reason: str
    status: str | None = None


def _pairs(flat: list[Any]) -> dict[str, str]:
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


class Leases:
    """Acquire and renew run leases (the Lua scripts above)."""

    def __init__(self, redis: Redis, keys: Keys, ttl_s: float) -> None:
        self._redis = redis
        self._keys = keys
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self._acquire = redis.register_script(ACQUIRE_LUA)
        self._renew = redis.register_script(RENEW_LUA)

    def slot_of(self, run_id: str) -> str | None:
        """The concurrency slot key stored on the run (None when it has none)."""
        raw = self._redis.hget(self._keys.run(run_id), "conc_slot")
        return str(raw) if raw else None

    def acquire(
        self, run_id: str, holder: str, slot: str | None = None
    ) -> Acquired | AcquireRefused:
        """Take ``run_id`` for ``holder`` (a process's ``Runtime.instance_id``, stored as the
        run's ``owner`` field) or say why not. ``slot`` declares the run's
        concurrency slot; when it is wrong (or unknown: None) for a run that holds one, the
        slot is read and the acquire repeated, so only concurrency-limited runs pay for it."""
        k = self._keys
        base = [k.run(run_id), k.steps(run_id), k.leases, k.queued, k.timers]
        args = [run_id, holder, self.ttl_ms]
        try:
            res = checked(self._acquire, keys=base + ([slot] if slot else []), args=args)
        except StaleDeclarationError:
            slot = self.slot_of(run_id)
            res = checked(self._acquire, keys=base + ([slot] if slot else []), args=args)
        if res[0] != "ok":
            return AcquireRefused(reason=str(res[0]), status=str(res[1]) if len(res) > 1 else None)
        return Acquired(
            token=str(res[1]), server_now_ms=int(res[2]), run=_pairs(res[3]), steps=_pairs(res[4])
        )

    def renew(self, run_id: str, token: str, slot: str | None = None) -> bool:
        """Extend the lease; False when the fence moved on (taken over or cancelled).

        ``slot`` declares the run's concurrency slot; ``StaleDeclarationError`` when it is wrong
        (the caller reads it with :meth:`slot_of` and renews again)."""
        k = self._keys
        keys = [k.run(run_id), k.leases] + ([slot] if slot else [])
        return bool(checked(self._renew, keys=keys, args=[run_id, token, self.ttl_ms]))


# A lease confirmed less than this fraction of its TTL ago is trusted without asking Redis. The
# keeper renews at TTL/2, so in normal operation no step pays a round trip; an executor that was
# paused (SIGSTOP, a long GC, a stalled VM) finds its confirmation stale and asks first.
TRUST_FRACTION = 0.6


class HeldLease:
    """A lease this process holds: its token, when it was last known valid, and a lost flag.

    ``confirmed`` is a monotonic time taken *before* the Redis call that proved the lease, so
    the lease was valid until at least ``confirmed + ttl`` (the server adds the TTL to its own,
    later, clock). Another executor can only take the run after that, which is what makes
    :meth:`ensure` before a step body a guarantee that no finished step starts again.
    """

    def __init__(
        self,
        leases: Leases,
        run_id: str,
        token: str,
        confirmed: float,
        slot: str | None = None,
    ) -> None:
        self._leases = leases
        self.run_id = run_id
        self.token = token
        self.confirmed = confirmed
        self.slot = slot
        self.lost = threading.Event()

    def renew(self) -> bool:
        """Extend the lease now; False once it is lost. Raises ``RedisError`` when unreachable."""
        if self.lost.is_set():
            return False
        t0 = time.monotonic()
        try:
            ok = self._leases.renew(self.run_id, self.token, self.slot)
        except StaleDeclarationError:
            self.slot = self._leases.slot_of(self.run_id)
            ok = self._leases.renew(self.run_id, self.token, self.slot)
        if ok:
            self.confirmed = max(self.confirmed, t0)
            return True
        self.lost.set()
        return False

    def ensure(self) -> bool:
        """True when the lease is held right now, asking Redis if the last proof is stale.

        An unreachable Redis counts as held while the last proof is younger than the TTL, and as
        lost after: past that point another executor may legitimately own the run.
        """
        if self.lost.is_set():
            return False
        ttl_s = self._leases.ttl_ms / 1000.0
        age = time.monotonic() - self.confirmed
        if age < ttl_s * TRUST_FRACTION:
            return True
        try:
            return self.renew()
        except RedisError as exc:
            if time.monotonic() - self.confirmed < ttl_s:
                return True
            log.warning("run %s: lease cannot be confirmed (%s); stopping", self.run_id, exc)
            self.lost.set()
            return False


class LeaseKeeper:
    """One daemon thread per worker process that renews every held lease at half its TTL.

    A renewal refused by the fence marks the lease lost; the executor checks the lease (see
    :meth:`HeldLease.ensure`) before each step body and stops. A renewal that fails because
    Redis is down is retried on the next tick; if the lease expires meanwhile, the fence keeps
    the late writer out.
    """

    def __init__(self, leases: Leases) -> None:
        self._leases = leases
        self._held: dict[str, HeldLease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, run_id: str, token: str, confirmed: float, slot: str | None = None) -> HeldLease:
        """Start renewing ``run_id``, acquired by a call that began at monotonic ``confirmed``
        (``slot``: the concurrency slot key it holds, declared at each renewal)."""
        held = HeldLease(self._leases, run_id, token, confirmed, slot)
        with self._lock:
            self._held[run_id] = held
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="loopwright-lease-keeper", daemon=True
                )
                self._thread.start()
        return held

    def release(self, run_id: str) -> None:
        """Stop renewing ``run_id``."""
        with self._lock:
            self._held.pop(run_id, None)

    def stop(self) -> None:
        """Stop the renewal thread."""
        self._stop.set()

    def _loop(self) -> None:
        interval = self._leases.ttl_ms / 2000.0
        while not self._stop.wait(interval):
            with self._lock:
                items = list(self._held.values())
            for held in items:
                try:
                    held.renew()
                except (RedisError, StaleDeclarationError) as exc:
                    log.warning("lease renewal for run %s failed: %s", held.run_id, exc)
