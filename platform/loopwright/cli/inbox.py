"""``loopwright inbox``: the newest messages skills posted with the notify tool."""

from __future__ import annotations

from typing import Annotated

import typer

from loopwright.cli.common import JsonFlag, console, emit_json, fmt_ts, literal, open_runtime


def inbox(
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20, as_json: JsonFlag = False
) -> None:
    """Show the newest messages skills posted with the notify tool."""
    import json

    from rich.table import Table

    rt = open_runtime()
    raw: list[str] = rt.redis.lrange(rt.keys.inbox, -limit, -1)  # type: ignore[assignment]
    entries = [json.loads(x) for x in raw]
    if as_json:
        emit_json(entries)
        return
    table = Table("time (UTC)", "skill", "level", "message", "run")
    for e in entries:
        text = literal(e["message"])
        if e.get("title"):
            text = f"[bold]{literal(e['title'])}[/] {text}"
        table.add_row(
            fmt_ts(e["ts"]), literal(e["skill"]), literal(e["level"]), text, literal(e["run_id"])
        )
    console.print(table)
