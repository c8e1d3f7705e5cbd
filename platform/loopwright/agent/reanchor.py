"""Re-anchoring: past a step or prompt-size threshold the conversation is compacted into a
summary of the session's ledger plus the most recent exchanges.

The system prompt and the tool definitions are never touched, so the provider's prefix cache
keeps hitting on them (Anthropic: their breakpoints, ``llm/anthropic.py``); the request after
a re-anchoring writes the rest of its prompt to the cache again, which the shorter requests
after it repay. The summary is built from recorded facts, so it is deterministic on replay.
"""

from __future__ import annotations

import json
from typing import Any

from loopwright.agent.prompts import NOTE
from loopwright.llm.types import Message
from loopwright.settings import Settings


def estimate_tokens(messages: list[Message]) -> int:
    """A rough prompt size (4 characters a token), enough to decide when to re-anchor."""
    return (
        sum(len(m.content) + len(json.dumps([c.arguments for c in m.tool_calls])) for m in messages)
        // 4
    )


def due(s: Settings, state: dict[str, Any], messages: list[Message]) -> bool:
    """Whether the conversation has grown past a re-anchoring threshold."""
    return (
        state["since_anchor"] >= s.agent_reanchor_steps
        or estimate_tokens(messages) >= s.agent_reanchor_tokens
    )


def reanchor(
    s: Settings, state: dict[str, Any], messages: list[Message], request: str
) -> list[Message]:
    """A summary message plus the last ``agent_keep_turns`` exchanges, starting at an
    assistant message so no tool result loses its call."""
    starts = [k for k, msg in enumerate(messages) if msg.role == "assistant"]
    keep = s.agent_keep_turns
    cut = starts[-keep] if len(starts) >= keep else (starts[0] if starts else len(messages))
    state["since_anchor"] = 0
    state["metrics"]["reanchors"] += 1
    summary = Message("user", summarize(state["ledger"], request))
    return [summary, *messages[cut:]]


def summarize(ledger: dict[str, Any], request: str) -> str:
    """The re-anchoring summary: built from the session's ledger of facts, deterministic."""
    lines = [f"{NOTE} Context re-anchored: earlier messages were compacted into this summary."]
    lines.append(f"Current request: {request[:2000]}")
    earlier = list(ledger["requests"][:-1])
    if earlier:
        lines.append("Earlier requests: " + " | ".join(r[:200] for r in earlier[-5:]))
    skills = ledger["skills"]
    if skills:
        lines.append("Skills so far:")
        for name, info in sorted(skills.items()):
            if info.get("accepted"):
                lines.append(f"- {name}: registered version {str(info.get('version'))[:12]}")
            else:
                lines.append(
                    f"- {name}: last submission rejected at {info.get('stage')}: "
                    f"{str(info.get('summary', ''))[:300]}"
                )
    if ledger.get("named"):
        lines.append(
            "Skills this session wrote or named, most recent last (a follow-up such as "
            "'stop it' means the last one): " + ", ".join(ledger["named"])
        )
    if ledger["runs"]:
        lines.append(
            "Runs started: "
            + ", ".join(f"{r['skill']} {r['run_id']} ({r['status']})" for r in ledger["runs"][-8:])
        )
    lines.append("Continue from here; the most recent exchanges follow.")
    return "\n".join(lines)
