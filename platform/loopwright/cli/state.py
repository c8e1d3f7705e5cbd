"""``loopwright skills state NAME``: show a skill's ``ctx.state``, or clear it (``--reset``).

Registered on the skills app by ``cli/skills.py``. Keys and values are the skill's own text, so
they reach the terminal through ``literal``; a value is shown as compact JSON, cut to one line.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from loopwright.cli.common import JsonFlag, console, emit_json, fmt_ts, literal, open_runtime
from loopwright.errors import UserError

VALUE_SHOWN = 120  # characters of a value in the table; --json shows it whole


def skill_state(
    name: Annotated[str, typer.Argument(help="The skill whose state to show.")],
    reset: Annotated[
        bool, typer.Option("--reset", help="Remove every key of the skill's state.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Reset without asking.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Show a skill's durable state (ctx.state): keys, values, versions, last update."""
    from loopwright.runner.state import read_state, reset_state

    rt = open_runtime()
    entries = read_state(rt.redis, rt.keys, name)
    known = rt.redis.hexists(rt.keys.skills, name) or rt.redis.exists(rt.keys.registry_skill(name))
    if not entries and not known:
        raise UserError(f"no skill named {name!r} (see 'loopwright skills list')")
    if reset:
        if not yes:
            if not sys.stdin.isatty():
                raise UserError("--reset asks for confirmation; pass --yes to reset without it")
            typer.confirm(
                f"Remove all {len(entries)} key(s) of {name!r}'s state?", abort=True, err=True
            )
        removed = reset_state(rt.redis, rt.keys, name)
        if as_json:
            emit_json({"skill": name, "removed": removed})
        else:
            console.print(f"removed {removed} key(s) of {literal(name)}'s state")
        return
    if as_json:
        emit_json(
            {
                "skill": name,
                "keys": [
                    {
                        "key": e.key,
                        "value": e.value,
                        "version": e.version,
                        "updated_at": e.updated_at,
                        "run_id": e.run_id,
                    }
                    for e in entries
                ],
            }
        )
        return
    if not entries:
        console.print(f"{literal(name)} has no state")
        return
    from rich.table import Table

    table = Table(title=f"state of {literal(name)}", title_justify="left")
    for column in ("key", "value", "version", "updated", "by run"):
        table.add_column(column, overflow="fold")
    for e in entries:
        text = json.dumps(e.value, ensure_ascii=False, separators=(",", ":"))
        if len(text) > VALUE_SHOWN:
            text = text[:VALUE_SHOWN] + f"... ({len(text)} chars)"
        table.add_row(
            literal(e.key), literal(text), str(e.version), fmt_ts(e.updated_at), literal(e.run_id)
        )
    console.print(table)
