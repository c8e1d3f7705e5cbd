"""``loopwright review run``: start a weekly review now and wait for it.

The review is a run of the built-in ``weekly-review`` skill (``review/loop.py``); this process
executes it itself when no worker took it first (like ``loopwright chat``), so a review needs
no running worker, and a worker killed mid-review leaves a run the next worker resumes. Prints
the one-line summary and the report's path (or the whole result with ``--json``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from loopwright.cli.common import JsonFlag, console, emit_json, literal, open_runtime


def review_run(
    window: Annotated[
        str, typer.Option("--window", help="How far back to look, e.g. 7d, 14d.")
    ] = "7d",
    skill: Annotated[str | None, typer.Option("--skill", help="Review only this skill.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Gate candidates but never submit or roll back.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the review.")] = 3600.0,
    json_out: JsonFlag = False,
) -> None:
    """Start a review now and wait for it; prints the summary and the report's path."""
    from loopwright.cli.chat import drive
    from loopwright.errors import UserError
    from loopwright.review.loop import start_review
    from loopwright.runner.execute import install_runtime
    from loopwright.service.stats import parse_window

    try:
        parse_window(window)
    except UserError as exc:
        raise typer.BadParameter(str(exc), param_hint="--window") from None
    rt = open_runtime()
    install_runtime(rt)
    try:
        if skill is not None and not rt.redis.hget(rt.keys.skills, skill):
            raise UserError(f"no active skill {skill!r} (list skills with: loopwright skills list)")
        run_id = start_review(rt, window, skill, dry_run)
        if not json_out:
            console.print(f"review {literal(run_id)} started (window {literal(window)})")
        result = drive(rt, run_id, timeout, False)
    finally:
        rt.close()
    if json_out:
        emit_json({"run_id": run_id, **result})
        return
    console.print(literal(str(result.get("headline", ""))))
    for card in result.get("skills", []):
        name = card.get("score", {}).get("skill")
        console.print(f"  {literal(str(name))}: {literal(str(card.get('decision')))}")
    console.print(f"report: {literal(str(result.get('report', '')))}")
