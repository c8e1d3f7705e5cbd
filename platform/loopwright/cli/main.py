"""The ``loopwright`` command: one readable line and a non-zero exit for every failure.

Startup stays cheap: the command modules import only typer at the top and what a command needs
when it runs (see ``bench/cli.py``). The failure handling lives in ``cli/app.py``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from loopwright.cli.app import LoopwrightGroup
from loopwright.cli.chat import chat
from loopwright.cli.common import JsonFlag, console, emit_json, fmt_ts, literal, open_runtime
from loopwright.cli.dev import dev_app
from loopwright.cli.doctor import doctor
from loopwright.cli.eval import eval_app
from loopwright.cli.events import events_app
from loopwright.cli.mcp import mcp
from loopwright.cli.runs import run_command, runs_app
from loopwright.cli.services import scheduler, up, worker
from loopwright.cli.sidecar import sidecar
from loopwright.cli.skills import skills_app
from loopwright.cli.tokens import tokens_app

app = typer.Typer(
    name="loopwright",
    help="Loopwright: durable, checkpointed multi-step skills on Redis and RQ.",
    cls=LoopwrightGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)
app.command("run")(run_command)
app.add_typer(runs_app, name="runs")
app.add_typer(events_app, name="events")
app.add_typer(skills_app, name="skills")
app.add_typer(tokens_app, name="tokens")
app.add_typer(dev_app, name="dev")
app.add_typer(eval_app, name="eval")
app.command()(chat)
app.command()(sidecar)
app.command()(mcp)
app.command()(up)
app.command()(worker)
app.command()(scheduler)
app.command()(doctor)


def _show_version(value: bool) -> None:
    if value:
        import importlib.metadata

        typer.echo(f"loopwright {importlib.metadata.version('loopwright')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Loopwright: durable, checkpointed multi-step skills on Redis and RQ."""


@app.command()
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


@app.command()
def demo(
    workdir: Annotated[
        str | None, typer.Option(help="Where the demo keeps its files (default: a temp dir).")
    ] = None,
    examples: Annotated[
        str, typer.Option(help="Folder with the example skills (--runner).")
    ] = "examples",
    runner: Annotated[
        bool,
        typer.Option(
            "--runner", help="The runner tour instead: example skills and a killed worker."
        ),
    ] = False,
) -> None:
    """The seed scenario: the builder writes, tests and registers skills that then run."""
    if runner:
        from loopwright.cli.demo import run_demo

        raise typer.Exit(run_demo(workdir, examples))
    from loopwright.cli.scenario import run_scenario

    raise typer.Exit(run_scenario(workdir))


def run() -> None:
    """Console-script entry point (usage errors exit 2, failures 1, see ``cli/app.py``)."""
    app(prog_name="loopwright")
