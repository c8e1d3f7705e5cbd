"""What a builder session keeps between turns (messages, metrics, the ledger of facts) and
what a turn hands back (:class:`TurnResult`, its tool activity).

The ledger is the source of the re-anchoring summary: facts (skills accepted or rejected, runs
started, recent requests) recorded from tool results, not a model's paraphrase of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from loopwright.agent.tools import ToolResult

SKILL_NAME = re.compile(r"""name\s*=\s*["']([a-z][a-z0-9-]{0,63})["']""")
VERSION_TOOLS = ("write_skill", "set_schedule", "set_params")  # their results are verdicts
NAMING_TOOLS = (
    "read_skill", "run_skill", "pause_skill", "resume_skill", "delete_skill", "rollback_skill",
    "set_schedule", "set_params",
)  # fmt: skip
MAX_NAMED = 20


def new_metrics() -> dict[str, Any]:
    return {
        "turns": 0,
        "steps": 0,
        "model_calls": 0,
        "tool_calls": 0,
        "tool_errors": 0,
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_tokens": 0,
        "cost_usd": 0.0,
        "rejections": 0,
        "accepted": 0,
        "loops_detected": 0,
        "reanchors": 0,
        "wall_ms": 0,
    }


def new_state(session_id: str, model: str) -> dict[str, Any]:
    """A fresh session state (what the session store keeps between turns)."""
    return {
        "id": session_id,
        "model": model,
        "messages": [],
        "since_anchor": 0,
        "metrics": new_metrics(),
        "ledger": {"skills": {}, "runs": [], "requests": [], "named": []},
    }


@dataclass(slots=True)
class TurnResult:
    """How a turn ended: the reply for the person, why it stopped early (if it did), the
    session state to save, and this turn's tool activity (for rendering)."""

    reply: str
    stopped: str | None
    state: dict[str, Any]
    activity: list[dict[str, Any]] = field(default_factory=list)

    def report(self) -> dict[str, Any]:
        return {
            "reply": self.reply,
            "stopped": self.stopped,
            "metrics": self.state["metrics"],
            "activity": self.activity,
        }


def skill_name(arguments: dict[str, Any]) -> str | None:
    """The skill name a ``write_skill`` call's source declares, if it reads as one."""
    match = SKILL_NAME.search(str(arguments.get("source", "")))
    return match.group(1) if match else None


def activity_item(name: str, arguments: dict[str, Any], result: ToolResult) -> dict[str, Any]:
    """One tool call of this turn as the chat renders it (and the stop reports count it)."""
    item: dict[str, Any] = {"tool": name, "ok": result.ok}
    if name in ("write_skill", "test_skill", "set_schedule", "set_params"):
        item["skill"] = skill_name(arguments) or arguments.get("name")
        if isinstance(result.data, dict):
            item["verdict"] = {
                k: result.data.get(k) for k in ("accepted", "name", "version", "stage", "summary")
            }
            for extra in ("diff", "placeholder_hosts", "registration"):
                if result.data.get(extra):
                    item[extra] = result.data[extra]
    elif isinstance(arguments.get("name"), str):
        item["name"] = arguments["name"]
    if not result.ok and not isinstance(result.data, dict):
        item["error"] = result.content[:300]
    if name == "run_skill" and isinstance(result.data, dict):
        item["run"] = {k: result.data.get(k) for k in ("run_id", "status")}
    return item


def session_skills(ledger: dict[str, Any]) -> set[str]:
    """The skills this session registered a version of (it may write them again unflagged)."""
    return {n for n, info in ledger["skills"].items() if info.get("accepted")}


def record(ledger: dict[str, Any], name: str, arguments: dict[str, Any], r: ToolResult) -> None:
    """Add what a tool result established to the ledger (skills, runs, skills named)."""
    target = arguments.get("name")
    if name in NAMING_TOOLS and r.ok and isinstance(target, str):
        named = [n for n in ledger.get("named", []) if n != target] + [target]
        ledger["named"] = named[-MAX_NAMED:]
    if name in VERSION_TOOLS and isinstance(r.data, dict) and "accepted" in r.data:
        skill = r.data.get("name") or skill_name(arguments) or target or "(unnamed)"
        if r.data["accepted"]:
            named = [n for n in ledger.get("named", []) if n != skill] + [skill]
            ledger["named"] = named[-MAX_NAMED:]
        ledger["skills"][skill] = {
            "accepted": bool(r.data["accepted"]),
            "version": r.data.get("version"),
            "stage": r.data.get("stage"),
            "summary": r.data.get("summary"),
        }
    elif name == "run_skill" and isinstance(r.data, dict) and "run_id" in r.data:
        ledger["runs"] = (
            ledger["runs"]
            + [
                {
                    "skill": arguments.get("name"),
                    "run_id": r.data["run_id"],
                    "status": r.data.get("status"),
                }
            ]
        )[-20:]
