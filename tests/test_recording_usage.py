"""Recorded ``llm`` calls carry their tokens and cost, so a replay can sum model spend.

A real worker and sandbox, the scripted model server over HTTP (its usage is what the real
providers read), and the raw recording read back from Redis.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from conftest import Cluster
from loopwright.runner.recording import call_usage, load_recording
from loopwright.testing.scripted import ScriptedServer

LABELLER = """
from loopwright.sdk import skill

@skill(name="labeller", tools=["llm"], retries=2, backoff=0.05)
def main(ctx):
    return ctx.step.llm("label", "classify " + str(ctx.event["data"]["p95"]),
                        schema={"type": "object", "required": ["label"]})
"""


def test_each_recorded_model_call_has_its_tokens_and_cost(
    make_cluster: Callable[..., Cluster],
) -> None:
    with ScriptedServer() as srv:
        # Given a model whose first answer is unusable (the step retries) and second is good
        srv.push({"text": "not json"}, {"text": '{"label": "slow"}'})
        cluster = make_cluster(sandbox_backend="process", sidecar_case_timeout=20)
        cluster.worker(
            env={
                "LOOPWRIGHT_SKILL_MODEL": "anthropic:claude-haiku-4-5",
                "LOOPWRIGHT_ANTHROPIC_API_KEY": "k",
                "LOOPWRIGHT_ANTHROPIC_BASE_URL": srv.anthropic_base_url,
            }
        )
        name = cluster.skill(LABELLER)
        run = cluster.wait(cluster.start(name, {"p95": 900}, trusted=False), timeout=60)
        assert run.status.value == "completed", run.error
        # When the recording is read back
        rec = load_recording(cluster.rt.redis, cluster.rt.keys, run.id)
        assert rec is not None and [c["tool"] for c in rec.calls] == ["llm", "llm"]
        # Then every call has tokens both ways and a price
        for call in rec.calls:
            tokens_in, tokens_out, cost = call_usage(call)
            assert tokens_in > 0 and tokens_out > 0 and cost > 0, call
        # And together they are what the run was charged
        h = cluster.rt.redis.hgetall(cluster.rt.keys.run(run.id))
        charged = tuple(int(h[f]) for f in ("c_tokens_in", "c_tokens_out", "c_cost_micros"))
        assert rec.model_usage == charged


def test_calls_recorded_before_usage_read_as_zero(cluster: Cluster) -> None:
    # Given a run whose recording was written before calls carried usage
    run_id = cluster.rt.runs.create(skill="old", version="v1", data={})
    old = {
        "v": 1, "seq": 0, "attempt": 1, "i": 0, "tool": "llm", "at": 1, "req": {"prompt": "p"},
        "res": "a", "error": None, "retriable": False, "status": None, "elapsed_ms": 1.0,
        "replayable": True,
    }  # fmt: skip
    http = {**old, "i": 1, "tool": "http", "usage": "not a mapping"}
    cluster.rt.redis.rpush(cluster.rt.keys.run_calls(run_id), json.dumps(old), json.dumps(http))
    # When it is read
    rec = load_recording(cluster.rt.redis, cluster.rt.keys, run_id)
    # Then its calls are all there, with no model spend
    assert rec is not None and len(rec.calls) == 2
    assert [call_usage(c) for c in rec.calls] == [(0, 0, 0), (0, 0, 0)]
    assert rec.model_usage == (0, 0, 0)
