"""OpenAI-compatible Chat Completions: OpenAI itself and the local servers that copy its API
(Ollama, vLLM, llama.cpp, LM Studio)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from loopwright.llm.errors import ModelResponseError
from loopwright.llm.http import Backoff, JsonHttpClient
from loopwright.llm.types import Completion, Message, ToolCall, ToolSpec, Usage
from loopwright.settings import Settings


class OpenAIChatModel:
    """A model behind ``POST {base_url}/chat/completions``.

    ``name`` is the full model string (``openai:gpt-4.1``), ``model_id`` what the server is
    asked for (``gpt-4.1``). ``api_key`` is optional: local servers need none, and without one
    no ``Authorization`` header is sent. ``auth_hint`` says what to fix when the server
    refuses the credentials.
    """

    def __init__(
        self,
        name: str,
        model_id: str,
        settings: Settings,
        *,
        base_url: str,
        api_key: str | None = None,
        provider: str = "openai",
        auth_hint: str = "check LOOPWRIGHT_OPENAI_API_KEY",
        backoff: Backoff | None = None,
    ) -> None:
        self.name = name
        self.model_id = model_id
        self.provider = provider
        self.max_output_tokens = settings.llm_max_output_tokens
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = JsonHttpClient(
            label=f"{provider} at {base_url}",
            base_url=base_url,
            headers=headers,
            settings=settings,
            auth_hint=auth_hint,
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
        """One chat completion; ``max_tokens`` is capped at ``llm_max_output_tokens``."""
        body = self.request_body(system, messages, tools, max_tokens=max_tokens)
        turn = len(messages)
        return self._http.post("/chat/completions", body, lambda data: self._parse(data, turn))

    def request_body(
        self,
        system: str,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        *,
        max_tokens: int = 4096,
    ) -> dict[str, Any]:
        """The JSON body of a Chat Completions request."""
        wire: list[dict[str, Any]] = []
        if system:
            wire.append({"role": "system", "content": system})
        wire.extend(_encode_message(m) for m in messages)
        body: dict[str, Any] = {"model": self.model_id, "messages": wire}
        if tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        limit = min(max_tokens, self.max_output_tokens)
        # OpenAI's reasoning models refuse the deprecated max_tokens; the local servers do not
        # all know max_completion_tokens yet.
        body["max_completion_tokens" if self.provider == "openai" else "max_tokens"] = limit
        return body

    def _parse(self, data: Any, turn: int) -> Completion:
        if not isinstance(data, dict):
            raise ModelResponseError("the response is not a JSON object")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ModelResponseError("the response has no choices")
        message = choices[0].get("message")
        if not isinstance(message, dict):
            raise ModelResponseError("choices[0] has no message")
        content = message.get("content")
        if content is None:
            content = message.get("refusal") or ""
        if not isinstance(content, str):
            raise ModelResponseError("choices[0].message.content is not a string")
        raw_calls = message.get("tool_calls") or []
        if not isinstance(raw_calls, list):
            raise ModelResponseError("choices[0].message.tool_calls is not a list")
        calls = [_decode_call(c, i, turn) for i, c in enumerate(raw_calls)]
        return Completion(
            text=content,
            tool_calls=calls,
            usage=_decode_usage(data.get("usage")),
            model=str(data.get("model") or self.model_id),
            stop_reason=str(choices[0].get("finish_reason") or ""),
        )


def _encode_message(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        content = f"ERROR: {m.content}" if m.is_error else m.content
        return {"role": "tool", "tool_call_id": m.tool_call_id or "", "content": content}
    if m.role == "assistant" and m.tool_calls:
        return {
            "role": "assistant",
            "content": m.content or None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {
                        "name": c.name,
                        "arguments": json.dumps(c.arguments, ensure_ascii=False),
                    },
                }
                for c in m.tool_calls
            ],
        }
    return {"role": m.role, "content": m.content}


def _decode_call(raw: Any, index: int, turn: int) -> ToolCall:
    if not isinstance(raw, dict) or not isinstance(raw.get("function"), dict):
        raise ModelResponseError(f"tool_calls[{index}] has no function")
    fn = raw["function"]
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise ModelResponseError(f"tool_calls[{index}] has no function name")
    args = fn.get("arguments")
    call_id = raw.get("id")
    if not isinstance(call_id, str) or not call_id:
        # Some local servers omit ids; derive one from what the call is, so a replayed
        # completion gets the same id.
        seed = json.dumps([turn, index, name, args], sort_keys=True, default=str)
        call_id = "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24]
    return decode_arguments(call_id, name, args)


def decode_arguments(call_id: str, name: str, args: Any) -> ToolCall:
    """A tool call from arguments as sent on the wire: a JSON object, or a string holding one.
    Anything else keeps the call with empty arguments, the raw text and an error to feed back."""
    if isinstance(args, dict):
        return ToolCall(id=call_id, name=name, arguments=args)
    if args is None or (isinstance(args, str) and not args.strip()):
        return ToolCall(id=call_id, name=name)
    raw = args if isinstance(args, str) else json.dumps(args)
    try:
        value = json.loads(raw)
    except ValueError as exc:
        error = f"the arguments are not valid JSON ({exc})"
        return ToolCall(id=call_id, name=name, raw=raw, error=error)
    if not isinstance(value, dict):
        error = f"the arguments must be a JSON object, not {type(value).__name__}"
        return ToolCall(id=call_id, name=name, raw=raw, error=error)
    return ToolCall(id=call_id, name=name, arguments=value)


def _decode_usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    details = raw.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return Usage(
        input_tokens=_int(raw.get("prompt_tokens")),
        output_tokens=_int(raw.get("completion_tokens")),
        cached_tokens=_int(cached),
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
