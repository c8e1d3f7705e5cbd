"""Anthropic's Messages API, with prompt caching on the stable prefix of every request.

Anthropic caches only at ``cache_control`` breakpoints (at most 4 a request), and a read
finds an entry only at a block boundary up to 20 blocks before a breakpoint. So a request
carries up to four: the last tool and the system prompt (the stable prefix, which survives
re-anchoring), the last block of the turn before the last assistant turn — exactly where the
previous request of the loop ended and wrote its entry, so the read hits however many blocks
the last turn added (parallel tool calls add two per call) — and the last block of the last
message, which writes the entry the next request reads. Each request then pays the full (and
the 1.25x write) price only for what is new.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loopwright.llm.errors import ModelResponseError
from loopwright.llm.http import Backoff, JsonHttpClient
from loopwright.llm.openai import decode_arguments
from loopwright.llm.types import Completion, Message, ToolCall, ToolSpec, Usage
from loopwright.settings import Settings

API_VERSION = "2023-06-01"
_EPHEMERAL = {"type": "ephemeral"}
# The API refuses empty text blocks; these stand in for an empty user or assistant turn.
_EMPTY_USER = "(empty message)"
_EMPTY_ASSISTANT = "(no output)"


class AnthropicModel:
    """A Claude model behind ``POST {base_url}/v1/messages``.

    ``name`` is the full model string (``anthropic:claude-sonnet-4-5``), ``model_id`` what the
    API is asked for. Usage is normalised: ``input_tokens`` counts the whole prompt (uncached,
    cache reads and cache writes), ``cached_tokens`` the cache reads.
    """

    def __init__(
        self,
        name: str,
        model_id: str,
        settings: Settings,
        *,
        api_key: str,
        base_url: str | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.model_id = model_id
        self.max_output_tokens = settings.llm_max_output_tokens
        url = base_url or settings.anthropic_base_url
        self._http = JsonHttpClient(
            label=f"Anthropic at {url}",
            base_url=url,
            headers={"x-api-key": api_key, "anthropic-version": API_VERSION},
            settings=settings,
            auth_hint="check LOOPWRIGHT_ANTHROPIC_API_KEY",
            secret=api_key,
            backoff=backoff,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def complete(
        self,
        system: str,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        *,
        max_tokens: int = 4096,
    ) -> Completion:
        """One Messages API call; ``max_tokens`` is capped at ``llm_max_output_tokens``."""
        body = self.request_body(system, messages, tools, max_tokens=max_tokens)
        return self._http.post("/v1/messages", body, self._parse)

    def request_body(
        self,
        system: str,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        *,
        max_tokens: int = 4096,
    ) -> dict[str, Any]:
        """The JSON body of a Messages API request, cache breakpoints included."""
        body: dict[str, Any] = {
            "model": self.model_id,
            "max_tokens": min(max_tokens, self.max_output_tokens),
        }
        if system:
            body["system"] = [{"type": "text", "text": system, "cache_control": _EPHEMERAL}]
        if tools:
            wire_tools: list[dict[str, Any]] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in tools
            ]
            wire_tools[-1]["cache_control"] = _EPHEMERAL
            body["tools"] = wire_tools
        wire = encode_messages(messages)
        for turn in cache_breakpoint_turns(wire):
            turn["content"][-1]["cache_control"] = _EPHEMERAL
        body["messages"] = wire
        return body

    def _parse(self, data: Any) -> Completion:
        if not isinstance(data, dict):
            raise ModelResponseError("the response is not a JSON object")
        content = data.get("content")
        if not isinstance(content, list):
            raise ModelResponseError("the response has no content list")
        texts: list[str] = []
        calls: list[ToolCall] = []
        for i, block in enumerate(content):
            if not isinstance(block, dict):
                raise ModelResponseError(f"content[{i}] is not an object")
            kind = block.get("type")
            if kind == "text":
                if not isinstance(block.get("text"), str):
                    raise ModelResponseError(f"content[{i}] text block has no text")
                texts.append(block["text"])
            elif kind == "tool_use":
                call_id, name = block.get("id"), block.get("name")
                if not isinstance(call_id, str) or not isinstance(name, str) or not name:
                    raise ModelResponseError(f"content[{i}] tool_use block lacks id or name")
                calls.append(decode_arguments(call_id, name, block.get("input")))
            # Other block kinds (thinking, server tools) carry nothing the loop uses.
        return Completion(
            text="".join(texts),
            tool_calls=calls,
            usage=_decode_usage(data.get("usage")),
            model=str(data.get("model") or self.model_id),
            stop_reason=str(data.get("stop_reason") or ""),
        )


def cache_breakpoint_turns(wire: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The turns whose last block gets a breakpoint: the one before the last assistant turn
    (the previous request's end) and the last one."""
    if not wire:
        return []
    last_assistant = max(
        (i for i, turn in enumerate(wire) if turn["role"] == "assistant"), default=-1
    )
    previous_end = last_assistant - 1
    if 0 <= previous_end < len(wire) - 1:
        return [wire[previous_end], wire[-1]]
    return [wire[-1]]


def encode_messages(messages: Sequence[Message]) -> list[dict[str, Any]]:
    """Our messages as Messages API turns.

    Tool results become ``tool_result`` blocks of a user turn; consecutive results share one
    turn, and a user message right after them joins that turn as a text block after the
    results, since the API wants every result of an assistant turn in the very next turn.
    """
    wire: list[dict[str, Any]] = []
    # Whether the last wire turn is a user turn that starts with tool results.
    open_results = False
    for m in messages:
        if m.role == "tool":
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": m.tool_call_id or "",
                "content": m.content,
            }
            if m.is_error:
                block["is_error"] = True
            if open_results:
                wire[-1]["content"].append(block)
            else:
                wire.append({"role": "user", "content": [block]})
                open_results = True
        elif m.role == "user":
            text_block = {"type": "text", "text": m.content or _EMPTY_USER}
            if open_results:
                wire[-1]["content"].append(text_block)
            else:
                wire.append({"role": "user", "content": [text_block]})
            open_results = False
        else:
            blocks: list[dict[str, Any]] = []
            if m.content:
                blocks.append({"type": "text", "text": m.content})
            blocks.extend(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in m.tool_calls
            )
            if not blocks:
                blocks.append({"type": "text", "text": _EMPTY_ASSISTANT})
            wire.append({"role": "assistant", "content": blocks})
            open_results = False
    return wire


def _decode_usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    uncached = _int(raw.get("input_tokens"))
    read = _int(raw.get("cache_read_input_tokens"))
    written = _int(raw.get("cache_creation_input_tokens"))
    return Usage(
        input_tokens=uncached + read + written,
        output_tokens=_int(raw.get("output_tokens")),
        cached_tokens=read,
        cache_write_tokens=written,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
