"""The review report: Markdown and one self-contained HTML file, rendered from a stored
:class:`~loopwright.review.types.Review` with the jinja2 templates beside this module.

Everything a skill, a model or a person wrote (skill names, error messages, notes, recorded
values, diffs, reasons) is untrusted: the HTML template autoescapes every value, and both
formats first pass text through :func:`clean` (control characters and bidirectional overrides
removed, so a note cannot hide or reorder what is shown); Markdown escapes its own syntax and
the inline HTML a viewer would render. The HTML has inline CSS and inline SVG only: no script,
no external asset, readable offline. Rendering reads nothing but the review, so the same
review gives byte-identical output.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from loopwright.review.types import Decision, Metrics, Review, SkillReview, Verdict

# The summary's words for each decision, in the order the summary lists them.
DECISION_WORDS: dict[str, str] = {
    Decision.IMPROVED: "improved",
    Decision.AWAITING_APPROVAL: "awaiting approval",
    Decision.DRY_RUN: "would improve (dry run)",
    Decision.NEEDS_MODEL: "needs a model",
    Decision.NO_FIX: "not fixed",
    Decision.OVER_BUDGET: "over budget",
    Decision.PLATFORM_ONLY: "platform failures only",
    Decision.INSUFFICIENT_DATA: "insufficient data",
    Decision.HEALTHY: "healthy",
}
VERDICT_WORDS: dict[str, str] = {
    Verdict.HEALTHY: "healthy",
    Verdict.UNDERPERFORMING: "underperforming",
    Verdict.INSUFFICIENT_DATA: "insufficient data",
    Verdict.PLATFORM_ONLY: "platform failures only",
}
MAX_TEXT = 2000  # characters of one untrusted text shown (messages, notes, reasons)
MAX_DIFF = 8000
MAX_LIST = 10  # bad runs, examples, shared responses shown per card
CHART_W, CHART_H, CHART_PAD = 320, 80, 6

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")  # inline syntax anywhere in a line
_MD_LEADING = re.compile(r"^([#+\-=]|\d+(?=[.)]))")  # block syntax at a line's start


def clean(text: Any, limit: int = MAX_TEXT) -> str:
    """Untrusted text made safe to show: controls and bidi overrides removed, tabs and newlines
    kept, cut at ``limit`` characters."""
    s = _CONTROL.sub("", str(text)).replace("\r", "")
    return s if len(s) <= limit else s[: limit - 1] + "…"


def md(text: Any, limit: int = MAX_TEXT) -> str:
    """Untrusted text as inert inline Markdown: one line, syntax characters escaped, ``<``,
    ``>`` and ``&`` as entities (no HTML a viewer would render)."""
    s = clean(text, limit).replace("\n", " ").replace("\t", " ")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    s = _MD_LEADING.sub(lambda m: m[1] + "\\" if m[1][0].isdigit() else "\\" + m[1], s)
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def code(text: Any, limit: int = 200) -> str:
    """Untrusted text for inside a one-backtick code span: one line, no backtick, no ``|`` (a
    table cell would end there even inside a span); nothing else is interpreted in a span."""
    s = clean(text, limit).replace("\n", " ").replace("\t", " ").replace("`", "'")
    s = s.replace("|", "¦")
    return s.strip() or "-"


def fence(text: str) -> str:
    """A Markdown code fence longer than any run of backticks inside ``text``."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0f} ms"


def usd(x: float | None) -> str:
    return "n/a" if x is None else f"${x:.4f}"


def decision_words(decision: str) -> str:
    """The summary's words for a decision (an unknown one shown as written, cleaned)."""
    return DECISION_WORDS.get(decision, clean(decision, 60).replace("_", " "))


def summary_line(review: Review) -> str:
    """``7 skills reviewed: 1 improved, 1 needs a model, 1 insufficient data, 4 healthy``."""
    counts: dict[str, int] = {}
    for s in review.skills:
        counts[str(s.decision)] = counts.get(str(s.decision), 0) + 1
    order = list(DECISION_WORDS) + sorted(d for d in counts if d not in DECISION_WORDS)
    parts = [f"{counts[d]} {decision_words(d)}" for d in order if counts.get(d)]
    n = len(review.skills)
    head = f"{n} skill{'s' if n != 1 else ''} reviewed"
    return head + (": " + ", ".join(parts) if parts else "")


def _when(ms_: int | None) -> str:
    if ms_ is None:
        return "not finished"
    return datetime.fromtimestamp(ms_ / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _day(d: str) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:]}" if len(d) == 8 else clean(d, 20)


def _chart(m: Metrics, floor: float) -> dict[str, Any]:
    """The daily success chart's geometry: numbers only (nothing untrusted reaches the SVG)."""
    days = m.daily_success
    inner_w, inner_h = CHART_W - 2 * CHART_PAD, CHART_H - 2 * CHART_PAD
    step = inner_w / max(1, len(days) - 1)

    def y(rate: float) -> float:
        return round(CHART_PAD + (1 - rate) * inner_h, 1)

    points, dots = [], []
    for i, (day, rate, n) in enumerate(days):
        if rate is None:
            continue
        x = round(CHART_PAD + i * step, 1)
        points.append(f"{x},{y(rate)}")
        dots.append({"x": x, "y": y(rate), "title": f"{_day(day)}: {pct(rate)} of {n} runs"})
    return {
        "w": CHART_W, "h": CHART_H, "points": " ".join(points), "dots": dots,
        "floor_y": y(floor), "x0": CHART_PAD, "x1": CHART_W - CHART_PAD,
        "first": _day(days[0][0]) if days else "", "last": _day(days[-1][0]) if days else "",
    }  # fmt: skip


def _metric_rows(w: Metrics, b: Metrics | None) -> list[tuple[str, str, str]]:
    def interval(m: Metrics) -> str:
        if m.success_rate is None:
            return "n/a"
        return f"{pct(m.success_rate)} ({pct(m.wilson_low)} to {pct(m.wilson_high)})"

    def stab(m: Metrics) -> str:
        if m.stability_mean is None:
            return "n/a"
        return f"{pct(m.stability_mean)} ± {(m.stability_std or 0) * 100:.1f} pts"

    def labels(m: Metrics) -> str:
        return f"{m.bad_labels} bad / {m.good_labels} good"

    rows: list[tuple[str, Callable[[Metrics], str]]] = [
        ("runs", lambda m: str(m.runs)),
        ("success (95% interval)", interval),
        ("failed by the skill", lambda m: str(m.failures_skill)),
        ("failed by the platform (excluded)", lambda m: str(m.failures_platform)),
        ("p50 duration", lambda m: ms(m.p50_ms)),
        ("p95 duration", lambda m: ms(m.p95_ms)),
        ("cost per run", lambda m: usd(m.cost_per_run)),
        ("retries per run", lambda m: "n/a" if m.retries_per_run is None else f"{m.retries_per_run:.2f}"),  # noqa: E501
        ("feedback", labels),
        ("daily success (mean ± std)", stab),
    ]  # fmt: skip
    return [(name, f(w), f(b) if b is not None else "n/a") for name, f in rows]


def _card(s: SkillReview, floor: float) -> dict[str, Any]:
    sc = s.score
    d = s.diagnosis
    card: dict[str, Any] = {
        "skill": clean(sc.skill, 200),
        "version": clean(sc.version[:12], 40),
        "verdict": VERDICT_WORDS.get(sc.verdict, clean(sc.verdict, 40)),
        "verdict_class": clean(sc.verdict.value, 40),
        "decision": decision_words(str(s.decision)),
        "decision_reason": clean(s.decision_reason),
        "promoted": clean(s.promoted_version[:12], 40) if s.promoted_version else "",
        "reasons": [clean(r) for r in sc.reasons],
        "metrics": _metric_rows(sc.window, sc.baseline),
        "test": None
        if sc.p_value is None
        else f"p = {sc.p_value:.3g}" + ("" if sc.q_value is None else f", q = {sc.q_value:.3g}"),
        "daily": [(_day(day), pct(r), n) for day, r, n in sc.window.daily_success],
        "chart": _chart(sc.window, floor),
        "cost": f"{s.cost_tokens} tokens, ${s.cost_usd:.4f}",
        "clusters": [],
        "bad_runs": [],
        "shared": [],
        "change": None,
        "candidates": [],
    }
    if d is not None:
        card["clusters"] = [
            {
                "message": clean(c.message), "step": clean(c.step, 100), "count": c.count,
                "first_seen": _day(c.first_seen), "examples": [clean(r, 40) for r in c.example_runs[:MAX_LIST]],  # noqa: E501
                "began": clean(c.began_with_version[:12], 40) if c.began_with_version else "",
            }
            for c in d.clusters
        ]  # fmt: skip
        card["bad_runs"] = [(clean(r, 40), clean(n)) for r, n in d.bad_runs[:MAX_LIST]]
        card["bad_total"] = len(d.bad_runs)
        card["shared"] = [
            {
                "tool": clean(x.tool, 40), "target": clean(x.target, 300),
                "path": clean(x.path, 200), "pattern": clean(x.pattern, 300),
                "runs": len(x.runs), "examples": [clean(r, 40) for r in x.runs[:3]],
            }
            for x in d.shared_responses[:MAX_LIST]
        ]  # fmt: skip
        if d.version_change is not None:
            vc = d.version_change
            diff = clean(vc.diff, MAX_DIFF)
            card["change"] = {
                "from": clean(vc.from_version[:12], 40), "to": clean(vc.to_version[:12], 40),
                "diff": diff, "fence": fence(diff),
            }  # fmt: skip
    for c in s.candidates:
        g = c.gate
        card["candidates"].append({
            "kind": clean(c.kind, 40), "description": clean(c.description),
            "version": clean((c.version or "")[:12], 40),
            "params": [(clean(k, 100), clean(v[0] if v else "", 200), clean(v[-1] if v else "", 200))  # noqa: E501
                       for k, v in sorted(c.params_changed.items())],
            "error": clean(c.error),
            "gate": None if g is None else {
                "outcome": clean(g.outcome, 40), "reason": clean(g.reason),
                "held_out": g.held_out, "fixed": len(g.runs_fixed),
                "regressed": len(g.runs_regressed), "off_script": pct(g.off_script_ratio),
                "p95_old": ms(g.p95_tool_ms_old), "p95_new": ms(g.p95_tool_ms_new),
                "decided_by": [clean(r, 40) for r in g.decided_by[:MAX_LIST]],
                "changes": [clean(x) for x in g.side_effect_changes[:MAX_LIST]],
            },
        })  # fmt: skip
    return card


def view(review: Review, floor: float = 0.95) -> dict[str, Any]:
    """What the templates render: every value already cleaned, formatted and ordered."""
    return {
        "id": clean(review.id, 80),
        "summary": summary_line(review),
        "started": _when(review.started_at),
        "finished": _when(review.finished_at),
        "window": clean(review.window, 20),
        "span": f"{_day(review.window_start)} to {_day(review.window_end)}"
        if review.window_start
        else "",
        "dry_run": review.dry_run,
        "cost": f"{review.cost_tokens} tokens, ${review.cost_usd:.4f}",
        "floor": pct(floor),
        "cards": [_card(s, floor) for s in review.skills],
    }


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=jinja2.select_autoescape(["html.j2"]),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["md"] = md
_ENV.filters["code"] = code


def render_markdown(review: Review, floor: float = 0.95) -> str:
    """The report as Markdown."""
    return _ENV.get_template("review.md.j2").render(**view(review, floor))


def render_html(review: Review, floor: float = 0.95) -> str:
    """The report as one self-contained HTML file (inline CSS and SVG, no script)."""
    return _ENV.get_template("review.html.j2").render(**view(review, floor))


FORMATS = ("md", "html", "json")


def render(review: Review, fmt: str, floor: float = 0.95) -> str:
    """The review in ``fmt`` (``md``, ``html`` or ``json``: the canonical stored form)."""
    if fmt == "md":
        return render_markdown(review, floor)
    if fmt == "html":
        return render_html(review, floor)
    if fmt == "json":
        return review.to_json() + "\n"
    raise ValueError(f"unknown format {fmt!r} (one of: {', '.join(FORMATS)})")
