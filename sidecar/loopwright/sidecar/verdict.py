"""The sidecar's answer: accepted (name, version, what changed) or rejected (stage, findings).

Written for an LLM author: every finding carries a rule id, the position, a message saying what
is wrong and a hint saying what to write instead; ``summary`` is one line to read first.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from loopwright.sdk.findings import Finding

Stage = Literal["syntax", "policy", "manifest", "capabilities", "tests", "registration"]
__all__ = ["STAGES", "CaseResult", "Finding", "Stage", "Verdict", "rejected"]

STAGES: tuple[Stage, ...] = (
    "syntax",
    "policy",
    "manifest",
    "capabilities",
    "tests",
    "registration",
)


class CaseResult(BaseModel):
    """How one test case went in the sandbox."""

    name: str
    passed: bool
    status: str
    output: Any = None
    error: str | None = None
    problems: list[str] = Field(default_factory=list)
    steps: list[dict[str, Any]] = Field(default_factory=list)
    notifications: list[dict[str, Any]] = Field(default_factory=list)
    duration_ms: float = 0.0


class Verdict(BaseModel):
    """The outcome of one submission."""

    accepted: bool
    name: str | None = None
    version: str | None = None
    stage: Stage | None = None
    status: str | None = None
    registration: str | None = None
    previous: str | None = None
    changes: dict[str, Any] | None = None
    findings: list[Finding] = Field(default_factory=list)
    warnings: list[Finding] = Field(default_factory=list)
    cases: list[CaseResult] = Field(default_factory=list)
    next_fires: list[str] = Field(default_factory=list)
    timings_ms: dict[str, float] = Field(default_factory=dict)
    summary: str = ""

    def first_line(self) -> str:
        """The verdict as one readable line (the CLI's error line for rejections)."""
        if self.accepted:
            return self.summary
        shown = "; ".join(f.one_line() for f in self.findings[:3])
        more = f" (+{len(self.findings) - 3} more)" if len(self.findings) > 3 else ""
        return f"rejected at stage {self.stage}: {shown}{more}"


def rejected(
    stage: Stage,
    findings: list[Finding],
    timings: dict[str, float],
    name: str | None = None,
    cases: list[CaseResult] | None = None,
) -> Verdict:
    """A rejection at ``stage`` with every finding of that stage."""
    count = len(findings)
    first = findings[0].one_line() if findings else "no detail"
    return Verdict(
        accepted=False,
        name=name,
        stage=stage,
        findings=findings,
        cases=cases or [],
        timings_ms=timings,
        summary=(
            f"rejected at stage {stage} with {count} finding(s); first: {first}. Fix every "
            f"finding listed (each has a hint) and submit again."
        ),
    )


def to_json(verdict: Verdict) -> dict[str, Any]:
    """The verdict as JSON-ready data."""
    return verdict.model_dump(mode="json")
