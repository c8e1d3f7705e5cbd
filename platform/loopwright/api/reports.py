"""``/api/v1/reports``: the weekly review reports (``review/store.py``), newest first, and one
report as its canonical JSON or as Markdown (``?format=md``).

For the report page, the claims a review makes about runs (error clusters and their example
runs, runs labelled bad, recorded responses they share, each candidate's gate: runs fixed,
regressed and the runs it was decided by, and the decision it led to) as rows whose runs the
page links (:func:`claims`), and the review's own HTML with each run id it shows turned into
a link to that run (:func:`link_runs`)."""

from __future__ import annotations

import html as htmlmod
import json
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from loopwright.api.context import ApiContext
from loopwright.review.report import render_markdown
from loopwright.review.store import get_review, list_reviews
from loopwright.review.types import Review

RUNS_SHOWN = 20  # runs linked per claim; the rest are counted


@dataclass
class Claim:
    """One statement of a review about some runs: what it says and the runs behind it."""

    skill: str
    kind: str  # error cluster, labelled bad, shared response, gate: fixed/regressed, decision
    text: str
    runs: list[str] = field(default_factory=list)
    total: int = 0


def claims(review: Review) -> list[Claim]:
    """Every claim of ``review`` that names runs, skill by skill, in the report's order."""
    out: list[Claim] = []
    for s in review.skills:
        skill = s.score.skill
        d = s.diagnosis

        def add(kind: str, text: str, runs: list[str], skill: str = skill) -> None:
            if runs:
                out.append(Claim(skill, kind, text, runs[:RUNS_SHOWN], len(runs)))

        if d is not None:
            for k in d.clusters:
                add("error cluster", f"{k.count} failure(s) at step {k.step}: {k.message}",
                    k.example_runs)  # fmt: skip
            add("labelled bad", f"{len(d.bad_runs)} run(s) labelled bad",
                [r for r, _ in d.bad_runs])  # fmt: skip
            for x in d.shared_responses:
                add("shared response", f"{x.tool} {x.target} {x.path} {x.pattern}", x.runs)
        for c in s.candidates:
            g = c.gate
            if g is None:
                continue
            name = f"{c.kind} candidate ({c.description})"
            add("gate: fixed", f"{name}: {g.outcome}, fixed", g.runs_fixed)
            add("gate: regressed", f"{name}: {g.outcome}, regressed", g.runs_regressed)
            add("gate: decided by", f"{name}: {g.outcome}, {g.reason}", g.decided_by)
        chosen = [c.gate.decided_by for c in s.candidates if c.gate and c.gate.outcome == "passed"]
        if chosen:
            add("decision", f"{s.decision}: {s.decision_reason}", chosen[0])
    return out


_CODE = re.compile(r"<code>([^<>]{1,200})</code>")


def link_runs(report_html: str, review: Review) -> str:
    """The review's HTML with every ``<code>`` element whose whole text is a run id the review
    names turned into a link to that run's page (opened in the top window). Only exact
    matches of known ids change; everything else is left as the review rendered it."""
    known: set[str] = set()
    for c in claims(review):
        known.update(c.runs)
    for s in review.skills:  # the report also shows ids beyond each claim's first few
        if s.diagnosis is not None:
            for k in s.diagnosis.clusters:
                known.update(k.example_runs)
            known.update(r for r, _ in s.diagnosis.bad_runs)
            for x in s.diagnosis.shared_responses:
                known.update(x.runs)
        for cand in s.candidates:
            if cand.gate is not None:
                known.update(cand.gate.decided_by)

    def link(m: re.Match[str]) -> str:
        run_id = htmlmod.unescape(m.group(1))
        if run_id not in known:
            return m.group(0)
        href = htmlmod.escape("/runs/" + quote(run_id, safe=""), quote=True)
        return f'<a href="{href}" target="_top">{m.group(0)}</a>'

    return _CODE.sub(link, report_html)


def router(ctx: ApiContext) -> APIRouter:
    """The reports routes (read scope)."""
    r = APIRouter(prefix="/api/v1/reports", tags=["reports"])
    rt, read = ctx.rt, ctx.need("read")

    @r.get("", dependencies=[read])
    def reports(limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[dict[str, Any]]:
        return [e.to_dict() for e in list_reviews(rt.redis, rt.keys, limit)]

    @r.get("/{review_id}", dependencies=[read])
    def report(review_id: str, format: Literal["json", "md"] = "json") -> Any:
        review = get_review(rt.redis, rt.keys, review_id)
        if format == "md":
            text = render_markdown(review, rt.settings.review_min_success)
            return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")
        out: dict[str, Any] = json.loads(review.to_json())
        return out

    return r
