"""``loopwright review``: run a weekly review (``review run``, ``cli/review_run.py``), list the
stored ones and show one as Markdown, a self-contained HTML file, or JSON.

``show`` prints to stdout or writes ``--out FILE`` (through a temporary file renamed into place,
so a reader never sees half a report). Everything in a report that a skill, a model or a person
wrote is made inert by the renderer (``review/report.py``); the list goes through ``literal``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from loopwright.cli.common import JsonFlag, console, literal, open_runtime
from loopwright.cli.review_run import review_run

review_app = typer.Typer(
    help="The weekly review: find underperforming skills, gate rewrites, report.",
    no_args_is_help=True,
)
review_app.command("run")(review_run)


@review_app.command("list")
def review_list(
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Most to list.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """The stored reviews, newest first: id, when, window and summary."""
    from loopwright.review.store import dumps_entries, list_reviews

    rt = open_runtime()
    try:
        entries = list_reviews(rt.redis, rt.keys, limit)
    finally:
        rt.close()
    if as_json:
        sys.stdout.write(dumps_entries(entries) + "\n")
        return
    if not entries:
        console.print("no review yet (start one with: loopwright review run)")
        return
    from datetime import UTC, datetime

    for e in entries:
        when = datetime.fromtimestamp(e.started_at / 1000, UTC).strftime("%Y-%m-%d %H:%M")
        dry = " (dry run)" if e.dry_run else ""
        console.print(
            f"{literal(e.id)}  {when}  {literal(e.window)}  {literal(e.summary)}{dry}",
            highlight=False,
        )


@review_app.command("show")
def review_show(
    review_id: Annotated[
        str | None, typer.Argument(metavar="[ID]", help="A review id; the latest when omitted.")
    ] = None,
    fmt: Annotated[str, typer.Option("--format", help="md, html or json.")] = "md",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the report to FILE instead of stdout.")
    ] = None,
) -> None:
    """Show a stored review as Markdown, a self-contained HTML file or JSON."""
    from loopwright.review.publish import write_atomic
    from loopwright.review.report import FORMATS, render
    from loopwright.review.store import get_review

    if fmt not in FORMATS:
        raise typer.BadParameter(f"must be one of: {', '.join(FORMATS)}", param_hint="--format")
    rt = open_runtime()
    try:
        review = get_review(rt.redis, rt.keys, review_id)
        floor = rt.settings.review_min_success
    finally:
        rt.close()
    text = render(review, fmt, floor)
    if out is None:
        sys.stdout.write(text)
        return
    write_atomic(out.expanduser(), text)
    console.print(f"report written to {literal(str(out))}", highlight=False)
