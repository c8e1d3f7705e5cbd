"""The review's candidates and gate on recorded runs, replayed in the real sandbox.

History is written through the runner's scripts with each step's recorded tool calls
(``review_support``); every replay runs the skill's source in a real guest process.
"""

from __future__ import annotations

from collections.abc import Callable

from conftest import Cluster
from loopwright.history.replay import candidate_from_source, candidate_from_version
from loopwright.history.seeder import SeedSkill, seed_history
from loopwright.review import rewrite
from loopwright.review.candidates import copied_literals, failing, param_search
from loopwright.review.gate import class_of, gate
from loopwright.review.loop import recorded_classes
from loopwright.review.retries import extend, retry_evidence
from loopwright.review.split import outcome_class, side_of, split_runs
from loopwright.runner.recording import Recording, load_recording
from loopwright.skills_registry.declaration import with_values
from review_support import false_alarm_week, health, seed_health


def _setup(make_cluster: Callable[..., Cluster]) -> tuple[Cluster, str, dict[str, list[str]]]:
    cluster = make_cluster(http_private_allow="127.0.0.1", sidecar_case_timeout=20)
    version = cluster.rt.sources.put(health(250), "health-check")
    search, held = false_alarm_week()
    return cluster, version, seed_health(cluster.rt, version, search, held)


def _recs(cluster: Cluster, ids: list[str]) -> list[Recording]:
    out = [load_recording(cluster.rt.redis, cluster.rt.keys, i) for i in ids]
    assert all(r is not None and r.state == "complete" for r in out)
    return [r for r in out if r is not None]


def test_split_is_stable_and_splits_both_ways() -> None:
    ids = [f"{i:020x}" for i in range(400)]
    split = split_runs(ids, lambda x: x)
    assert len(split.search) == len(split.held_out) == 200
    assert split_runs(ids, lambda x: x) == split
    # Most runs keep their hash side: only an uneven class is rebalanced
    kept = sum(side_of(i) == "search" for i in split.search)
    assert kept > 150


def test_every_outcome_class_with_two_runs_has_runs_on_both_sides() -> None:
    # Given labelled-good incident runs whose ids all hash to the search side, and a single
    # labelled-bad run
    good = [i for i in (f"g{n:019x}" for n in range(200)) if side_of(i) == "search"][:3]
    normal = [f"n{n:019x}" for n in range(40)]
    ids = good + normal + ["b" + "0" * 19]
    classes = {i: "completed/good" for i in good} | {i: "completed/unlabelled" for i in normal}
    classes["b" + "0" * 19] = "completed/bad"
    # When the runs are split by outcome class
    split = split_runs(ids, lambda x: x, classes.__getitem__)
    # Then the incident is on both sides, the single bad run is held out, each class is even
    assert {i for i in good if i in split.held_out} and {i for i in good if i in split.search}
    assert "b" + "0" * 19 in split.held_out
    held_normal = [i for i in split.held_out if i in normal]
    assert len(held_normal) == 20
    # And the same history gives the same split, whatever order the ids come in
    again = split_runs(list(reversed(ids)), lambda x: x, classes.__getitem__)
    assert set(again.held_out) == set(split.held_out)
    assert outcome_class("completed", "good") == "completed/good"
    assert outcome_class("failed", None) == "failed/unlabelled"


def test_offline_search_raises_the_threshold_and_the_gate_passes_it_on_held_out_runs(
    make_cluster: Callable[..., Cluster],
) -> None:
    # Given a health check whose slow nights raised false alarms (labelled bad) and whose
    # incident raised a real one (labelled good)
    cluster, version, ids = _setup(make_cluster)
    old = candidate_from_version(cluster.rt, "health-check", version)
    search, held = _recs(cluster, ids["search"]), _recs(cluster, ids["held-out"])
    # When the parameter search runs on the search split
    outcome = param_search(cluster.rt, old, search, cap=12)
    # Then it proposes a threshold between the false alarms and the incident, as an AST edit
    assert outcome.proposal is not None, outcome.reason
    threshold = outcome.proposal.changes["params"]["threshold"]
    assert 290 < threshold < 3100 and threshold not in (265, 270, 290, 300)
    assert outcome.proposal.source == with_values(old.source, {"threshold": threshold}, {})
    new = candidate_from_source(str(outcome.proposal.source), "health-check")
    # And the gate passes it on the held-out runs: both false alarms fixed, incident kept
    result = gate(cluster.rt, old, new, held)
    assert result.verdict == "passed", result.reason
    bad = [r.run_id for r in held if r.feedback == "bad"]
    assert sorted(result.fixed) == sorted(bad) and result.regressed == []
    assert result.off_script_rate == 0.0 and result.p95_new_ms <= result.p95_old_ms
    # And the same history gives the same decision
    again = gate(cluster.rt, old, new, held)
    assert again.to_dict() == result.to_dict()


def test_a_candidate_that_silences_the_incident_is_rejected_with_the_run_that_decided(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster, version, ids = _setup(make_cluster)
    old = candidate_from_version(cluster.rt, "health-check", version)
    held = _recs(cluster, ids["held-out"])
    # When a candidate whose threshold is above the incident is gated
    new = candidate_from_source(health(5000), "health-check")
    result = gate(cluster.rt, old, new, held)
    # Then it is rejected, and the incident (labelled good) is the run that decided it
    incident = next(r.run_id for r in held if r.feedback == "good")
    assert result.verdict == "rejected"
    assert result.deciding == [incident] and result.regressed == [incident]


def test_a_candidate_that_fixes_nothing_is_inconclusive(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster, version, ids = _setup(make_cluster)
    old = candidate_from_version(cluster.rt, "health-check", version)
    held = _recs(cluster, ids["held-out"])
    result = gate(cluster.rt, old, candidate_from_source(health(245), "health-check"), held)
    assert result.verdict == "inconclusive" and result.fixed == []
    assert "fixes none" in result.reason


def test_a_rewrite_that_copies_values_from_the_failing_runs_is_overfitted(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster, _, ids = _setup(make_cluster)
    search = _recs(cluster, ids["search"])
    fitted = health(250).replace(
        'if m["p95_ms"] > ctx.params["threshold"]:',
        'if m["p95_ms"] > ctx.params["threshold"] and m["p95_ms"] not in (270, 290):',
    )
    assert copied_literals(health(250), fitted, failing(search)) == ["270", "290"]
    # A general fix (a field name, a new threshold) copies nothing
    assert copied_literals(health(250), health(1000, field="p95_ms"), failing(search)) == []


def test_a_model_rewrite_that_copies_failing_values_is_rejected_as_overfitted(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster, version, ids = _setup(make_cluster)
    old = candidate_from_version(cluster.rt, "health-check", version)
    search = _recs(cluster, ids["search"])
    fitted = health(250).replace(
        'if m["p95_ms"] > ctx.params["threshold"]:',
        'if m["p95_ms"] > ctx.params["threshold"] and m["p95_ms"] != 270:',
    )
    reply = {"model": "scripted", "text": f"```python\n{fitted}```", "error": None}
    outcome = rewrite.check(cluster.rt, old, reply, search)
    assert outcome.proposal is None and outcome.reason.startswith("overfitted")
    assert "270" in outcome.reason


def test_a_held_out_split_without_the_incident_is_inconclusive_never_passed(
    make_cluster: Callable[..., Cluster],
) -> None:
    # Given held-out runs that hold no labelled-good run while the window has one (a caller's
    # split, or a recording that would not load)
    cluster, version, ids = _setup(make_cluster)
    old = candidate_from_version(cluster.rt, "health-check", version)
    search, held = _recs(cluster, ids["search"]), _recs(cluster, ids["held-out"])
    held = [r for r in held if r.feedback != "good"]
    classes = {class_of(r) for r in search + held}
    assert "completed/good" in classes
    # When a candidate that fixes the false alarms and silences the incident is gated
    result = gate(cluster.rt, old, candidate_from_source(health(5000), "health-check"), held,
                  classes=classes)  # fmt: skip
    # Then nothing the gate sees contradicts it, and still it does not pass: inconclusive
    assert result.verdict == "inconclusive", result.reason
    assert result.missing_classes == ["completed/good"] and "completed/good" in result.reason
    assert result.fixed  # it would have passed on the runs it saw


READER = """\
from loopwright.sdk import skill


@skill(name="flaky-reader", tools=["http"], http_allow=["127.0.0.1"], retries={retries},
       backoff=0.1)
def main(ctx):
    m = ctx.step.run("fetch", lambda: ctx.tools.http.get_json("{url}"))
    return {{"p95_ms": m["p95_ms"]}}
"""


def test_a_retry_fixes_transient_timeouts_with_the_fixes_named_as_predicted(
    make_cluster: Callable[..., Cluster],
) -> None:
    # Given a reader with one retry whose service times out on a third of the attempts: the
    # seeder records every attempt (timed-out ones with their retriable error), as the runner
    cluster = make_cluster(http_private_allow="127.0.0.1", sidecar_case_timeout=20)
    rt = cluster.rt
    version = rt.sources.put(READER.format(retries=1, url=SeedSkill("x").url), "flaky-reader")
    profile = SeedSkill("flaky-reader", runs_per_day=10, success=1.0, steps=1, record=True,
                        retry_rate=0.0, timeout_rate=0.35, call_retries=1,
                        versions=(version,))  # fmt: skip
    end = 1_790_000_000_000  # a fixed clock: the same run ids, hence the same split, every time
    counts = seed_history(rt, [profile], days=7, end_ms=end)
    assert counts["flaky-reader:failed"] >= 4
    classes = recorded_classes(rt, "flaky-reader", version, end - 8 * 86_400_000, end)
    split = split_runs(classes, lambda i: i, classes.__getitem__)
    search, held = _recs(cluster, split.search), _recs(cluster, split.held_out)
    failed = next(r for r in search if r.status == "failed")
    assert [(c["attempt"], c["retriable"], c["res"]) for c in failed.calls] == [
        (1, True, None), (2, True, None)
    ]  # fmt: skip
    assert "timed out" in str(failed.calls[0]["error"])
    old = candidate_from_version(rt, "flaky-reader", version)
    # When the offline search runs on the search split
    outcome = param_search(rt, old, search, cap=12)
    # Then it raises the retries, and the gate passes it on the held-out split: the old
    # version fails there as recorded, the candidate's extra attempt is answered from the
    # split's recorded retries, and the fixes resting on it are named
    assert outcome.proposal is not None, outcome.reason
    assert outcome.proposal.changes["policy"]["retries"] in (2, 3), outcome.tried
    new = candidate_from_source(str(outcome.proposal.source), "flaky-reader")
    result = gate(rt, old, new, held, classes={class_of(r) for r in search + held})
    assert result.verdict == "passed", result.reason
    assert result.fixed and set(result.predicted) == set(result.fixed)
    assert "beyond the recording" in result.reason and result.regressed == []
    # And a candidate that retries less regresses the runs a retry saved
    fewer = candidate_from_source(READER.format(retries=0, url=SeedSkill("x").url))
    worse = gate(rt, old, fewer, held)
    assert worse.verdict == "rejected" and worse.regressed


def _timed_out_run(run_id: str, attempts: list[bool], at: int) -> Recording:
    """A recorded run of one GET: each attempt answered (True) or timed out (False)."""
    req = {"method": "GET", "url": "http://127.0.0.1:9/m", "params": None, "headers": None,
           "body": None}  # fmt: skip
    calls = [
        {"seq": 1, "attempt": k + 1, "tool": "http", "at": at + k, "req": req,
         "res": {"p95_ms": at % 1000} if ok else None, "error": None if ok else "timed out",
         "retriable": not ok, "elapsed_ms": 40.0 if ok else 2000.0}
        for k, ok in enumerate(attempts)
    ]  # fmt: skip
    status = "completed" if attempts[-1] else "failed"
    step = {"status": "done" if attempts[-1] else "failed"}
    return Recording(run_id, "s", "v", status, None, None, {}, {}, "complete", calls, {},
                     {1: step})  # fmt: skip


def test_retries_beyond_the_recording_rest_on_the_splits_evidence_and_are_deterministic() -> None:
    saved = [_timed_out_run(f"ok{i}", [False, True], 1000 * i) for i in range(6)]
    lost = [_timed_out_run(f"lost{i}", [False, False], 1000 * i + 500) for i in range(2)]
    plain = _timed_out_run("plain", [True], 7000)
    runs = saved + lost + [plain]
    evidence = retry_evidence(runs)
    [ev] = evidence.values()
    assert (ev.retried, ev.succeeded) == (8, 6)  # 6 retries answered, 2 timed out again
    extended = extend(runs, evidence, 2)
    assert extended[:6] == saved and extended[-1] is plain  # only the failed runs change
    for rec in extended[6:8]:
        added = rec.calls[2:]
        assert added and all(c["predicted"] and c["elapsed_ms"] == 0.0 for c in added)
        assert len(added) == 2 or added[-1]["error"] is None  # stops at the first success
    assert extend(runs, evidence, 2) == extended  # same history, same extension
    # Too little evidence: the attempt stays unanswered (off-script in the replay)
    few = retry_evidence(saved[:2] + lost)
    assert extend(saved[:2] + lost, few, 2) == saved[:2] + lost
