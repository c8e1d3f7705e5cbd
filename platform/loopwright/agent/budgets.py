"""Budgets: steps per turn, tokens and money per session, counted in the session's metrics.

Usage is counted from every model call (the builder's and the critic's); a turn checks the
budgets before each model call and ends with a report when one is used up.
"""

from __future__ import annotations

from typing import Any

from loopwright.llm.pricing import cost_usd
from loopwright.llm.types import Usage
from loopwright.settings import Settings


def account(m: dict[str, Any], usage: Usage, model: str, settings: Settings) -> None:
    """Add one model call's usage and cost to the metrics ``m``."""
    m["input_tokens"] += usage.input_tokens
    m["output_tokens"] += usage.output_tokens
    m["cached_tokens"] += usage.cached_tokens
    m["cost_usd"] = round(m["cost_usd"] + cost_usd(model, usage, settings), 6)


def budget_stop(s: Settings, m: dict[str, Any], turn_steps: int) -> str | None:
    """``"<budget>: <detail>"`` for the first budget used up, else ``None``."""
    if turn_steps >= s.agent_max_steps_per_turn:
        return f"steps: {turn_steps} steps in this turn (limit {s.agent_max_steps_per_turn})"
    tokens = m["input_tokens"] + m["output_tokens"]
    if tokens >= s.agent_max_tokens_per_session:
        return f"tokens: {tokens} tokens in this session (limit {s.agent_max_tokens_per_session})"
    if s.agent_max_cost_per_session and m["cost_usd"] >= s.agent_max_cost_per_session:
        return (
            f"money: ${m['cost_usd']:.4f} spent in this session "
            f"(limit ${s.agent_max_cost_per_session:.2f})"
        )
    return None
