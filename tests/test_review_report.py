"""The review report, the store and the CLI: a deterministic, escaped report in Markdown and
self-contained HTML; reviews saved, capped, listed and shown; the summary posted once."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from conftest import Cluster
from loopwright.review.notify import post_summary
from loopwright.review.report import render, render_html, render_markdown, summary_line
from loopwright.review.store import get_review, list_reviews, save_review
from loopwright.review.types import (
    CandidateResult,
    Decision,
    Diagnosis,
    GateResult,
    Metrics,
    Review,
    SharedResponse,
    SkillReview,
    SkillScore,
    Verdict,
    VersionChange,
)
from loopwright.review.types import (
    Cluster as ErrorCluster,
)

EVIL = '<script>alert("x")</script>'
DAY0 = 1_780_000_000_000


def _metrics(ok: int, bad: int, plat: int = 0) -> Metrics:
    n = ok + bad
    daily = [(f"202606{d:02d}", ok / n if n else None, n // 7) for d in range(1, 8)]
    return Metrics(
        runs=n + plat, successes=ok, failures_skill=bad, failures_platform=plat,
        success_rate=ok / n if n else None, wilson_low=0.5, wilson_high=0.99, p50_ms=120.0,
        p95_ms=480.0, cost_per_run=0.0012, retries_per_run=0.05, bad_labels=2, good_labels=1,
        labelled=3, daily_success=daily, stability_mean=0.9, stability_std=0.05,
    )  # fmt: skip


def _skill(name: str, decision: Decision, verdict: Verdict = Verdict.HEALTHY) -> SkillReview:
    score = SkillScore(name, "a" * 24, verdict, [f"reason for {name}"], _metrics(50, 1))
    return SkillReview(score, decision=decision.value, decision_reason="")


def sample_review(review_id: str = "r-20260601", started: int = DAY0) -> Review:
    """Seven skills: one improved (with its diagnosis, candidates and gate), one that needs a
    model, one with too few runs, four healthy; attacker-controlled text everywhere."""
    flagged = SkillScore(
        EVIL, "b" * 24, Verdict.UNDERPERFORMING, [f"success fell {EVIL}"], _metrics(40, 12),
        _metrics(500, 5), p_value=1e-6, flags=["baseline_drop"], q_value=3e-6,
    )  # fmt: skip
    diag = Diagnosis(
        EVIL, "b" * 24,
        clusters=[ErrorCluster("abc123", f"KeyError: {EVIL}\x1b[31m\u202e", "fetch", 12,
                               ["run-1", "run-2"], "20260603", "b" * 24)],
        bad_runs=[("run-3", f'note <img src=x onerror="alert(1)"> {EVIL}')],
        shared_responses=[SharedResponse("http", "http://127.0.0.1:9/m", "p95_ms",
                                         "in [255, 320]", ["run-3", "run-4"])],
        version_change=VersionChange("c" * 24, "b" * 24, f"-old\n+new ``` {EVIL}\n"),
    )  # fmt: skip
    gate = GateResult(
        "passed", "fixed 3 false alarms, kept the incident", held_out=24,
        runs_fixed=["run-3", "run-5", "run-6"], runs_regressed=[], off_script_ratio=0.0,
        p95_tool_ms_old=40.0, p95_tool_ms_new=40.0, decided_by=["run-3", "run-5", "run-6"],
    )  # fmt: skip
    improved = SkillReview(
        flagged, diag,
        [CandidateResult("param", f"threshold 250 -> 340 {EVIL}", "d" * 24,
                         params_changed={"threshold": [250, 340]}, gate=gate),
         CandidateResult("rollback", "back to the last healthy version", "c" * 24,
                         gate=GateResult("rejected", "regressed run-9", 24,
                                         runs_regressed=["run-9"], decided_by=["run-9"]))],
        decision=Decision.IMPROVED.value, decision_reason=f"gate passed {EVIL}",
        promoted_version="d" * 24, cost_tokens=0, cost_usd=0.0,
    )  # fmt: skip
    needs = _skill("field-reader", Decision.NEEDS_MODEL, Verdict.UNDERPERFORMING)
    needs.cost_tokens, needs.cost_usd = 1200, 0.0042
    skills = [
        improved, needs,
        _skill("rarely-run", Decision.INSUFFICIENT_DATA, Verdict.INSUFFICIENT_DATA),
        *(_skill(f"ok-{i}", Decision.HEALTHY) for i in range(4)),
    ]  # fmt: skip
    r = Review(review_id, started, "7d", started + 90_000, skills, window_start="20260601",
               window_end="20260607")  # fmt: skip
    r.summarise()
    return r


def test_summary_line_counts_decisions() -> None:
    r = sample_review()
    assert (
        summary_line(r)
        == "7 skills reviewed: 1 improved, 1 needs a model, 1 insufficient data, 4 healthy"
    )
    assert r.summary == {"healthy": 4, "improved": 1, "insufficient_data": 1, "needs_model": 1}
    assert r.cost_tokens == 1200 and r.cost_usd == 0.0042


def test_review_round_trips_through_json() -> None:
    r = sample_review()
    again = Review.from_json(r.to_json())
    assert again == r and again.to_json() == r.to_json()


def test_report_is_deterministic() -> None:
    # Two equal reviews built apart render to the same bytes, in every format
    a, b = sample_review(), Review.from_json(sample_review().to_json())
    for fmt in ("md", "html", "json"):
        assert render(a, fmt) == render(b, fmt)


def test_report_escapes_untrusted_text() -> None:
    r = sample_review()
    html = render_html(r)
    assert "<script" not in html and "onerror=" not in html.replace("onerror=&#34;", "")
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html
    assert "\x1b" not in html and "\u202e" not in html
    md = render_markdown(r)
    # The diff is shown verbatim inside a code fence (inert), longer than its own backticks
    head, rest = md.split("````diff\n", 1)
    diff, tail = rest.split("\n````\n", 1)
    assert "``` <script>" in diff
    outside = head + tail
    assert "<script" not in outside and "<img" not in outside and "&lt;script&gt;" in outside
    assert "\x1b" not in md and "\u202e" not in md


def test_html_is_self_contained_with_a_chart() -> None:
    html = render_html(sample_review())
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    for external in ("<script", "<link", "<img", "<iframe", "@import", "url("):
        assert external not in html, external
    assert not re.search(r"<[a-z]+[^>]*\s(src|href)=", html)  # no tag loads anything
    assert html.count("<svg") == 7 and "<polyline" in html
    assert "7 skills reviewed: 1 improved" in html
    # The card shows the metrics, the cluster with its example runs, the gate table, decision
    for text in ("run-1", "p = 1e-06", "held out", "threshold", "Decision: improved",
                 "in [255, 320]", "Regression began with version"):  # fmt: skip
        assert text in html, text


def test_store_round_trip_cap_and_latest(cluster: Cluster) -> None:
    rt = cluster.rt
    for i in range(4):
        save_review(rt.redis, rt.keys, sample_review(f"r-{i}", DAY0 + i * 1000), keep=3)
    assert [e.id for e in list_reviews(rt.redis, rt.keys)] == ["r-3", "r-2", "r-1"]
    assert rt.redis.get(rt.keys.review("r-0")) is None  # the cap dropped the oldest
    latest = get_review(rt.redis, rt.keys)
    assert latest == sample_review("r-3", DAY0 + 3000)
    # Saved again under its id (a re-run report step): replaced, not duplicated
    save_review(rt.redis, rt.keys, sample_review("r-3", DAY0 + 3000), keep=3)
    assert rt.redis.zcard(rt.keys.reviews) == 3


def test_summary_posted_to_inbox_once(cluster: Cluster) -> None:
    rt = cluster.rt
    r = sample_review()
    assert post_summary(rt, r) is True
    assert post_summary(rt, r) is False  # a re-run after a crash posts nothing new
    entries = [json.loads(x) for x in rt.redis.lrange(rt.keys.inbox, 0, -1)]
    assert len(entries) == 1
    e = entries[0]
    assert e["title"] == "weekly review: " + summary_line(r) and e["level"] == "warning"
    assert (
        "field-reader: needs a model" in e["message"] and "review show r-20260601" in e["message"]
    )


def test_cli_list_and_show(make_cluster: Callable[..., Cluster], tmp_path: Path) -> None:
    c = make_cluster()
    none = c.cli("review", "show")
    assert none.returncode == 1 and none.stderr.count("\n") == 1 and "no review yet" in none.stderr
    rt = c.rt
    save_review(rt.redis, rt.keys, sample_review("r-old", DAY0), keep=10)
    save_review(rt.redis, rt.keys, sample_review("r-new", DAY0 + 86_400_000), keep=10)
    listed = c.cli("review", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert [row["id"] for row in rows] == ["r-new", "r-old"]
    assert rows[0]["summary"].startswith("7 skills reviewed")
    text = c.cli("review", "list")
    assert "r-new" in text.stdout and "<script" not in text.stdout
    md = c.cli("review", "show")
    assert md.returncode == 0 and md.stdout == render_markdown(
        sample_review("r-new", DAY0 + 86_400_000)
    )
    out = tmp_path / "report.html"
    html = c.cli("review", "show", "r-old", "--format", "html", "--out", str(out))
    assert html.returncode == 0, html.stderr
    assert out.read_text() == render_html(sample_review("r-old", DAY0))
    bad_fmt = c.cli("review", "show", "--format", "pdf")
    assert bad_fmt.returncode == 2 and "--format" in bad_fmt.stderr
    unknown = c.cli("review", "show", "nope")
    assert unknown.returncode == 1 and "no review 'nope'" in unknown.stderr
    assert unknown.stderr.count("\n") == 1


def test_publish_stores_writes_and_tells_once(cluster: Cluster) -> None:
    from loopwright.review.publish import publish

    rt = cluster.rt
    r = sample_review()
    first = publish(rt, r)
    again = publish(rt, r)  # the report step re-run after a crash
    assert first.posted and not again.posted
    assert first.markdown.read_text() == render_markdown(r)
    assert again.html.read_text() == render_html(r) and again.html.name == "r-20260601.html"
    assert get_review(rt.redis, rt.keys) == r
    assert rt.redis.llen(rt.keys.inbox) == 1


def test_markdown_escaping_rules() -> None:
    from loopwright.review.report import code, md

    # Inline syntax is escaped anywhere, block syntax only where it would start a block
    assert md("a-b (c) [d](e) *f* _g_ |h|") == r"a-b (c) \[d\](e) \*f\* \_g\_ \|h\|"
    assert md("# title") == r"\# title" and md("1. item") == r"1\. item"
    assert md("- x\nsecond line") == r"\- x second line"
    assert md('<a href="x">&') == '&lt;a href="x"&gt;&amp;'
    # Inside a code span: no backtick to close it, no pipe to end a table cell
    assert code("run`|1\n") == "run'¦1"
