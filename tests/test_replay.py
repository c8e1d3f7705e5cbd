"""Replay: a recorded run on its own version and on changed ones, in the real sandbox.

Real worker and sandbox (process backend; one test on docker too), real HTTP server on
127.0.0.1 that counts the alert POSTs: replays must never reach it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from conftest import DOCKER_IMAGE, Cluster
from loopwright.agent.tools import verdict_view
from loopwright.history.replay import replay_run
from loopwright.sidecar.pipeline import Sidecar
from replay_support import Metrics, health, metrics

__all__ = ["metrics"]


def recorded_run(cluster: Cluster, metrics: Metrics, source: str) -> str:
    name = cluster.skill(source)
    run = cluster.wait(cluster.start(name, {"base": metrics.base}, trusted=False), timeout=60)
    assert run.status.value in ("completed", "failed"), run.error
    return run.id


def sandboxed(make_cluster: Callable[..., Cluster], backend: str = "process") -> Cluster:
    cluster = make_cluster(
        sandbox_backend=backend,
        sandbox_docker_image=DOCKER_IMAGE,
        sandbox_cpu_seconds=5,
        http_allow_private=True,
        sidecar_case_timeout=20,
    )
    cluster.worker()
    return cluster


def test_replay_of_its_own_version_reproduces_the_run_and_performs_nothing(
    make_cluster: Callable[..., Cluster], metrics: Metrics, sandbox_backend: str
) -> None:
    # Given a recorded run that fetched, posted an alert and notified
    cluster = sandboxed(make_cluster, sandbox_backend)
    run_id = recorded_run(cluster, metrics, health(100))
    posts, gets = metrics.posts, metrics.gets
    assert posts == 1
    # When it is replayed on the version it ran, twice
    _, first = replay_run(cluster.rt, run_id)
    _, second = replay_run(cluster.rt, run_id)
    # Then the outcome is the recorded one, nothing differs and nothing was performed
    assert first.kind == "same", first
    assert first.replayed.status == "completed"
    assert first.replayed.output == {"alert": True, "p95": 150}
    assert [e["tool"] for e in first.replayed.side_effects] == ["http", "notify"]
    assert first.replayed.off_script == []
    assert first.replayed.duration_ms > 0
    assert len(first.replayed.call_ms) == first.replayed.answered == 3
    assert abs(sum(first.replayed.call_ms) - first.replayed.duration_ms) < 0.01
    assert (metrics.posts, metrics.gets) == (posts, gets)
    # And it is deterministic
    assert first.model_dump_json() == second.model_dump_json()


def test_replay_of_a_changed_version_shows_the_difference(
    make_cluster: Callable[..., Cluster], metrics: Metrics
) -> None:
    # Given a run that alerted at threshold 100, and a version with threshold 200
    cluster = sandboxed(make_cluster)
    run_id = recorded_run(cluster, metrics, health(100))
    cluster.skill(health(200))
    changed = cluster.rt.sources.resolve("health")
    posts = metrics.posts
    # When the run is replayed on the changed version
    cand, diff = replay_run(cluster.rt, run_id, version=changed[:10])
    # Then the outcome and the side effects differ, and nothing was posted
    assert cand.version == changed
    assert diff.kind == "outcome"
    assert diff.output_changed and not diff.status_changed
    assert diff.replayed.output == {"alert": False, "p95": 150}
    assert len(diff.effects_missing) == 2 and diff.effects_added == []
    assert "POST" in diff.effects_missing[0]
    assert metrics.posts == posts


OFF_SCRIPT = """
from loopwright.sdk import skill

@skill(name="health", tools=["http", "notify"], http_allow=["127.0.0.1"], params={"threshold": 100})
def main(ctx):
    base = ctx.event["data"]["base"]
    m = ctx.step.run("fetch", lambda: ctx.tools.http.get_json(base + "/metrics"))
    extra = ctx.step.run("extra", lambda: ctx.tools.http.get_json(base + "/metrics/v2"))
    return {"alert": False, "p95": m["p95"], "extra": extra}
"""


def test_a_call_the_recording_cannot_answer_is_off_script(
    make_cluster: Callable[..., Cluster], metrics: Metrics
) -> None:
    # Given a recorded run, and a version that also calls a URL the run never called
    cluster = sandboxed(make_cluster)
    run_id = recorded_run(cluster, metrics, health(100))
    gets = metrics.gets
    # When the run is replayed on that source
    _, diff = replay_run(cluster.rt, run_id, source=OFF_SCRIPT)
    # Then the call is off-script (named, with its step), it fails, and nothing was fetched
    assert diff.kind == "off-script"
    [off] = diff.replayed.off_script
    assert off["step"] == "extra" and off["call"].endswith("/metrics/v2")
    assert diff.replayed.status == "failed" and "off-script" in (diff.replayed.error or "")
    assert metrics.gets == gets


def test_runs_replay_shows_both_outcomes_and_refuses_bad_input_in_one_line(
    make_cluster: Callable[..., Cluster], metrics: Metrics
) -> None:
    cluster = sandboxed(make_cluster)
    run_id = recorded_run(cluster, metrics, health(100))
    changed = cluster.tmp / "changed.py"
    changed.write_text(health(200))
    # The text view: both outcomes and the differences
    shown = cluster.cli("runs", "replay", run_id, "--file", str(changed))
    assert shown.returncode == 0, shown.stderr
    assert "recorded: completed" in shown.stdout and "replayed: completed" in shown.stdout
    assert "differs: output" in shown.stdout and "- side effect http POST" in shown.stdout
    # The JSON view of the same run on its own version
    same = cluster.cli("runs", "replay", run_id, "--json")
    assert same.returncode == 0, same.stderr
    data = json.loads(same.stdout)
    assert data["result"] == "same" and data["replayed"]["output"] == {"alert": True, "p95": 150}
    # Bad input: one line each, naming the problem
    bad = cluster.tmp / "bad.py"
    bad.write_text("def (:\n")
    other = cluster.tmp / "other.py"
    other.write_text(OFF_SCRIPT.replace('name="health"', 'name="other"'))
    cases = {
        ("nope",): "unknown run id 'nope'",  # the one run-id resolution (prefixes)
        (run_id, "--version", "zzzz"): "no version 'zzzz'",
        (run_id, "--file", str(bad)): "not a valid skill",
        (run_id, "--file", str(cluster.tmp / "missing.py")): "--file",
        (run_id, "--file", str(other)): "declares skill 'other'",
        (run_id, "--file", str(bad), "--version", "x"): "not both",
    }
    for args, expected in cases.items():
        got = cluster.cli("runs", "replay", *args)
        lines = got.stderr.strip().splitlines()
        assert got.returncode != 0 and len(lines) == 1, (args, got.stderr)
        assert expected in lines[0], (args, lines[0])
    # A run from before recording existed (no 'recording' field): no recording, one line
    cluster.rt.redis.hdel(cluster.rt.keys.run(run_id), "recording")
    cluster.rt.redis.delete(cluster.rt.keys.run_calls(run_id))
    got = cluster.cli("runs", "replay", run_id)
    assert got.returncode != 0 and "has no recording" in got.stderr.strip()
    assert len(got.stderr.strip().splitlines()) == 1


CASES = [
    {
        "name": "quiet",
        "event": {"data": {"base": "http://127.0.0.1:9"}},
        "mocks": {
            "http": [
                {"method": "GET", "url": "http://127.0.0.1:9/metrics", "response": {"p95": 10}}
            ]
        },
        "expect": {"status": "completed", "output": {"alert": False, "p95": 10}},
    }
]


def test_the_sidecar_replays_a_new_version_on_recorded_runs_labelled_first(
    make_cluster: Callable[..., Cluster], metrics: Metrics
) -> None:
    # Given three recorded runs of the active version (the oldest labelled bad) and a sidecar
    # that replays two
    cluster = make_cluster(
        sandbox_backend="process",
        http_allow_private=True,
        sidecar_replay_runs=2,
        sidecar_case_timeout=20,
    )
    cluster.worker()
    labelled = recorded_run(cluster, metrics, health(100))
    metrics.p95 = 150
    recorded_run(cluster, metrics, health(100))  # newer, but beyond the two replayed
    metrics.p95 = 50
    quiet = recorded_run(cluster, metrics, health(100))
    cluster.rt.redis.hset(cluster.rt.keys.run(labelled), "feedback", "bad")
    active = cluster.rt.sources.resolve("health")
    posts = metrics.posts
    # When a version with a higher threshold is submitted (dry run)
    verdict = Sidecar(cluster.rt).submit(health(200), json.dumps(CASES), dry_run=True)
    # Then its verdict says which runs end the same and which change, with run ids (advisory)
    assert verdict.accepted, verdict.first_line()
    report = verdict.replay
    assert report is not None and report.against == active and report.runs == 2
    assert report.labelled == {labelled: "bad"}
    assert report.outcome == [labelled] and report.same == 1 and report.off_script == []
    assert "1 end the same, 1 change outcome (" + labelled + ")" in report.line()
    assert verdict_view(verdict)["replay"] == report.line()  # the builder shows the same line
    assert metrics.posts == posts and quiet
    # And `skills submit` prints it
    path = cluster.tmp / "health.py"
    path.write_text(health(200))
    (cluster.tmp / "health.tests.json").write_text(json.dumps(CASES))
    shown = cluster.cli("skills", "submit", str(path))
    assert shown.returncode == 0, shown.stderr
    assert "replayed 2 recorded run(s)" in shown.stdout, shown.stdout
