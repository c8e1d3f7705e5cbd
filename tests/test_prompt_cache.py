"""The scripted server's prompt cache follows the providers' published rules (breakpoint limit,
20-block lookback, minimum size, lifetime on a virtual clock, write/read billing), and the
agent places Anthropic breakpoints so every request after the first reads the previous one."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import Cluster
from loopwright.agent.loop import Agent, InlineSteps
from loopwright.agent.state import new_state
from loopwright.agent.tools import LocalSidecar, ToolBox
from loopwright.llm.factory import make_model
from loopwright.llm.pricing import cost_usd
from loopwright.llm.types import Usage
from loopwright.settings import Settings
from loopwright.testing.scripted import ScriptedServer, canonical_prompt

CC = {"type": "ephemeral"}
SONNET = "claude-sonnet-4-5"
MODELS = {"anthropic": "anthropic:claude-sonnet-4-5", "openai": "openai:gpt-4.1"}
BIG = "Rules of the workshop, to be read before every answer. " * 100  # ~1400 tokens


@pytest.fixture
def srv() -> Iterator[ScriptedServer]:
    with ScriptedServer(responder=lambda protocol, body: {"text": "ok"}) as server:
        yield server


def post(srv: ScriptedServer, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        srv.url + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "anthropic-version": "2023-06-01"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def anthropic(
    srv: ScriptedServer, blocks: list[dict[str, Any]], model: str = SONNET, system: str = BIG
) -> dict[str, int]:
    body = {
        "model": model,
        "max_tokens": 10,
        "system": [{"type": "text", "text": system, "cache_control": CC}],
        "messages": [{"role": "user", "content": blocks}],
    }
    status, data = post(srv, "/v1/messages", body)
    assert status == 200, data
    usage: dict[str, int] = data["usage"]
    return usage


def texts(n: int, marked: tuple[int, ...] = (-1,)) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [{"type": "text", "text": f"note {i}"} for i in range(n)]
    for i in marked:
        blocks[i]["cache_control"] = CC
    return blocks


def test_a_fifth_breakpoint_is_refused_like_the_api(srv: ScriptedServer) -> None:
    assert anthropic(srv, texts(4, marked=(0, 1, 2)))  # 3 + the system's = 4: accepted
    body = {
        "model": SONNET,
        "max_tokens": 10,
        "system": [{"type": "text", "text": BIG, "cache_control": CC}],
        "messages": [{"role": "user", "content": texts(5, marked=(0, 1, 2, 3))}],
    }
    status, data = post(srv, "/v1/messages", body)
    assert status == 400
    assert data["error"]["type"] == "invalid_request_error"
    assert "maximum of 4" in data["error"]["message"]
    # Only blocks carry breakpoints: a key of that name in a tool's input is data.
    use = {"type": "tool_use", "id": "t1", "name": "x", "input": {"cache_control": CC}}
    result = {"type": "tool_result", "tool_use_id": "t1", "content": "ok", "cache_control": CC}
    body["messages"] = [
        {"role": "user", "content": texts(3, marked=(0, 1))},
        {"role": "assistant", "content": [use]},
        {"role": "user", "content": [result]},
    ]
    status, data = post(srv, "/v1/messages", body)
    assert status == 200, data


def test_a_prefix_under_the_minimum_size_is_never_cached(srv: ScriptedServer) -> None:
    short = "Short rules. " * 50  # ~160 tokens: under Sonnet's 1024
    for _ in range(2):
        usage = anthropic(srv, texts(1), system=short)
        assert usage["cache_read_input_tokens"] == 0
        assert usage["cache_creation_input_tokens"] == 0
    # ~1400 tokens is enough for Sonnet but under Haiku 4.5's 4096.
    for _ in range(2):
        usage = anthropic(srv, texts(1), model="claude-haiku-4-5")
        assert usage["cache_read_input_tokens"] == usage["cache_creation_input_tokens"] == 0


def test_a_write_is_read_back_and_billed_at_the_published_rates(srv: ScriptedServer) -> None:
    first = anthropic(srv, texts(1))
    second = anthropic(srv, texts(2))

    assert first["cache_read_input_tokens"] == 0
    assert first["cache_creation_input_tokens"] > 1024  # the whole prompt up to the breakpoint
    assert first["input_tokens"] <= 1  # nothing after the last breakpoint (but rounding)
    written = first["cache_creation_input_tokens"]
    assert second["cache_read_input_tokens"] == written
    settings = Settings(llm_pricing={})
    usage = Usage(input_tokens=1_000_000, cached_tokens=500_000, cache_write_tokens=250_000)
    # 0.25M plain x $3 + 0.5M read x $0.30 (0.1x) + 0.25M written x $3.75 (1.25x)
    assert cost_usd("anthropic:claude-sonnet-4-5", usage, settings) == pytest.approx(1.8375)
    # OpenAI does not charge for cache writes: they cost the input rate.
    assert cost_usd("openai:gpt-4.1", usage, settings) == pytest.approx(0.5 * 2 + 0.5 * 0.5)
    over = Settings(llm_pricing={"anthropic:x": {"input": 1.0, "cache_write": 2.0}})
    assert cost_usd("anthropic:x", Usage(1_000_000, 0, 0, 1_000_000), over) == pytest.approx(2.0)


@pytest.mark.parametrize(("added", "hits_previous_end"), [(20, True), (21, False)])
def test_a_read_looks_back_only_20_blocks_from_the_breakpoint(
    srv: ScriptedServer, added: int, hits_previous_end: bool
) -> None:
    first = anthropic(srv, texts(1))
    cached_before = first["cache_creation_input_tokens"]
    system_only = len(canonical_prompt("anthropic", {"system": [{"type": "text", "text": BIG}]}))

    second = anthropic(srv, texts(1 + added))

    read = second["cache_read_input_tokens"]
    if hits_previous_end:
        assert read == cached_before
    else:
        # Only the system prompt's breakpoint is within reach: the messages are written again.
        assert read == system_only // 4 < cached_before
        assert second["cache_creation_input_tokens"] > 0


def test_openai_caches_per_model(srv: ScriptedServer) -> None:
    def cached(model: str) -> int:
        body = {"model": model, "messages": [{"role": "system", "content": BIG * 2}]}
        status, data = post(srv, "/v1/chat/completions", body)
        assert status == 200, data
        tokens: int = data["usage"]["prompt_tokens_details"]["cached_tokens"]
        return tokens

    assert cached("gpt-4.1") == 0
    assert cached("gpt-4.1-mini") == 0  # same prompt, another model's cache
    assert cached("gpt-4.1") > 0


@pytest.mark.parametrize("protocol", ["anthropic", "openai"])
def test_entries_live_five_virtual_minutes_after_their_last_use(
    srv: ScriptedServer, protocol: str
) -> None:
    def read() -> int:
        if protocol == "anthropic":
            return anthropic(srv, texts(1))["cache_read_input_tokens"]
        body = {"model": "gpt-4.1", "messages": [{"role": "system", "content": BIG * 2}]}
        status, data = post(srv, "/v1/chat/completions", body)
        assert status == 200, data
        cached: int = data["usage"]["prompt_tokens_details"]["cached_tokens"]
        return cached

    assert read() == 0
    srv.advance(299)
    assert read() > 0  # still alive, and the read refreshes it
    srv.advance(299)
    assert read() > 0  # 598 s after the write, 299 s after the last read
    srv.advance(301)
    assert read() == 0  # expired: written again
    assert read() > 0


@pytest.mark.parametrize("protocol", ["anthropic", "openai"])
def test_the_agent_reads_the_previous_request_on_every_turn(
    cluster: Cluster, protocol: str
) -> None:
    """A normal session with one call per answer, then a turn of 12 parallel calls (25 new
    blocks, past the 20-block lookback): every request after the first reads everything the
    one before it wrote, so nothing but the new part is paid at full price."""
    replies: list[dict[str, Any]] = [
        {"text": f"Step {i}.", "tool_calls": [{"name": "list_skills", "arguments": {}}]}
        for i in range(4)
    ]
    replies.append(
        {
            "text": "Checking them all.",
            "tool_calls": [
                {"name": "read_skill", "arguments": {"name": f"skill-{i}"}} for i in range(12)
            ],
        }
    )
    replies += [
        {"text": "Once more.", "tool_calls": [{"name": "list_skills", "arguments": {}}]},
        {"text": "All done."},
    ]
    with ScriptedServer(script=replies) as server:
        over = {
            "anthropic_base_url": server.anthropic_base_url,
            "anthropic_api_key": "test-key",
            "openai_base_url": server.openai_base_url,
            "openai_api_key": "test-key",
            "llm_max_retries": 0,
            "agent_reanchor_steps": 10**6,
            "agent_reanchor_tokens": 10**9,
        }
        s = Settings(**{**cluster.settings.model_dump(), **over})
        agent = Agent(
            make_model(MODELS[protocol], s),
            ToolBox(cluster.rt, LocalSidecar(cluster.rt)),
            s,
        )
        result = agent.turn(InlineSteps(), new_state("s", agent.model.name), "survey", key="s:1")
        assert result.reply == "All done."
        usages = server.usages
        bodies = [r.body for r in server.requests]

    assert len(usages) == len(replies)
    assert usages[0]["cached"] == 0
    for k in range(1, len(usages)):
        if protocol == "anthropic":
            # Everything the previous request cached is read, nothing less.
            previous = usages[k - 1]["read"] + usages[k - 1]["written"]
            assert usages[k]["read"] == previous, f"request {k} missed the cache: {usages[k]}"
        else:
            # The whole previous prompt, in OpenAI's 128-token steps.
            floor = usages[k - 1]["prompt"] - 128 - 1
            assert usages[k]["cached"] >= floor, f"request {k} missed the cache: {usages[k]}"
    if protocol == "anthropic":
        assert usages[0]["written"] > 1024
        parallel = bodies[5]["messages"]
        assert len(parallel[-2]["content"]) + len(parallel[-1]["content"]) > 20
    for body in bodies:
        marks = json.dumps(body).count('"cache_control"')
        assert marks <= 4
    assert result.state["metrics"]["cached_tokens"] == sum(u["cached"] for u in usages)
