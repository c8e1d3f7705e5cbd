"""The optional verifier-critic: a second model that scores a submission before the sidecar.

A score under the threshold counts as a rejection (fed back like one), and an unusable answer
fails the review: the critic fails closed.
"""

from __future__ import annotations

import json
import re
from typing import Any

from loopwright.agent.prompts import CRITERIA, CRITIC_SYSTEM
from loopwright.llm.errors import ModelError
from loopwright.llm.types import Message, Model, Usage


class Critic:
    """A second model that scores a submission against the rubric in ``CRITIC_SYSTEM``."""

    def __init__(self, model: Model, threshold: float) -> None:
        self.model = model
        self.threshold = threshold

    def review(self, source: str, tests: Any) -> dict[str, Any]:
        """Scores, mean score and notes; an unusable answer fails the review (fail closed)."""
        prompt = (
            f"Skill source:\n```python\n{source}\n```\nTest cases:\n```json\n"
            + json.dumps(tests, indent=1)[:20000]
            + "\n```"
        )
        try:
            comp = self.model.complete(CRITIC_SYSTEM, [Message("user", prompt)], [], max_tokens=800)
        except ModelError as exc:
            return {
                "passed": False,
                "score": 0.0,
                "notes": f"critic unavailable: {exc}",
                "usage": Usage().to_dict(),
                "model": self.model.name,
            }
        out: dict[str, Any] = {"usage": comp.usage.to_dict(), "model": self.model.name}
        match = re.search(r"\{.*\}", comp.text, re.DOTALL)
        try:
            raw = json.loads(match.group(0)) if match else None
            scores = {c: max(0.0, min(1.0, float(raw[c]))) for c in CRITERIA}  # type: ignore[index]
        except (ValueError, TypeError, KeyError):
            out.update(passed=False, score=0.0, notes="critic answer was not the JSON asked for")
            return out
        score = sum(scores.values()) / len(scores)
        out.update(
            passed=score >= self.threshold,
            score=round(score, 3),
            scores=scores,
            notes=str(raw.get("notes", ""))[:2000],  # type: ignore[union-attr]
        )
        return out
