"""Selection: score every active skill version over the review window and flag the
underperforming ones (``docs/review.md`` explains each test and why its threshold).

Read from the per-version daily rollups only (``history/rollups.py``): a fleet's month costs a
few thousand ``HGETALL``s, never a scan of runs. The window is the last ``window_days`` UTC days
ending at ``now`` (injectable, so seeded history scores the same every time); the baseline is
the skill's 28 days before it, every version together (a new version is compared with what the
skill used to do, not with itself).

A version is **underperforming** when any of these holds:

* ``floor``: the upper bound of its 95% Wilson interval is below ``review_min_success``. The
  upper bound, not the point estimate: a skill is flagged only when it is *clearly* under the
  floor, so 19 successes out of 20 (a point estimate of 95%, an interval reaching 99%) is not.
* ``baseline_drop``: a one-sided two-proportion z-test says its success rate is lower than the
  baseline's, and the p-value survives Benjamini-Hochberg across every skill tested in the same
  review at ``review_fdr_q`` (testing 40 skills at 5% each would flag two healthy ones a week),
  with at least ``MIN_DROP_FAILURES`` skill failures in the window (against a spotless baseline
  a single failure is "significant", and it is noise).
* ``bad_feedback``: at least ``MIN_LABELS`` labelled runs and at least
  ``review_max_bad_feedback`` of them labelled bad.
* ``p95_increase`` / ``cost_increase``: the window's p95 duration is at least ``P95_RATIO``
  times the baseline's (the histogram's buckets span a factor of two, so a smaller ratio is
  within one bucket's resolution), or its cost per run ``COST_RATIO`` times and at least
  ``COST_MIN_DELTA`` more; both only against a baseline of at least ``review_min_runs`` runs.

``unstable`` (the standard deviation of the daily success rates above ``UNSTABLE_STD``) is
reported but flags nothing on its own: with a few runs a day the daily rates are noisy.
Platform failures are never in a success rate: a version whose only failures are the
platform's is ``platform_only``; one with fewer than ``review_min_runs`` runs is
``insufficient_data`` and never flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from redis import Redis

from loopwright.history.rollups import Rollup, read_rollups
from loopwright.keys import Keys
from loopwright.review.types import DailyPoint, Metrics, SkillScore, Verdict
from loopwright.runner.rollup import DURATION_BUCKETS, utc_day
from loopwright.sdk.names import is_reserved
from loopwright.service.stats import quantile_ms, wilson
from loopwright.settings import Settings

DAY_MS = 86_400_000
BASELINE_DAYS = 28
MIN_LABELS = 3
MIN_DROP_FAILURES = 3
P95_RATIO = 2.0
COST_RATIO = 1.5
COST_MIN_DELTA = 0.001  # USD per run
UNSTABLE_STD = 0.15


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The selection's knobs (from the settings; tests and the benchmark pass their own)."""

    min_runs: int = 20
    min_success: float = 0.95
    fdr_q: float = 0.05
    max_bad_feedback: float = 0.20
    min_labels: int = MIN_LABELS
    baseline_days: int = BASELINE_DAYS

    @classmethod
    def from_settings(cls, s: Settings) -> Thresholds:
        return cls(s.review_min_runs, s.review_min_success, s.review_fdr_q,
                   s.review_max_bad_feedback)  # fmt: skip


def window_days(end_ms: int, days: int) -> list[str]:
    """The ``days`` UTC days (``yyyymmdd``) ending with the day of ``end_ms``, oldest first."""
    return [utc_day(end_ms - i * DAY_MS) for i in range(days - 1, -1, -1)]


def metrics(rollups: list[Rollup], days: list[str]) -> Metrics:
    """Fold rollups into :class:`Metrics`, with one daily point per day of ``days``."""
    c: dict[str, int] = {}
    per_day: dict[str, list[int]] = {d: [0, 0] for d in days}
    for r in rollups:
        for name, v in r.counts.items():
            c[name] = c.get(name, 0) + v
        ok, bad = r.counts.get("status:completed", 0), r.counts.get("failed:skill", 0)
        if r.day in per_day:
            per_day[r.day][0] += ok
            per_day[r.day][1] += bad
    m = Metrics(
        runs=c.get("runs", 0),
        successes=c.get("status:completed", 0),
        failures_skill=c.get("failed:skill", 0),
        failures_platform=c.get("failed:platform", 0),
        cancelled=c.get("status:cancelled", 0),
        skipped=c.get("status:skipped", 0),
        bad_labels=max(0, c.get("fb_bad", 0)),
        good_labels=max(0, c.get("fb_good", 0)),
    )
    m.labelled = m.bad_labels + m.good_labels
    if m.judged:
        m.success_rate = m.successes / m.judged
        m.wilson_low, m.wilson_high = wilson(m.successes, m.judged) or (None, None)
    hist = {b: c.get(f"dur:{b}", 0) for b in range(DURATION_BUCKETS)}
    m.p50_ms, m.p95_ms = quantile_ms(hist, 0.5), quantile_ms(hist, 0.95)
    executed = m.runs - m.skipped
    if executed > 0:
        m.retries_per_run = c.get("retries", 0) / executed
        m.cost_per_run = c.get("cost_micros", 0) / 1e6 / executed
    daily: list[DailyPoint] = []
    for d in days:
        ok, bad = per_day[d]
        daily.append((d, ok / (ok + bad) if ok + bad else None, ok + bad))
    m.daily_success = daily
    rates = [r for _, r, _ in daily if r is not None]
    if rates:
        m.stability_mean = sum(rates) / len(rates)
        m.stability_std = math.sqrt(sum((r - m.stability_mean) ** 2 for r in rates) / len(rates))
    return m


def drop_p_value(window: Metrics, baseline: Metrics) -> float | None:
    """One-sided two-proportion z-test (pooled): the p-value of "the window's success rate is
    lower than the baseline's". None when either side has no judged runs."""
    n1, n2 = window.judged, baseline.judged
    if not n1 or not n2:
        return None
    p1, p2 = window.successes / n1, baseline.successes / n2
    pooled = (window.successes + baseline.successes) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if var <= 0:
        return 1.0  # both all successes or all failures: no evidence of a drop
    z = (p2 - p1) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """BH-adjusted q-values, in the order given (monotone, capped at 1)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: (p_values[i], i))
    q = [1.0] * m
    running = 1.0
    for rank in range(m, 0, -1):
        i = order[rank - 1]
        running = min(running, p_values[i] * m / rank)
        q[i] = min(1.0, running)
    return q


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def _judge(skill: str, version: str, w: Metrics, b: Metrics | None, t: Thresholds) -> SkillScore:
    """Every test but the baseline drop (which needs the whole fleet's p-values)."""
    score = SkillScore(skill, version, Verdict.HEALTHY, [], w, b)
    if w.judged < t.min_runs:
        if w.failures_platform and not w.failures_skill and w.runs >= t.min_runs:
            score.verdict = Verdict.PLATFORM_ONLY
            score.reasons.append(
                f"{w.failures_platform} of {w.runs} runs failed on the platform, none by the "
                f"skill; {w.judged} judged runs are too few to score it"
            )
        else:
            score.verdict = Verdict.INSUFFICIENT_DATA
            score.reasons.append(f"{w.judged} judged runs in the window (fewer than {t.min_runs})")
        return score
    if w.wilson_high is not None and w.wilson_high < t.min_success:
        score.flags.append("floor")
        score.reasons.append(
            f"success {_pct(w.success_rate)} (95% interval {_pct(w.wilson_low)}-"
            f"{_pct(w.wilson_high)}) is clearly below the {_pct(t.min_success)} floor"
        )
    if w.labelled >= t.min_labels and w.bad_labels / w.labelled >= t.max_bad_feedback:
        score.flags.append("bad_feedback")
        score.reasons.append(
            f"{w.bad_labels} of {w.labelled} labelled runs labelled bad "
            f"(flagged at {_pct(t.max_bad_feedback)})"
        )
    if b is not None and b.judged >= t.min_runs:
        score.p_value = drop_p_value(w, b)
        if w.p95_ms and b.p95_ms and w.p95_ms >= P95_RATIO * b.p95_ms:
            score.flags.append("p95_increase")
            score.reasons.append(
                f"p95 duration {w.p95_ms:.0f} ms is {w.p95_ms / b.p95_ms:.1f}x the baseline's "
                f"{b.p95_ms:.0f} ms"
            )
        wc, bc = w.cost_per_run, b.cost_per_run
        if (
            wc is not None
            and bc is not None
            and wc >= COST_RATIO * bc
            and wc - bc >= COST_MIN_DELTA
        ):
            score.flags.append("cost_increase")
            score.reasons.append(f"cost per run ${wc:.4f} vs ${bc:.4f} in the baseline")
    if w.stability_std is not None and w.stability_std > UNSTABLE_STD:
        score.flags.append("unstable")
        score.reasons.append(
            f"daily success varies a lot (mean {_pct(w.stability_mean)}, "
            f"std {w.stability_std:.2f}); reported only"
        )
    return score


FLAGGING = ("floor", "baseline_drop", "bad_feedback", "p95_increase", "cost_increase")


def score_skills(
    redis: Redis,
    keys: Keys,
    thresholds: Thresholds,
    *,
    now: int,
    days: int = 7,
    only: str | None = None,
) -> list[SkillScore]:
    """Score the active version of every active skill (reserved built-ins left out; ``only``:
    one skill), sorted by name. See the module doc for the verdicts."""
    active = {str(k): str(v) for k, v in redis.hgetall(keys.skills).items()}
    names = sorted(n for n in active if not is_reserved(n) and (only is None or n == only))
    w_days = window_days(now, days)
    base_end = now - days * DAY_MS
    b_days = window_days(base_end, thresholds.baseline_days)
    scores: list[SkillScore] = []
    for name in names:
        version = active[name]
        rollups = read_rollups(redis, keys, name, b_days[0], w_days[-1])
        w_roll = [r for r in rollups if r.day >= w_days[0] and r.version == version]
        b_roll = [r for r in rollups if r.day <= b_days[-1]]
        base = metrics(b_roll, b_days) if b_roll else None
        score = _judge(name, version, metrics(w_roll, w_days), base, thresholds)
        score.baseline_versions = sorted({r.version for r in b_roll})
        scores.append(score)
    tested = [s for s in scores if s.p_value is not None]
    for s, q in zip(tested, benjamini_hochberg([s.p_value or 1.0 for s in tested]), strict=True):
        s.q_value = q
        enough = s.window.failures_skill >= MIN_DROP_FAILURES
        if q <= thresholds.fdr_q and enough and s.baseline is not None:
            s.flags.insert(0, "baseline_drop")
            s.reasons.insert(
                0,
                f"success {_pct(s.window.success_rate)} vs {_pct(s.baseline.success_rate)} in "
                f"the {thresholds.baseline_days} days before (p={s.p_value:.2g}, q={q:.2g} "
                "after Benjamini-Hochberg)",
            )
    for s in scores:
        if s.verdict is not Verdict.HEALTHY:
            continue
        if any(f in FLAGGING for f in s.flags):
            s.verdict = Verdict.UNDERPERFORMING
        elif s.window.failures_platform and not s.window.failures_skill:
            s.verdict = Verdict.PLATFORM_ONLY
            s.reasons.append(
                f"{s.window.failures_platform} runs failed on the platform, none by the skill: "
                "not the skill's fault"
            )
        elif not s.reasons:
            s.reasons.append(
                f"success {_pct(s.window.success_rate)} over {s.window.judged} runs; "
                "nothing flagged"
            )
    return scores


def flagged(scores: list[SkillScore]) -> list[SkillScore]:
    """The underperforming ones (what diagnosis and the candidates work on)."""
    return [s for s in scores if s.verdict is Verdict.UNDERPERFORMING]
