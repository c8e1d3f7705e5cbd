"""Recorded tool calls: what a run's host tools saw, stored with its checkpoints.

Real worker, real sandbox (process backend), real HTTP servers on 127.0.0.1; the raw Redis
values are read to prove what is (and is not) stored.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from conftest import DOCKER_IMAGE, Cluster
from loopwright.history.replay import replay_run
from loopwright.runner.checkpoint import LeaseLostError
from loopwright.runner.recording import canonical, load_recording
from loopwright.runner.records import StepRecord, now_ms
from loopwright.sdk.steps import StepKind
from loopwright.testing.scripted import ScriptedServer
from replay_support import Metrics, health, metrics

__all__ = ["metrics"]


def sandboxed(make_cluster: Callable[..., Cluster], **settings: Any) -> Cluster:
    cluster = make_cluster(
        sandbox_backend="process",
        sandbox_docker_image=DOCKER_IMAGE,
        sandbox_cpu_seconds=5,
        http_private_allow="127.0.0.1",
        **settings,
    )
    cluster.worker()
    return cluster


def run_of(cluster: Cluster, source: str, data: Any) -> Any:
    name = cluster.skill(source)
    return cluster.wait(cluster.start(name, data, trusted=False), timeout=60)


def raw_values(cluster: Cluster, run_id: str) -> str:
    """Every raw value stored under the run's keys (and the inbox), as one text."""
    r, keys = cluster.rt.redis, cluster.rt.keys
    out: list[Any] = []
    for key in sorted(r.scan_iter(match=keys.run(run_id) + "*")):
        kind = r.type(key)
        if kind == "hash":
            fields = r.hgetall(key)
            if key == keys.run(run_id):  # the run's input is what the caller gave, as given
                fields.pop("event", None)
            out.append(fields)
        elif kind == "list":
            out.append(r.lrange(key, 0, -1))
        elif kind == "string":
            out.append(r.get(key))
    for notice_id in r.zrange(keys.inbox_all, 0, -1):
        out.append(r.hgetall(keys.inbox_notice(str(notice_id))))
    return json.dumps(out)


def test_every_tool_call_is_recorded_in_order_with_its_step_and_clock(
    make_cluster: Callable[..., Cluster], metrics: Metrics
) -> None:
    cluster = sandboxed(make_cluster)
    run = run_of(cluster, health(100), {"base": metrics.base})
    assert run.status.value == "completed", run.error
    rec = load_recording(cluster.rt.redis, cluster.rt.keys, run.id)
    assert rec is not None and rec.state == "complete"
    tools = [(c["seq"], c["i"], c["attempt"], c["tool"]) for c in rec.calls]
    assert tools == [(1, 0, 1, "http"), (2, 0, 1, "http"), (3, 0, 1, "notify")]
    get, post, note = rec.calls
    assert get["req"]["method"] == "GET" and get["req"]["url"] == metrics.base + "/metrics"
    assert get["res"] == {"p95": 150} and get["status"] == 200 and get["elapsed_ms"] > 0
    assert post["req"]["body"] == {"p95": 150} and post["res"] == {"ok": True, "n": 1}
    assert note["req"]["message"] == "p95 high: 150" and note["req"]["level"] == "info"
    assert all(c["replayable"] for c in rec.calls)
    # the clock the run saw: every step's start time, for replay
    assert sorted(rec.clock) == [1, 2, 3] and all(t > 0 for t in rec.clock.values())
    # counted in the run's storage quota
    h = cluster.rt.redis.hgetall(cluster.rt.keys.run(run.id))
    assert int(h["recorded"]) > 0 and int(h["stored"]) > int(h["recorded"])


FLAKY = """
from loopwright.sdk import skill

@skill(name="flaky", tools=["http"], http_allow=["127.0.0.1"], retries=2, backoff=0.01)
def main(ctx):
    return ctx.step.run("get", lambda: ctx.tools.http.get_json(ctx.event["data"]["url"]))
"""


def test_failed_attempts_are_recorded_too_and_replay_retries_as_the_run_did(
    make_cluster: Callable[..., Cluster], metrics: Metrics
) -> None:
    # Given a run whose first attempt got a 503 and whose retry succeeded
    cluster = sandboxed(make_cluster)
    run = run_of(cluster, FLAKY, {"url": metrics.base + "/flaky"})
    assert run.status.value == "completed" and run.output == {"try": 2}, run.error
    rec = load_recording(cluster.rt.redis, cluster.rt.keys, run.id)
    assert rec is not None
    # Then both attempts' calls are kept, the failed one with its error and status
    first, second = rec.calls
    assert (first["attempt"], first["status"], first["retriable"]) == (1, 503, True)
    assert "503" in first["error"] and first["res"] is None
    assert (second["attempt"], second["status"], second["res"]) == (2, 200, {"try": 2})
    # And the replay answers the first call with the error, the retry with the answer
    flaky = metrics.flaky
    _, diff = replay_run(cluster.rt, run.id)
    assert diff.kind == "same" and diff.replayed.output == {"try": 2}
    assert diff.replayed.answered == 2 and metrics.flaky == flaky


HOSTILE = """
from loopwright.sdk import skill

@skill(name="leaky", tools=["http", "notify"], http_allow=["127.0.0.1"], secrets=["API_KEY"],
       retries=0)
def main(ctx):
    base, stolen = ctx.event["data"]["base"], ctx.event["data"]["stolen"]
    hdr = {"X-Key": "{{secret:API_KEY}}", "X-Stolen": stolen}
    echo = ctx.step.run("echo", lambda: ctx.tools.http.get_json(
        base + "/echo/" + stolen, {"q": stolen}, hdr))
    ctx.step.run("post", lambda: ctx.tools.http.post_json(
        base + "/alert?k=" + stolen, {"key": stolen, "nested": [stolen, {"x": stolen}]}, hdr))
    ctx.step.run("tell", lambda: ctx.tools.notify("key " + stolen, title=stolen))
    ctx.step.run("fail", lambda: ctx.tools.http.get_json("http://127.0.0.1:1/" + stolen))
    return echo
"""


def test_secrets_never_appear_in_recordings(
    make_cluster: Callable[..., Cluster], metrics: Metrics
) -> None:
    # Given a skill that puts the secret's value (which reached it through its input) into
    # URLs, query params, headers, bodies, a notice and a failing call, and sends the real
    # secret in a header to a server that echoes it back
    secret = "sk-live-0123456789abcdef"
    cluster = sandboxed(make_cluster, secrets={"API_KEY": secret})
    run = run_of(cluster, HOSTILE, {"base": metrics.base, "stolen": secret})
    assert any(secret in json.dumps(s) for s in metrics.seen)  # it really was sent
    rec = load_recording(cluster.rt.redis, cluster.rt.keys, run.id)
    assert rec is not None and len(rec.calls) >= 4
    # Then no raw value under the run's keys holds the secret in any spelling
    raw = raw_values(cluster, run.id)
    calls = json.dumps(cluster.rt.redis.lrange(cluster.rt.keys.run_calls(run.id), 0, -1))
    for spelling in (secret, quote(secret, safe=""), secret[4:]):
        assert spelling not in raw
    assert "[secret:API_KEY]" in calls
    # And the header template is recorded by name, never substituted
    assert "{{secret:API_KEY}}" in calls
    # And a replay matches the skill's requests after the same redaction, and keeps no secret
    posts = metrics.posts
    _, diff = replay_run(cluster.rt, run.id)
    assert diff.kind == "same", diff
    assert diff.replayed.answered == 4 and secret not in diff.model_dump_json()
    assert metrics.posts == posts


def test_a_big_body_is_kept_truncated_with_its_hash_and_the_cap_marks_the_run_partial(
    make_cluster: Callable[..., Cluster], metrics: Metrics
) -> None:
    # Given a run with a small recording budget that fetches a large body, then many small ones
    cluster = sandboxed(make_cluster, run_recording_max_bytes=8192, http_max_response_bytes=1 << 20)
    source = """
from loopwright.sdk import skill

@skill(name="bulky", tools=["http"], http_allow=["127.0.0.1"])
def main(ctx):
    base = ctx.event["data"]["base"]
    big = ctx.step.run("big", lambda: ctx.tools.http.get_json(base + "/big"))
    n = 0
    for i in range(40):
        n += ctx.step.run("m" + str(i), lambda: ctx.tools.http.get_json(base + "/metrics"))["p95"]
    return {"size": len(big["blob"]), "n": n}
"""
    run = run_of(cluster, source, {"base": metrics.base})
    # Then the run completes (not failed) but is marked as not fully recorded
    assert run.status.value == "completed", run.error
    rec = load_recording(cluster.rt.redis, cluster.rt.keys, run.id)
    assert rec is not None and rec.state == "partial"
    assert 0 < len(rec.calls) < 41
    h = cluster.rt.redis.hgetall(cluster.rt.keys.run(run.id))
    assert int(h["recorded"]) <= 8192
    # And the big answer is stored truncated with the sha256 of its JSON, unreplayable
    big = rec.calls[0]
    assert big["replayable"] is False and big["res"]["truncated"] is True
    expected = hashlib.sha256(canonical({"blob": "x" * 200_000}).encode()).hexdigest()
    assert big["res"]["sha256"] == expected and big["res"]["bytes"] > 200_000
    # And a replay names that call off-script
    _, diff = replay_run(cluster.rt, run.id)
    assert diff.kind == "off-script" and "truncated" in diff.replayed.off_script[0]["why"]


def test_a_zombie_executor_cannot_record_calls(make_cluster: Callable[..., Cluster]) -> None:
    # Given a run taken by an executor, then taken over (the first one is a zombie)
    rt = make_cluster().rt
    run_id = rt.runs.create_if_absent(skill="s", version="v1").run_id
    old = rt.leases.acquire(run_id, "one")
    rt.redis.hset(rt.keys.run(run_id), "fence", "999")  # another executor's fence
    rec = StepRecord(1, "s1", StepKind.RUN, "done", 1, now_ms(), now_ms())
    # When the zombie commits a step with its calls
    try:
        rt.checkpoints.commit(run_id, old.token, rec, "1", ['{"tool":"http"}'])  # type: ignore[union-attr]
    except LeaseLostError:
        pass
    else:
        raise AssertionError("the zombie's commit was accepted")
    # Then nothing was recorded
    assert rt.redis.llen(rt.keys.run_calls(run_id)) == 0


def test_recording_switched_off_stores_no_calls(
    make_cluster: Callable[..., Cluster], metrics: Metrics
) -> None:
    cluster = sandboxed(make_cluster, run_recording=False)
    run = run_of(cluster, health(100), {"base": metrics.base})
    assert run.status.value == "completed", run.error
    assert cluster.rt.redis.llen(cluster.rt.keys.run_calls(run.id)) == 0
    assert cluster.rt.redis.hget(cluster.rt.keys.run(run.id), "recording") == "none"


LABELLER = """
from loopwright.sdk import skill

@skill(name="labeller", tools=["llm"], retries=2, backoff=0.05)
def main(ctx):
    label = ctx.step.llm("label", "classify " + str(ctx.event["data"]["p95"]),
                         schema={"type": "object", "required": ["label"]})
    return label
"""


def test_llm_calls_are_recorded_and_replayed_without_asking_the_model(
    make_cluster: Callable[..., Cluster],
) -> None:
    with ScriptedServer() as srv:
        srv.push({"text": "not json"}, {"text": '{"label": "slow"}'})
        cluster = make_cluster(sandbox_backend="process", sidecar_case_timeout=20)
        cluster.worker(
            env={
                "LOOPWRIGHT_SKILL_MODEL": "anthropic:claude-haiku-4-5",
                "LOOPWRIGHT_ANTHROPIC_API_KEY": "k",
                "LOOPWRIGHT_ANTHROPIC_BASE_URL": srv.anthropic_base_url,
            }
        )
        run = run_of(cluster, LABELLER, {"p95": 900})
        assert run.status.value == "completed" and run.output == {"label": "slow"}, run.error
        rec = load_recording(cluster.rt.redis, cluster.rt.keys, run.id)
        assert rec is not None
        first, second = rec.calls
        assert first["tool"] == "llm" and first["req"]["prompt"] == "classify 900"
        assert first["req"]["schema"] == {"type": "object", "required": ["label"]}
        assert first["error"] and second["res"] == {"label": "slow"}
        asked = len(srv.requests)
        _, diff = replay_run(cluster.rt, run.id)
        assert diff.kind == "same" and diff.replayed.output == {"label": "slow"}
        assert len(srv.requests) == asked
