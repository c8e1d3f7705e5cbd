"""Finding runs: server-side filters over the whole history, one cursor-paged answer.

The API, the pages and (later) the CLI list runs through :func:`find_runs`. Filters run on the
server over every kept run, not over the rows a client happened to load. Each call reads at
most ``scan_limit`` index entries; when a page is not full by then, the answer carries a
cursor anyway (``exhausted`` false) so a client keeps paging without a gap, and says how far it
scanned.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loopwright.errors import UserError
from loopwright.runner.records import Run, RunStatus

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
            raise UserError(f"status: unknown {self.status!r}; one of: {known}")
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


FILTER_FIELDS = ("status", "version", "sig", "trigger")


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
    index = keys.runs_by_skill(flt.skill) if flt.skill else keys.runs
    hi: float | str = "+inf" if flt.until_ms is None else flt.until_ms
    lo: float | str = "-inf" if flt.since_ms is None else flt.since_ms
    if after is not None:
        hi = after[0] if hi == "+inf" else min(float(hi), after[0])
    out: list[Run] = []
    # An unfiltered page reads just what it shows; a filtered one reads ahead in larger batches.
    filtered = any(v is not None for v in (flt.status, flt.version, flt.trigger, flt.signature))
    scanned, offset, batch = 0, 0, (200 if filtered else limit + 1)
    last: tuple[float, str] | None = after
    exhausted = False
    while len(out) < limit:
        if scanned >= scan_limit:
            break
        rows: list[tuple[str, float]] = redis.zrevrangebyscore(  # type: ignore[assignment]
            index, hi, lo, start=offset, num=batch, withscores=True
        )
        if not rows:
            exhausted = True
            break
        offset += len(rows)
        # Equal scores come in reverse member order: skip what the cursor already passed.
        if after is not None:
            rows = [(m, s) for m, s in rows if not (s == after[0] and str(m) >= after[1])]
        # Filter on the few fields the filters read; fetch whole records only for matches.
        pipe = redis.pipeline(transaction=False)
        for member, _ in rows:
            if filtered:
                pipe.hmget(keys.run(str(member)), *FILTER_FIELDS)
            else:
                pipe.hgetall(keys.run(str(member)))
        matched: list[tuple[str, float]] = []
        for (member, score), got in zip(rows, pipe.execute(), strict=True):
            scanned += 1
            last = (float(score), str(member))
            if filtered:
                h = {f: v for f, v in zip(FILTER_FIELDS, got, strict=True) if v is not None}
            else:
                h = got
            if h.get("status") is not None and flt.matches(h):
                matched.append((str(member), float(score)))
                if not filtered:
                    out.append(Run.from_hash(got))
                if len(out) + (len(matched) if filtered else 0) >= limit:
                    break
            if scanned >= scan_limit:
                break
        if filtered and matched:
            pipe = redis.pipeline(transaction=False)
            for member, _ in matched:
                pipe.hgetall(keys.run(member))
            out += [Run.from_hash(h) for h in pipe.execute() if h]
    more = not exhausted and (len(out) >= limit or scanned >= scan_limit)
    return RunPage(out, last if more else None, scanned, not more)
