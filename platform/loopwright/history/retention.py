"""Retention: finished runs are deleted ``run_retention`` after they end, in small batches.

Redis is memory, so history must be bounded. The scheduler calls :meth:`Retention.tick` on
every tick (leader only; every script re-checks what it deletes, so two schedulers could not
double anything anyway). Candidates come from ``{p}:ended`` (run id -> end time), oldest
first; one script call deletes at most ``retention_batch_runs`` runs and about
``KEY_BUDGET`` keys, so no call holds Redis for more than a millisecond or two
(``bench/history.py`` measures it).

What is never deleted: a run that is not terminal, a pinned run (``pinned`` on its hash), a
run whose end is younger than the retention, and a child whose parent has not ended (the
parent may still read the child's record when it resumes). Those are *kept*: the pass steps
over them with an offset into ``ended`` so a pile of pinned runs never blocks the expired runs
behind it; a new sweep starts from the front when the expired part is exhausted (after a
pause of up to a minute when the last sweep had kept runs to step over).

Tombstones: a trigger claims ``{p}:trig:{skill}:{source}`` (run id, expiring after
``event_retention``) before it creates the run, and a claim whose run is missing means "the
creator died, create it". A run a trigger started (not by hand, not invoked) deleted while
its claim may still live therefore leaves a tombstone ``{p}:gone:{id}`` for
``event_retention`` seconds, which ``scheduler.starts`` reads: a redelivered event inside the
dedupe window starts nothing. With the defaults (14 days against 24 hours) none is written.

Runs that ended before ``ended`` existed are not in it: :meth:`Retention.backfill_page` walks
``{p}:runs`` by ZSCAN cursor, a page per tick, and indexes the terminal ones by their
``finished_at``. The status and signature indexes (``runner/indexes.py``) are backfilled the
same way, a page per tick (``IndexBackfill``), and a deleted run leaves them in the script
that deletes it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis import Redis

from loopwright.keys import Keys
from loopwright.runner.indexes import IndexBackfill

TERMINAL = ("completed", "failed", "cancelled", "skipped")
KEY_BUDGET = 300  # keys one call may delete (a bigger run goes alone in its call)
TICK_BUDGET_S = 0.02  # wall time one scheduler tick may spend on retention
TOMBSTONE_MARGIN_MS = 60_000
SWEEP_PAUSE_MAX_S = 60.0  # clock skew between the claim's writer and Redis

# Atomically, for each declared run: delete it with every per-run key and its index entries,
# unless it must be kept. Each run is re-checked here (status terminal, end older than the
# retention on the server clock, not pinned, declared skill, parent and step count as stored,
# parent ended), so a stale read only makes the run *kept* until the next sweep.
# A deleted run also leaves the status and signature indexes (issue 13, ``runner/indexes.py``),
# and a signature whose index it empties leaves ``runs_sigs``.
# KEYS: runs, ended, pins, counter, the four terminal status indexes, runs_sigs, then per run
#   (indices in the JSON): run, runs_by_skill, tombstone, [parent run], the keys deleted with
#   it (steps, logs, ..., out:{seq}), [its signature's index]
# ARGV[1]: JSON {retention_ms, tomb_window_ms, tomb_ttl_s, runs: [{id, skill, parent, nsteps,
#   r (run key index), p (parent key index, 0 = none), d0, d1 (delete key range), sig (''
#   = none), s (signature index key index, 0 = none)}]}
# Returns {deleted, kept}.
PURGE_LUA = """
-- Runs started by hand or by a parent's invoke have no trigger claim to outlive them.
local function claimed(trigger)
  local ok, t = pcall(cjson.decode, trigger or '')
  return not ok or type(t) ~= 'table' or (t.type ~= 'manual' and t.type ~= 'invoke')
end
local a = cjson.decode(ARGV[1])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - tonumber(a.retention_ms)
local terminal = {completed = true, failed = true, cancelled = true, skipped = true}
local deleted, kept = 0, 0
for _, r in ipairs(a.runs) do
  local run = KEYS[r.r]
  local h = redis.call('HMGET', run, 'status', 'pinned', 'skill', 'parent', 'created_at',
    'trigger', 'sig')
  local ended = redis.call('ZSCORE', KEYS[2], r.id)
  local keep = false
  if h[1] then
    keep = not terminal[h[1]] or h[2] == '1' or (h[3] or '') ~= r.skill
      or (h[4] or '') ~= (r.parent or '')
      or redis.call('HLEN', KEYS[r.d0]) ~= r.nsteps or (h[7] or '') ~= r.sig
    if not keep and r.p > 0 then
      local ps = redis.call('HGET', KEYS[r.p], 'status')
      keep = ps ~= false and not terminal[ps]
    end
  end
  if ended and tonumber(ended) > cutoff then keep = true end
  if keep then
    kept = kept + 1
  else
    redis.call('UNLINK', run)
    for i = r.d0, r.d1 do redis.call('UNLINK', KEYS[i]) end
    redis.call('ZREM', KEYS[1], r.id)
    redis.call('ZREM', KEYS[2], r.id)
    redis.call('SREM', KEYS[3], r.id)
    redis.call('ZREM', KEYS[r.r + 1], r.id)
    for i = 5, 8 do redis.call('ZREM', KEYS[i], r.id) end  -- status indexes
    if r.s > 0 then
      redis.call('ZREM', KEYS[r.s], r.id)
      if redis.call('ZCARD', KEYS[r.s]) == 0 then redis.call('ZREM', KEYS[9], r.sig) end
    end
    if h[1] and tonumber(h[5] or '0') > now - tonumber(a.tomb_window_ms)
        and claimed(h[6]) then
      redis.call('SET', KEYS[r.r + 2], '1', 'EX', a.tomb_ttl_s)
    end
    if h[1] then
      deleted = deleted + 1
      redis.call('INCR', KEYS[4])
    end
  end
end
return {deleted, kept}
"""


def run_keys(keys: Keys, run_id: str, step_seqs: list[int]) -> list[str]:
    """Every per-run key of ``run_id`` (deleted with it), given the steps whose large outputs
    live under ``out:{seq}``. The one list retention deletes: a new per-run key
    belongs here."""
    return [
        keys.steps(run_id),
        keys.logs(run_id),
        keys.notices(run_id),
        keys.children(run_id),
        keys.run_calls(run_id),
        *(keys.step_output(run_id, seq) for seq in step_seqs),
    ]


@dataclass(slots=True)
class PassStats:
    """What retention did in one tick: runs deleted and kept, script calls, the longest."""

    deleted: int = 0
    kept: int = 0
    calls: int = 0
    longest_call_s: float = 0.0
    backfilled: int = 0
    indexed: int = 0  # runs the status/signature index backfill indexed (issue 13)


class Retention:
    """Deletes expired finished runs in bounded batches; one instance per scheduler."""

    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        retention_s: float,
        event_retention_s: int,
        batch_runs: int = 10,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._retention_ms = int(retention_s * 1000)
        self._event_retention_s = int(event_retention_s)
        self._batch = batch_runs
        self._purge = redis.register_script(PURGE_LUA)
        self._offset = 0  # kept runs at the front of ``ended`` in the current sweep
        self._backfill_cursor: int | None = 0  # ZSCAN cursor over ``runs``; None when done
        # Runs that ended before the status/signature indexes: a page per tick until done.
        self._index = IndexBackfill(redis, keys)
        self._indexed = False
        # After a sweep that stepped over kept runs (pins, children of live parents), the next
        # one waits a little, so a pile of pinned runs is not re-read on every tick.
        self._pause_s = min(SWEEP_PAUSE_MAX_S, max(1.0, retention_s / 1000))
        self._paused_until = 0.0

    def _cutoff_ms(self) -> int:
        sec, usec = self._redis.time()
        return int(sec) * 1000 + int(usec) // 1000 - self._retention_ms

    def tick(self, budget_s: float = TICK_BUDGET_S) -> PassStats:
        """Backfill a page, then delete expired runs until the batch comes back short or the
        tick's time budget is spent."""
        stats = PassStats()
        if self._backfill_cursor is not None:
            stats.backfilled = self.backfill_page()
        if not self._indexed:
            stats.indexed = max(0, self._index.page())
            self._indexed = self._index.done()
        now = time.monotonic()
        if now < self._paused_until:
            return stats
        end = now + budget_s
        while time.monotonic() < end:
            _, _, full = self.step(stats)
            if not full:  # the expired part is exhausted: the next sweep starts at the front
                if self._offset:
                    self._paused_until = time.monotonic() + self._pause_s
                self._offset = 0
                break
        return stats

    def step(self, stats: PassStats | None = None) -> tuple[int, int, bool]:
        """One script call over the next batch of expired candidates: (deleted, kept, whether
        the batch was full, i.e. more candidates may follow)."""
        stats = stats if stats is not None else PassStats()
        k = self._keys
        cutoff = self._cutoff_ms()
        raw: list[tuple[str, float]] = self._redis.zrange(  # type: ignore[assignment]
            k.ended, self._offset, self._offset + self._batch - 1, withscores=True
        )
        ids = [str(m) for m, score in raw if score <= cutoff]
        if not ids:
            return 0, 0, False
        batches = self._plan(ids)
        deleted = kept = 0
        for keys, runs in batches:
            payload = {
                "retention_ms": self._retention_ms,
                "tomb_window_ms": self._event_retention_s * 1000 + TOMBSTONE_MARGIN_MS,
                "tomb_ttl_s": max(1, self._event_retention_s),
                "runs": runs,
            }
            t0 = time.perf_counter()
            d, kp = self._purge(keys=keys, args=[json.dumps(payload)])
            took = time.perf_counter() - t0
            stats.calls += 1
            stats.longest_call_s = max(stats.longest_call_s, took)
            deleted, kept = deleted + int(d), kept + int(kp)
        self._offset += kept
        stats.deleted += deleted
        stats.kept += kept
        return deleted, kept, len(raw) == self._batch and len(ids) == len(raw)

    def _plan(self, ids: list[str]) -> list[tuple[list[str], list[dict[str, Any]]]]:
        """Read what each candidate's keys depend on and cut the batch into script calls of
        at most ``KEY_BUDGET`` keys (a larger run alone in its call)."""
        k = self._keys
        pipe = self._redis.pipeline(transaction=False)
        for rid in ids:
            pipe.hmget(k.run(rid), ["skill", "parent", "sig"])
            pipe.hgetall(k.steps(rid))
        res = pipe.execute()
        calls: list[tuple[list[str], list[dict[str, Any]]]] = []
        keys: list[str] = []
        runs: list[dict[str, Any]] = []
        for i, rid in enumerate(ids):
            (skill, parent, sig), steps = res[2 * i], res[2 * i + 1]
            # Only a step whose output was too large to keep inline has an ``out:{seq}`` key.
            seq_list = sorted(int(s) for s, rec in steps.items() if '"ref":true' in rec)
            group = [k.run(rid), k.runs_by_skill(str(skill or "")), k.tombstone(rid)]
            if parent:
                group.append(k.run(str(parent)))
            deletes = run_keys(k, rid, seq_list)
            if runs and len(keys) + len(group) + len(deletes) + 1 > KEY_BUDGET:
                calls.append((keys, runs))
                keys, runs = [], []
            if not keys:
                keys = [k.runs, k.ended, k.pins, k.retention_deleted]
                keys += [k.runs_by_status(st) for st in TERMINAL] + [k.runs_sigs]
            base = len(keys) + 1  # Lua indices are 1-based
            keys.extend(group)
            d0 = len(keys) + 1
            keys.extend(deletes)
            d1 = len(keys)
            if sig:
                keys.append(k.runs_by_sig(str(sig)))
            runs.append({
                "id": rid,
                "skill": str(skill or ""),
                "parent": str(parent or ""),
                "nsteps": len(steps),
                "r": base,
                "p": base + 3 if parent else 0,
                "d0": d0,
                "d1": d1,
                "sig": str(sig or ""),
                "s": len(keys) if sig else 0,
            })  # fmt: skip
        if runs:
            calls.append((keys, runs))
        return calls

    def backfill_page(self, count: int = 200) -> int:
        """Index one page of terminal runs that ended before ``ended`` existed (by their
        ``finished_at``); ZADD NX never moves a run already indexed. Returns how many."""
        k = self._keys
        cursor, members = self._redis.zscan(k.runs, self._backfill_cursor or 0, count=count)
        self._backfill_cursor = None if int(cursor) == 0 else int(cursor)
        ids = [str(m) for m, _ in members]
        if not ids:
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for rid in ids:
            pipe.hmget(k.run(rid), ["status", "finished_at", "updated_at", "created_at"])
        added: dict[str, int] = {}
        for rid, (status, fin, upd, created) in zip(ids, pipe.execute(), strict=True):
            if status in TERMINAL:
                added[rid] = int(fin or upd or created or 0)
        if not added:
            return 0
        return int(self._redis.zadd(k.ended, added, nx=True))  # type: ignore[arg-type]

    @property
    def backfill_done(self) -> bool:
        """Whether this instance's one pass over ``runs`` has finished."""
        return self._backfill_cursor is None
