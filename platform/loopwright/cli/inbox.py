"""``loopwright inbox``: list notices (filtered) and acknowledge them.

Everything a notice says may come from a skill or its errors, so every field is printed through
``cli/text.py`` (control characters made visible, rich markup escaped).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from loopwright.cli.common import JsonFlag, console, emit_json, fmt_ts, open_runtime
from loopwright.cli.text import literal, one_line

LEVEL_CHOICES = ("info", "warning", "error")

inbox_app = typer.Typer(
    help="The platform inbox: notices from skills (notify), failure alerts, the platform.",
    invoke_without_command=True,
    no_args_is_help=False,
)


def _who() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def _check_level(level: str | None) -> str | None:
    if level is not None and level not in LEVEL_CHOICES:
        raise typer.BadParameter(f"{level!r} is not one of {', '.join(LEVEL_CHOICES)}", None)
    return level


@inbox_app.callback()
def inbox(
    ctx: typer.Context,
    skill: Annotated[str | None, typer.Option(help="Only this skill's notices.")] = None,
    level: Annotated[
        str | None,
        typer.Option(help="Only this level: info, warning or error.", callback=_check_level),
    ] = None,
    unacked: Annotated[bool, typer.Option("--unacked", help="Only unacknowledged.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Newest N notices.")] = 20,
    as_json: JsonFlag = False,
) -> None:
    """Show the newest notices, oldest first (``ack`` acknowledges them)."""
    if ctx.invoked_subcommand is not None:
        return
    from loopwright.inbox import Inbox

    rt = open_runtime()
    notices = Inbox(rt.redis, rt.keys, rt.settings).list(
        skill=skill, level=level, unacknowledged=unacked, limit=limit
    )
    notices.reverse()  # oldest first, the newest at the bottom, as a log reads
    if as_json:
        emit_json([n.to_json() for n in notices])
        return
    if not sys.stdout.isatty():  # pipes and scripts: one plain line each, nothing cut short
        sys.stdout.write("id\ttime (UTC)\tlevel\tsource\tskill\tnotice\trun\tack\n")
        for n in notices:
            text = one_line(f"{n.title}: {n.body}" if n.title else n.body)
            ack = (n.acked_by or "") if n.acknowledged else ""
            fields = [n.id, fmt_ts(n.ts), n.level, n.source, n.skill or "", text, n.run_id or ""]
            fields.append(ack)
            sys.stdout.write("\t".join(one_line(f) for f in fields) + "\n")
        return
    from rich.table import Table

    table = Table("id", "time (UTC)", "level", "source", "skill", "notice", "run", "ack")
    for n in notices:
        text = literal(n.body)
        if n.title:
            text = f"[bold]{literal(n.title)}[/] {text}".rstrip()
        table.add_row(
            n.id,
            fmt_ts(n.ts),
            literal(n.level),
            literal(n.source),
            literal(n.skill or ""),
            text,
            literal(n.run_id or ""),
            literal(n.acked_by or "") if n.acknowledged else "",
        )
    console.print(table)


@inbox_app.command("ack")
def ack(
    ids: Annotated[list[str] | None, typer.Argument(help="Notice ids to acknowledge.")] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Acknowledge every unacknowledged notice.")
    ] = False,
    skill: Annotated[str | None, typer.Option(help="With --all: only this skill's.")] = None,
    who: Annotated[
        str | None, typer.Option("--as", help="Who acknowledges (default: you).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Acknowledge notices by id, or --all (of one --skill)."""
    from loopwright.inbox import Inbox

    if all_ == bool(ids):
        raise typer.BadParameter("give notice ids or --all, not both and not neither", None)
    if skill and not all_:
        raise typer.BadParameter("--skill goes with --all", None)
    bad = [i for i in ids or [] if not i.isdigit()]
    if bad:
        raise typer.BadParameter(f"not a notice id: {bad[0]!r} (ids are numbers)", None)
    rt = open_runtime()
    box = Inbox(rt.redis, rt.keys, rt.settings)
    wanted = box.unacknowledged_ids(skill) if all_ else list(ids or [])
    done = box.ack(wanted, who or _who())
    if as_json:
        emit_json({"acknowledged": done, "asked": len(wanted)})
        return
    skipped = len(wanted) - done
    tail = f" ({skipped} unknown or already acknowledged)" if skipped else ""
    console.print(f"acknowledged {done} notice(s){tail}")
