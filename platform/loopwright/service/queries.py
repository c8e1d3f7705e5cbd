"""Finding runs: server-side filters over the whole history, one cursor-paged answer.

The API, the pages and (later) the CLI list runs through :func:`find_runs`. Filters run on the
server over every kept run, not over the rows a client happened to load.

Where the rows come from (all indexes are scored by creation time, so a cursor ``(score, run
id)`` means the same position in each):

* ``status`` of a terminal run and ``signature`` (a full one or a prefix): their own indexes
  (``runner/indexes.py``), so a filtered page reads only matching runs; with a skill too, the
  smaller of the two indexes in the time range drives and the other filter is checked on the
  run. Runs that ended before those indexes existed are indexed by a bounded backfill (one
  page per filtered call here and per scheduler tick); until it is done, the part of history
  below its marker is answered by reading run hashes, as below.
* ``status`` of an active run (queued, running, sleeping, waiting): the runner's own sets of
  such runs (few), each run's status checked.
* anything else (``version``, ``trigger``): the time index (of the skill, when given), read
  newest first, each run's fields checked.

Each call reads at most ``scan_limit`` index entries; when a page is not full by then, the
answer carries a cursor anyway (``exhausted`` false) so a client keeps paging without a gap,
and says how far it scanned. With the indexes that happens only for a filter the indexes cannot
answer (``version``, ``trigger``, or a skill and a status that are both common with few runs in
common) or while the backfill is under way.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loopwright.errors import UserError
from loopwright.runner.indexes import ACTIVE_SETS, DONE, TERMINAL, IndexBackfill
from loopwright.runner.records import Run, RunStatus
from loopwright.runner.signature import SIG_HEX

if TYPE_CHECKING:
    from redis import Redis

    from loopwright.keys import Keys


@dataclass(frozen=True, slots=True)
class RunFilter:
    """What to keep. Every field is optional; all given ones must match."""

    skill: str | None = None
    version: str | None = None  # full id or prefix
    status: str | None = None
    trigger: str | None = None  # trigger type: manual, cron, event, child ...
    since_ms: int | None = None
    until_ms: int | None = None
    signature: str | None = None  # error signature hash (prefix accepted)

    def check(self) -> RunFilter:
        """Self, or :class:`UserError` naming the bad filter."""
        if self.status is not None and self.status not in {s.value for s in RunStatus}:
            known = ", ".join(s.value for s in RunStatus)
            raise UserError(f"unknown status {self.status!r}; one of: {known}")
        for name in ("skill", "version", "trigger", "signature"):
            value = getattr(self, name)
            if value is not None and (not value or len(value) > 200):
                raise UserError(f"{name}: must be 1 to 200 characters")
        since, until = self.since_ms, self.until_ms
        if since is not None and until is not None and since > until:
            raise UserError("since is after until: nothing can match")
        return self

    def matches(self, h: dict[str, str]) -> bool:
        """True when a run hash passes every given filter."""
        if self.skill is not None and h.get("skill", self.skill) != self.skill:
            return False
        if self.status is not None and h.get("status") != self.status:
            return False
        if self.version is not None and not h.get("version", "").startswith(self.version):
            return False
        if self.signature is not None and not h.get("sig", "").startswith(self.signature):
            return False
        if self.trigger is not None:
            import json

            try:
                kind = (json.loads(h.get("trigger") or "{}") or {}).get("type")
            except ValueError:
                kind = None
            if kind != self.trigger:
                return False
        return True


FILTER_FIELDS = ("status", "version", "sig", "trigger", "skill", "created_at")
ACTIVE_CAP = 5_000  # more active runs of one status than this: read the time index instead
SIG_KEYS_CAP = 32  # a signature prefix matching more signatures: read the time index instead
BACKFILL_PAGE = 500  # runs a filtered call walks for the backfill while it is not done

Pos = tuple[float, str]  # (creation time, run id): a position in every index, newest = largest


@dataclass(slots=True)
class RunPage:
    """One page of runs, newest first, and where the next page starts."""

    runs: list[Run]
    next_cursor: tuple[float, str] | None
    scanned: int
    exhausted: bool
    extra: dict[str, Any] = field(default_factory=dict)


def find_runs(
    redis: Redis,
    keys: Keys,
    flt: RunFilter,
    *,
    limit: int = 50,
    after: tuple[float, str] | None = None,
    scan_limit: int = 5000,
) -> RunPage:
    """Runs matching ``flt``, newest first, starting after the cursor ``after``."""
    flt.check()
    if not 1 <= limit <= 500:
        raise UserError("limit: between 1 and 500")
    base = keys.runs_by_skill(flt.skill) if flt.skill else keys.runs
    lo: float | str = "-inf" if flt.since_ms is None else flt.since_ms
    hi: float | str = "+inf" if flt.until_ms is None else flt.until_ms
    walk = _Walk(redis, keys, flt, limit, scan_limit)
    extra = any(v is not None for v in (flt.version, flt.trigger))
    if flt.status in ACTIVE_SETS and flt.signature is None:
        page = _active(redis, keys, flt, lo, hi, after, limit)
        if page is not None:
            return page
    sources = _sources(redis, keys, flt) if flt.status in TERMINAL or flt.signature else None
    if sources is None:  # no index answers the filter: the time index, every run checked
        filtered = extra or flt.status is not None or flt.signature is not None
        return walk.page(_rows(redis, [base], lo, hi, after, limit + 1), check=filtered)
    if not sources:  # a signature prefix nobody has: only runs not yet indexed can match
        sources_rows: Iterator[Pos] = iter(())
    else:
        if flt.skill and _smaller(redis, base, sources, lo, hi):
            return walk.page(_rows(redis, [base], lo, hi, after, 200), check=True)
        sources_rows = _rows(redis, sources, lo, hi, after, limit + 1)
    mark = _mark(redis, keys)
    # Exact when the indexes alone are the filter: rows are runs to show (checked on the
    # record all the same: a retry may have moved one between the two reads).
    exact = not extra and not flt.skill and (flt.status is None or flt.signature is None)
    if mark == DONE:
        return walk.page(sources_rows, check=not exact)
    # Above the marker every run is indexed; below it, the time index, every run checked.
    floor = mark if isinstance(mark, tuple) else None
    ended = walk.collect(sources_rows, check=not exact, floor=floor, infinite_floor=floor is None)
    if walk.full() or not ended:
        return walk.finish(more=True)
    below = floor if floor is not None and (after is None or floor < after) else after
    return walk.page(_rows(redis, [base], lo, hi, below, 200), check=True)


def collect_runs(redis: Redis, keys: Keys, flt: RunFilter, limit: int) -> list[Run]:
    """Up to ``limit`` runs matching ``flt``, newest first, over as many pages of
    :func:`find_runs` as it takes (the CLI's ``runs list`` and the builder's ``list_runs``
    read the same indexes as the API: a rare status is found however old it is)."""
    out: list[Run] = []
    after: tuple[float, str] | None = None
    while len(out) < limit:
        page = find_runs(redis, keys, flt, limit=min(500, limit - len(out)), after=after)
        out.extend(page.runs)
        if page.next_cursor is None or page.exhausted:
            break
        after = page.next_cursor
    return out[:limit]


def _mark(redis: Redis, keys: Keys) -> Pos | str | None:
    """The backfill's marker, after walking one more page of it when it is not done."""
    backfill = IndexBackfill(redis, keys)
    mark = backfill.mark()
    if mark != DONE:
        backfill.page(BACKFILL_PAGE)
        mark = backfill.mark()
    return mark


def _sources(redis: Redis, keys: Keys, flt: RunFilter) -> list[str] | None:
    """The index keys whose union holds every (indexed) match of the status or signature
    filter; None when no index can answer it (too many signatures share a short prefix)."""
    if flt.signature:
        sig = flt.signature
        if len(sig) >= SIG_HEX:
            return [keys.runs_by_sig(sig)]
        prefix = sig.encode()
        names: list[bytes | str] = redis.zrangebylex(
            keys.runs_sigs, b"[" + prefix, b"(" + prefix + b"\xff", start=0, num=SIG_KEYS_CAP + 1
        )
        if len(names) > SIG_KEYS_CAP:
            return None
        return [keys.runs_by_sig(n.decode() if isinstance(n, bytes) else str(n)) for n in names]
    assert flt.status is not None
    return [keys.runs_by_status(flt.status)]


def _smaller(redis: Redis, base: str, sources: list[str], lo: float | str, hi: float | str) -> bool:
    """Whether ``base`` (the skill's index) holds fewer runs in the range than ``sources``."""
    pipe = redis.pipeline(transaction=False)
    for key in (base, *sources):
        pipe.zcount(key, lo, hi)
    counts = [int(c) for c in pipe.execute()]
    return counts[0] < sum(counts[1:])


def _rows(
    redis: Redis,
    index_keys: list[str],
    lo: float | str,
    hi: float | str,
    after: Pos | None,
    first: int,
) -> Iterator[Pos]:
    """Positions in the union of ``index_keys`` within [lo, hi] and after ``after``, newest
    first, read lazily (``first`` rows, then larger batches)."""
    top: float | str = hi
    if after is not None:
        top = after[0] if hi == "+inf" else min(float(hi), after[0])

    def one(key: str) -> Iterator[Pos]:
        offset, batch = 0, max(1, first)
        while True:
            got: list[tuple[Any, float]] = redis.zrevrangebyscore(  # type: ignore[assignment]
                key, top, lo, start=offset, num=batch, withscores=True
            )
            offset += len(got)
            for member, score in got:
                m = member.decode() if isinstance(member, bytes) else str(member)
                # Equal scores come in reverse member order: skip what the cursor passed.
                if after is not None and float(score) == after[0] and m >= after[1]:
                    continue
                yield float(score), m
            if len(got) < batch:
                return
            batch = min(500, batch * 2)

    if len(index_keys) == 1:
        return one(index_keys[0])
    return heapq.merge(*(one(k) for k in index_keys), reverse=True)


def _active(
    redis: Redis,
    keys: Keys,
    flt: RunFilter,
    lo: float | str,
    hi: float | str,
    after: Pos | None,
    limit: int,
) -> RunPage | None:
    """A page of runs in an active status, from the runner's sets of such runs (None when
    there are more than ``ACTIVE_CAP``)."""
    assert flt.status is not None
    names = [getattr(keys, n) for n in ACTIVE_SETS[flt.status]]
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.zcard(name)
    if sum(int(n) for n in pipe.execute()) > ACTIVE_CAP:
        return None
    pipe = redis.pipeline(transaction=False)
    for name in names:
        pipe.zrange(name, 0, -1)
    ids = sorted({str(m) for got in pipe.execute() for m in got})
    pipe = redis.pipeline(transaction=False)
    for rid in ids:
        pipe.hmget(keys.run(rid), *FILTER_FIELDS)
    lo_f = float(lo) if lo != "-inf" else float("-inf")
    hi_f = float(hi) if hi != "+inf" else float("inf")
    rows: list[Pos] = []
    for rid, got in zip(ids, pipe.execute(), strict=True):
        h = {f: v for f, v in zip(FILTER_FIELDS, got, strict=True) if v is not None}
        if h.get("status") is None or not flt.matches(h):
            continue
        pos = (float(h.get("created_at") or 0), rid)
        if lo_f <= pos[0] <= hi_f and (after is None or pos < after):
            rows.append(pos)
    rows.sort(reverse=True)
    shown = rows[:limit]
    pipe = redis.pipeline(transaction=False)
    for _, rid in shown:
        pipe.hgetall(keys.run(rid))
    runs = [Run.from_hash(h) for h in pipe.execute() if h]
    more = len(rows) > limit
    return RunPage(runs, shown[-1] if more else None, len(ids), not more)


class _Walk:
    """Collects one page from row sources, checking each row's run record as needed."""

    def __init__(self, redis: Redis, keys: Keys, flt: RunFilter, limit: int, budget: int):
        self.redis, self.keys, self.flt = redis, keys, flt
        self.limit, self.budget = limit, budget
        self.out: list[Run] = []
        self.scanned = 0
        self.last: Pos | None = None
        self.pending: Pos | None = None  # a row read but not consumed (the page filled first)

    def full(self) -> bool:
        return len(self.out) >= self.limit

    def finish(self, more: bool) -> RunPage:
        return RunPage(self.out, self.last if more else None, self.scanned, not more)

    def page(self, rows: Iterator[Pos], *, check: bool) -> RunPage:
        """Collect from ``rows`` and answer the page."""
        ended = self.collect(rows, check=check)
        return self.finish(more=not ended)

    def collect(
        self,
        rows: Iterator[Pos],
        *,
        check: bool,
        floor: Pos | None = None,
        infinite_floor: bool = False,
    ) -> bool:
        """Read ``rows`` (newest first) until the page is full, the budget is spent, or the
        rows end or reach ``floor`` (rows below it are not taken; ``infinite_floor``: none
        is). True when the rows ended (nothing more to read from them)."""
        if infinite_floor:
            return True
        batch: list[Pos] = []
        it = iter(rows)
        while not self.full() and self.scanned < self.budget:
            want = min(200 if check else self.limit - len(self.out), self.budget - self.scanned)
            batch = []
            for pos in it:
                if floor is not None and pos < floor:
                    return True
                batch.append(pos)
                if len(batch) >= want:
                    break
            if not batch:
                return True
            rest = self._take(batch, check)
            if rest:
                return False  # the page filled inside the batch: rows remain
        if self.scanned >= self.budget and not self.full():
            return False
        nxt = next(it, None)  # one look ahead: a full page at the very end says so
        return nxt is None or (floor is not None and nxt < floor)

    def _take(self, batch: list[Pos], check: bool) -> list[Pos]:
        """Check and fetch a batch; the rows left unread when the page filled."""
        redis, keys, flt = self.redis, self.keys, self.flt
        matched = batch
        if check:
            pipe = redis.pipeline(transaction=False)
            for _, rid in batch:
                pipe.hmget(keys.run(rid), *FILTER_FIELDS)
            matched = []
            room = self.limit - len(self.out)
            for i, (pos, got) in enumerate(zip(batch, pipe.execute(), strict=True)):
                self.scanned += 1
                self.last = pos
                h = {f: v for f, v in zip(FILTER_FIELDS, got, strict=True) if v is not None}
                if h.get("status") is not None and flt.matches(h):
                    matched.append(pos)
                    if len(matched) >= room:
                        self._fetch(matched, check=False)
                        return batch[i + 1 :]
            self._fetch(matched, check=False)
            return []
        self.scanned += len(batch)
        self.last = batch[-1]
        self._fetch(matched, check=True)
        return []

    def _fetch(self, rows: list[Pos], *, check: bool) -> None:
        if not rows:
            return
        pipe = self.redis.pipeline(transaction=False)
        for _, rid in rows:
            pipe.hgetall(self.keys.run(rid))
        for h in pipe.execute():
            if h and (not check or self.flt.matches(h)):
                self.out.append(Run.from_hash(h))
