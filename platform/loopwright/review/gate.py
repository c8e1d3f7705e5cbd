"""The gate: a candidate version judged against the old one on recorded runs it never saw.

Both versions replay the same held-out recordings (``history.replay``: answers from the
recording, side effects captured and never performed). A candidate passes only when, on those
runs:

* every run the old version completed and nobody labelled bad still completes with the same
  side effects (a run labelled good also keeps its output exactly);
* at least one failed or bad-labelled run is *fixed*: it completes, and a bad-labelled run no
  longer produces the side effect that made it bad (one of its old side effects is gone);
* at most ``MAX_OFF_SCRIPT`` of the calls it makes are off-script (the recording cannot answer
  them, so nothing is known about what they would have done);
* the p95 of recorded tool time per run (the sum of the recorded ``elapsed_ms`` of the calls it
  makes: a virtual clock, never wall time) rises by at most ``MAX_P95_RISE``.

Side-effect changes on unlabelled runs are listed; they are regressions when the old outcome was
a success nobody questioned (the first rule). Anything else is ``rejected`` (a regression, too
many off-script calls, slower) or ``inconclusive`` (nothing fixed, nothing to judge on, or no
held-out run of an outcome class the window has: ``review/split.py`` — never a pass on missing
evidence), with the run ids that decided it. Everything here is a pure function of the replay
results, so the same history gives the same verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from loopwright.history.replay import Candidate, replay_runs
from loopwright.review.retries import (
    CallEvidence,
    candidate_results,
    extend,
    predicted_runs,
    retry_evidence,
)
from loopwright.review.split import outcome_class
from loopwright.review.types import GateResult
from loopwright.runner.recording import Recording, canonical, match_key
from loopwright.runner.runtime import Runtime
from loopwright.sidecar.replay import ReplayResult

MAX_OFF_SCRIPT = 0.10
MAX_P95_RISE = 0.20

Verdict = Literal["passed", "rejected", "inconclusive"]


@dataclass
class RunJudgement:
    """One held-out run: how the old and the candidate version behaved, and what it counts as."""

    run_id: str
    label: str | None
    old_status: str
    new_status: str
    counts: Literal["fixed", "regressed", "kept", "changed", "still-failing"]
    why: str
    effects_added: list[str] = field(default_factory=list)
    effects_missing: list[str] = field(default_factory=list)


@dataclass
class GateReport:
    """The gate's decision on one candidate, the runs that decided it, and how each held-out
    run counted (:meth:`result` is the review's shared ``GateResult``)."""

    verdict: Verdict
    reason: str
    runs: int = 0
    fixed: list[str] = field(default_factory=list)
    regressed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # side effects changed, unlabelled
    off_script: list[str] = field(default_factory=list)
    off_script_rate: float = 0.0
    p95_old_ms: float = 0.0
    p95_new_ms: float = 0.0
    deciding: list[str] = field(default_factory=list)
    judgements: list[RunJudgement] = field(default_factory=list)
    missing_classes: list[str] = field(default_factory=list)  # in the window, none held out
    predicted: list[str] = field(default_factory=list)  # fixed on a retry beyond the recording

    @property
    def passed(self) -> bool:
        return self.verdict == "passed"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (a step output)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateReport:
        judged = [RunJudgement(**j) for j in data.get("judgements", [])]
        return cls(**{**data, "judgements": judged})

    def result(self) -> GateResult:
        """The review's shared record of this decision (``review/types.py``)."""
        return GateResult(
            outcome=self.verdict,
            reason=self.reason,
            held_out=self.runs,
            runs_fixed=list(self.fixed),
            runs_regressed=list(self.regressed),
            side_effect_changes=[
                f"{j.run_id}: "
                + "; ".join(
                    [f"+ {e}" for e in j.effects_added] + [f"- {e}" for e in j.effects_missing]
                )
                for j in self.judgements
                if j.run_id in self.changed
            ],
            off_script_ratio=self.off_script_rate,
            p95_tool_ms_old=self.p95_old_ms,
            p95_tool_ms_new=self.p95_new_ms,
            decided_by=list(self.deciding),
        )


def p95(values: list[float]) -> float:
    """The 95th percentile (nearest rank) of ``values``; 0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return float(ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)])


def _effects(res: ReplayResult) -> list[str]:
    return [match_key(str(e["tool"]), e["req"]) for e in res.side_effects]


def _shown(res: ReplayResult) -> dict[str, str]:
    return {
        match_key(str(e["tool"]), e["req"]): f"{e['tool']} {canonical(e['req'])[:160]}"
        for e in res.side_effects
    }


def judge_run(rec: Recording, old: ReplayResult, new: ReplayResult) -> RunJudgement:
    """What one run counts as for the candidate (see the module docstring)."""
    label = rec.feedback if rec.feedback in ("good", "bad") else None
    before, after = _effects(old), _effects(new)
    shown = _shown(old) | _shown(new)
    added = [shown[k] for k in after if k not in before]
    missing = [shown[k] for k in before if k not in after]
    same_effects = before == after
    base = RunJudgement(rec.run_id, label, old.status, new.status, "kept", "", added, missing)
    old_ok, new_ok = old.status == "completed", new.status == "completed"
    if label == "good":
        same = (
            old.status == new.status
            and same_effects
            and canonical(old.output) == canonical(new.output)
        )
        if same:
            base.why = "labelled good: outcome kept"
            return base
        base.counts, base.why = "regressed", "labelled good: its outcome changed"
        return base
    if label == "bad":
        if new_ok and missing:
            base.counts, base.why = "fixed", "labelled bad: completes without the side effect"
            return base
        base.counts = "still-failing"
        base.why = "labelled bad: still " + ("fails" if not new_ok else "makes the same effects")
        return base
    if old_ok:
        if new_ok and same_effects:
            base.why = "completed with the same side effects"
            return base
        base.counts = "regressed"
        base.why = (
            "an unquestioned success now fails"
            if not new_ok
            else "side effects changed on an unquestioned success"
        )
        return base
    if new_ok:
        base.counts, base.why = "fixed", "failed before, completes now"
        if not same_effects:
            base.why += " (side effects changed)"
        return base
    base.counts, base.why = "still-failing", "failed before and still fails"
    if not same_effects:
        base.counts, base.why = "changed", "still fails, with other side effects"
    return base


def class_of(rec: Recording) -> str:
    """The outcome class of a recorded run (``review/split.py``)."""
    return outcome_class(rec.status, rec.feedback)


def judge(
    recordings: list[Recording],
    old: list[ReplayResult],
    new: list[ReplayResult],
    classes: Iterable[str] = (),
    *,
    tail: bool = True,
) -> GateReport:
    """The verdict on the candidate from both versions' replays of the same recordings.
    ``classes``: the outcome classes of the window's recorded runs (both splits); one with no
    run among ``recordings`` makes a verdict that would pass inconclusive. ``tail=False``
    leaves out the p95 rule (a subset of the runs, e.g. only the failed ones, has no p95
    worth comparing)."""
    judged = [judge_run(r, o, n) for r, o, n in zip(recordings, old, new, strict=True)]
    res = GateReport(verdict="inconclusive", reason="", runs=len(judged), judgements=judged)
    res.fixed = [j.run_id for j in judged if j.counts == "fixed"]
    res.regressed = [j.run_id for j in judged if j.counts == "regressed"]
    res.changed = [
        j.run_id for j in judged if j.label is None and (j.effects_added or j.effects_missing)
    ]
    res.off_script = [n.run_id for n in new if n.off_script]
    calls = sum(n.answered + len(n.off_script) for n in new)
    res.off_script_rate = round(sum(len(n.off_script) for n in new) / calls, 4) if calls else 0.0
    res.p95_old_ms = round(p95([sum(o.call_ms) for o in old]), 3)
    res.p95_new_ms = round(p95([sum(n.call_ms) for n in new]), 3)
    if not judged:
        res.reason = "no held-out runs to judge on"
        return res
    if res.regressed:
        res.verdict, res.deciding = "rejected", list(res.regressed)
        res.reason = f"regresses {len(res.regressed)} held-out run(s)"
        return res
    if res.off_script_rate > MAX_OFF_SCRIPT:
        res.verdict, res.deciding = "rejected", list(res.off_script)
        res.reason = (
            f"{res.off_script_rate:.0%} of its calls are off-script (at most {MAX_OFF_SCRIPT:.0%})"
        )
        return res
    if tail and res.p95_new_ms > res.p95_old_ms * (1 + MAX_P95_RISE) + 1e-6:
        res.verdict = "rejected"
        slow = sorted(new, key=lambda n: -sum(n.call_ms))[:3]
        res.deciding = [n.run_id for n in slow]
        res.reason = (
            f"p95 recorded tool time rises from {res.p95_old_ms:.0f} to {res.p95_new_ms:.0f} ms "
            f"(more than {MAX_P95_RISE:.0%})"
        )
        return res
    res.missing_classes = sorted(set(classes) - {class_of(r) for r in recordings})
    if res.missing_classes:
        res.reason = (
            "no held-out run of " + ", ".join(res.missing_classes) + ": nothing shows how the "
            "candidate treats such runs"
        )
        res.deciding = sorted({j.run_id for j in judged if j.counts == "fixed"})[:10]
        return res
    if not res.fixed:
        res.reason = "fixes none of the failed or bad-labelled held-out runs"
        res.deciding = [j.run_id for j in judged if j.counts == "still-failing"][:10]
        return res
    res.verdict, res.deciding = "passed", list(res.fixed)
    res.reason = f"fixes {len(res.fixed)} held-out run(s) and regresses none"
    return res


def gate(
    rt: Runtime,
    old: Candidate,
    new: Candidate,
    held_out: list[Recording],
    old_results: list[ReplayResult] | None = None,
    classes: Iterable[str] = (),
) -> GateReport:
    """Replay ``held_out`` on ``old`` (unless its results are given) and ``new``, each
    version's runs in one batch; judge (``classes``: see :func:`judge`)."""
    if old_results is None:
        old_results = [d.replayed for d in replay_runs(rt, old, held_out)]
    extra = new.manifest.retries - old.manifest.retries
    evidence = retry_evidence(held_out) if extra > 0 else {}
    replayed = extend(held_out, evidence, extra)
    new_results = candidate_results(old, new, replayed, old_results, _replayer(rt))
    report = judge(held_out, old_results, new_results, classes)
    return with_predicted(report, replayed, new_results, evidence)


def _replayer(rt: Runtime) -> Callable[[Candidate, list[Recording]], list[ReplayResult]]:
    def replay(cand: Candidate, recs: list[Recording]) -> list[ReplayResult]:
        return [d.replayed for d in replay_runs(rt, cand, recs)]  # one batch

    return replay


def with_predicted(
    report: GateReport,
    replayed: list[Recording],
    new: list[ReplayResult],
    evidence: dict[str, CallEvidence],
) -> GateReport:
    """Name the fixed runs whose fix rests on a retry beyond the recording
    (``review/retries.py``), in the report and its reason."""
    answered = {n.run_id: n.answered for n in new}
    report.predicted = [r for r in predicted_runs(replayed, answered) if r in report.fixed]
    if report.predicted:
        used = [e for e in evidence.values() if e.retried]
        shown = ", ".join(f"{e.succeeded} of {e.retried}" for e in used[:3])
        report.reason += (
            f" ({len(report.predicted)} of the fixes on a retry beyond the recording, "
            f"answered as the split's recorded retries went: {shown} succeeded; such an "
            "attempt has no recorded time)"
        )
    return report
