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

import json
import logging
from typing import Any

from loopwright.history.replay import Candidate, candidate_from_source, candidate_from_version
from loopwright.review import rewrite
from loopwright.review.candidates import (
    Outcome,
    Proposal,
    param_search,
    rollback_candidate,
)
from loopwright.review.gate import GateResult, gate
from loopwright.review.promote import promote
from loopwright.review.split import split_runs
from loopwright.runner.recording import Recording, load_recording
from loopwright.runner.records import now_ms
from loopwright.runner.runtime import Runtime
from loopwright.sdk.names import is_reserved
from loopwright.service.stats import parse_window, skill_stats
from loopwright.sidecar.replay import ENDED
from loopwright.skills_registry.store import Registry

BUILTIN_NAME = "weekly-review"
MAX_CANDIDATES = 2
MAX_RUNS = 400  # recorded runs of one skill a review reads (newest first)
MIN_RUNS = 20
MIN_SUCCESS = 0.95
MAX_BAD_FEEDBACK = 0.20
MIN_LABELS = 3
DAY_MS = 86_400_000
NEEDS_MODEL = "needs a model"

log = logging.getLogger(__name__)


def builtin_source(cron: str) -> str:
    """The built-in skill's text (its cron comes from the settings; none when empty)."""
    trigger = f"trigger=cron({cron!r}), " if cron else ""
    return f'''\
"""Built-in: the weekly review of every active skill (trusted platform code)."""

from loopwright.review.loop import run_review
from loopwright.sdk import cron, skill


@skill(name="weekly-review", description="Review skills, gate rewrites on recorded runs, report",
       {trigger}tools=["notify"], retries=2, backoff=1, timeout="6h")
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


def select(rt: Runtime, window: str, only: str | None, now: int) -> dict[str, Any]:
    """Which active skills the review looks at, and which of them it flags."""
    active = {str(k): str(v) for k, v in rt.redis.hgetall(rt.keys.skills).items()}
    names = sorted(n for n in active if not is_reserved(n) and (only is None or n == only))
    out: list[dict[str, Any]] = []
    for name in names:
        st = skill_stats(rt.redis, rt.keys, name, window, by="version", now=now)
        mine = next((g for g in st.groups if g.group == active[name]), None)
        row: dict[str, Any] = {"skill": name, "version": active[name], "flagged": False}
        judged = (mine.completed + mine.failed_skill) if mine else 0
        labels = (mine.fb_good + mine.fb_bad) if mine else 0
        if mine is None or judged < MIN_RUNS:
            row["verdict"], row["why"] = "insufficient data", f"{judged} runs (< {MIN_RUNS})"
        elif (mine.success_high or 0) < MIN_SUCCESS:
            row["verdict"], row["flagged"] = "underperforming", True
            row["why"] = f"success {mine.success_rate or 0:.0%} is below {MIN_SUCCESS:.0%}"
        elif labels >= MIN_LABELS and mine.fb_bad / labels >= MAX_BAD_FEEDBACK:
            row["verdict"], row["flagged"] = "underperforming", True
            row["why"] = f"{mine.fb_bad} of {labels} labelled runs are labelled bad"
        else:
            row["verdict"], row["why"] = "healthy", "success and feedback within bounds"
        if mine is not None:
            row["runs"], row["success"] = judged, mine.success_rate
            row["signatures"] = [
                {"message": s.message, "step": s.step, "count": s.count, "example": s.example_run}
                for s in mine.signatures[:3]
            ]
        out.append(row)
    return {"now": now, "window": window, "skills": out}


def recorded_ids(rt: Runtime, skill: str, version: str, since: int, until: int) -> list[str]:
    """Ended, recorded runs of ``skill`` at ``version`` created in the window, oldest first."""
    ids = [
        str(i)
        for i in rt.redis.zrevrangebyscore(
            rt.keys.runs_by_skill(skill), until, since, start=0, num=MAX_RUNS * 4
        )
    ]
    pipe = rt.redis.pipeline(transaction=False)
    for run_id in ids:
        pipe.hmget(rt.keys.run(run_id), "version", "status", "recording", "origin")
    keep = []
    for run_id, (ver, status, state, origin) in zip(ids, pipe.execute(), strict=True):
        if ver != version or status not in ENDED or state not in ("complete", "partial"):
            continue
        if status == "failed" and origin == "platform":
            continue  # the platform's failure: nothing a rewrite could fix
        keep.append(run_id)
    return sorted(keep[:MAX_RUNS])


def diagnose(rt: Runtime, row: dict[str, Any], since: int, until: int) -> dict[str, Any]:
    """The flagged skill's recorded runs by split, and the diagnosis text the model reads."""
    ids = recorded_ids(rt, row["skill"], row["version"], since, until)
    split = split_runs(ids, lambda i: i)
    recs = _load(rt, ids)
    bad = [r for r in recs if r.feedback == "bad"]
    failed = [r for r in recs if r.status == "failed"]
    lines = [f"{row['skill']} at version {row['version'][:12]}: {row.get('why', '')}."]
    for sig in row.get("signatures", []):
        lines.append(
            f"Error in step {sig['step']!r} ({sig['count']} runs, e.g. {sig['example']}): "
            f"{sig['message']}"
        )
    if bad:
        lines.append(f"{len(bad)} runs were labelled bad by people (e.g. {bad[0].run_id}).")
    return {
        "search": split.search,
        "held_out": split.held_out,
        "failed": len(failed),
        "bad": len(bad),
        "text": "\n".join(lines),
    }


def _load(rt: Runtime, ids: list[str]) -> list[Recording]:
    found = (load_recording(rt.redis, rt.keys, i) for i in ids)
    return [r for r in found if r is not None]


class SkillReview:
    """The per-skill phases of one review, bound to the run's steps."""

    def __init__(self, ctx: Any, rt: Runtime, row: dict[str, Any], spent: list[float]) -> None:
        self.ctx, self.rt, self.row, self.spent = ctx, rt, row, spent
        self.skill = str(row["skill"])
        self.old = candidate_from_version(rt, self.skill, str(row["version"]))
        self.search: list[Recording] = []
        self.held: list[Recording] = []

    def step(self, name: str, fn: Any, *args: Any) -> Any:
        return self.ctx.step.run(f"{self.skill}:{name}", fn, *args)

    def run(self, window: str, since: int, until: int, dry_run: bool) -> dict[str, Any]:
        """Diagnose, at most two candidates each gated, promote the first that passes."""
        diag = self.step("diagnose", diagnose, self.rt, self.row, since, until)
        self.search, self.held = _load(self.rt, diag["search"]), _load(self.rt, diag["held_out"])
        card: dict[str, Any] = {**self.row, "diagnosis": diag, "candidates": []}
        plan = ["rollback", "params", "model", "model"]
        findings: str | None = None
        n = asked = 0
        for kind in plan:
            if n >= MAX_CANDIDATES:
                break
            if kind == "model":
                asked += 1
            outcome = self._propose(kind, asked, diag["text"], findings, window, until)
            entry: dict[str, Any] = {"kind": kind, "reason": outcome.reason}
            if outcome.proposal is None:
                card["candidates"].append(entry)
                if kind == "model" and outcome.reason.startswith(NEEDS_MODEL):
                    card["needs_model"] = True
                    break
                if kind == "model":
                    findings = outcome.reason  # the retry sees why its answer was refused
                continue
            n += 1
            result = GateResult.from_dict(
                self.step(f"gate-{n}", self._gate, outcome.proposal.to_dict())
            )
            entry["gate"] = result.to_dict()
            entry["changes"] = outcome.proposal.changes
            card["candidates"].append(entry)
            if result.passed:
                promoted = self.step(
                    "promote", self._promote, outcome.proposal.to_dict(), since, dry_run
                )
                card["decision"] = promoted["outcome"]
                card["reason"] = f"{outcome.proposal.note}; gate: {result.reason}"
                card["promotion"] = promoted
                return card
            findings = f"{result.verdict}: {result.reason}; runs: {', '.join(result.deciding[:5])}"
        card.setdefault("decision", "needs a model" if card.get("needs_model") else "no change")
        tried = [c for c in card["candidates"] if "gate" in c]
        card["reason"] = "; ".join(
            f"{c['kind']}: {c['gate']['verdict']} ({c['gate']['reason']})" for c in tried
        ) or "; ".join(f"{c['kind']}: {c['reason']}" for c in card["candidates"])
        return card

    def _propose(
        self, kind: str, k: int, diagnosis: str, findings: str | None, window: str, until: int
    ) -> Outcome:
        """Candidate ``kind`` (``k``: the model attempt), each piece a step of its own."""
        if kind == "rollback":
            raw = self.step(
                "candidate-rollback", lambda: rollback_candidate(
                    self.rt, self.skill, str(self.row["version"]), window, until
                ).to_dict(),
            )  # fmt: skip
            return Outcome.from_dict(raw)
        if kind == "params":
            raw = self.step(
                "candidate-params",
                lambda: param_search(
                    self.rt, self.old, self.search, self.rt.settings.review_grid_max
                ).to_dict(),
            )
            return Outcome.from_dict(raw)
        if rewrite.needs_model(self.rt):
            return Outcome(None, f"{NEEDS_MODEL}: only the offline model is configured (set "
                           "LOOPWRIGHT_REVIEW_MODEL or a provider key)")  # fmt: skip
        if sum(self.spent) >= self.rt.settings.review_max_cost:
            return Outcome(None, f"{NEEDS_MODEL}: the review's model budget is spent")
        text = rewrite.prompt(diagnosis, self.old, self.search, findings)
        answer = self.step(f"model-call-{k}", rewrite.ask, self.rt, text)
        self.spent.append(float(answer.get("cost_usd") or 0.0))
        raw = self.step(
            f"candidate-model-{k}",
            lambda: rewrite.check(self.rt, self.old, answer, self.search).to_dict(),
        )
        return Outcome.from_dict(raw)

    def _candidate(self, prop: Proposal) -> Candidate:
        if prop.kind == "rollback":
            return candidate_from_version(self.rt, self.skill, str(prop.version))
        return candidate_from_source(str(prop.source), self.skill)

    def _gate(self, prop: dict[str, Any]) -> dict[str, Any]:
        cand = self._candidate(Proposal.from_dict(prop))
        return gate(self.rt, self.old, cand, self.held).to_dict()

    def _promote(self, prop: dict[str, Any], since: int, dry_run: bool) -> dict[str, Any]:
        done = promote(self.rt, self.old, Proposal.from_dict(prop), window_from=since,
                       dry_run=dry_run)  # fmt: skip
        return done.to_dict()


def write_report(rt: Runtime, review_id: str, review: dict[str, Any]) -> str:
    """The review as JSON and a short Markdown summary under the data dir; the .md path."""
    folder = rt.settings.data_dir / "reviews"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{review_id}.json").write_text(json.dumps(review, indent=2, default=str))
    lines = [f"# Weekly review {review_id}", "", review["summary"], ""]
    for card in review["cards"]:
        lines += [f"## {card['skill']}: {card.get('decision', card['verdict'])}", ""]
        lines.append(f"- verdict: {card['verdict']} ({card.get('why', '')})")
        if card.get("reason"):
            lines.append(f"- decision: {card.get('decision')} ({card['reason']})")
        for c in card.get("candidates", []):
            g = c.get("gate")
            shown = (
                f"{g['verdict']}: fixed {len(g['fixed'])}, regressed {len(g['regressed'])}, "
                f"off-script {g['off_script_rate']:.0%}; {g['reason']}"
                if g
                else c["reason"]
            )
            lines.append(f"- candidate ({c['kind']}): {shown}")
        lines.append("")
    path = folder / f"{review_id}.md"
    path.write_text("\n".join(lines))
    return str(path)


def summarize(cards: list[dict[str, Any]]) -> str:
    """One line: how many skills were reviewed and what became of them."""
    counts: dict[str, int] = {}
    for card in cards:
        key = card.get("decision") or card["verdict"]
        key = {"activated": "improved", "rolled-back": "improved", "pending": "waiting for "
               "approval", "no change": "not improved"}.get(key, key)  # fmt: skip
        counts[key] = counts.get(key, 0) + 1
    parts = ", ".join(f"{v} {k}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))
    return f"{len(cards)} skills reviewed: {parts or 'none'}"


def run_review(ctx: Any) -> dict[str, Any]:
    """The built-in skill's body."""
    from loopwright.runner.execute import current_runtime

    rt = current_runtime()
    data = (ctx.event or {}).get("data") or {}
    window = str(data.get("window") or "7d")
    only = data.get("skill")
    dry_run = bool(data.get("dry_run"))
    sel = ctx.step.run("select", select, rt, window, only, now_ms())
    until = int(sel["now"])
    since = until - parse_window(window) * DAY_MS
    spent: list[float] = []
    cards: list[dict[str, Any]] = []
    for row in sel["skills"]:
        if not row["flagged"]:
            cards.append(row)
            continue
        cards.append(SkillReview(ctx, rt, row, spent).run(window, since, until, dry_run))
    review = {
        "id": str(ctx.run_id),
        "window": window,
        "dry_run": dry_run,
        "summary": summarize(cards),
        "cards": cards,
        "model_cost_usd": round(sum(spent), 6),
    }
    review["report"] = ctx.step.run("report", write_report, rt, str(review["id"]), review)
    ctx.step.run(
        "tell",
        lambda: ctx.tools.notify(
            f"{review['summary']}. Report: {review['report']}", title="weekly review"
        ),
    )
    return {"summary": review["summary"], "report": review["report"], "cards": cards}
