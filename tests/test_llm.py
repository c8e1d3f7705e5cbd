"""The model providers against a real scripted HTTP server speaking both wire protocols:
replies and tool calls, conversation encoding, retries and their limits, auth errors, prompt
cache accounting, pricing and the model factory."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from pydantic import SecretStr

from conftest import free_port
from loopwright.llm.anthropic import AnthropicModel
from loopwright.llm.errors import (
    ModelAuthError,
    ModelConfigError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelResponseError,
    ModelUnavailableError,
)
from loopwright.llm.factory import default_model_spec, make_model
from loopwright.llm.http import Backoff, JsonHttpClient, parse_retry_after
from loopwright.llm.openai import OpenAIChatModel
from loopwright.llm.pricing import cost_usd, known_price
from loopwright.llm.types import Message, ToolCall, ToolSpec, Usage
from loopwright.settings import Settings
from loopwright.testing.scripted import ScriptedServer, canonical_prompt

FAST = Backoff(base=0.01, cap=0.05)
KEY = "sk-test-0123456789abcdef"
SYSTEM = "You are the Loopwright builder."
READ_FILE = ToolSpec(
    "read_file",
    "Read a file of the workspace.",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)
RUN_TESTS = ToolSpec("run_tests", "Run the skill's tests.", {"type": "object", "properties": {}})
HI = [Message(role="user", content="hi")]

AnyModel = OpenAIChatModel | AnthropicModel


def settings_for(srv: ScriptedServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openai_base_url": srv.openai_base_url,
        "openai_api_key": KEY,
        "anthropic_base_url": srv.anthropic_base_url,
        "anthropic_api_key": KEY,
        "ollama_base_url": srv.openai_base_url,
        "vllm_base_url": srv.openai_base_url,
        "llamacpp_base_url": srv.openai_base_url,
        "lmstudio_base_url": srv.openai_base_url,
        "model": None,
        "llm_timeout": 2.0,
        "llm_max_retries": 2,
    }
    values.update(overrides)
    return Settings(**values)


def model_for(protocol: str, settings: Settings, key: str = KEY) -> AnyModel:
    if protocol == "openai":
        return OpenAIChatModel(
            "openai:gpt-4.1",
            "gpt-4.1",
            settings,
            base_url=settings.openai_base_url,
            api_key=key,
            backoff=FAST,
        )
    return AnthropicModel(
        "anthropic:claude-sonnet-4-5",
        "claude-sonnet-4-5",
        settings,
        api_key=key,
        base_url=settings.anthropic_base_url,
        backoff=FAST,
    )


@pytest.fixture
def srv() -> Iterator[ScriptedServer]:
    with ScriptedServer(require_key=KEY) as server:
        yield server


@pytest.fixture(params=["openai", "anthropic"])
def protocol(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def conversation() -> list[Message]:
    """A user request, an assistant turn with two tool calls and both results (one failed)."""
    calls = [
        ToolCall(id="c1", name="read_file", arguments={"path": "skill.py"}),
        ToolCall(id="c2", name="run_tests", arguments={}),
    ]
    return [
        Message(role="user", content="Fix the skill."),
        Message(role="assistant", content="Looking.", tool_calls=calls),
        Message(role="tool", content="print('hi')", tool_call_id="c1", name="read_file"),
        Message(
            role="tool", content="1 failed", tool_call_id="c2", name="run_tests", is_error=True
        ),
    ]


# -- replies -----------------------------------------------------------------------------------


def test_a_text_reply_comes_back_with_usage_and_stop_reason(
    srv: ScriptedServer, protocol: str
) -> None:
    srv.push({"text": "hello there"})
    model = model_for(protocol, settings_for(srv))

    out = model.complete(SYSTEM, HI, [READ_FILE])

    assert out.text == "hello there" and out.tool_calls == []
    assert out.stop_reason == ("stop" if protocol == "openai" else "end_turn")
    assert out.usage.output_tokens == math.ceil(len("hello there") / 4)
    body = srv.requests[0].body
    assert out.usage.input_tokens == math.ceil(len(canonical_prompt(protocol, body)) / 4)
    assert srv.completions == 1 and srv.requests[0].protocol == protocol


def test_tool_calls_are_parsed_with_their_arguments(srv: ScriptedServer, protocol: str) -> None:
    srv.push(
        {
            "text": "Reading it.",
            "tool_calls": [
                {"id": "t1", "name": "read_file", "arguments": {"path": "a.txt"}},
                {"name": "run_tests", "arguments": {}},
            ],
        }
    )
    model = model_for(protocol, settings_for(srv))

    out = model.complete(SYSTEM, HI, [READ_FILE, RUN_TESTS])

    assert out.text == "Reading it."
    assert out.stop_reason == ("tool_calls" if protocol == "openai" else "tool_use")
    first, second = out.tool_calls
    assert (first.id, first.name, first.arguments, first.error) == (
        "t1",
        "read_file",
        {"path": "a.txt"},
        None,
    )
    assert second.name == "run_tests" and second.arguments == {} and second.id


@pytest.mark.parametrize(
    ("raw", "why"), [('{"path": "a.t', "not valid JSON"), ("[1, 2]", "must be a JSON object")]
)
def test_tool_call_arguments_that_are_not_an_object_keep_the_call_with_an_error(
    srv: ScriptedServer, protocol: str, raw: str, why: str
) -> None:
    srv.push({"tool_calls": [{"id": "t1", "name": "read_file", "arguments": raw}]})
    model = model_for(protocol, settings_for(srv))

    (call,) = model.complete(SYSTEM, HI, [READ_FILE]).tool_calls

    assert call.name == "read_file" and call.id == "t1"
    assert call.arguments == {} and call.raw == raw
    assert call.error is not None and why in call.error


def test_openai_tool_calls_without_ids_get_deterministic_ids(srv: ScriptedServer) -> None:
    reply = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"type": "function", "function": {"name": "read_file", "arguments": "{}"}},
                        {"type": "function", "function": {"name": "read_file", "arguments": "{}"}},
                    ],
                },
            }
        ]
    }
    srv.push({"raw": reply}, {"raw": reply})
    model = model_for("openai", settings_for(srv))

    first = model.complete(SYSTEM, HI, [READ_FILE]).tool_calls
    again = model.complete(SYSTEM, HI, [READ_FILE]).tool_calls

    assert [c.id for c in first] == [c.id for c in again]
    assert first[0].id != first[1].id and all(c.id.startswith("call_") for c in first)


# -- conversation encoding ---------------------------------------------------------------------


def test_openai_encodes_tool_calls_and_results_as_chat_messages(srv: ScriptedServer) -> None:
    srv.push({"text": "Fixed."})
    model = model_for("openai", settings_for(srv))

    out = model.complete(SYSTEM, conversation(), [READ_FILE, RUN_TESTS])

    assert out.text == "Fixed."  # the server accepted the tool-call/result pairing
    body = srv.requests[0].body
    assert body["model"] == "gpt-4.1"
    assert [t["type"] for t in body["tools"]] == ["function", "function"]
    assert body["tools"][0]["function"]["parameters"] == READ_FILE.parameters
    system, user, assistant, result1, result2 = body["messages"]
    assert system == {"role": "system", "content": SYSTEM}
    assert user == {"role": "user", "content": "Fix the skill."}
    assert assistant["content"] == "Looking."
    wire_calls = assistant["tool_calls"]
    assert [c["id"] for c in wire_calls] == ["c1", "c2"]
    assert json.loads(wire_calls[0]["function"]["arguments"]) == {"path": "skill.py"}
    assert result1 == {"role": "tool", "tool_call_id": "c1", "content": "print('hi')"}
    assert result2["tool_call_id"] == "c2" and result2["content"].startswith("ERROR: ")
    assert srv.requests[0].headers["authorization"] == f"Bearer {KEY}"


def test_anthropic_merges_tool_results_and_marks_cache_breakpoints(srv: ScriptedServer) -> None:
    srv.push({"text": "Fixed."})
    model = model_for("anthropic", settings_for(srv))

    out = model.complete(SYSTEM, conversation(), [READ_FILE, RUN_TESTS])

    assert out.text == "Fixed."  # the server accepted the tool_use/tool_result pairing
    req = srv.requests[0]
    assert req.headers["x-api-key"] == KEY and req.headers["anthropic-version"] == "2023-06-01"
    body = req.body
    ephemeral = {"type": "ephemeral"}
    assert body["system"] == [{"type": "text", "text": SYSTEM, "cache_control": ephemeral}]
    assert [t["name"] for t in body["tools"]] == ["read_file", "run_tests"]
    assert "cache_control" not in body["tools"][0]
    assert body["tools"][-1]["cache_control"] == ephemeral
    assert body["tools"][0]["input_schema"] == READ_FILE.parameters
    user, assistant, results = body["messages"]
    # The previous request's end (before the last assistant turn) keeps the cache hitting.
    assert user["role"] == "user" and user["content"][-1]["cache_control"] == ephemeral
    assert "cache_control" not in assistant["content"][-1]
    assert assistant["content"] == [
        {"type": "text", "text": "Looking."},
        {"type": "tool_use", "id": "c1", "name": "read_file", "input": {"path": "skill.py"}},
        {"type": "tool_use", "id": "c2", "name": "run_tests", "input": {}},
    ]
    assert results["role"] == "user"
    first, second = results["content"]
    assert first == {"type": "tool_result", "tool_use_id": "c1", "content": "print('hi')"}
    assert second["tool_use_id"] == "c2" and second["is_error"] is True
    assert second["cache_control"] == ephemeral  # the last block of the last message


def test_anthropic_puts_a_user_note_after_tool_results_in_the_same_turn(
    srv: ScriptedServer,
) -> None:
    srv.push({"text": "ok"})
    model = model_for("anthropic", settings_for(srv))
    messages = [*conversation(), Message(role="user", content="Keep going.")]

    model.complete(SYSTEM, messages, [READ_FILE, RUN_TESTS])

    last = srv.requests[0].body["messages"][-1]
    assert [b["type"] for b in last["content"]] == ["tool_result", "tool_result", "text"]
    assert last["content"][-1]["text"] == "Keep going."


def test_anthropic_usage_counts_cache_reads_and_writes_as_input() -> None:
    raw = {
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "end_turn",
        "usage": {
            "input_tokens": 10,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 50,
            "output_tokens": 5,
        },
    }
    with ScriptedServer([{"raw": raw}]) as srv:
        out = model_for("anthropic", settings_for(srv)).complete(SYSTEM, HI, [])
    assert out.usage == Usage(
        input_tokens=160, output_tokens=5, cached_tokens=100, cache_write_tokens=50
    )


def test_max_tokens_is_capped_by_the_setting(srv: ScriptedServer, protocol: str) -> None:
    srv.push({"text": "ok"})
    model = model_for(protocol, settings_for(srv, llm_max_output_tokens=100))

    model.complete(SYSTEM, HI, [], max_tokens=4096)

    field = "max_completion_tokens" if protocol == "openai" else "max_tokens"
    assert srv.requests[0].body[field] == 100


# -- retries -----------------------------------------------------------------------------------


def test_429_with_retry_after_waits_that_long_then_succeeds(srv: ScriptedServer) -> None:
    srv.push({"status": 429, "retry_after": 1}, {"text": "ok"})
    model = model_for("openai", settings_for(srv))

    started = time.monotonic()
    out = model.complete(SYSTEM, HI, [])

    assert out.text == "ok"
    assert time.monotonic() - started >= 1.0
    assert len(srv.requests) == 2 and srv.completions == 1


def test_retry_after_ms_is_honoured(srv: ScriptedServer) -> None:
    srv.push({"status": 529, "retry_after_ms": 300, "error": "Overloaded"}, {"text": "ok"})
    model = model_for("anthropic", settings_for(srv))

    started = time.monotonic()
    assert model.complete(SYSTEM, HI, []).text == "ok"

    assert time.monotonic() - started >= 0.3
    assert len(srv.requests) == 2


def test_retry_after_beyond_the_limit_fails_at_once(srv: ScriptedServer, protocol: str) -> None:
    srv.push({"status": 429, "retry_after": 120}, {"text": "never sent"})
    model = model_for(protocol, settings_for(srv, llm_max_retry_wait=5))

    started = time.monotonic()
    with pytest.raises(ModelRateLimitedError, match="llm_max_retry_wait"):
        model.complete(SYSTEM, HI, [])

    assert time.monotonic() - started < 1.0
    assert len(srv.requests) == 1 and srv.remaining == 1


def test_two_500s_then_success(srv: ScriptedServer, protocol: str) -> None:
    srv.push({"status": 500}, {"status": 503}, {"text": "ok"})
    model = model_for(protocol, settings_for(srv, llm_max_retries=2))

    assert model.complete(SYSTEM, HI, []).text == "ok"

    assert len(srv.requests) == 3 and srv.completions == 1


def test_persistent_500_gives_up_after_every_retry(srv: ScriptedServer, protocol: str) -> None:
    srv.push(*[{"status": 500, "error": "the backend is on fire"}] * 5)
    model = model_for(protocol, settings_for(srv, llm_max_retries=2))

    with pytest.raises(ModelUnavailableError, match="the backend is on fire") as caught:
        model.complete(SYSTEM, HI, [])

    assert caught.value.retryable
    assert len(srv.requests) == 3 and srv.remaining == 2


def test_persistent_429_gives_up_as_rate_limited(srv: ScriptedServer) -> None:
    srv.push(*[{"status": 429, "retry_after_ms": 10}] * 3)
    model = model_for("openai", settings_for(srv, llm_max_retries=2))

    with pytest.raises(ModelRateLimitedError, match="3 attempts"):
        model.complete(SYSTEM, HI, [])

    assert len(srv.requests) == 3


def test_a_timeout_is_retried(srv: ScriptedServer, protocol: str) -> None:
    srv.push({"delay": 1.0, "text": "late"}, {"text": "on time"})
    model = model_for(protocol, settings_for(srv, llm_timeout=0.3, llm_max_retries=1))

    assert model.complete(SYSTEM, HI, []).text == "on time"

    assert len(srv.requests) == 2


def test_persistent_timeouts_give_up_as_unavailable(srv: ScriptedServer) -> None:
    srv.push(*[{"delay": 1.0, "text": "late"}] * 2)
    model = model_for("openai", settings_for(srv, llm_timeout=0.3, llm_max_retries=1))

    started = time.monotonic()
    with pytest.raises(ModelUnavailableError, match=r"no answer within 0\.3s"):
        model.complete(SYSTEM, HI, [])

    assert len(srv.requests) == 2
    assert time.monotonic() - started < 1.5


def test_malformed_json_is_retried_then_reported(srv: ScriptedServer, protocol: str) -> None:
    srv.push(*[{"malformed": True}] * 3)
    model = model_for(protocol, settings_for(srv, llm_max_retries=2))

    with pytest.raises(ModelResponseError, match="not JSON"):
        model.complete(SYSTEM, HI, [])

    assert len(srv.requests) == 3


def test_a_wrong_shaped_body_is_retried_like_malformed_json(
    srv: ScriptedServer, protocol: str
) -> None:
    srv.push({"raw": {"unexpected": True}}, {"text": "ok"})
    model = model_for(protocol, settings_for(srv))

    assert model.complete(SYSTEM, HI, []).text == "ok"

    assert len(srv.requests) == 2


def test_an_unreachable_server_is_unavailable_with_a_hint() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    settings = Settings(llm_max_retries=1, llm_timeout=2.0)
    model = OpenAIChatModel(
        "ollama:qwen", "qwen", settings, base_url=url + "/v1", provider="ollama", backoff=FAST
    )

    with pytest.raises(ModelUnavailableError, match=r"cannot reach ollama.*server running"):
        model.complete(SYSTEM, HI, [])


# -- refusals that are not retried -------------------------------------------------------------


def test_a_wrong_key_is_an_auth_error_that_names_the_setting_and_hides_the_key(
    protocol: str,
) -> None:
    wrong = "sk-wrong-key-do-not-leak"
    with ScriptedServer(require_key=KEY) as srv:
        model = model_for(protocol, settings_for(srv), key=wrong)
        with pytest.raises(ModelAuthError) as caught:
            model.complete(SYSTEM, HI, [])
        assert len(srv.requests) == 1  # not retried

    setting = "OPENAI" if protocol == "openai" else "ANTHROPIC"
    assert f"LOOPWRIGHT_{setting}_API_KEY" in str(caught.value)
    assert wrong not in str(caught.value)


def test_a_provider_that_echoes_the_key_does_not_leak_it(srv: ScriptedServer) -> None:
    srv.push({"status": 401, "error": f"Incorrect API key provided: {KEY}."})
    model = model_for("openai", settings_for(srv))

    with pytest.raises(ModelAuthError) as caught:
        model.complete(SYSTEM, HI, [])

    assert KEY not in str(caught.value) and "Incorrect API key" in str(caught.value)


def test_a_rejected_request_reports_the_providers_message_truncated(
    srv: ScriptedServer, protocol: str
) -> None:
    srv.push({"status": 400, "error": "context too long " + "x" * 3000})
    model = model_for(protocol, settings_for(srv))

    with pytest.raises(ModelRequestError, match="context too long") as caught:
        model.complete(SYSTEM, HI, [])

    assert len(str(caught.value)) < 800
    assert len(srv.requests) == 1 and not caught.value.retryable


def test_a_body_over_the_cap_is_refused(srv: ScriptedServer) -> None:
    srv.push({"text": "x" * 5000})
    client = JsonHttpClient(
        label="openai",
        base_url=srv.openai_base_url,
        headers={"authorization": f"Bearer {KEY}"},
        settings=settings_for(srv),
        auth_hint="check the key",
        max_body_bytes=1024,
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}

    with pytest.raises(ModelResponseError, match="more than 1024 bytes"):
        client.post("/chat/completions", body, lambda data: data)
    client.close()


# -- prompt cache accounting -------------------------------------------------------------------


def test_a_repeated_long_prefix_is_reported_as_cached(srv: ScriptedServer, protocol: str) -> None:
    long_system = "Rules of the workshop. " * 400  # ~9 KB: over OpenAI's 1024-token minimum
    srv.push({"text": "a"}, {"text": "b"}, {"text": "c"})
    model = model_for(protocol, settings_for(srv))

    first = model.complete(long_system, [Message(role="user", content="one")], [READ_FILE])
    second = model.complete(long_system, [Message(role="user", content="two")], [READ_FILE])
    changed = model.complete(
        "Changed. " + long_system, [Message(role="user", content="two")], [READ_FILE]
    )

    assert first.usage.cached_tokens == 0
    assert second.usage.cached_tokens >= 2000
    assert second.usage.cached_tokens < second.usage.input_tokens
    if protocol == "openai":
        assert second.usage.cached_tokens % 128 == 0
        assert changed.usage.cached_tokens == 0
    else:
        # Only the tools still match: a few tokens, far below the system prompt's share.
        assert changed.usage.cached_tokens < 100


def test_a_short_prefix_is_not_cached_by_openai(srv: ScriptedServer) -> None:
    srv.push({"text": "a"}, {"text": "b"})
    model = model_for("openai", settings_for(srv))

    model.complete(SYSTEM, HI, [])
    again = model.complete(SYSTEM, HI, [])

    assert again.usage.cached_tokens == 0  # identical, but under 1024 tokens


def test_the_script_running_out_is_a_clear_server_error(srv: ScriptedServer) -> None:
    model = model_for("openai", settings_for(srv, llm_max_retries=0))

    with pytest.raises(ModelUnavailableError, match="script exhausted"):
        model.complete(SYSTEM, HI, [])


def test_a_responder_answers_when_the_script_is_empty() -> None:
    seen: list[tuple[str, int]] = []

    def respond(protocol: str, body: dict[str, Any]) -> dict[str, Any]:
        seen.append((protocol, len(body["messages"])))
        return {"text": f"{protocol} saw {len(body['messages'])}"}

    with ScriptedServer(responder=respond) as srv:
        settings = settings_for(srv)
        assert model_for("openai", settings).complete(SYSTEM, HI, []).text == "openai saw 2"
        assert model_for("anthropic", settings).complete(SYSTEM, HI, []).text == "anthropic saw 1"
        (anthropic_request,) = srv.requests_for("anthropic")
    assert seen == [("openai", 2), ("anthropic", 1)]
    assert anthropic_request.path == "/v1/messages" and anthropic_request.body["messages"]


# -- http helpers ------------------------------------------------------------------------------


def test_retry_after_is_read_as_seconds_date_or_milliseconds() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)

    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after": date}, now=now) == 30.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_backoff_grows_exponentially_up_to_the_cap_with_jitter() -> None:
    backoff = Backoff(base=0.5, cap=4.0)

    delays = [[backoff.delay(n) for _ in range(50)] for n in range(6)]

    assert all(0.25 <= d <= 0.5 for d in delays[0])
    assert all(1.0 <= d <= 2.0 for d in delays[2])
    assert all(2.0 <= d <= 4.0 for d in delays[5])
    assert len(set(delays[0])) > 1  # jittered


# -- pricing -----------------------------------------------------------------------------------


def test_cached_input_is_billed_at_the_cached_rate() -> None:
    settings = Settings(llm_pricing={})
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cached_tokens=500_000)

    # 0.5M uncached x $2 + 0.5M cached x $0.5 + 1M output x $8
    assert cost_usd("openai:gpt-4.1", usage, settings) == pytest.approx(9.25)
    # 0.5M x $3 + 0.5M x $0.3 + 1M x $15
    assert cost_usd("anthropic:claude-sonnet-4-5", usage, settings) == pytest.approx(16.65)
    assert cost_usd("openai:gpt-4.1-2025-04-14", usage, settings) == pytest.approx(9.25)


def test_local_models_are_free_and_unknown_models_have_no_price() -> None:
    settings = Settings(llm_pricing={})
    usage = Usage(input_tokens=10_000, output_tokens=10_000)

    for model in ("ollama:qwen2.5-coder", "vllm:x", "llamacpp:x", "lmstudio:x", "offline"):
        assert known_price(model, settings) and cost_usd(model, usage, settings) == 0.0
    assert not known_price("openai:gpt-9-ultra", settings)
    assert cost_usd("openai:gpt-9-ultra", usage, settings) == 0.0


def test_configured_prices_override_and_extend_the_table() -> None:
    settings = Settings(
        llm_pricing={
            "openai:gpt-4.1": {"input": 1.0, "output": 1.0, "cached": 1.0},
            "openai:ft-mine": {"input": 10.0, "output": 20.0},
        }
    )
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000, cached_tokens=1_000_000)

    assert cost_usd("openai:gpt-4.1", usage, settings) == pytest.approx(2.0)
    assert known_price("openai:ft-mine", settings)
    # cached defaults to the input rate when the override does not give one
    assert cost_usd("openai:ft-mine", usage, settings) == pytest.approx(30.0)


# -- factory -----------------------------------------------------------------------------------


def test_the_factory_builds_openai_and_anthropic_models_that_work(srv: ScriptedServer) -> None:
    srv.push({"text": "from openai"}, {"text": "from anthropic"})
    settings = settings_for(srv)

    gpt = make_model("openai:gpt-4.1-mini", settings)
    claude = make_model("anthropic:claude-haiku-4-5", settings)

    assert isinstance(gpt, OpenAIChatModel) and gpt.name == "openai:gpt-4.1-mini"
    assert isinstance(claude, AnthropicModel) and claude.name == "anthropic:claude-haiku-4-5"
    assert gpt.complete(SYSTEM, HI, []).text == "from openai"
    assert claude.complete(SYSTEM, HI, []).text == "from anthropic"
    assert srv.requests[0].body["model"] == "gpt-4.1-mini"
    assert srv.requests[1].body["model"] == "claude-haiku-4-5"


@pytest.mark.parametrize("provider", ["ollama", "vllm", "llamacpp", "lmstudio"])
def test_local_providers_speak_openai_without_a_key(provider: str) -> None:
    with ScriptedServer([{"text": "local"}]) as srv:
        model = make_model(f"{provider}:qwen2.5-coder", settings_for(srv))
        assert model.name == f"{provider}:qwen2.5-coder"
        assert model.complete(SYSTEM, HI, []).text == "local"
        req = srv.requests[0]
    assert req.protocol == "openai" and "authorization" not in req.headers
    assert req.body["model"] == "qwen2.5-coder" and "max_tokens" in req.body


@pytest.mark.parametrize(
    ("spec", "env"),
    [
        ("openai:gpt-4.1", "LOOPWRIGHT_OPENAI_API_KEY"),
        ("anthropic:x", "LOOPWRIGHT_ANTHROPIC_API_KEY"),
    ],
)
def test_a_paid_provider_without_a_key_names_the_env_var(spec: str, env: str) -> None:
    settings = Settings(openai_api_key=None, anthropic_api_key=None)

    with pytest.raises(ModelConfigError, match=env):
        make_model(spec, settings)


@pytest.mark.parametrize("spec", ["gemini:pro", "openai:", "gpt-4.1", ""])
def test_an_unknown_model_string_lists_the_valid_forms(spec: str) -> None:
    with pytest.raises(ModelConfigError, match=r"openai:MODEL.*offline"):
        make_model(spec, Settings(openai_api_key=SecretStr(KEY)))


def test_the_default_model_follows_the_configured_keys() -> None:
    def spec(**kw: Any) -> str:
        values: dict[str, Any] = {"model": None, "openai_api_key": None, "anthropic_api_key": None}
        return default_model_spec(Settings(**{**values, **kw}))

    assert spec(openai_api_key="o", anthropic_api_key="a") == "anthropic:claude-sonnet-4-5"
    assert spec(openai_api_key="o") == "openai:gpt-4.1"
    assert spec() == "offline"
    assert spec(model="ollama:llama3", anthropic_api_key="a") == "ollama:llama3"


def test_make_model_without_a_spec_uses_the_default(srv: ScriptedServer) -> None:
    model = make_model(None, settings_for(srv, openai_api_key=None, anthropic_api_key=KEY))

    assert isinstance(model, AnthropicModel) and model.name == "anthropic:claude-sonnet-4-5"


def test_offline_is_built_by_the_factory() -> None:
    model = make_model("offline", Settings())

    assert model.name == "offline"
    assert model.complete(SYSTEM, HI, []).model == "offline"
