"""Loop detection: notice an agent going round in circles and say so.

Four patterns, checked after every model answer and tool result of a turn:

- ``repeat``: the same tool call (name and arguments) with the same result three times;
- ``same-error``: three tool failures in a row with the same error text;
- ``ping-pong``: two different calls alternating for six calls (A B A B A B);
- ``idle-talk``: three answers in a row that announce an action but call no tool.

The detector is pure (fed the turn's events in order), so a replayed turn detects the same
loops at the same places.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

REPEAT = 3
SAME_ERROR = 3
PING_PONG = 6
IDLE_TALK = 3

# "I'll write the skill now", "Let me check", "Next, I will...": an answer promising an action.
ANNOUNCES_ACTION = re.compile(
    r"\b(i('| wi)ll|i am going to|i'm going to|let me|next,? i|now,? i|i will now|going to)\b",
    re.IGNORECASE,
)


def announces_action(text: str) -> bool:
    """True for a short answer whose last sentence promises an action ("Let me check the
    runs.") rather than concluding; a question to the person never counts."""
    body = (text or "").strip()
    if not body or len(body) > 600 or body.endswith("?"):
        return False
    sentences = [x for x in re.split(r"(?<=[.!\n])\s+", body) if x.strip()]
    return bool(sentences) and bool(ANNOUNCES_ACTION.search(sentences[-1]))


def call_signature(name: str, arguments: Any) -> str:
    """A stable identity for a tool call: its name and canonical arguments."""
    blob = json.dumps(arguments, sort_keys=True, separators=(",", ":"), default=str)
    return f"{name}:{hashlib.sha256(blob.encode()).hexdigest()[:16]}"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Detection:
    """A loop that was found: its pattern and a sentence for the model and the person."""

    pattern: str
    message: str


@dataclass(slots=True)
class LoopDetector:
    """Feed it the turn's tool calls and text-only answers; it returns a detection or None."""

    calls: list[tuple[str, str, bool, str]] = field(default_factory=list)
    idle: int = 0

    def reset(self) -> None:
        """Forget the history (after a corrective message, to give the model a fresh window)."""
        self.calls.clear()
        self.idle = 0

    def on_text(self, text: str) -> Detection | None:
        """A text-only answer; ``None`` unless it is the third announcement without action."""
        if not announces_action(text):
            self.idle = 0
            return None
        self.idle += 1
        if self.idle >= IDLE_TALK:
            return Detection(
                "idle-talk",
                f"{self.idle} answers in a row announced an action but called no tool",
            )
        return None

    def on_tool(self, name: str, arguments: Any, ok: bool, content: str) -> Detection | None:
        """A tool call and its result."""
        self.idle = 0
        sig = call_signature(name, arguments)
        self.calls.append((sig, _digest(content), ok, content[:200]))
        tail = self.calls[-REPEAT:]
        if len(tail) == REPEAT and len({(s, r) for s, r, _, _ in tail}) == 1:
            return Detection(
                "repeat", f"the same {name} call returned the same result {REPEAT} times"
            )
        errs = self.calls[-SAME_ERROR:]
        if (
            len(errs) == SAME_ERROR
            and not any(ok_ for _, _, ok_, _ in errs)
            and len({r for _, r, _, _ in errs}) == 1
        ):
            return Detection(
                "same-error", f"the same error came back {SAME_ERROR} times: {errs[-1][3]}"
            )
        pp = [s for s, _, _, _ in self.calls[-PING_PONG:]]
        if (
            len(pp) == PING_PONG
            and pp[0] != pp[1]
            and all(pp[i] == pp[i % 2] for i in range(PING_PONG))
        ):
            return Detection(
                "ping-pong", f"two calls alternated {PING_PONG} times without progress"
            )
        return None
