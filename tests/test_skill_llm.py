"""``ctx.step.llm`` in a sandboxed skill: the host calls the configured model (the scripted
server here), parses JSON answers against the schema, retries a bad answer, and fails clearly
without a model."""

from __future__ import annotations

import json

from conftest import Cluster
from loopwright.testing.scripted import ScriptedServer

LABELLER = """
from loopwright.sdk import skill


@skill(name="labeller", tools=["llm"], retries=2, backoff=0.05)
def main(ctx):
    p95 = ctx.event["data"]["p95"]
    label = ctx.step.llm("label", f"classify latency {p95} ms",
                         schema={"type": "object", "required": ["label"]})
    summary = ctx.step.llm("summary", f"one line about {label['label']}")
    return {"label": label["label"], "summary": summary}
"""


def test_step_llm_calls_the_model_parses_json_and_retries_a_bad_answer(cluster: Cluster) -> None:
    with ScriptedServer() as srv:
        srv.push(
            {"text": "Sure! It looks slow."},  # not the JSON asked for: the step retries
            {"text": '```json\n{"label": "degraded"}\n```'},
            {"text": "Latency is degraded overnight."},
        )
        cluster.worker(
            env={
                "LOOPWRIGHT_SKILL_MODEL": "anthropic:claude-haiku-4-5",
                "LOOPWRIGHT_ANTHROPIC_API_KEY": "k",
                "LOOPWRIGHT_ANTHROPIC_BASE_URL": srv.anthropic_base_url,
            }
        )
        name = cluster.skill(LABELLER)
        run = cluster.wait(cluster.start(name, {"p95": 1450}, trusted=False), timeout=60)
        assert run.status.value == "completed", run.error
        assert run.output == {"label": "degraded", "summary": "Latency is degraded overnight."}
        steps = {s.name: s for s in cluster.rt.runs.steps(run.id)}
        assert steps["label"].attempts == 2 and steps["summary"].attempts == 1
        prompt = srv.requests[0].body["messages"][0]["content"][0]["text"]
        assert prompt.startswith("classify latency 1450 ms")
        assert prompt.endswith(json.dumps({"type": "object", "required": ["label"]}))
        assert len(srv.requests) == 3


def test_step_llm_without_a_real_model_fails_the_step_with_what_to_set(cluster: Cluster) -> None:
    cluster.worker()  # no key anywhere: the builder default is the offline model
    name = cluster.skill(LABELLER)
    run = cluster.wait(cluster.start(name, {"p95": 10}, trusted=False), timeout=60)
    assert run.status.value == "failed"
    assert "LOOPWRIGHT_SKILL_MODEL" in (run.error or "")
    (label,) = cluster.rt.runs.steps(run.id)
    assert label.attempts == 1  # not retried: nothing changes until configured
