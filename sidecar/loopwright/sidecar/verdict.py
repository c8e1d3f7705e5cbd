"""The sidecar's answer: accepted (name, version, what changed) or rejected (stage, findings).

Written for an LLM author: every finding carries a rule id, the position, a message saying what
is wrong and a hint saying what to write instead; ``summary`` is one line to read first.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from loopwright.sdk.findings import Finding

Stage = Literal["syntax", "policy", "manifest", "capabilities", "tests", "registration"]
__all__ = ["STAGES", "CaseResult", "Finding", "ReplayReport", "Stage", "Verdict", "rejected"]

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


class ReplayReport(BaseModel):
    """Advisory (never rejects): the new version replayed on recorded runs of the active one
    (``sidecar/replay.py``), labelled runs first. Run ids per kind of difference."""

    against: str
    runs: int = 0
    same: int = 0
    outcome: list[str] = Field(default_factory=list)  # status or output changed
    side_effects: list[str] = Field(default_factory=list)  # same outcome, other side effects
    off_script: list[str] = Field(default_factory=list)  # made a call the run never made
    labelled: dict[str, str] = Field(default_factory=dict)  # run id -> feedback
    duration_ms: float = 0.0
    failed: str | None = None  # why the replay could not run

    def line(self) -> str:
        """One line for a person or a model."""
        if self.failed is not None:
            return f"replay on recorded runs could not run: {self.failed}"
        if not self.runs:
            return f"replay: no recorded runs of {self.against[:12]} to try this version on"

        def ids(found: list[str]) -> str:
            shown = ", ".join(found[:5]) + (f" +{len(found) - 5}" if len(found) > 5 else "")
            return f" ({shown})" if found else ""

        return (
            f"replayed {self.runs} recorded run(s) of {self.against[:12]}: {self.same} end the "
            f"same, {len(self.outcome)} change outcome{ids(self.outcome)}, "
            f"{len(self.side_effects)} change side effects{ids(self.side_effects)}, "
            f"{len(self.off_script)} go off-script{ids(self.off_script)}"
        )


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
    replay: ReplayReport | None = None  # advisory: a new version of a skill with recorded runs

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
