"""Lua pieces shared by the runner's scripts, and the calling convention for named arguments.

Scripts with optional keys (a concurrency slot, a parent run) take **named** keys and
arguments (``loopwright.scripts``: ``K.run``, ``K.slot``... ``nil`` when not declared;
``A.token``...) instead of positions and placeholders. Every key a script touches is declared
in ``KEYS``.

Keys a script derives from the run record (its ``conc_slot``, its ``parent``) are declared by
the caller from what it read earlier; the script checks the declaration against the record
before it writes anything and answers ``LW-STALE`` when they differ, and the caller re-reads
and calls again (:class:`StaleDeclarationError`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from loopwright.errors import LoopwrightError
from loopwright.runner.indexes import INDEX_ENDED
from loopwright.runner.rollup import CHECK_ROLLUP, ROLLUP, UNROLL
from loopwright.scripts import NAMED, named

STALE = "LW-STALE"

# The server's clock in ms as ``now`` (leases and records agree across workers).
NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# ``stale(run, slot)``: an error reply unless ``slot`` (the declared concurrency slot key, nil
# for none) is the ``conc_slot`` stored on the run. Call it before any write.
CHECK_SLOT = f"""
local function stale(run, slot)
  local stored = redis.call('HGET', run, 'conc_slot')
  if (stored or nil) ~= slot then
    return redis.error_reply('{STALE} conc_slot declared ' .. tostring(slot) .. ', stored '
      .. tostring(stored))
  end
  return nil
end
"""

# ``stale_parent(run, parent, seq)``: an error reply unless the declared parent run id and
# invoke step (both nil for none) are the ones stored on the run. A parent stored without its
# step (``parent_seq``) has no step to resolve and counts as none, as in ``Declared.of``.
CHECK_PARENT = f"""
local function stale_parent(run, parent, seq)
  local h = redis.call('HMGET', run, 'parent', 'parent_seq')
  local p, s = h[1] or nil, h[2] or nil
  if p == '' or s == nil or s == '' then p, s = nil, nil end  -- a parent counts with its step
  if p ~= parent or (p ~= nil and tostring(s) ~= tostring(seq)) then
    return redis.error_reply('{STALE} parent declared ' .. tostring(parent) .. ', stored '
      .. tostring(p))
  end
  return nil
end
"""

# ``resolve_pending(r)``: compare-and-set the pending step ``r.seq`` of the waiting run
# ``r.run_id`` to ``r.status`` with ``r.output`` (JSON text, '' for none) or ``r.error``, and
# queue the run under a new dispatch id. Nothing happens (false) when the run is not waiting,
# the step is not pending, or its ``r.check_field`` differs from ``r.check_value``.
# ``r.run``, ``r.steps``, ``r.timers``, ``r.queued``, ``r.waiting`` are keys; returns the job id.
RESOLVE_PENDING = """
local function resolve_pending(r)
  if redis.call('HGET', r.run, 'status') ~= 'waiting' then return false end
  local raw = redis.call('HGET', r.steps, r.seq)
  if not raw then return false end
  local rec = cjson.decode(raw)
  if rec['status'] ~= 'pending' then return false end
  if r.check_field ~= '' and rec[r.check_field] ~= r.check_value then return false end
  rec['status'] = r.status
  rec['ended_at'] = tonumber(r.ended_at)
  rec['output'] = nil
  if r.error ~= '' then rec['error'] = r.error end
  local enc = cjson.encode(rec)
  if r.output ~= '' then enc = string.sub(enc, 1, -2) .. ',"output":' .. r.output .. '}' end
  redis.call('HSET', r.steps, r.seq, enc)
  local tries = tonumber(rec['attempts'] or 1) or 1
  redis.call('HINCRBY', r.run, 'c_steps', 1)
  redis.call('HINCRBY', r.run, 'c_attempts', tries)
  if tries > 1 then redis.call('HINCRBY', r.run, 'c_retries', tries - 1) end
  local jid = r.job_prefix .. redis.call('HINCRBY', r.run, 'dispatches', 1)
  redis.call('HSET', r.run, 'status', 'queued', 'dispatch', jid, 'updated_at', r.now)
  redis.call('HDEL', r.run, 'wake_at')
  redis.call('ZREM', r.timers, r.run_id)
  redis.call('ZREM', r.waiting, r.run_id)
  redis.call('ZADD', r.queued, r.now, r.run_id)
  return jid
end
"""

# ``child_outcome(child, child_id)``: what an ended child hands its parent's invoke step:
# status ('done'|'failed'), output JSON ('' for none), error text. Mirrors
# ``runner.execute.child_outcome`` (the Python side of the same rule).
CHILD_OUTCOME = """
local function child_outcome(child, child_id)
  local h = redis.call('HMGET', child, 'status', 'output', 'error', 'skill')
  if h[1] == 'completed' then
    if h[2] and h[2] ~= '' then return 'done', h[2], '' end
    return 'done', 'null', ''
  end
  local reason = h[3]
  if not reason or reason == '' then reason = h[1] end
  return 'failed', '', 'child run ' .. child_id .. ' (' .. (h[4] or '') .. ') ' .. h[1] .. ': '
    .. reason
end
"""

# ``run_ended(run_id, status, now)``: the bookkeeping every terminal path shares (finish,
# cancel, reaper give-up, skipped creation), in the same script as the transition: free the
# concurrency slot (``K.slot``), index the run in ``K.ended`` by end time, announce it on
# ``A.channel`` and, when it has a parent (``K.parent_run``, ``K.parent_steps`` declared with
# ``A.parent``, ``A.parent_seq``, ``A.parent_job_prefix``), resolve the parent's pending invoke
# step with this run's outcome; and first fold the run into its per-version rollup (``rollup``,
# ``runner/rollup.py``: ``K.rollup``, ``K.rollup_index`` and the ``A`` fields it names), then
# index it by status and signature (``index_ended``, ``runner/indexes.py``: ``K.by_status``,
# ``K.by_sig``, ``K.sigs``). Returns the parent's new job id ('' when none) to enqueue. Needs
# NAMED, RESOLVE_PENDING, CHILD_OUTCOME, ROLLUP and INDEX_ENDED before it; ``K.timers``,
# ``K.queued`` and ``K.waiting`` are declared whenever a parent is.
RUN_ENDED = """
local function run_ended(run_id, status, now)
  rollup(run_id, status, now)
  index_ended(run_id, status)
  if K.slot then redis.call('ZREM', K.slot, run_id) end
  redis.call('ZADD', K.ended, now, run_id)
  redis.call('PUBLISH', A.channel, run_id .. ' ' .. status)
  if not K.parent_run then return '' end
  local st, out, err = child_outcome(K.run, run_id)
  local jid = resolve_pending({run = K.parent_run, steps = K.parent_steps, timers = K.timers,
    queued = K.queued, waiting = K.waiting, run_id = A.parent, seq = tostring(A.parent_seq),
    check_field = 'child', check_value = run_id, status = st, output = out, error = err,
    job_prefix = A.parent_job_prefix, ended_at = now, now = now})
  return jid or ''
end
"""

ENDED = RESOLVE_PENDING + CHILD_OUTCOME + ROLLUP + CHECK_ROLLUP + INDEX_ENDED + RUN_ENDED


class StaleDeclarationError(LoopwrightError):
    """A script refused the keys the caller declared from an outdated read of the run."""


def call_named(
    script: Callable[..., Any], keys: dict[str, str | None], args: dict[str, Any]
) -> Any:
    """Call a script that uses ``NAMED`` (``loopwright.scripts``), checked."""
    named_keys, named_args = named(keys, args)
    return checked(script, keys=named_keys, args=named_args)


def checked(script: Callable[..., Any], **kw: Any) -> Any:
    """Call a script; its ``LW-STALE`` answer becomes :class:`StaleDeclarationError`."""
    try:
        return script(**kw)
    except ResponseError as exc:
        if str(exc).startswith(STALE):
            raise StaleDeclarationError(str(exc)) from None
        raise


# Atomically: re-open a failed or cancelled run for a retry (issue 15). Its checkpoints from
# the first unfinished step on (the failed, retrying or pending step and every record after
# it) are dropped with their large outputs, their share of the run's counters and of its
# storage quota; the finished ones before it are kept, so the retry replays them and executes
# from there. The run leaves its rollup bucket (``unroll``, in this same script: it is
# counted again, once, when it ends again), leaves ``ended`` (retention keeps a run that is not
# terminal) and goes back to ``queued`` under a new dispatch id with its fence advanced (a
# zombie of the old attempt stays refused), its lost-executor count and active time reset (a
# fresh timeout budget). A child run is retried only while its parent still waits for it.
# It also leaves its status and signature indexes (``runner/indexes.py``).
# KEYS (named): run, steps, queued, ended, timers, waiting, leases; rollup (when the run was
#   rolled up: its skill, version and ``rolled`` day); parent_run, parent_steps (when it has a
#   parent); o<seq> for every step output kept in its own key (``Keys.step_output``);
#   st_failed, st_cancelled (the status indexes); by_sig, sigs (when the run has a ``sig``)
# ARGV (named): run_id, job_prefix, skill, version, day (the ``rolled`` day read, absent when
#   none), channel; parent, parent_seq (when it has a parent); sig (the ``sig`` read, absent
#   when none)
# Returns {'ok', job id, first dropped seq (0 when none), records dropped}, or {reason, detail}:
# 'missing', 'status' (the status it has), 'parent' (the parent's status).
RETRY_LUA = (
    NOW
    + NAMED
    + CHECK_PARENT
    + UNROLL
    + f"""
local h = redis.call('HMGET', K.run, 'status', 'rolled', 'skill', 'version')
if not h[1] then return {{'missing', ''}} end
if h[1] ~= 'failed' and h[1] ~= 'cancelled' then return {{'status', h[1]}} end
if (h[2] or nil) ~= A.day or h[3] ~= A.skill or h[4] ~= A.version then
  return redis.error_reply('{STALE} retry declared ' .. tostring(A.day) .. ', stored '
    .. tostring(h[2]))
end
local sig = redis.call('HGET', K.run, 'sig')
if (sig or nil) ~= A.sig or (sig and not K.by_sig) then
  return redis.error_reply('{STALE} retry declared sig ' .. tostring(A.sig) .. ', stored '
    .. tostring(sig))
end
local bad = stale_parent(K.run, A.parent, A.parent_seq)
if bad then return bad end
if K.parent_run then
  local ps = redis.call('HGET', K.parent_run, 'status')
  local raw = redis.call('HGET', K.parent_steps, tostring(A.parent_seq))
  local rec = raw and cjson.decode(raw) or {{}}
  if ps ~= 'waiting' or rec['status'] ~= 'pending' or rec['child'] ~= A.run_id then
    return {{'parent', tostring(ps)}}
  end
end
local all = redis.call('HGETALL', K.steps)
local first = nil
local recs = {{}}
for i = 1, #all, 2 do
  local seq = tonumber(all[i])
  local rec = cjson.decode(all[i + 1])
  recs[seq] = {{rec, string.len(all[i + 1])}}
  if rec['status'] ~= 'done' and (first == nil or seq < first) then first = seq end
end
for seq, r in pairs(recs) do
  if first and seq >= first and r[1]['ref'] and not K['o' .. seq] then
    return redis.error_reply('{STALE} retry: output key of step ' .. seq .. ' not declared')
  end
end
if K.rollup and redis.call('EXISTS', K.rollup) == 1 then
  unroll(K.run, K.rollup, A.day)
else  -- its day's rollup expired (a pinned run older than the rollup TTL): nothing to undo
  redis.call('HDEL', K.run, 'rolled', 'origin', 'dur_bucket', 'dur_ms', 'sig')
end
local dropped, freed = 0, 0
if first then
  for seq, r in pairs(recs) do
    if seq >= first then
      local rec = r[1]
      freed = freed + r[2]
      if K['o' .. seq] then
        freed = freed + redis.call('STRLEN', K['o' .. seq])
        redis.call('DEL', K['o' .. seq])
      end
      if rec['status'] == 'done' or rec['status'] == 'failed' then
        local tries = tonumber(rec['attempts'] or 1) or 1
        redis.call('HINCRBY', K.run, 'c_steps', -1)
        redis.call('HINCRBY', K.run, 'c_attempts', -tries)
        if tries > 1 then redis.call('HINCRBY', K.run, 'c_retries', -(tries - 1)) end
      end
      redis.call('HDEL', K.steps, tostring(seq))
      dropped = dropped + 1
    end
  end
  if freed > 0 then redis.call('HINCRBY', K.run, 'stored', -freed) end
end
local err = redis.call('HGET', K.run, 'error')
if err then redis.call('HSET', K.run, 'prev_error', err) end
redis.call('HINCRBY', K.run, 'fence', 1)
local jid = A.job_prefix .. redis.call('HINCRBY', K.run, 'dispatches', 1)
redis.call('HINCRBY', K.run, 'retried', 1)
redis.call('HSET', K.run, 'status', 'queued', 'dispatch', jid, 'updated_at', now,
  'retried_at', now, 'active_ms', 0, 'reaps', 0)
redis.call('HDEL', K.run, 'error', 'output', 'finished_at', 'owner', 'lease_until', 'wake_at',
  'throttles')
redis.call('ZREM', K.ended, A.run_id)
-- status and signature indexes (issue 13): a re-opened run is queued, not failed/cancelled
if K.st_failed then redis.call('ZREM', K.st_failed, A.run_id) end
if K.st_cancelled then redis.call('ZREM', K.st_cancelled, A.run_id) end
if K.by_sig then
  redis.call('ZREM', K.by_sig, A.run_id)
  if K.sigs and redis.call('ZCARD', K.by_sig) == 0 then redis.call('ZREM', K.sigs, sig) end
end
redis.call('ZREM', K.timers, A.run_id)
redis.call('ZREM', K.waiting, A.run_id)
redis.call('ZREM', K.leases, A.run_id)
redis.call('ZADD', K.queued, now, A.run_id)
redis.call('PUBLISH', A.channel, A.run_id .. ' queued')
return {{'ok', jid, first or 0, dropped}}
"""
)
