"""Selection and diagnosis on seeded history: each verdict, Benjamini-Hochberg across skills,
error clusters, the version change a regression began with, bad-labelled runs and the
recorded responses they share.

One fleet (``review_profiles``: a skill per verdict, 35 days) is seeded once for the module
through the runner's own scripts, at a fixed ``now``, so every figure is deterministic.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Cluster, RedisProc, make_settings
from loopwright.history.seeder import SeedSkill, review_profiles, seed_history
from loopwright.review.diagnose import diagnose
from loopwright.review.select import Thresholds, benjamini_hochberg, drop_p_value, score_skills
from loopwright.review.types import Metrics, SkillScore, Verdict

NOW = 1_780_000_000_000 + 13 * 3_600_000  # a fixed afternoon (UTC)


@pytest.fixture(scope="module")
def fleet(
    redis_server: RedisProc, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, dict[str, SkillScore]]]:
    tmp: Path = tmp_path_factory.mktemp("review-fleet")
    c = Cluster(make_settings(redis_server.url, tmp), tmp)
    seed_history(c.rt, review_profiles(), days=35, end_ms=NOW, seed=1)
    scores = score_skills(c.rt.redis, c.rt.keys, Thresholds(), now=NOW)
    yield c, {s.skill: s for s in scores}


def test_each_verdict_from_seeded_history(fleet: tuple[Cluster, dict[str, SkillScore]]) -> None:
    _, by = fleet
    assert list(by) == sorted(by)  # deterministic order
    assert by["steady"].verdict is Verdict.HEALTHY, by["steady"].reasons
    assert by["steady"].flags == []
    # Under the floor: the upper Wilson bound is below 95%
    timeouts = by["flaky-timeouts"]
    assert timeouts.verdict is Verdict.UNDERPERFORMING and "floor" in timeouts.flags
    assert timeouts.window.wilson_high is not None and timeouts.window.wilson_high < 0.95
    # A drop against the skill's own 4 weeks, not under the floor
    drifting = by["drifting"]
    assert drifting.verdict is Verdict.UNDERPERFORMING, drifting.reasons
    assert drifting.flags[0] == "baseline_drop" and "floor" not in drifting.flags
    assert drifting.q_value is not None and drifting.q_value <= 0.05
    assert drifting.baseline is not None and drifting.baseline.judged > drifting.window.judged
    # Bad feedback: the health check's false alarms labelled bad
    hc = by["health-check"]
    assert hc.verdict is Verdict.UNDERPERFORMING and "bad_feedback" in hc.flags
    assert hc.window.bad_labels >= 3 and hc.window.success_rate == 1.0
    # Only the platform failed it: never the skill's fault
    victim = by["platform-victim"]
    assert victim.verdict is Verdict.PLATFORM_ONLY, victim.reasons
    assert victim.window.failures_platform > 0 and victim.window.success_rate == 1.0
    # Too few runs: never flagged
    rare = by["rarely-run"]
    assert rare.verdict is Verdict.INSUFFICIENT_DATA and rare.flags == []
    # The renamed field: every run since fails, under the floor
    assert by["field-reader"].verdict is Verdict.UNDERPERFORMING
    # Daily points cover the window; stability is computed from them
    assert len(victim.window.daily_success) == 7
    assert victim.window.stability_mean == 1.0 and victim.window.stability_std == 0.0


def test_scores_round_trip_and_repeat(fleet: tuple[Cluster, dict[str, SkillScore]]) -> None:
    c, by = fleet
    again = score_skills(c.rt.redis, c.rt.keys, Thresholds(), now=NOW)
    assert [s.to_dict() for s in again] == [s.to_dict() for s in by.values()]
    for s in again:
        assert SkillScore.from_dict(s.to_dict()) == s


def test_benjamini_hochberg_across_skills() -> None:
    # Given 10 skills each with a p-value of 0.03: alone each would pass 0.05, together none
    q = benjamini_hochberg([0.03] * 10)
    assert all(abs(x - 0.03) < 1e-12 for x in q)  # equal p-values: q = p * m / m
    q = benjamini_hochberg([0.001, 0.04, 0.04, 0.3, 0.9])
    assert q[0] == pytest.approx(0.005) and q[1] == pytest.approx(0.0666, abs=1e-3)
    assert q[1] > 0.05  # significant alone, not after the correction
    assert q[3] == pytest.approx(0.375) and q[4] == pytest.approx(0.9)
    # Monotone in p, capped at 1
    assert benjamini_hochberg([0.9, 0.99]) == [0.99, 0.99]


def test_marginal_drop_is_not_flagged_after_correction(
    redis_server: RedisProc, tmp_path: Path
) -> None:
    # Given healthy skills with ordinary noise, BH keeps every one of them unflagged
    c = Cluster(make_settings(redis_server.url, tmp_path), tmp_path)
    profiles = [SeedSkill(f"ok-{i}", runs_per_day=4, success=0.99) for i in range(6)]
    seed_history(c.rt, profiles, days=35, end_ms=NOW, seed=11)
    scores = score_skills(c.rt.redis, c.rt.keys, Thresholds(), now=NOW)
    assert all(s.p_value is not None for s in scores)
    assert [s.skill for s in scores if s.verdict is Verdict.UNDERPERFORMING] == []


def test_drop_p_value_is_one_sided() -> None:
    base = Metrics(successes=990, failures_skill=10)
    worse, better = Metrics(successes=90, failures_skill=10), Metrics(successes=100)
    p_worse, p_better = drop_p_value(worse, base), drop_p_value(better, base)
    assert p_worse is not None and p_worse < 1e-4
    assert p_better is not None and p_better > 0.5
    assert drop_p_value(Metrics(), base) is None


def test_diagnosis_of_a_bad_new_version(fleet: tuple[Cluster, dict[str, SkillScore]]) -> None:
    c, by = fleet
    d = diagnose(c.rt.redis, c.rt.keys, by["drifting"], now=NOW)
    top = d.clusters[0]
    assert top.message.startswith("ValueError: could not parse 'latency'")
    assert top.step == "step-2" and top.count > 0 and top.example_runs
    assert top.began_with_version == by["drifting"].version
    assert d.version_change is not None
    assert d.version_change.to_version == by["drifting"].version
    assert "variant 1" in d.version_change.diff and "variant 0" in d.version_change.diff


def test_diagnosis_of_false_alarms_and_a_renamed_field(
    fleet: tuple[Cluster, dict[str, SkillScore]],
) -> None:
    c, by = fleet
    hc = diagnose(c.rt.redis, c.rt.keys, by["health-check"], now=NOW)
    assert hc.clusters == [] and len(hc.bad_runs) >= 3
    assert all(note.startswith("false alarm") for _, note in hc.bad_runs)
    shared = {(s.tool, s.path): s for s in hc.shared_responses}
    p95 = shared[("http", "p95_ms")]
    assert p95.target == "http://127.0.0.1:9/metrics" and p95.pattern.startswith("in [")
    assert set(p95.runs) <= {r for r, _ in hc.bad_runs}
    fr = diagnose(c.rt.redis, c.rt.keys, by["field-reader"], now=NOW)
    assert fr.clusters[0].message == "KeyError: 'p95_ms'" and fr.clusters[0].step == "step-1"
    assert fr.clusters[0].began_with_version is None  # no version change: the service changed
    assert fr.version_change is None
    paths = {(s.path, s.pattern) for s in fr.shared_responses}
    assert ("p95_ms", "absent") in paths
