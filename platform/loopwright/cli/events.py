"""``loopwright events send``: put an event on the stream (durably, before answering)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from loopwright.cli.common import JsonFlag, console, emit_json, literal, open_runtime, plain
from loopwright.cli.runs import parse_data

events_app = typer.Typer(help="Send events.", no_args_is_help=True)


@events_app.command("send")
def send(
    name: Annotated[str, typer.Argument(help="Event name, e.g. incident.opened")],
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Event data as JSON, @FILE, or - for stdin."),
    ] = None,
    event_id: Annotated[
        str | None, typer.Option("--id", help="Event id: a resend with the same id starts nothing.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Send an event; matching event-triggered skills start and waiting runs resume."""
    rt = open_runtime()
    sent = rt.bus.send(name, parse_data(data, rt.settings.run_input_max_bytes), event_id)
    if as_json:
        emit_json({"id": sent.id, "stream_id": sent.stream_id, "accepted": sent.accepted})
    elif not sys.stdout.isatty():  # piped: one plain line, and rich never loads
        state = "accepted" if sent.accepted else "already accepted; nothing new starts"
        sys.stdout.write(plain(f"event {sent.id} {state} ({sent.stream_id})") + "\n")
    elif sent.accepted:
        console.print(f"event [bold]{literal(sent.id)}[/] accepted ({literal(sent.stream_id)})")
    else:
        console.print(f"event [bold]{literal(sent.id)}[/] was already accepted; nothing new starts")
