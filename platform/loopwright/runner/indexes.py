"""Status and error-signature indexes of runs (issue 13), so a filtered list reads only matches.

Terminal runs are the vast majority of history, so each terminal status has its own zset,
``Keys.runs_by_status`` (completed, failed, cancelled, skipped), and each error signature
one, ``Keys.runs_by_sig``; ``Keys.runs_sigs`` lists the signatures that have one (all scores
0, so a signature prefix is one ``ZRANGEBYLEX``). They are scored by the run's creation time,
as ``{p}:runs`` is, so a cursor means the same position in every index.

Who writes them, always in the script that changes the run:

* ``run_ended`` (``runner/lua.py``): every terminal path (finish, fail, cancel, reaper
  give-up, flow-control skip) adds the run to its status's index and, when the run's rollup
  gave it a signature, to that signature's (``index_ended`` below); the caller declares the
  keys with :func:`ended_index_keys`.
* the retry script (``RETRY_LUA``): a re-opened run leaves its status and signature indexes.
* retention (``history/retention.py``): a deleted run leaves them, and a signature whose
  index is empty leaves ``runs_sigs``.

Non-terminal statuses are not indexed here: the sets the runner keeps anyway answer them
(``queued``, ``leases`` for running, ``timers`` and ``waiting``; :data:`ACTIVE_SETS`).

Runs that ended before these indexes existed are in none of them. :class:`IndexBackfill` walks
``{p}:runs`` newest first, a bounded page per call, and indexes the terminal ones; the marker
``Keys.runs_indexed`` (``<score> <run id>`` of the last run walked, or ``done``) says how far.
Every run at or above the marker is indexed; a query answers the part below it by reading
run hashes (``service/queries.py``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis import Redis

    from loopwright.keys import Keys

TERMINAL = ("completed", "failed", "cancelled", "skipped")
DONE = "done"

# Non-terminal status -> the runner's own sets that hold its runs (their scores are not the
# creation time; a reader takes the members and checks each run's status).
ACTIVE_SETS: dict[str, tuple[str, ...]] = {
    "queued": ("queued",),
    "running": ("leases",),
    "sleeping": ("timers",),
    "waiting": ("waiting", "timers"),
}

# ``index_ended(run_id, status)``: add an ended run to ``K.by_status`` (declared for
# ``status``) and, when the run got a signature (``A.sig``, written on the run by ``rollup``
# just before), to ``K.by_sig``, recording the signature in ``K.sigs``. Scored by the run's
# ``created_at``, as ``{p}:runs``. Nothing when the caller declared no index keys.
INDEX_ENDED = """
local function index_ended(run_id, status)
  if not K.by_status then return end
  local h = redis.call('HMGET', K.run, 'created_at', 'sig')
  local ts = tonumber(h[1] or '') or 0
  redis.call('ZADD', K.by_status, ts, run_id)
  if K.by_sig and h[2] and h[2] == A.sig then
    redis.call('ZADD', K.by_sig, ts, run_id)
    redis.call('ZADD', K.sigs, 0, h[2])
  end
end
"""


def ended_index_keys(keys: Keys, status: str, sig: str | None) -> dict[str, str | None]:
    """The keys ``index_ended`` writes for a run ending with ``status`` and signature ``sig``
    (the rollup's ``A.sig``; None when it has none)."""
    return {"by_status": status_index_key(keys, status), **sig_index_keys(keys, sig)}


def status_index_key(keys: Keys, status: str) -> str | None:
    """``K.by_status`` of a run ending with ``status`` (None for a non-terminal one)."""
    return keys.runs_by_status(status) if status in TERMINAL else None


def sig_index_keys(keys: Keys, sig: str | None) -> dict[str, str | None]:
    """``K.by_sig`` and ``K.sigs`` of a run ending with signature ``sig`` (None: none)."""
    return {
        "by_sig": keys.runs_by_sig(sig) if sig else None,
        "sigs": keys.runs_sigs if sig else None,
    }


def parse_mark(raw: str | bytes | None) -> tuple[float, str] | str | None:
    """The backfill marker: ``DONE``, None (never started) or (score, run id) of the last run
    walked."""
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    if text == DONE:
        return DONE
    score, _, member = text.partition(" ")
    try:
        return float(score), member
    except ValueError:
        return None  # unreadable: walk again from the top (indexing is idempotent)


# Atomically, for one page of the backfill: index each declared run that is terminal (status
# index; signature index when its stored ``sig`` is the declared one), then move the marker to
# ``ARGV.mark`` -- only when it still holds ``ARGV.expect`` (two callers walking at once:
# one of them moves it, the other's page was the same work).
# KEYS: completed, failed, cancelled, skipped (status indexes), sigs, marker; then per run
#   its hash and, when it has a signature, that signature's index (indices in the JSON)
# ARGV[1]: JSON {expect: marker text read ('' = none), mark: new marker text,
#   runs: [{id, r (hash key index), s (signature index key index, 0 = none), sig}]}
# Returns the number of runs indexed.
BACKFILL_LUA = """
local a = cjson.decode(ARGV[1])
local cur = redis.call('GET', KEYS[6]) or ''
if cur ~= a.expect then return -1 end
local slot = {completed = 1, failed = 2, cancelled = 3, skipped = 4}
local n = 0
for _, r in ipairs(a.runs) do
  local h = redis.call('HMGET', KEYS[r.r], 'status', 'created_at', 'sig')
  local i = h[1] and slot[h[1]]
  if i then
    local ts = tonumber(h[2] or '') or 0
    redis.call('ZADD', KEYS[i], ts, r.id)
    if r.s > 0 and h[3] == r.sig then
      redis.call('ZADD', KEYS[r.s], ts, r.id)
      redis.call('ZADD', KEYS[5], 0, r.sig)
    end
    n = n + 1
  end
end
redis.call('SET', KEYS[6], a.mark)
return n
"""


class IndexBackfill:
    """Indexes runs that ended before the status/signature indexes existed, newest first."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._script = redis.register_script(BACKFILL_LUA)

    def mark(self) -> tuple[float, str] | str | None:
        """Where the walk stands (see :func:`parse_mark`)."""
        return parse_mark(self._redis.get(self._keys.runs_indexed))

    def done(self) -> bool:
        """Whether every run is indexed."""
        return self.mark() == DONE

    def page(self, count: int = 500) -> int:
        """Walk the next ``count`` runs below the marker; how many were indexed (0 when done
        or when another caller moved the marker meanwhile)."""
        k = self._keys
        raw = self._redis.get(k.runs_indexed)
        mark = parse_mark(raw)
        if mark == DONE:
            return 0
        expect = "" if raw is None else (raw.decode() if isinstance(raw, bytes) else str(raw))
        rows = self._below(mark if isinstance(mark, tuple) else None, count)
        if not rows:
            self._call([], expect, DONE)
            return 0
        pipe = self._redis.pipeline(transaction=False)
        for member, _ in rows:
            pipe.hget(k.run(member), "sig")
        sigs = pipe.execute()
        last_score, last_member = rows[-1][1], rows[-1][0]
        new_mark = f"{last_score!r} {last_member}"
        return self._call(list(zip((m for m, _ in rows), sigs, strict=True)), expect, new_mark)

    def run(self, budget: int = 1_000_000, count: int = 500) -> int:
        """Walk until done or ``budget`` runs walked; how many were indexed."""
        total = walked = 0
        while not self.done() and walked < budget:
            total += max(0, self.page(count))
            walked += count
        return total

    def _below(self, mark: tuple[float, str] | None, count: int) -> list[tuple[str, float]]:
        """Up to ``count`` (run id, score) of ``runs`` after ``mark``, newest first."""
        hi: float | str = "+inf" if mark is None else mark[0]
        num = count
        while True:
            got: list[tuple[str, float]] = self._redis.zrevrangebyscore(  # type: ignore[assignment]
                self._keys.runs, hi, "-inf", start=0, num=num, withscores=True
            )
            rows = [(str(m), float(s)) for m, s in got]
            if mark is not None:
                rows = [(m, s) for m, s in rows if not (s == mark[0] and m >= mark[1])]
            if rows or len(got) < num:
                return rows[:count]
            num *= 2  # a page of runs sharing the marker's score, all walked: read further

    def _call(self, runs: list[tuple[str, Any]], expect: str, mark: str) -> int:
        k = self._keys
        keys = [*(k.runs_by_status(s) for s in TERMINAL), k.runs_sigs, k.runs_indexed]
        plan = []
        for rid, sig in runs:
            keys.append(k.run(rid))
            entry: dict[str, Any] = {"id": rid, "r": len(keys), "s": 0, "sig": ""}
            if sig:
                text = sig.decode() if isinstance(sig, bytes) else str(sig)
                keys.append(k.runs_by_sig(text))
                entry.update(s=len(keys), sig=text)
            plan.append(entry)
        payload = json.dumps({"expect": expect, "mark": mark, "runs": plan})
        return int(self._script(keys=keys, args=[payload]))
