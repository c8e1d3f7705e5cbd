"""Per-version rollups, written by ``run_ended`` in the same script as every terminal transition.

One hash per (skill, version, UTC day), ``Keys.rollup``, summarises the runs that ended that
day, so stats for a year cost a few ``HGETALL``s and never a scan of runs. Because the update
runs inside the script that ends the run (finish, cancel, reaper give-up, skipped creation),
it happens exactly once with the transition; the run's ``rolled`` field (the day it was
counted in) guards against a second count, and the history package's ``unroll`` moves a run
back out when it is re-opened (a retry, issue 15).

Fields of a rollup hash (all integers unless said):

* ``runs``; ``status:<status>`` per terminal status; ``failed:<origin>`` (``skill`` or
  ``platform``) per failed run: a skill is never blamed for the platform
* ``steps``, ``attempts``, ``retries``: ended steps, their attempts, their attempts beyond the
  first (from the run's counters ``c_steps``/``c_attempts``/``c_retries``, kept by the
  checkpoint commit and the pending-step resolution, so nothing scans steps at the end)
* ``tokens_in``, ``tokens_out``, ``cost_micros``: ``ctx.step.llm`` usage (run counters
  ``c_tokens_in``... when the host knows them)
* ``dur:<b>`` a log-scale histogram of run durations: bucket 0 is < 10 ms, bucket ``b`` is
  [10·2^(b-1), 10·2^b) ms, bucket 31 is everything from 10·2^30 ms (12 days) up; ``dur_ms`` its
  sum. A run's duration is its end minus its ``created_at``: the wall time its trigger waited
  for, queueing, sleeps and waits included; ``active_ms`` sums execution time apart.
* ``sig:<hash>:n|msg|step|origin|first|last``: per error signature (``runner/signature.py``):
  count, a sample message (capped, redacted), the failing step and origin of the latest run,
  the first and the last run id
* ``fb_good``, ``fb_bad``: feedback counts (written by the feedback operation)

The day is the run's end day in UTC as the process that ends it sees its clock (the same
process computes the key it declares; a run ending at midnight lands on one of the two days and
records which in ``rolled``). ``Keys.rollup_index(skill)`` lists ``<day>:<version>`` by day so
stats read a window without SCAN. Both expire ``ROLLUP_TTL_DAYS`` after the day's first run
(set once, when the day's hash is created: the fold itself is one read and one write of the
hash and one write of the run, whatever the number of fields; the run's counters come with the
read that checks the declaration, ``stale_rollup``).

``A.now`` (an explicit end time in ms) replaces the server clock in the terminal scripts; only
the history seeder passes it (``history/seeder.py``), to write past weeks.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from loopwright.keys import Keys
from loopwright.runner.signature import sample, signature

ROLLUP_TTL_DAYS = 400
DURATION_BUCKETS = 32
FIRST_EDGE_MS = 10
ORIGINS = ("skill", "platform")

# Placed right after NAMED in a terminal script: the seeder's explicit end time.
AT = """
if A.now then now = tonumber(A.now) end
"""

# ``stale_rollup()``: an error reply unless the declared skill and version (``A.skill``,
# ``A.version``, from which the caller built ``K.rollup``) are the run's. Call before writing.
# The same read keeps the run's counters for ``rollup`` (one command less at the end): the
# script may change only ``active_ms`` in between, by ``A.active_ms`` (the finish script).
CHECK_ROLLUP = """
local function stale_rollup()
  local sv = redis.call('HMGET', K.run, 'skill', 'version', unpack(RUN_FIELDS))
  if sv[1] and (sv[1] ~= A.skill or sv[2] ~= A.version) then
    return redis.error_reply('LW-STALE rollup declared ' .. tostring(A.skill) .. ' '
      .. tostring(A.version) .. ', stored ' .. tostring(sv[1]) .. ' ' .. tostring(sv[2]))
  end
  run_read = {}
  for i = 1, #RUN_FIELDS do run_read[i] = sv[i + 2] end
  return nil
end
"""

# ``rollup(run_id, status, now)``: fold the ended run into ``K.rollup`` once (see the module
# doc); nothing when no rollup key is declared or the run was already counted.
ROLLUP = """
local RUN_FIELDS = {'rolled', 'created_at', 'active_ms', 'c_steps', 'c_attempts', 'c_retries',
  'c_tokens_in', 'c_tokens_out', 'c_cost_micros'}
local run_read = nil
local function rollup(run_id, status, now)
  if not K.rollup then return end
  local h = run_read
  if h then
    h[3] = tostring((tonumber(h[3] or '0') or 0) + (tonumber(A.active_ms or 0) or 0))
  else
    h = redis.call('HMGET', K.run, unpack(RUN_FIELDS))
  end
  if h[1] then return end
  local origin = A.origin or 'skill'
  local dur = now - (tonumber(h[2] or '') or now)
  if dur < 0 then dur = 0 end
  local b, edge = 0, 10
  while dur >= edge and b < 31 do b = b + 1; edge = edge * 2 end
  -- One read and one write of the rollup hash: every field it adds to, with its increment.
  local f = {'runs', 'status:' .. status, 'dur:' .. b, 'dur_ms'}
  local d = {1, 1, 1, dur}
  local names = {'active_ms', 'steps', 'attempts', 'retries', 'tokens_in', 'tokens_out',
    'cost_micros'}
  for i, name in ipairs(names) do
    local v = tonumber(h[i + 2] or '')
    if v and v ~= 0 then f[#f + 1] = name; d[#d + 1] = v end
  end
  if status == 'failed' then f[#f + 1] = 'failed:' .. origin; d[#d + 1] = 1 end
  local p = A.sig and ('sig:' .. A.sig .. ':') or nil
  if p then f[#f + 1] = p .. 'n'; d[#d + 1] = 1 end
  local r = K.rollup
  local cur = redis.call('HMGET', r, unpack(f))
  local w = {}
  for i = 1, #f do
    w[#w + 1] = f[i]
    w[#w + 1] = string.format('%d', (tonumber(cur[i] or '0') or 0) + d[i])
  end
  if p then
    if not cur[#f] then
      w[#w + 1] = p .. 'msg'; w[#w + 1] = A.sig_msg or ''
      w[#w + 1] = p .. 'first'; w[#w + 1] = run_id
    end
    w[#w + 1] = p .. 'last'; w[#w + 1] = run_id
    w[#w + 1] = p .. 'step'; w[#w + 1] = A.sig_step or ''
    w[#w + 1] = p .. 'origin'; w[#w + 1] = origin
  end
  redis.call('HSET', r, unpack(w))
  if p then
    redis.call('HSET', K.run, 'rolled', A.day, 'origin', origin, 'dur_bucket', b, 'dur_ms', dur,
      'sig', A.sig)
  else
    redis.call('HSET', K.run, 'rolled', A.day, 'origin', origin, 'dur_bucket', b, 'dur_ms', dur)
  end
  if cur[1] then return end
  -- The day's first run of this version: its TTL, and its place in the skill's index.
  redis.call('PEXPIRE', r, A.rollup_ttl_ms)
  redis.call('ZADD', K.rollup_index, tonumber(A.day), A.day .. ':' .. A.version)
  redis.call('ZREMRANGEBYSCORE', K.rollup_index, '-inf', '(' .. A.oldest_day)
  redis.call('PEXPIRE', K.rollup_index, A.rollup_ttl_ms)
end
"""


# ``unroll(run, rollup, day)``: take one ended run's contribution back out of ``rollup`` (its
# day's hash: status, origin, duration, counters, signature count) and clear its ``rolled``
# mark, so that its next end counts it again in the bucket of its new status. Nothing (0) when
# the run was not counted in ``day``; 1 when moved out. Used by ``history.rollups.unroll`` and
# inside the retry script (``runner/lua.py``), which re-opens the run in the same breath.
UNROLL = """
local function unroll(run, r, day)
  local h = redis.call('HMGET', run, 'rolled', 'status', 'origin', 'dur_bucket', 'dur_ms', 'sig',
    'active_ms', 'c_steps', 'c_attempts', 'c_retries', 'c_tokens_in', 'c_tokens_out',
    'c_cost_micros')
  if not h[1] or h[1] ~= day then return 0 end
  redis.call('HINCRBY', r, 'runs', -1)
  redis.call('HINCRBY', r, 'status:' .. h[2], -1)
  if h[2] == 'failed' then redis.call('HINCRBY', r, 'failed:' .. (h[3] or 'skill'), -1) end
  if h[4] then redis.call('HINCRBY', r, 'dur:' .. h[4], -1) end
  redis.call('HINCRBY', r, 'dur_ms', -(tonumber(h[5] or '0') or 0))
  if h[6] then redis.call('HINCRBY', r, 'sig:' .. h[6] .. ':n', -1) end
  local names = {'active_ms', 'steps', 'attempts', 'retries', 'tokens_in', 'tokens_out',
    'cost_micros'}
  for i, name in ipairs(names) do
    local v = tonumber(h[i + 6] or '')
    if v and v ~= 0 then redis.call('HINCRBY', r, name, -v) end
  end
  redis.call('HDEL', run, 'rolled', 'origin', 'dur_bucket', 'dur_ms', 'sig')
  return 1
end
"""


def utc_day(ms: int) -> str:
    """``yyyymmdd`` of a time in ms, in UTC."""
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y%m%d")


def duration_bucket(ms: int) -> int:
    """The histogram bucket of a duration (the same rule as the Lua above)."""
    b, edge = 0, FIRST_EDGE_MS
    while ms >= edge and b < DURATION_BUCKETS - 1:
        b, edge = b + 1, edge * 2
    return b


def bucket_upper_ms(b: int) -> float:
    """The upper edge of bucket ``b`` in ms (infinity for the last)."""
    return float("inf") if b >= DURATION_BUCKETS - 1 else float(FIRST_EDGE_MS * 2**b)


@dataclass(frozen=True, slots=True)
class Ending:
    """Why a run ends, for its rollup: who is to blame (``origin``: ``skill`` or ``platform``),
    the error text (its signature and sample; empty for a success), the failing step, and an
    explicit end time in ms (``now_ms``: the history seeder only; None = the server clock)."""

    origin: str = "skill"
    error: str = ""
    step: str = ""
    now_ms: int | None = None


def rollup_declaration(
    keys: Keys, skill: str, version: str, ending: Ending, clock_ms: int
) -> tuple[dict[str, str | None], dict[str, Any]]:
    """The keys and arguments ``run_ended`` needs to fold a run of ``skill``/``version`` into
    its day's rollup; ``clock_ms`` is the caller's now (ignored when ``ending.now_ms``)."""
    end = ending.now_ms if ending.now_ms is not None else clock_ms
    day = utc_day(end)
    oldest = utc_day(end - ROLLUP_TTL_DAYS * 86_400_000)
    if not skill:
        return {}, {}
    k: dict[str, str | None] = {
        "rollup": keys.rollup(skill, version, day),
        "rollup_index": keys.rollup_index(skill),
    }
    a: dict[str, Any] = {
        "skill": skill,
        "version": version,
        "day": day,
        "oldest_day": oldest,
        "origin": ending.origin if ending.origin in ORIGINS else "skill",
        "rollup_ttl_ms": ROLLUP_TTL_DAYS * 86_400_000,
        "now": ending.now_ms,
    }
    if ending.error:
        a.update(sig=signature(ending.error), sig_msg=sample(ending.error), sig_step=ending.step)
    return k, a
