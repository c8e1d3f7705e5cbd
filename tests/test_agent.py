"""The builder agent against the scripted model server, over both wire protocols: tool calls,
bad arguments, Reflexion, budgets, loop detection, re-anchoring, critic, provider failures and
crash-resume of a durable turn. Real Redis, real sidecar pipeline, real sandbox."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import Cluster, wait_until
from loopwright.agent.critic import Critic
from loopwright.agent.loop import Agent, InlineSteps
from loopwright.agent.session import SessionStore
from loopwright.agent.state import new_state
from loopwright.agent.tools import LocalSidecar, ToolBox
from loopwright.llm.factory import make_model
from loopwright.settings import Settings
from loopwright.skills_registry.store import Registry
from loopwright.testing.scripted import ScriptedServer

GOOD = """
from loopwright.sdk import skill


@skill(name="doubler", description="doubles n", params={"factor": 2})
def main(ctx):
    n = ctx.event["data"].get("n", 1)
    return ctx.step.run("double", lambda: n * ctx.params["factor"])
"""
SMOKE = [{"name": "smoke", "event": {"data": {"n": 4}}, "expect": {"output": 8}}]
BROKEN = GOOD.replace("n * ctx", "n / 0 * ctx")

PROTOCOLS = ("openai", "anthropic")


def call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": tool, "arguments": arguments}]}


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def settings_for(cluster: Cluster, srv: ScriptedServer, **over: Any) -> Settings:
    base = {
        "openai_base_url": srv.openai_base_url,
        "openai_api_key": "test-key",
        "anthropic_base_url": srv.anthropic_base_url,
        "anthropic_api_key": "test-key",
        "llm_max_retries": 2,
        "llm_timeout": 10.0,
    }
    base.update(over)
    return Settings(**{**cluster.settings.model_dump(), **base})


def spec(protocol: str) -> str:
    return "openai:gpt-4.1" if protocol == "openai" else "anthropic:claude-sonnet-4-5"


def agent_for(
    cluster: Cluster, srv: ScriptedServer, protocol: str, critic: Critic | None = None, **over: Any
) -> Agent:
    s = settings_for(cluster, srv, **over)
    return Agent(
        make_model(spec(protocol), s), ToolBox(cluster.rt, LocalSidecar(cluster.rt)), s, critic
    )


def turn(agent: Agent, request: str, state: dict[str, Any] | None = None) -> Any:
    state = state or new_state("s-test", agent.model.name)
    return agent.turn(InlineSteps(), state, request, key="s-test:1")


def tool_results(body: dict[str, Any], protocol: str) -> list[str]:
    """Every tool result text in a recorded request body."""
    out: list[str] = []
    for m in body["messages"]:
        if protocol == "openai" and m.get("role") == "tool":
            out.append(m["content"])
        elif protocol == "anthropic" and isinstance(m.get("content"), list):
            out += [str(b.get("content")) for b in m["content"] if b.get("type") == "tool_result"]
    return out


def user_texts(body: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for m in body["messages"]:
        if m.get("role") != "user":
            continue
        content = m.get("content")
        if isinstance(content, str):
            out.append(content)
        else:
            out += [str(b.get("text")) for b in content if b.get("type") == "text"]
    return out


def prefix(body: dict[str, Any], protocol: str) -> str:
    """The part of a request that must never change: system prompt and tool definitions."""
    if protocol == "openai":
        return json.dumps([body["messages"][0], body["tools"]], sort_keys=True)
    return json.dumps([body["system"], body["tools"]], sort_keys=True)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_scripted_session_writes_and_registers_a_skill(
    cluster: Cluster, server: ScriptedServer, protocol: str
) -> None:
    server.push(
        call("sdk_reference"),
        {"text": "Writing it now.", **call("write_skill", source=GOOD, tests=SMOKE)},
        {"text": "Registered doubler: it doubles n."},
    )
    result = turn(agent_for(cluster, server, protocol), "I need a skill that doubles numbers")
    assert result.stopped is None and result.reply == "Registered doubler: it doubles n."
    assert Registry(cluster.rt.redis, cluster.rt.keys).skill("doubler").status == "active"
    assert server.completions == 3
    bodies = [r.body for r in server.requests]
    assert "Loopwright skill SDK" in tool_results(bodies[1], protocol)[0]
    verdict = json.loads(tool_results(bodies[2], protocol)[-1])
    assert verdict["accepted"] is True and verdict["name"] == "doubler"
    m = result.state["metrics"]
    assert (m["model_calls"], m["tool_calls"], m["tool_errors"], m["accepted"]) == (3, 2, 0, 1)
    assert m["steps"] == 5
    assert m["input_tokens"] > 0 and m["output_tokens"] > 0
    assert [a["tool"] for a in result.activity] == ["sdk_reference", "write_skill"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_arguments_invalid_json_and_unknown_tools_go_back_to_the_model(
    cluster: Cluster, server: ScriptedServer, protocol: str
) -> None:
    server.push(
        call("write_skill", source=5),
        {"tool_calls": [{"name": "read_skill", "arguments": '{"name": "dou'}]},
        call("delete_everything", path="/"),
        {"text": "Sorry, I could not do that."},
    )
    result = turn(agent_for(cluster, server, protocol), "break things")
    assert result.reply == "Sorry, I could not do that."
    results = tool_results(server.requests[-1].body, protocol)
    assert "invalid arguments for write_skill" in results[0] and "source" in results[0]
    assert "tests" in results[0]  # the missing field is named too
    assert "not a JSON object" in results[1]
    assert "unknown tool 'delete_everything'" in results[2] and "write_skill" in results[2]
    assert result.state["metrics"]["tool_errors"] == 3
    assert Registry(cluster.rt.redis, cluster.rt.keys).names() == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reflexion_stops_after_three_rejected_submissions(
    cluster: Cluster, server: ScriptedServer, protocol: str
) -> None:
    for _ in range(4):
        server.push(call("write_skill", source=BROKEN, tests=SMOKE))
    result = turn(agent_for(cluster, server, protocol), "doubler please")
    assert result.stopped == "rejected"
    assert server.completions == 3 and server.remaining == 1  # no fourth submission
    assert "could not get skill 'doubler' accepted" in result.reply
    assert "3 submissions" in result.reply and "Nothing was registered" in result.reply
    notes = [t for t in user_texts(server.requests[-1].body) if t.startswith("[loopwright]")]
    assert [n.split(" for skill")[0] for n in notes] == [
        "[loopwright] Submission 1 of 3",
        "[loopwright] Submission 2 of 3",
    ]
    assert "critique your last attempt" in notes[0]
    assert result.state["metrics"]["rejections"] == 3
    assert Registry(cluster.rt.redis, cluster.rt.keys).names() == []


def test_step_budget_stops_the_turn_with_a_summary(
    cluster: Cluster, server: ScriptedServer
) -> None:
    server.responder = lambda protocol, body: call("list_runs", limit=len(body["messages"]))
    agent = agent_for(cluster, server, "openai", agent_max_steps_per_turn=5)
    result = turn(agent, "keep going")
    assert result.stopped == "steps"
    assert "steps budget is used up" in result.reply and "5 steps" in result.reply
    assert server.completions == 3  # model, tool, model, tool, model = 5 steps
    assert "3 tool calls this turn" not in result.reply and "2 tool calls" in result.reply


def test_token_and_money_budgets_stop_the_session(cluster: Cluster, server: ScriptedServer) -> None:
    server.responder = lambda protocol, body: call("list_runs", limit=len(body["messages"]))
    result = turn(agent_for(cluster, server, "openai", agent_max_tokens_per_session=3000), "go")
    assert result.stopped == "tokens" and "tokens budget is used up" in result.reply
    used = result.state["metrics"]["input_tokens"] + result.state["metrics"]["output_tokens"]
    assert 3000 <= used < 3000 + 2500  # stopped at the first check past the limit
    pricey = {"openai:gpt-4.1": {"input": 10_000.0, "output": 10_000.0, "cached": 10_000.0}}
    agent = agent_for(
        cluster, server, "openai", llm_pricing=pricey, agent_max_cost_per_session=30.0
    )
    result = turn(agent, "go")
    assert result.stopped == "money" and "money budget is used up" in result.reply
    assert result.state["metrics"]["cost_usd"] >= 30.0


LOOPS: dict[str, Callable[[int], dict[str, Any]]] = {
    "repeat": lambda n: call("list_skills"),
    "same-error": lambda n: call("run_skill", name="ghost", data={"n": n}),
    "ping-pong": lambda n: call("list_skills") if n % 2 else call("list_runs", limit=3),
    "idle-talk": lambda n: {"text": "I'll write the skill next."},
}


@pytest.mark.parametrize("pattern", list(LOOPS))
def test_each_loop_pattern_gets_a_corrective_note_then_ends_the_turn(
    cluster: Cluster, server: ScriptedServer, pattern: str
) -> None:
    answers = LOOPS[pattern]
    server.responder = lambda protocol, body: answers(len(server.requests))
    result = turn(agent_for(cluster, server, "anthropic"), "do the thing")
    assert result.stopped == "loop", result.reply
    assert f"going in circles ({pattern}" in result.reply
    notes = [
        t
        for r in server.requests
        for t in user_texts(r.body)
        if t.startswith(f"[loopwright] Loop detected ({pattern})")
    ]
    assert notes, f"no corrective note for {pattern}"
    assert server.completions <= 14


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_reanchoring_keeps_the_prefix_byte_identical_and_the_cache_hitting(
    cluster: Cluster, server: ScriptedServer, protocol: str
) -> None:
    def answer(protocol: str, body: dict[str, Any]) -> dict[str, Any]:
        n = len(server.requests)
        return {"text": "all done"} if n > 14 else call("read_skill", name=f"skill-{n}")

    server.responder = answer
    agent = agent_for(cluster, server, protocol, agent_reanchor_steps=6, agent_keep_turns=2)
    result = turn(agent, "survey the skills")
    assert result.reply == "all done"
    assert result.state["metrics"]["reanchors"] >= 2
    bodies = [r.body for r in server.requests]
    assert len({prefix(b, protocol) for b in bodies}) == 1  # byte-identical every time
    anchored = [b for b in bodies if any("Context re-anchored" in t for t in user_texts(b))]
    assert anchored, "no request carried the re-anchoring summary"
    assert "Current request: survey the skills" in next(
        t for t in user_texts(anchored[0]) if "Context re-anchored" in t
    )
    sizes = [len(b["messages"]) for b in bodies]
    assert max(sizes) <= 2 * 6 + 4  # bounded instead of growing with every step
    assert result.state["metrics"]["cached_tokens"] > 0


def test_critic_below_threshold_counts_as_a_rejection(
    cluster: Cluster, server: ScriptedServer
) -> None:
    low = {"safety": 0.2, "idempotent_effects": 0.3, "error_handling": 0.1, "tests": 0.4}
    high = dict.fromkeys(low, 0.9)
    with ScriptedServer() as critic_srv:
        critic_srv.push(
            {"text": json.dumps({**low, "notes": "no failure-path test"})},
            {"text": "Scores: " + json.dumps({**high, "notes": "fine"})},
        )
        critic_settings = settings_for(cluster, critic_srv)
        critic = Critic(make_model("anthropic:claude-haiku-4-5", critic_settings), 0.7)
        server.push(
            call("write_skill", source=GOOD, tests=SMOKE),
            call("write_skill", source=GOOD, tests=SMOKE),
            {"text": "done"},
        )
        result = turn(agent_for(cluster, server, "openai", critic=critic), "doubler")
    assert result.reply == "done"
    text = tool_results(server.requests[1].body, "openai")[0]
    assert text.startswith("ERROR: ")  # OpenAI has no error flag: the provider marks it
    first = json.loads(text.removeprefix("ERROR: "))
    assert first["accepted"] is False and first["stage"] == "critic"
    assert "no failure-path test" in first["findings"][0]["message"]
    assert result.state["metrics"]["rejections"] == 1 and result.state["metrics"]["accepted"] == 1
    assert Registry(cluster.rt.redis, cluster.rt.keys).skill("doubler").versions == 1


def test_provider_failures_inside_a_turn(cluster: Cluster, server: ScriptedServer) -> None:
    server.push({"status": 429, "retry_after": 0.2}, {"status": 500}, {"text": "hello"})
    result = turn(agent_for(cluster, server, "openai"), "hi")
    assert result.reply == "hello" and len(server.requests) == 3
    server.push({"malformed": True}, {"malformed": True}, {"malformed": True})
    result = turn(agent_for(cluster, server, "openai"), "hi again")
    assert result.stopped == "model-error" and "model call failed" in result.reply


def test_bad_api_key_ends_the_turn_with_a_clear_error(cluster: Cluster) -> None:
    with ScriptedServer(require_key="right") as srv:
        agent = agent_for(cluster, srv, "anthropic", anthropic_api_key="wrong")
        result = turn(agent, "hi")
    assert result.stopped == "model-error"
    assert "LOOPWRIGHT_ANTHROPIC_API_KEY" in result.reply and "wrong" not in result.reply


def test_killed_worker_resumes_the_turn_without_repeating_finished_model_calls(
    cluster: Cluster, server: ScriptedServer
) -> None:
    # Given a durable turn on a worker whose second model call hangs
    server.push(
        call("write_skill", source=GOOD, tests=SMOKE),
        {"delay": 30, "text": "never delivered"},
        {"text": "Registered doubler."},
    )
    env = {
        "LOOPWRIGHT_OPENAI_API_KEY": "test-key",
        "LOOPWRIGHT_OPENAI_BASE_URL": server.openai_base_url,
        "LOOPWRIGHT_LLM_TIMEOUT": "60",
    }
    cluster.scheduler()
    first = cluster.worker(env=env)
    store = SessionStore(cluster.rt.redis, cluster.rt.keys)
    sid = store.create("openai:gpt-4.1")
    run_id = store.start_turn(cluster.rt, sid, "a doubler skill please")
    # When the worker is killed while the second model call is in flight
    wait_until(lambda: len(server.requests) >= 2, timeout=60)
    os.killpg(first.pid, signal.SIGKILL)
    cluster.worker(env=env)
    run = cluster.wait(run_id, timeout=60)
    # Then the turn completes; the first model call and the submission were not repeated
    assert run.status.value == "completed", run.error
    assert run.output["reply"] == "Registered doubler."
    first_calls = [r for r in server.requests if len(r.body["messages"]) == 2]
    assert len(first_calls) == 1  # system + request: sent exactly once
    steps = {s.name: s for s in cluster.rt.runs.steps(run_id)}
    assert steps["tool-1-1-write_skill"].attempts == 1
    assert Registry(cluster.rt.redis, cluster.rt.keys).skill("doubler").versions == 1
    info = store.get(sid)
    assert info.turns == 1 and info.pending_run is None
    assert [m["role"] for m in info.state["messages"]] == ["user", "assistant", "tool", "assistant"]


def test_an_empty_answer_keeps_the_next_request_valid(
    cluster: Cluster, server: ScriptedServer
) -> None:
    server.push({"text": ""}, {"text": "Now with words."})
    agent = agent_for(cluster, server, "anthropic")
    first = turn(agent, "hi")
    assert first.reply == "(the model gave an empty answer)"
    second = agent.turn(InlineSteps(), first.state, "say something", key="s-test:2")
    assert second.reply == "Now with words."  # the scripted server accepted the history
    assert server.requests[-1].body["messages"][1]["role"] == "assistant"


@pytest.mark.parametrize(
    ("text", "announces"),
    [
        ("I'll write the skill next.", True),
        ("Let me check the runs.", True),
        ("Done. I'll keep an eye on it.\n\nThe skill is registered as doubler@abc.", False),
        ("Shall I write the skill now?", False),
        ("I'll explain: " + "x" * 700, False),
        ("The skill is registered.", False),
    ],
)
def test_only_a_final_sentence_promising_action_counts_as_talk_without_action(
    text: str, announces: bool
) -> None:
    from loopwright.agent.detect import announces_action

    assert announces_action(text) is announces


def test_a_large_context_reanchors_before_the_step_threshold(
    cluster: Cluster, server: ScriptedServer
) -> None:
    def answer(protocol: str, body: dict[str, Any]) -> dict[str, Any]:
        n = len(server.requests)
        thinking = f"step {n}: " + "considering the run history in detail. " * 60  # ~2.4 KB
        return {"text": "done"} if n > 6 else {"text": thinking, **call("list_runs", limit=n)}

    server.responder = answer
    # Each answer carries ~600 tokens of text: the 1000-token threshold passes every 2 steps.
    agent = agent_for(cluster, server, "openai", agent_reanchor_tokens=1000, agent_keep_turns=1)
    result = turn(agent, "read the reference a few times")
    assert result.reply == "done"
    assert result.state["metrics"]["reanchors"] >= 2
    assert result.state["since_anchor"] < 30
    assert max(len(r.body["messages"]) for r in server.requests) <= 6


def test_a_sidecar_outage_is_retried_by_the_step_then_reported_not_blamed_on_the_model(
    cluster: Cluster, server: ScriptedServer
) -> None:
    from conftest import free_port
    from loopwright.assembly import build_runtime
    from loopwright.cli.chat import drive
    from loopwright.runner.execute import install_runtime

    server.push(call("write_skill", source=GOOD, tests=SMOKE), {"text": "The sidecar is down."})
    # Every retry parks the turn (no inline waits): chat must wake it without a scheduler.
    dead = f"http://127.0.0.1:{free_port()}"
    s = settings_for(cluster, server, sidecar_url=dead, inline_retry_max_delay=0.0)
    rt = build_runtime(s)
    install_runtime(rt)
    try:
        store = SessionStore(rt.redis, rt.keys)
        sid = store.create("openai:gpt-4.1")
        run_id = store.start_turn(rt, sid, "doubler")
        report = drive(rt, run_id, 60, show=False)  # what loopwright chat does
        run = rt.runs.get(run_id)
    finally:
        install_runtime(None)
        rt.close()
    assert run.status.value == "completed", run.error
    assert run.output["reply"] == report["reply"] == "The sidecar is down."
    assert run.attempts == 3  # parked twice for the retries, woken by chat each time
    tool = {st.name: st for st in cluster.rt.runs.steps(run_id)}["tool-1-1-write_skill"]
    assert tool.status == "failed" and tool.attempts == 3  # the skill's retries=2
    fed_back = tool_results(server.requests[-1].body, "openai")[0]
    assert "platform problem" in fed_back and "cannot reach the sidecar" in fed_back


def test_the_critic_must_be_a_different_model(cluster: Cluster, server: ScriptedServer) -> None:
    from loopwright.agent.session import build_agent
    from loopwright.assembly import build_runtime
    from loopwright.llm.errors import ModelConfigError

    s = settings_for(cluster, server, critic_model="openai:gpt-4.1")
    rt = build_runtime(s)
    try:
        with pytest.raises(ModelConfigError, match="must be a different model"):
            build_agent(rt, "openai:gpt-4.1")
        agent = build_agent(rt, "anthropic:claude-sonnet-4-5")
        assert agent.critic is not None and agent.critic.model.name == "openai:gpt-4.1"
    finally:
        rt.close()
