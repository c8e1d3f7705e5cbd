"""Step checkpoints: (run id, sequence number) -> step record, written under the fence."""

from __future__ import annotations

import json
from typing import Any

from redis import Redis

from loopwright.keys import Keys
from loopwright.runner.records import StepRecord
from loopwright.runner.state import (
    STATE_APPLY,
    STATE_CHECK,
    StateConflictError,
    StateLimitError,
    StateWrites,
)
from loopwright.sdk.errors import RunInterrupt

# Atomically: write one step record (and its large output, when separate) only if the caller
# still holds the run's fence and the run is running, and only while the run's checkpoints stay
# within its storage quota (``stored`` counts their bytes; a rewritten record replaces its old
# size). A record that ends its step (``done``/``failed``) adds to the run's counters the
# rollups fold in when it ends (``runner/rollup.py``): ``c_steps``, ``c_attempts``,
# ``c_retries`` (attempts beyond the first) and the model usage of an ``llm`` step. The tool
# calls of the attempt are appended to its recording (``runner/recording.py``). The ``ctx.state``
# writes of a succeeding attempt are checked before any write and applied with the record
# (``runner/state.py``: STATE_CHECK, STATE_APPLY).
# Returns 1, 0 when fenced out, -1 over the quota, -2 on a state conflict, -3 over the state
# key cap.
# KEYS: run, steps, out, calls, the skill's state hash
# ARGV: token, seq, record, big_output ('' when inline), quota_bytes, recording cap (-1: off),
#       step status, attempts, tokens in, tokens out, cost in micro-dollars,
#       the state block (ARGV[12] = its length n, then n arguments: ``runner/state.py``),
#       then the recorded tool calls of this attempt (JSON, in order) from ARGV[13 + n]
COMMIT_HEAD = """
local cur = redis.call('HMGET', KEYS[1], 'fence', 'status', 'stored')
if cur[1] ~= ARGV[1] or cur[2] ~= 'running' then return 0 end
local old = redis.call('HSTRLEN', KEYS[2], ARGV[2]) + redis.call('STRLEN', KEYS[3])
local delta = string.len(ARGV[3]) + string.len(ARGV[4]) - old
local used = tonumber(cur[3] or '0')
if delta > 0 and used + delta > tonumber(ARGV[5]) then return -1 end
"""
COMMIT_WRITE = """
redis.call('HINCRBY', KEYS[1], 'stored', delta)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[3], ARGV[4]) end
if ARGV[7] == 'done' or ARGV[7] == 'failed' then
  local tries = tonumber(ARGV[8])
  redis.call('HINCRBY', KEYS[1], 'c_steps', 1)
  redis.call('HINCRBY', KEYS[1], 'c_attempts', tries)
  if tries > 1 then redis.call('HINCRBY', KEYS[1], 'c_retries', tries - 1) end
  if ARGV[9] ~= '0' then redis.call('HINCRBY', KEYS[1], 'c_tokens_in', ARGV[9]) end
  if ARGV[10] ~= '0' then redis.call('HINCRBY', KEYS[1], 'c_tokens_out', ARGV[10]) end
  if ARGV[11] ~= '0' then redis.call('HINCRBY', KEYS[1], 'c_cost_micros', ARGV[11]) end
end
"""
COMMIT_TAIL = """
-- history: recorded tool calls (w3). Appended under the same fence, within the run's recording
-- cap and its storage quota (counted in 'stored'); past either the run is marked 'partial',
-- never failed. 'recording' is complete|partial|none.
local cap = tonumber(ARGV[6])
if cap < 0 then
  redis.call('HSETNX', KEYS[1], 'recording', 'none')
  return 1
end
redis.call('HSETNX', KEYS[1], 'recording', 'complete')
if #ARGV > st_last then
  local rec = tonumber(redis.call('HGET', KEYS[1], 'recorded') or '0')
  local room = tonumber(ARGV[5]) - (used + delta)
  local added = 0
  for i = st_last + 1, #ARGV do
    local size = string.len(ARGV[i])
    if rec + added + size > cap or added + size > room then
      redis.call('HSET', KEYS[1], 'recording', 'partial')
      break
    end
    redis.call('RPUSH', KEYS[4], ARGV[i])
    added = added + size
  end
  if added > 0 then
    redis.call('HINCRBY', KEYS[1], 'recorded', added)
    redis.call('HINCRBY', KEYS[1], 'stored', added)
  end
end
-- end history: recorded tool calls
return 1
"""
COMMIT_LUA = COMMIT_HEAD + STATE_CHECK + COMMIT_WRITE + STATE_APPLY + COMMIT_TAIL


class StorageQuotaError(RunInterrupt):
    """The run's checkpoints would exceed ``run_storage_max_bytes``: the run fails.

    A ``BaseException`` so that skill code's ``except Exception`` cannot swallow it and keep
    writing.
    """


class LeaseLostError(RunInterrupt):
    """This executor no longer owns the run (taken over, reaped or cancelled): stop quietly.

    A ``BaseException`` so that skill code's ``except Exception`` cannot swallow it.
    """


class Checkpoints:
    """Read and write a run's checkpoints. Reads happen once per execution (in the acquire)."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        inline_bytes: int,
        quota_bytes: int = 2**62,
        recording_bytes: int = -1,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._inline = inline_bytes
        self._quota = quota_bytes
        self._recording = recording_bytes  # the recorded calls' cap per run; -1: recording off
        self._commit = redis.register_script(COMMIT_LUA)

    def commit(
        self,
        run_id: str,
        token: str,
        rec: StepRecord,
        output_json: str | None,
        calls: list[str] | None = None,
        usage: tuple[int, int, int] = (0, 0, 0),
        state: StateWrites | None = None,
    ) -> None:
        """Record ``rec`` with its encoded output and the tool ``calls`` of its attempt
        (``runner/recording.py``); raise ``LeaseLostError`` when fenced out. ``usage`` is an
        ``llm`` step's (tokens in, tokens out, cost in micro-dollars); ``state`` the
        ``ctx.state`` writes of the attempt (``runner/state.py``), applied with the record or
        not at all (``StateConflictError``, ``StateLimitError``)."""
        big = ""
        if output_json is None:
            raw = rec.header_json() + "}"
        elif len(output_json) <= self._inline:
            raw = rec.header_json() + ',"output":' + output_json + "}"
        else:
            rec.ref = True
            raw = rec.header_json() + "}"
            big = output_json
        k = self._keys
        ok = self._commit(
            keys=[
                k.run(run_id),
                k.steps(run_id),
                k.step_output(run_id, rec.seq),
                k.run_calls(run_id),
                k.skill_state(state.skill if state else ""),
            ],
            args=[
                token,
                rec.seq,
                raw,
                big,
                self._quota,
                self._recording,
                rec.status,
                rec.attempts,
                *usage,
                len(state.args) if state else 0,
                *(state.args if state else ()),
                *(calls or ()),
            ],
        )
        if ok == -1:
            raise StorageQuotaError(
                f"run exceeded its checkpoint storage quota of {self._quota} bytes at step "
                f"#{rec.seq} {rec.name!r} (LOOPWRIGHT_RUN_STORAGE_MAX_BYTES)"
            )
        if ok == -2 and state is not None:
            raise StateConflictError(state.keys)
        if ok == -3 and state is not None:
            raise StateLimitError(
                f"ctx.state of {state.skill!r} would hold more than {state.args[1]} keys "
                f"(LOOPWRIGHT_STATE_MAX_KEYS); delete keys it no longer needs"
            )
        if not ok:
            raise LeaseLostError(f"run {run_id}: checkpoint #{rec.seq} rejected by the fence")

    def fetch_outputs(self, run_id: str, seqs: list[int]) -> dict[int, Any]:
        """Outputs kept in separate keys, by seq, in one round trip."""
        if not seqs:
            return {}
        values = self._redis.mget([self._keys.step_output(run_id, s) for s in seqs])
        return {s: json.loads(v) for s, v in zip(seqs, values, strict=True) if v is not None}

    def load_outputs(self, run_id: str, records: dict[int, StepRecord]) -> None:
        """Fill in the outputs kept in separate keys (one round trip for all of them)."""
        big = self.fetch_outputs(run_id, [seq for seq, r in records.items() if r.ref])
        for seq, value in big.items():
            records[seq].output = value

    def read_all(self, run_id: str) -> list[StepRecord]:
        """Every checkpoint of a run in order, outputs included (for history views)."""
        raw: dict[str, str] = self._redis.hgetall(self._keys.steps(run_id))  # type: ignore[assignment]
        records = {int(s): StepRecord.from_json(v) for s, v in raw.items()}
        self.load_outputs(run_id, records)
        return [records[s] for s in sorted(records)]
