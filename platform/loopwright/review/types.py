"""The weekly review's data model: what selection scores, diagnosis finds, candidates and the
gate decide, and what a stored review holds.

Shared by every part of the review (selection, diagnosis, candidates, the gate, the report, the
store and the ``weekly-review`` skill's checkpoints), so it is plain data: dataclasses with
``to_dict``/``from_dict`` that round-trip through JSON exactly. Lists keep the order their
producer gave them (selection sorts skills by name, clusters by count then signature), so the
same review always serialises, and renders, to the same bytes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

# What a day of the window looked like: (``yyyymmdd``, success rate or None without runs, runs).
DailyPoint = tuple[str, float | None, int]


class Verdict(StrEnum):
    """Selection's verdict on one active skill version."""

    HEALTHY = "healthy"
    UNDERPERFORMING = "underperforming"
    INSUFFICIENT_DATA = "insufficient_data"
    PLATFORM_ONLY = "platform_only"


class Decision(StrEnum):
    """What the review did with a skill (``SkillReview.decision``; the summary counts these).

    ``decision`` is stored as a plain string, so a later decision name read by an older report
    is shown as written rather than refused."""

    HEALTHY = "healthy"  # nothing flagged: left alone
    INSUFFICIENT_DATA = "insufficient_data"  # too few runs: never flagged
    PLATFORM_ONLY = "platform_only"  # only the platform failed it: not the skill's fault
    IMPROVED = "improved"  # a candidate passed the gate and was promoted (or is watched)
    AWAITING_APPROVAL = "awaiting_approval"  # passed, submitted, waits for a person
    NEEDS_MODEL = "needs_model"  # flagged, no offline candidate passed, no model configured
    NO_FIX = "no_fix"  # flagged, every candidate rejected or inconclusive
    DRY_RUN = "dry_run"  # a candidate passed but the review ran with --dry-run
    OVER_BUDGET = "over_budget"  # stopped by the review's cost cap


@dataclass(slots=True)
class Metrics:
    """One skill version's figures over a span (the window or the baseline).

    Success rate = successes / (successes + failures_skill): platform failures are counted
    apart and never in the rate. The stability pair is the mean and standard deviation of the
    daily success rates (days with no judged runs left out)."""

    runs: int = 0
    successes: int = 0
    failures_skill: int = 0
    failures_platform: int = 0
    success_rate: float | None = None
    wilson_low: float | None = None
    wilson_high: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    cost_per_run: float | None = None
    retries_per_run: float | None = None
    bad_labels: int = 0
    good_labels: int = 0
    labelled: int = 0
    daily_success: list[DailyPoint] = field(default_factory=list)
    stability_mean: float | None = None
    stability_std: float | None = None
    cancelled: int = 0
    skipped: int = 0

    @property
    def judged(self) -> int:
        """Runs the skill itself is judged on: completed or failed by the skill."""
        return self.successes + self.failures_skill

    @property
    def bad_rate(self) -> float | None:
        """Share of labelled runs labelled bad (None without labels)."""
        return self.bad_labels / self.labelled if self.labelled else None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["daily_success"] = [list(p) for p in self.daily_success]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Metrics:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["daily_success"] = [
            (str(day), None if rate is None else float(rate), int(n))
            for day, rate, n in d.get("daily_success", [])
        ]
        return cls(**known)


@dataclass(slots=True)
class SkillScore:
    """Selection's score of one active skill version: its verdict and the reasons for it.

    ``flags`` are machine names of what tripped (``floor``, ``baseline_drop``, ``bad_feedback``,
    ``p95_increase``, ``cost_increase``, ``unstable``); ``reasons`` the sentences a person reads.
    ``p_value`` is the one-sided two-proportion test against the baseline, ``q_value`` its
    Benjamini-Hochberg adjusted value across the skills tested in the same review."""

    skill: str
    version: str
    verdict: Verdict
    reasons: list[str]
    window: Metrics
    baseline: Metrics | None = None
    p_value: float | None = None
    flags: list[str] = field(default_factory=list)
    q_value: float | None = None
    baseline_versions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "skill": self.skill,
            "version": self.version,
            "verdict": self.verdict.value,
            "reasons": list(self.reasons),
            "window": self.window.to_dict(),
            "baseline": None if self.baseline is None else self.baseline.to_dict(),
            "p_value": self.p_value,
            "flags": list(self.flags),
            "q_value": self.q_value,
            "baseline_versions": list(self.baseline_versions),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SkillScore:
        base = d.get("baseline")
        return cls(
            skill=d["skill"],
            version=d["version"],
            verdict=Verdict(d["verdict"]),
            reasons=list(d.get("reasons", [])),
            window=Metrics.from_dict(d["window"]),
            baseline=None if base is None else Metrics.from_dict(base),
            p_value=d.get("p_value"),
            flags=list(d.get("flags", [])),
            q_value=d.get("q_value"),
            baseline_versions=list(d.get("baseline_versions", [])),
        )


@dataclass(slots=True)
class Cluster:
    """One error signature of a flagged skill in the window.

    ``began_with_version`` names the version the signature first appeared with when it never
    occurred on the version before it (the regression began with a version change)."""

    signature: str
    message: str
    step: str
    count: int
    example_runs: list[str] = field(default_factory=list)
    first_seen: str = ""  # yyyymmdd
    began_with_version: str | None = None
    origin: str = "skill"
    last_seen: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Cluster:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass(slots=True)
class SharedResponse:
    """A recorded tool response that several bad or failed runs share: the same tool and
    target (URL) and the same value pattern at one path of the response (``body.p95_ms``)."""

    tool: str
    target: str
    path: str
    pattern: str
    runs: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SharedResponse:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass(slots=True)
class VersionChange:
    """The version change a regression began with: from the last healthy version to the
    current one, with the registry's unified diff of their sources."""

    from_version: str
    to_version: str
    diff: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VersionChange:
        return cls(d["from_version"], d["to_version"], d.get("diff", ""))


@dataclass(slots=True)
class Diagnosis:
    """What went wrong with a flagged skill version: error clusters, runs people labelled bad
    (with their notes), the recorded responses those runs share, and the version change."""

    skill: str
    version: str
    clusters: list[Cluster] = field(default_factory=list)
    bad_runs: list[tuple[str, str]] = field(default_factory=list)  # (run id, note)
    shared_responses: list[SharedResponse] = field(default_factory=list)
    version_change: VersionChange | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "skill": self.skill,
            "version": self.version,
            "clusters": [c.to_dict() for c in self.clusters],
            "bad_runs": [list(b) for b in self.bad_runs],
            "shared_responses": [s.to_dict() for s in self.shared_responses],
            "version_change": None
            if self.version_change is None
            else self.version_change.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Diagnosis:
        vc = d.get("version_change")
        return cls(
            skill=d["skill"],
            version=d["version"],
            clusters=[Cluster.from_dict(c) for c in d.get("clusters", [])],
            bad_runs=[(str(r), str(n)) for r, n in d.get("bad_runs", [])],
            shared_responses=[SharedResponse.from_dict(s) for s in d.get("shared_responses", [])],
            version_change=None if vc is None else VersionChange.from_dict(vc),
        )


@dataclass(slots=True)
class GateResult:
    """The gate's verdict on one candidate, from the held-out split of recorded runs.

    ``outcome`` is ``passed``, ``rejected`` or ``inconclusive``; ``decided_by`` the run ids
    that decided it (the regressed runs for a rejection, the fixed ones for a pass)."""

    outcome: str
    reason: str = ""
    held_out: int = 0
    runs_fixed: list[str] = field(default_factory=list)
    runs_regressed: list[str] = field(default_factory=list)
    side_effect_changes: list[str] = field(default_factory=list)
    off_script_ratio: float = 0.0
    p95_tool_ms_old: float | None = None
    p95_tool_ms_new: float | None = None
    decided_by: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GateResult:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass(slots=True)
class CandidateResult:
    """One candidate tried for a skill: a parameter change, a model rewrite or a rollback.

    ``params_changed`` maps a parameter to ``[old, new]``; ``version`` is the registered (or
    content-hash) version of the candidate, ``source`` its text when it has no version yet."""

    kind: str  # param | model | rollback
    description: str
    version: str | None = None
    source: str | None = None
    params_changed: dict[str, list[Any]] = field(default_factory=dict)
    gate: GateResult | None = None
    attempt: int = 1
    cost_tokens: int = 0
    cost_usd: float = 0.0
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["gate"] = None if self.gate is None else self.gate.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CandidateResult:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        gate = d.get("gate")
        known["gate"] = None if gate is None else GateResult.from_dict(gate)
        known["params_changed"] = {k: list(v) for k, v in d.get("params_changed", {}).items()}
        return cls(**known)


@dataclass(slots=True)
class SkillReview:
    """Everything the review found and did for one skill (one card of the report)."""

    score: SkillScore
    diagnosis: Diagnosis | None = None
    candidates: list[CandidateResult] = field(default_factory=list)
    decision: str = Decision.HEALTHY.value
    decision_reason: str = ""
    promoted_version: str | None = None
    cost_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def skill(self) -> str:
        return self.score.skill

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score.to_dict(),
            "diagnosis": None if self.diagnosis is None else self.diagnosis.to_dict(),
            "candidates": [c.to_dict() for c in self.candidates],
            "decision": str(self.decision),
            "decision_reason": self.decision_reason,
            "promoted_version": self.promoted_version,
            "cost_tokens": self.cost_tokens,
            "cost_usd": self.cost_usd,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SkillReview:
        diag = d.get("diagnosis")
        return cls(
            score=SkillScore.from_dict(d["score"]),
            diagnosis=None if diag is None else Diagnosis.from_dict(diag),
            candidates=[CandidateResult.from_dict(c) for c in d.get("candidates", [])],
            decision=str(d.get("decision", Decision.HEALTHY.value)),
            decision_reason=d.get("decision_reason", ""),
            promoted_version=d.get("promoted_version"),
            cost_tokens=int(d.get("cost_tokens", 0)),
            cost_usd=float(d.get("cost_usd", 0.0)),
        )


@dataclass(slots=True)
class Review:
    """One review: its window (``window`` as given, e.g. ``7d``; ``window_start``/``_end`` the
    ``yyyymmdd`` days it covered), the skills it reviewed (sorted by name), and its cost."""

    id: str
    started_at: int  # ms
    window: str
    finished_at: int | None = None
    skills: list[SkillReview] = field(default_factory=list)
    summary: dict[str, int] = field(default_factory=dict)  # decision -> skills
    cost_tokens: int = 0
    cost_usd: float = 0.0
    dry_run: bool = False
    window_start: str = ""
    window_end: str = ""

    def summarise(self) -> None:
        """Recount ``summary`` and the total cost from the skills (call after changing them)."""
        counts: dict[str, int] = {}
        for s in self.skills:
            counts[str(s.decision)] = counts.get(str(s.decision), 0) + 1
        self.summary = dict(sorted(counts.items()))
        self.cost_tokens = sum(s.cost_tokens for s in self.skills)
        self.cost_usd = round(sum(s.cost_usd for s in self.skills), 6)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "started_at": self.started_at,
            "window": self.window,
            "finished_at": self.finished_at,
            "skills": [s.to_dict() for s in self.skills],
            "summary": dict(sorted(self.summary.items())),
            "cost_tokens": self.cost_tokens,
            "cost_usd": self.cost_usd,
            "dry_run": self.dry_run,
            "window_start": self.window_start,
            "window_end": self.window_end,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Review:
        return cls(
            id=str(d["id"]),
            started_at=int(d["started_at"]),
            window=str(d.get("window", "")),
            finished_at=None if d.get("finished_at") is None else int(d["finished_at"]),
            skills=[SkillReview.from_dict(s) for s in d.get("skills", [])],
            summary={str(k): int(v) for k, v in d.get("summary", {}).items()},
            cost_tokens=int(d.get("cost_tokens", 0)),
            cost_usd=float(d.get("cost_usd", 0.0)),
            dry_run=bool(d.get("dry_run", False)),
            window_start=str(d.get("window_start", "")),
            window_end=str(d.get("window_end", "")),
        )

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no spaces beyond separators (byte-stable)."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Review:
        return cls.from_dict(json.loads(text))
