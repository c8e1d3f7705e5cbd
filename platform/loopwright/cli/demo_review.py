"""``loopwright demo --review``: the weekly review on a compressed month of history.

Five weeks of runs are written by the history seeder with explicit timestamps (nothing waits):
the health check from the seed scenario, whose nightly p95 sits just above its 250 ms threshold
on many nights (false alarms people labelled bad) and far above it during one real incident
(labelled good); a field reader that breaks when the service renames the field it reads; a
steady skill. Each run's tool call is recorded, as a worker records it. Then one review runs in
this process: it raises the threshold to a value that silences the false alarms and still
catches the incident, proves it on held-out runs, promotes it (under a watch), and reports that
the broken skill needs a model, with its error cluster, failing step and an example run. The
report's path is printed.

Everything lives under its own key prefix (printed), so the demo leaves the usual data alone.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Any

from rich.rule import Rule

from loopwright.cli.chat import drive
from loopwright.cli.common import console, load_settings, open_runtime
from loopwright.cli.common import literal as escape
from loopwright.errors import UserError
from loopwright.history.seeder import DAY_MS, SeedSkill, seed_history
from loopwright.runner.execute import install_runtime
from loopwright.runner.records import now_ms
from loopwright.runner.runtime import Runtime
from loopwright.sidecar.pipeline import Sidecar

URL = SeedSkill("x").url  # what the seeded runs' recorded GET called (never contacted here)
DAYS = 35  # a 4-week baseline and the review's 7-day window

HEALTH = f'''\
from loopwright.sdk import skill


@skill(name="health-check", description="Alarm when the checkout p95 is over the threshold",
       tools=["http", "notify"], http_allow=["127.0.0.1"], params={{"threshold": 250}})
def main(ctx):
    m = ctx.step.run("fetch", lambda: ctx.tools.http.get_json("{URL}"))
    alarm = m["p95_ms"] > ctx.params["threshold"]
    if alarm:
        ctx.step.run("alert", lambda: ctx.tools.notify("checkout p95 is " + str(m["p95_ms"])))
    return {{"p95_ms": m["p95_ms"], "alarm": alarm}}
'''

READER = f'''\
from loopwright.sdk import skill


@skill(name="field-reader", description="Record the checkout p95",
       tools=["http"], http_allow=["127.0.0.1"])
def main(ctx):
    m = ctx.step.run("fetch", lambda: ctx.tools.http.get_json("{URL}"))
    return {{"p95_ms": m["p95_ms"]}}
'''


def _case(name: str, answer: dict[str, Any], output: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "event": {},
        "mocks": {"http": [{"method": "GET", "url": URL, "response": answer}]},
        "expect": {"status": "completed", "output": output},
    }


HEALTH_TESTS = [
    _case("quiet", {"p95_ms": 120}, {"p95_ms": 120, "alarm": False}),
    _case("incident", {"p95_ms": 4000}, {"p95_ms": 4000, "alarm": True}),
]
READER_TESTS = [_case("reads", {"p95_ms": 120}, {"p95_ms": 120})]


def _register(rt: Runtime, source: str, tests: list[dict[str, Any]]) -> str:
    # As the builder registered them in the seed scenario (an agent's skills: the review's
    # rewrites of them may go live under a watch with approval mode auto).
    verdict = Sidecar(rt).submit(source, tests, author="agent", approval="auto")
    if not verdict.accepted:
        raise UserError(f"demo: {verdict.first_line()}")
    return str(verdict.version)


def profiles(health: str, reader: str) -> list[SeedSkill]:
    """The demo's fleet over :data:`DAYS` days (the window is the last 7)."""
    return [
        SeedSkill(
            "health-check", runs_per_day=12, success=1.0, threshold_ms=250, slow_nights=0.5,
            incident_day=DAYS - 4, labelled=1.0, steps=2, record=True, retry_rate=0.0,
            versions=(health,),
        ),
        SeedSkill(
            "field-reader", runs_per_day=8, success=1.0, renamed_field_day=DAYS - 3,
            failing_step=1, steps=1, record=True, retry_rate=0.0, versions=(reader,),
        ),
        SeedSkill("steady", runs_per_day=8, success=1.0, record=True),
    ]  # fmt: skip


def run_review_demo(workdir: str | None) -> int:
    """The demo; returns the process exit code."""
    work = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="loopwright-review-"))
    work.mkdir(parents=True, exist_ok=True)
    base = load_settings()
    prefix = "demo-" + secrets.token_hex(4)
    first = open_runtime(base)
    redis_url = first.redis_url
    first.close()
    settings = base.model_copy(
        update={
            "redis_url": redis_url,
            "key_prefix": prefix,
            "data_dir": work,
            "http_private_allow": "127.0.0.1",
            "approval_mode": "auto",
            "sidecar_url": None,
        }
    )
    rt = open_runtime(settings)
    install_runtime(rt)
    try:
        console.print(Rule("Loopwright demo: the weekly review"))
        console.print(f"Redis {redis_url} · key prefix {prefix} · files in {work}")
        console.print(Rule("1. Five weeks of history (seeded with explicit times, recorded)"))
        health = _register(rt, HEALTH, HEALTH_TESTS)
        reader = _register(rt, READER, READER_TESTS)
        end = now_ms()
        counts = seed_history(rt, profiles(health, reader), days=DAYS, end_ms=end)
        for name in ("health-check", "field-reader", "steady"):
            console.print(
                f"  {name}: {counts[name + ':completed']} completed, "
                f"{counts[name + ':failed']} failed, {counts[name + ':bad']} labelled bad, "
                f"{counts[name + ':good']} labelled good"
            )
        console.print(
            f"  the window: {_day(end - 6 * DAY_MS)} to {_day(end)}; the incident on "
            f"{_day(end - 3 * DAY_MS)}, the field renamed on {_day(end - 2 * DAY_MS)}"
        )
        console.print(Rule("2. The review (no model configured: the offline path)"))
        from loopwright.review.loop import start_review

        run_id = start_review(rt, "7d")
        result = drive(rt, run_id, 1800, False)
        _show(result)
        console.print(f"[bold]report:[/] {escape(result['report'])}")
        return 0 if _as_expected(result) else 1
    finally:
        rt.close()


def _day(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _show(result: dict[str, Any]) -> None:
    console.print(f"[bold]{escape(result['headline'])}[/]")
    for card in result["skills"]:
        score = card["score"]
        console.print(f"[bold]{escape(score['skill'])}[/]: {escape(card['decision'])}")
        for reason in score["reasons"][:2]:
            console.print(f"  flagged: {escape(reason)}" if score["verdict"] == "underperforming"
                          else f"  {escape(reason)}")  # fmt: skip
        diag = card.get("diagnosis") or {}
        for c in (diag.get("clusters") or [])[:1]:
            example = (c.get("example_runs") or ["?"])[0]
            console.print(
                f"  error cluster: {escape(c['message'])} in step {escape(c['step'])} "
                f"({c['count']} runs, e.g. run {escape(example)})"
            )
        for cand in card["candidates"]:
            gate = cand.get("gate")
            if gate is None:
                console.print(f"  candidate {escape(cand['kind'])}: {escape(cand['error'])}")
                continue
            console.print(
                f"  candidate {escape(cand['kind'])}: {escape(cand['description'])}\n"
                f"    gate on {gate['held_out']} held-out runs: {gate['outcome']} — fixed "
                f"{len(gate['runs_fixed'])}, regressed {len(gate['runs_regressed'])}, "
                f"off-script {gate['off_script_ratio']:.0%}, p95 tool time "
                f"{gate['p95_tool_ms_old']:.0f} -> {gate['p95_tool_ms_new']:.0f} ms"
            )
        if card.get("decision_reason") and card["decision"] != "healthy":
            console.print(f"  decision: {escape(card['decision_reason'])}")


def _as_expected(result: dict[str, Any]) -> bool:
    decisions = {c["score"]["skill"]: c["decision"] for c in result["skills"]}
    want = {"health-check": "improved", "field-reader": "needs_model", "steady": "healthy"}
    wrong = {k: v for k, v in want.items() if decisions.get(k) != v}
    if wrong:
        console.print(f"[red]unexpected decisions: {escape(str(wrong))}[/]")
    return not wrong
