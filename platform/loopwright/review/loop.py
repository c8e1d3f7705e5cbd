"""The weekly review as a durable built-in skill: ``weekly-review``.

Trusted platform code (it runs in the worker, never in the sandbox), on a cron trigger
(``LOOPWRIGHT_REVIEW_CRON``, Monday 07:00 UTC by default) and started now by ``loopwright review
run``. Every phase is a step, so a worker killed mid-review resumes at the phase it was on and
never repeats a finished replay, search or model call:

``select`` · then per flagged skill ``S``: ``S:diagnose``, the candidate steps
(``S:candidate-rollback``, ``S:candidate-params``, and for the model ``S:model-call-K`` — the
call alone, so it is never sent twice — then ``S:candidate-model-K`` checking its answer), a
``S:gate-N`` per candidate that was proposed (N ≤ 2), ``S:promote`` · ``report`` · ``tell``.

At most two candidates are gated per skill ("design for two"): in order, a rollback to an
earlier healthy version, the offline parameter search, the model's rewrite (and its one retry
with the gate's findings). Without a model (the offline template model) the model candidate is
reported as "needs a model". ``LOOPWRIGHT_REVIEW_MAX_COST`` caps model spend for one review;
``dry_run`` gates but never submits.
"""

from __future__ import annotations

import logging
from typing import Any

from loopwright.errors import UserError
from loopwright.history.replay import (
    Candidate,
    candidate_from_source,
    candidate_from_version,
    replay_runs,
)
from loopwright.review import rewrite
from loopwright.review.candidates import (
    Outcome,
    Proposal,
    param_search,
    rollback_candidate,
)
from loopwright.review.diagnose import diagnose
from loopwright.review.gate import GateReport, class_of, gate
from loopwright.review.notify import post_summary
from loopwright.review.promote import promote
from loopwright.review.publish import publish
from loopwright.review.report import summary_line
from loopwright.review.select import Thresholds, score_skills
from loopwright.review.split import outcome_class, split_runs
from loopwright.review.types import (
    CandidateResult,
    Decision,
    Diagnosis,
    Review,
    SkillReview,
    SkillScore,
    Verdict,
    VersionChange,
)
from loopwright.runner.recording import Recording, load_recording
from loopwright.runner.records import now_ms
from loopwright.runner.runtime import Runtime
from loopwright.sdk.errors import StepFailedError
from loopwright.service.stats import parse_window
from loopwright.sidecar.replay import ENDED, ReplayResult
from loopwright.skills_registry.store import Registry

BUILTIN_NAME = "weekly-review"
MAX_CANDIDATES = 2
MAX_RUNS = 400  # recorded runs of one skill a review reads (newest first)
DAY_MS = 86_400_000
NEEDS_MODEL = "needs a model"
OVER_BUDGET = "over budget"

log = logging.getLogger(__name__)


def builtin_source(cron: str) -> str:
    """The built-in skill's text (its cron comes from the settings; none when empty)."""
    trigger = f"trigger=cron({cron!r}), " if cron else ""
    return f'''\
"""Built-in: the weekly review of every active skill (trusted platform code)."""

from loopwright.review.loop import run_review
from loopwright.sdk import cron, skill


@skill(name="weekly-review", description="Review skills, gate rewrites on recorded runs, report",
       {trigger}retries=2, backoff=1, timeout="6h")
def main(ctx):
    return run_review(ctx)
'''


def ensure_builtin(rt: Runtime) -> str:
    """Register the built-in review skill (idempotent by content); returns its version."""
    reg, squatter = Registry(rt.redis, rt.keys).install_builtin(
        builtin_source(rt.settings.review_cron), BUILTIN_NAME
    )
    if squatter:
        log.warning("replaced version %s of the reserved skill %r", squatter[:12], BUILTIN_NAME)
    return reg.version


def start_review(
    rt: Runtime, window: str = "7d", skill: str | None = None, dry_run: bool = False
) -> str:
    """Create a run of the built-in review now; its run id."""
    parse_window(window)  # a bad window fails here, in one line
    version = ensure_builtin(rt)
    data = {"window": window, "skill": skill, "dry_run": dry_run}
    return rt.runs.create(skill=BUILTIN_NAME, version=version, data=data, trusted=True)


# ---- phases (step bodies: JSON in, JSON out) -----------------------------------------------


def select(rt: Runtime, window: str, only: str | None, now: int) -> list[dict[str, Any]]:
    """Every active skill (or ``only``) scored over the window (``review/select.py``)."""
    thresholds = Thresholds.from_settings(rt.settings)
    days = parse_window(window)
    scores = score_skills(rt.redis, rt.keys, thresholds, now=now, days=days, only=only)
    return [s.to_dict() for s in scores]


def recorded_classes(
    rt: Runtime, skill: str, version: str, since: int, until: int
) -> dict[str, str]:
    """Ended, recorded runs of ``skill`` at ``version`` created in the window (platform
    failures left out: nothing a rewrite could fix) with their outcome class
    (``review/split.py``), by run id in sorted order."""
    ids = [
        str(i)
        for i in rt.redis.zrevrangebyscore(
            rt.keys.runs_by_skill(skill), until, since, start=0, num=MAX_RUNS * 4
        )
    ]
    pipe = rt.redis.pipeline(transaction=False)
    for run_id in ids:
        pipe.hmget(rt.keys.run(run_id), "version", "status", "recording", "origin", "feedback")
    keep: dict[str, str] = {}
    for run_id, (ver, status, state, origin, feedback) in zip(ids, pipe.execute(), strict=True):
        if ver != version or status not in ENDED or state not in ("complete", "partial"):
            continue
        if status == "failed" and origin == "platform":
            continue
        if len(keep) < MAX_RUNS:
            keep[run_id] = outcome_class(status, feedback)
    return dict(sorted(keep.items()))


def recorded_ids(rt: Runtime, skill: str, version: str, since: int, until: int) -> list[str]:
    """The run ids of :func:`recorded_classes`, sorted."""
    return list(recorded_classes(rt, skill, version, since, until))


def diagnosis_step(rt: Runtime, sc: SkillScore, until: int, window: str) -> dict[str, Any]:
    """The flagged skill's diagnosis (``review/diagnose.py``), its recorded runs of the window
    by split, and the diagnosis as text for the model."""
    days = parse_window(window)
    diag = diagnose(
        rt.redis, rt.keys, sc, now=until, days=days, min_success=rt.settings.review_min_success
    )
    classes = recorded_classes(rt, sc.skill, sc.version, until - days * DAY_MS, until)
    split = split_runs(classes, lambda i: i, classes.__getitem__)
    lines = [f"{sc.skill} at version {sc.version[:12]}: " + "; ".join(sc.reasons) + "."]
    for c in diag.clusters[:3]:
        example = c.example_runs[0] if c.example_runs else "?"
        lines.append(f"Error in step {c.step!r} ({c.count} runs, e.g. {example}): {c.message}")
    for r in diag.shared_responses[:5]:
        lines.append(
            f"The problem runs share: {r.tool} {r.target} {r.path} {r.pattern} ({len(r.runs)} runs)"
        )
    if diag.bad_runs:
        notes = [n for _, n in diag.bad_runs if n][:3]
        lines.append(
            f"{len(diag.bad_runs)} runs were labelled bad by people"
            + (f"; their notes: {'; '.join(notes)}" if notes else "")
            + "."
        )
    if diag.version_change is not None:
        vc = diag.version_change
        lines.append(f"It began with the change from {vc.from_version[:12]}:\n{vc.diff[:4000]}")
    return {
        "diagnosis": diag.to_dict(),
        "search": split.search,
        "held_out": split.held_out,
        "text": "\n".join(lines),
    }


def _load(rt: Runtime, ids: list[str]) -> list[Recording]:
    found = (load_recording(rt.redis, rt.keys, i) for i in ids)
    return [r for r in found if r is not None]


PROMOTED = {
    "activated": Decision.IMPROVED,
    "rolled-back": Decision.IMPROVED,
    "pending": Decision.AWAITING_APPROVAL,
    "suggested": Decision.AWAITING_APPROVAL,
    "dry-run": Decision.DRY_RUN,
}


class Reviewer:
    """The per-skill phases of one review, bound to the run's steps."""

    def __init__(self, ctx: Any, rt: Runtime, sc: SkillScore, spent: list[float]) -> None:
        self.ctx, self.rt, self.sc, self.spent = ctx, rt, sc, spent
        self.skill = sc.skill
        self.old = candidate_from_version(rt, self.skill, sc.version)
        self.search: list[Recording] = []
        self.held: list[Recording] = []
        self.change: VersionChange | None = None
        self.old_held: list[ReplayResult] | None = None

    def step(self, name: str, fn: Any, *args: Any) -> Any:
        return self.ctx.step.run(f"{self.skill}:{name}", fn, *args)

    def run(self, window: str, since: int, until: int, dry_run: bool) -> SkillReview:
        """Diagnose, at most two candidates each gated, promote the first that passes."""
        diag = self.step("diagnose", diagnosis_step, self.rt, self.sc, until, window)
        self.search, self.held = _load(self.rt, diag["search"]), _load(self.rt, diag["held_out"])
        card = SkillReview(self.sc, Diagnosis.from_dict(diag["diagnosis"]))
        self.change = card.diagnosis.version_change if card.diagnosis else None
        findings: str | None = None
        n = asked = 0
        needs_model = over_budget = False
        for kind in ("rollback", "param", "model", "model"):
            if n >= MAX_CANDIDATES:
                break
            if kind == "model":
                asked += 1
            outcome, cost = self._propose(kind, asked, diag["text"], findings, window, until)
            card.cost_usd = round(card.cost_usd + cost.get("usd", 0.0), 6)
            card.cost_tokens += int(cost.get("tokens", 0))
            prop = outcome.proposal
            if prop is None:
                needs_model = needs_model or outcome.reason.startswith(NEEDS_MODEL)
                over_budget = over_budget or outcome.reason.startswith(OVER_BUDGET)
                if needs_model or over_budget:
                    break
                if kind != "rollback":  # "no earlier version" is not a candidate tried
                    card.candidates.append(
                        CandidateResult(
                            kind,
                            _description(kind),
                            attempt=max(asked, 1),
                            error=outcome.reason,
                            cost_usd=cost.get("usd", 0.0),
                            cost_tokens=int(cost.get("tokens", 0)),
                        )
                    )
                if kind == "model":
                    findings = outcome.reason  # the retry sees why its answer was refused
                continue
            n += 1
            report = GateReport.from_dict(self.step(f"gate-{n}", self._gate, prop.to_dict()))
            card.candidates.append(self._tried(prop, report, max(asked, 1), cost))
            if report.passed:
                done = self.step("promote", self._promote, prop.to_dict(), since, dry_run)
                card.decision = PROMOTED.get(done["outcome"], Decision.NO_FIX).value
                card.decision_reason = f"{prop.note}; gate: {report.reason}; {done['note']}"
                if card.decision == Decision.IMPROVED:
                    card.promoted_version = done["version"]
                if done.get("version"):
                    card.candidates[-1].version = done["version"]  # registered (or rolled to)
                return card
            findings = f"{report.verdict}: {report.reason}; runs: {', '.join(report.deciding[:5])}"
        if over_budget:
            card.decision = Decision.OVER_BUDGET.value
        elif needs_model:
            card.decision = Decision.NEEDS_MODEL.value
        else:
            card.decision = Decision.NO_FIX.value
        card.decision_reason = (
            "; ".join(
                f"{c.kind}: {c.gate.outcome} ({c.gate.reason})"
                if c.gate
                else f"{c.kind}: {c.error}"
                for c in card.candidates
            )
            or "no candidate"
        )
        if needs_model or over_budget:
            card.decision_reason += ("; " if card.candidates else "") + outcome.reason
        return card

    def _tried(
        self, prop: Proposal, report: GateReport, attempt: int, cost: dict[str, float]
    ) -> CandidateResult:
        changed = {
            k: [self._current(k), v]
            for k, v in {**prop.changes.get("params", {}), **prop.changes.get("policy", {})}.items()
        }
        return CandidateResult(
            prop.kind, prop.note, version=prop.version, source=prop.source,
            params_changed=changed, gate=report.result(), attempt=attempt,
            cost_tokens=int(cost.get("tokens", 0)), cost_usd=cost.get("usd", 0.0),
        )  # fmt: skip

    def _current(self, name: str) -> Any:
        m = self.old.manifest
        return m.params[name].default if name in m.params else getattr(m, name, None)

    def _propose(
        self, kind: str, k: int, diagnosis: str, findings: str | None, window: str, until: int
    ) -> tuple[Outcome, dict[str, float]]:
        """Candidate ``kind`` (``k``: the model attempt), each piece a step of its own; with
        what it cost."""
        if kind == "rollback":
            raw = self.step(
                "candidate-rollback", lambda: rollback_candidate(
                    self.rt, self.skill, self.sc.version, window, until, self.change
                ).to_dict(),
            )  # fmt: skip
            return Outcome.from_dict(raw), {}
        if kind == "param":
            raw = self.step(
                "candidate-param",
                lambda: param_search(
                    self.rt, self.old, self.search, self.rt.settings.review_grid_max
                ).to_dict(),
            )
            return Outcome.from_dict(raw), {}
        if rewrite.needs_model(self.rt):
            return Outcome(None, f"{NEEDS_MODEL}: only the offline model is configured (set "
                           "LOOPWRIGHT_REVIEW_MODEL or a provider key)"), {}  # fmt: skip
        if sum(self.spent) >= self.rt.settings.review_max_cost:
            return Outcome(None, f"{OVER_BUDGET}: the review's model budget "
                           f"(${self.rt.settings.review_max_cost:g}) is spent"), {}  # fmt: skip
        text = rewrite.prompt(diagnosis, self.old, self.search, findings)
        answer = self.step(f"model-call-{k}", rewrite.ask, self.rt, text)
        usd = float(answer.get("cost_usd") or 0.0)
        self.spent.append(usd)
        usage = answer.get("usage") or {}
        tokens = int(usage.get("input_tokens", 0)) + int(usage.get("output_tokens", 0))
        raw = self.step(
            f"candidate-model-{k}",
            lambda: rewrite.check(self.rt, self.old, answer, self.search).to_dict(),
        )
        return Outcome.from_dict(raw), {"usd": usd, "tokens": float(tokens)}

    def _candidate(self, prop: Proposal) -> Candidate:
        if prop.kind == "rollback":
            return candidate_from_version(self.rt, self.skill, str(prop.version))
        return candidate_from_source(str(prop.source), self.skill)

    def _gate(self, prop: dict[str, Any]) -> dict[str, Any]:
        cand = self._candidate(Proposal.from_dict(prop))
        if self.old_held is None:  # the old version's replays serve both gates
            self.old_held = [d.replayed for d in replay_runs(self.rt, self.old, self.held)]
        classes = {class_of(r) for r in self.search + self.held}
        return gate(self.rt, self.old, cand, self.held, self.old_held, classes).to_dict()

    def _promote(self, prop: dict[str, Any], since: int, dry_run: bool) -> dict[str, Any]:
        done = promote(self.rt, self.old, Proposal.from_dict(prop), window_from=since,
                       dry_run=dry_run)  # fmt: skip
        return done.to_dict()


def _description(kind: str) -> str:
    return {"param": "offline parameter search", "model": "model rewrite"}.get(kind, kind)


def write_report(rt: Runtime, review: dict[str, Any]) -> str:
    """The report step: store the review and write its Markdown and HTML files
    (``review.publish``; the inbox is told in its own step); the Markdown path."""
    return str(publish(rt, Review.from_dict(review), notify=False).markdown)


def run_review(ctx: Any) -> dict[str, Any]:
    """The built-in skill's body."""
    from loopwright.runner.execute import current_runtime

    rt = current_runtime()
    data = (ctx.event or {}).get("data") or {}
    window = str(data.get("window") or "7d")
    only = data.get("skill")
    dry_run = bool(data.get("dry_run"))
    started = ctx.step.run("started", now_ms)
    selected = ctx.step.run("select", select, rt, window, only, started)
    scores = [SkillScore.from_dict(s) for s in selected]
    since = started - parse_window(window) * DAY_MS
    spent: list[float] = []
    review = Review(str(ctx.run_id), started, window, dry_run=dry_run)
    for sc in scores:
        if sc.verdict != Verdict.UNDERPERFORMING:
            review.skills.append(SkillReview(sc, decision=UNFLAGGED[sc.verdict].value))
            continue
        try:
            card = Reviewer(ctx, rt, sc, spent).run(window, since, started, dry_run)
        except (StepFailedError, UserError) as exc:  # one skill's failure ends its card only
            why = f"the review of this skill failed: {exc}"[:500]
            card = SkillReview(sc, decision=Decision.NO_FIX.value, decision_reason=why)
        review.skills.append(card)
    review.finished_at = int(ctx.step.run("finished", now_ms))
    review.summarise()
    out = review.to_dict()
    path = ctx.step.run("report", write_report, rt, out)
    ctx.step.run("tell", post_summary, rt, review)  # once per review id, even when replayed
    return {**out, "headline": summary_line(review), "report": path}


UNFLAGGED = {
    Verdict.HEALTHY: Decision.HEALTHY,
    Verdict.INSUFFICIENT_DATA: Decision.INSUFFICIENT_DATA,
    Verdict.PLATFORM_ONLY: Decision.PLATFORM_ONLY,
    Verdict.UNDERPERFORMING: Decision.NO_FIX,
}
