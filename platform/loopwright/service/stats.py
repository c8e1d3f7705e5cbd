"""Skill stats from the per-version rollups: what ``loopwright skills stats`` shows.

Read from the daily rollups only (``loopwright.history.rollups``), so a year of history costs
a few hundred ``HGETALL``s, never a scan of runs. The rules, written once for the CLI, the MCP
server, the API and the weekly review:

* **Window**: ``--window 7d`` covers the last 7 UTC days, today included (rollups are daily:
  a window is rounded up to whole days).
* **Success rate** = completed / (completed + failed by the skill), with a 95% Wilson interval.
  Platform failures (``origin`` ``platform``: lost workers, sandbox infrastructure, platform
  defects) are left out of the denominator and shown apart: a skill is never blamed for the
  platform. Cancelled and skipped runs are shown apart too (nobody's failure).
* **p50/p95 duration**: from the log-scale histogram, interpolated inside the bucket (each
  bucket spans a factor of two, so the figure is within that bucket's range).
* **Retries / cost per run**: over the runs that executed (skipped ones never did).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from redis import Redis

from loopwright.errors import UserError
from loopwright.history.rollups import Rollup, read_rollups
from loopwright.keys import Keys
from loopwright.runner.records import now_ms
from loopwright.runner.rollup import DURATION_BUCKETS, ROLLUP_TTL_DAYS, bucket_upper_ms, utc_day
from loopwright.sdk.durations import parse_duration

DAY_MS = 86_400_000
GROUPINGS = ("version", "day")
TOP_SIGNATURES = 5


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (None when ``n`` is 0)."""
    if n <= 0:
        return None
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def quantile_ms(hist: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile of durations from the histogram (None when empty)."""
    total = sum(hist.values())
    if total == 0:
        return None
    rank, seen = q * total, 0
    for b in range(DURATION_BUCKETS):
        n = hist.get(b, 0)
        if n and seen + n >= rank:
            lo = 0.0 if b == 0 else bucket_upper_ms(b - 1)
            hi = bucket_upper_ms(b)
            if math.isinf(hi):
                return lo
            return lo + (hi - lo) * max(0.0, rank - seen) / n
        seen += n
    return bucket_upper_ms(DURATION_BUCKETS - 2)


@dataclass(slots=True)
class SignatureStat:
    """One error signature in a window: count, sample, failing step, example runs."""

    signature: str
    count: int
    message: str
    step: str
    example_run: str
    first_run: str
    first_day: str
    last_day: str
    origin: str = "skill"


@dataclass(slots=True)
class Stats:
    """The figures of one group (the whole window, one version, or one day)."""

    group: str
    runs: int = 0
    completed: int = 0
    failed_skill: int = 0
    failed_platform: int = 0
    cancelled: int = 0
    skipped: int = 0
    success_rate: float | None = None
    success_low: float | None = None
    success_high: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    retries_per_run: float | None = None
    cost_per_run: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    active_ms: int = 0
    fb_good: int = 0
    fb_bad: int = 0
    signatures: list[SignatureStat] = field(default_factory=list)


@dataclass(slots=True)
class StatsReport:
    """``skills stats``: the skill, the window's days, its total and its groups."""

    skill: str
    window_days: int
    first_day: str
    last_day: str
    by: str | None
    total: Stats
    groups: list[Stats]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_window(text: str) -> int:
    """Whole UTC days in a window such as ``7d`` or ``36h`` (rounded up; 1 to 400)."""
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UserError(f"--window: {exc}") from None
    days = math.ceil(seconds / 86_400)
    if not 1 <= days <= ROLLUP_TTL_DAYS:
        raise UserError(f"--window must be between 1d and {ROLLUP_TTL_DAYS}d (got {text!r})")
    return days


def _known(redis: Redis, keys: Keys, skill: str) -> bool:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", skill):
        return False
    return bool(
        redis.sismember(keys.registry_names, skill)
        or redis.exists(keys.rollup_index(skill), keys.runs_by_skill(skill))
    )


def _fold(group: str, rollups: list[Rollup]) -> Stats:
    s = Stats(group)
    c: dict[str, int] = {}
    for r in rollups:
        for name, v in r.counts.items():
            c[name] = c.get(name, 0) + v
    s.runs, s.completed = c.get("runs", 0), c.get("status:completed", 0)
    s.failed_skill, s.failed_platform = c.get("failed:skill", 0), c.get("failed:platform", 0)
    s.cancelled, s.skipped = c.get("status:cancelled", 0), c.get("status:skipped", 0)
    s.tokens_in, s.tokens_out = c.get("tokens_in", 0), c.get("tokens_out", 0)
    s.active_ms, s.fb_good, s.fb_bad = (
        c.get("active_ms", 0),
        c.get("fb_good", 0),
        c.get("fb_bad", 0),
    )
    judged = s.completed + s.failed_skill
    if judged:
        s.success_rate = s.completed / judged
        s.success_low, s.success_high = wilson(s.completed, judged) or (None, None)
    hist = {b: c.get(f"dur:{b}", 0) for b in range(DURATION_BUCKETS)}
    s.p50_ms, s.p95_ms = quantile_ms(hist, 0.5), quantile_ms(hist, 0.95)
    executed = s.runs - s.skipped
    if executed > 0:
        s.retries_per_run = c.get("retries", 0) / executed
        s.cost_per_run = c.get("cost_micros", 0) / 1e6 / executed
    s.signatures = _signatures(rollups)
    return s


def _signatures(rollups: list[Rollup]) -> list[SignatureStat]:
    found: dict[str, SignatureStat] = {}
    for r in sorted(rollups, key=lambda r: r.day):  # oldest first: first/last follow the days
        for sig, parts in r.sigs.items():
            n = int(parts.get("n", 0) or 0)
            if n <= 0:
                continue
            cur = found.get(sig)
            if cur is None:
                found[sig] = SignatureStat(
                    sig, n, parts.get("msg", ""), parts.get("step", ""),
                    parts.get("last", ""), parts.get("first", ""), r.day, r.day,
                    parts.get("origin", "skill"),
                )  # fmt: skip
                continue
            cur.count += n
            cur.last_day = r.day
            cur.step = parts.get("step", cur.step)
            cur.example_run = parts.get("last", cur.example_run)
            cur.origin = parts.get("origin", cur.origin)
    return sorted(found.values(), key=lambda s: (-s.count, s.signature))[:TOP_SIGNATURES]


def skill_stats(
    redis: Redis,
    keys: Keys,
    skill: str,
    window: str = "7d",
    by: str | None = None,
    now: int | None = None,
) -> StatsReport:
    """The stats of ``skill`` over ``window`` (see the module doc), grouped ``by`` version or
    day. ``UserError`` for an unknown skill, a bad window or a bad grouping."""
    if by is not None and by not in GROUPINGS:
        raise UserError(f"--by must be one of: {', '.join(GROUPINGS)} (got {by!r})")
    days = parse_window(window)
    if not _known(redis, keys, skill):
        raise UserError(f"unknown skill {skill!r} (list skills with: loopwright skills list)")
    end = now if now is not None else now_ms()
    first, last = utc_day(end - (days - 1) * DAY_MS), utc_day(end)
    rollups = read_rollups(redis, keys, skill, first, last)
    groups: list[Stats] = []
    if by is not None:
        labels = sorted({r.version if by == "version" else r.day for r in rollups})
        for label in labels:
            members = [r for r in rollups if (r.version if by == "version" else r.day) == label]
            groups.append(_fold(label, members))
    return StatsReport(skill, days, first, last, by, _fold("all", rollups), groups)
