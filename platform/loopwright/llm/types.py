"""The provider-neutral shapes every model speaks: messages, tool specs, tool calls, usage.

They are plain dataclasses with ``to_dict``/``from_dict`` because a completion is a step output
of the durable builder session: it is checkpointed as JSON and replayed from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["user", "assistant", "tool"]


@dataclass(slots=True)
class ToolSpec:
    """A tool the model may call: name, description and a JSON schema for its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(slots=True)
class ToolCall:
    """A tool call the model made. ``arguments`` is the decoded object; when the model sent
    arguments that are not a JSON object, ``arguments`` is empty and ``error`` says why
    (the raw text is kept in ``raw``) so the loop can feed the problem back."""

    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    raw: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolCall:
        return cls(
            id=str(d["id"]),
            name=str(d["name"]),
            arguments=dict(d.get("arguments") or {}),
            raw=d.get("raw"),
            error=d.get("error"),
        )


@dataclass(slots=True)
class Message:
    """One conversation message (the system prompt travels separately).

    ``user``: text from the person (or the loop's own corrective notes). ``assistant``: text
    and/or tool calls. ``tool``: the result of one tool call (``tool_call_id``, ``name``),
    ``is_error`` when the call failed.
    """

    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    is_error: bool = False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            d["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            d["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            d["name"] = self.name
        if self.is_error:
            d["is_error"] = True
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Message:
        return cls(
            role=d["role"],
            content=str(d.get("content") or ""),
            tool_calls=[ToolCall.from_dict(c) for c in d.get("tool_calls") or []],
            tool_call_id=d.get("tool_call_id"),
            name=d.get("name"),
            is_error=bool(d.get("is_error", False)),
        )


@dataclass(slots=True)
class Usage:
    """Tokens of one call. ``input_tokens`` counts the whole prompt, cached part included;
    ``cached_tokens`` is the part the provider served from its prefix cache,
    ``cache_write_tokens`` the part it wrote to the cache (Anthropic bills those above the
    input rate; OpenAI reports none)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cached_tokens += other.cached_tokens
        self.cache_write_tokens += other.cache_write_tokens

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Usage:
        return cls(
            int(d.get("input_tokens", 0)),
            int(d.get("output_tokens", 0)),
            int(d.get("cached_tokens", 0)),
            int(d.get("cache_write_tokens", 0)),
        )


@dataclass(slots=True)
class Completion:
    """What a model answered: text, tool calls, usage, the model id and why it stopped."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    stop_reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tool_calls": [c.to_dict() for c in self.tool_calls],
            "usage": self.usage.to_dict(),
            "model": self.model,
            "stop_reason": self.stop_reason,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Completion:
        return cls(
            text=str(d.get("text") or ""),
            tool_calls=[ToolCall.from_dict(c) for c in d.get("tool_calls") or []],
            usage=Usage.from_dict(d.get("usage") or {}),
            model=str(d.get("model") or ""),
            stop_reason=str(d.get("stop_reason") or ""),
        )

    def message(self) -> Message:
        """The assistant message this completion adds to the conversation."""
        return Message(role="assistant", content=self.text, tool_calls=list(self.tool_calls))


class Model(Protocol):
    """Messages and tool specs in; text, tool calls and usage out.

    ``name`` is the model string it was made from (``openai:gpt-4.1``, ``offline``...).
    Raises :class:`loopwright.llm.errors.ModelError` subclasses on failure, after the
    provider's own retries.
    """

    name: str

    def complete(
        self,
        system: str,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        *,
        max_tokens: int = 4096,
    ) -> Completion: ...
