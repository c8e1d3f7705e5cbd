"""What the scripted model server checks before it takes a reply from its script: the API key,
headers, the body's shape and that tool results answer the previous turn's tool calls, the way
OpenAI and Anthropic refuse such requests (same status codes, similar messages)."""

from __future__ import annotations

from typing import Any, cast


class BadRequestError(Exception):
    """A request the real provider would refuse before running the model."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def check_request(
    protocol: str, headers: dict[str, str], raw_body: Any, require_key: str | None
) -> dict[str, Any]:
    """The request body, or ``BadRequestError`` for what the provider would refuse first."""
    if protocol == "openai":
        _check_openai_auth(headers, require_key)
    else:
        _check_anthropic_auth(headers, require_key)
        if "anthropic-version" not in headers:
            raise BadRequestError(400, "anthropic-version: header is required")
    if not isinstance(raw_body, dict):
        raise BadRequestError(400, "the request body is not a JSON object")
    body = cast(dict[str, Any], raw_body)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise BadRequestError(400, "model: field required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestError(400, "messages: a non-empty list is required")
    if not all(isinstance(m, dict) for m in messages):
        raise BadRequestError(400, "messages: every message must be an object")
    if protocol == "openai":
        _check_openai_body(body)
    else:
        _check_anthropic_body(body)
    return body


def _check_openai_auth(headers: dict[str, str], require_key: str | None) -> None:
    if require_key is None:
        return
    auth = headers.get("authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        raise BadRequestError(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    if auth[7:].strip() != require_key:
        raise BadRequestError(401, "Incorrect API key provided.")


def _check_anthropic_auth(headers: dict[str, str], require_key: str | None) -> None:
    if require_key is None:
        return
    key = headers.get("x-api-key")
    if not key:
        raise BadRequestError(401, "x-api-key header is required")
    if key != require_key:
        raise BadRequestError(401, "invalid x-api-key")


def _check_openai_body(body: dict[str, Any]) -> None:
    for i, tool in enumerate(body.get("tools") or []):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or tool.get("type") != "function" or not fn.get("name"):
            raise BadRequestError(
                400, f"tools[{i}]: expected {{type: function, function: {{name}}}}"
            )
    pending: set[str] = set()
    for i, m in enumerate(body["messages"]):
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise BadRequestError(400, f"messages[{i}].role: invalid value {role!r}")
        if role == "tool":
            call_id = m.get("tool_call_id")
            if call_id not in pending:
                raise BadRequestError(
                    400,
                    f"messages[{i}]: messages with role 'tool' must be a response to a "
                    f"preceding message with 'tool_calls' (unknown tool_call_id {call_id!r})",
                )
            pending.discard(call_id)
            continue
        if pending:
            raise BadRequestError(
                400,
                "An assistant message with 'tool_calls' must be followed by tool messages "
                f"responding to each 'tool_call_id'; missing: {sorted(pending)}",
            )
        calls = (m.get("tool_calls") or []) if role == "assistant" else []
        for j, call in enumerate(calls):
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("arguments"), str):
                raise BadRequestError(
                    400, f"messages[{i}].tool_calls[{j}].function.arguments must be a string"
                )
            pending.add(str(call.get("id")))


def _check_anthropic_body(body: dict[str, Any]) -> None:
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequestError(400, "max_tokens: field required (a positive integer)")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise BadRequestError(400, "system: a string or a list of text blocks")
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or not tool.get("name") or "input_schema" not in tool:
            raise BadRequestError(400, f"tools.{i}: name and input_schema are required")
    if _count_cache_control(body) > 4:
        raise BadRequestError(400, "A maximum of 4 blocks with cache_control may be provided.")
    expected: set[str] = set()
    for i, m in enumerate(body["messages"]):
        role, content = m.get("role"), m.get("content")
        if role not in ("user", "assistant"):
            raise BadRequestError(400, f"messages.{i}.role: Input should be 'user' or 'assistant'")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list) or not blocks:
            raise BadRequestError(400, f"messages.{i}: content must be a non-empty string or list")
        if not all(isinstance(b, dict) and isinstance(b.get("type"), str) for b in blocks):
            raise BadRequestError(400, f"messages.{i}: every content block needs a type")
        answered = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        if answered - expected:
            raise BadRequestError(
                400,
                f"messages.{i}: unexpected `tool_use_id` found in `tool_result` blocks: "
                f"{sorted(map(str, answered - expected))}. Each `tool_result` block must have a "
                "corresponding `tool_use` block in the previous message.",
            )
        if expected - answered:
            raise BadRequestError(
                400,
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {sorted(expected - answered)}",
            )
        for j, b in enumerate(blocks):
            if b.get("type") == "text" and not str(b.get("text") or "").strip():
                raise BadRequestError(
                    400, f"messages.{i}.content.{j}: text blocks must be non-empty"
                )
        uses = [b for b in blocks if b.get("type") == "tool_use"]
        if role == "assistant" and any(not isinstance(b.get("input"), dict) for b in uses):
            raise BadRequestError(400, f"messages.{i}: tool_use.input must be an object")
        expected = {str(b.get("id")) for b in uses} if role == "assistant" else set()


def _count_cache_control(body: dict[str, Any]) -> int:
    """Breakpoints are block-level: tools, system blocks, message content blocks and the
    blocks inside a tool result (a ``cache_control`` key inside a tool's input is data)."""
    blocks: list[Any] = list(body.get("tools") or [])
    if isinstance(body.get("system"), list):
        blocks += body["system"]
    for m in body["messages"]:
        content = m.get("content")
        for b in content if isinstance(content, list) else []:
            blocks.append(b)
            if isinstance(b, dict) and isinstance(b.get("content"), list):
                blocks += b["content"]
    return sum(1 for b in blocks if isinstance(b, dict) and "cache_control" in b)


# -- answers -----------------------------------------------------------------------------------
