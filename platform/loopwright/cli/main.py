"""The ``loopwright`` command: one readable line and a non-zero exit for every failure."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import click
import typer
from redis.exceptions import RedisError
from rich.table import Table

from loopwright.cli.chat import chat
from loopwright.cli.common import JsonFlag, console, emit_json, fmt_ts, open_runtime
from loopwright.cli.dev import dev_app
from loopwright.cli.doctor import doctor
from loopwright.cli.events import events_app
from loopwright.cli.mcp import mcp
from loopwright.cli.runs import run_command, runs_app
from loopwright.cli.services import scheduler, up, worker
from loopwright.cli.sidecar import sidecar
from loopwright.cli.skills import skills_app
from loopwright.cli.tokens import tokens_app
from loopwright.errors import LoopwrightError

app = typer.Typer(
    name="loopwright",
    help="Loopwright: durable, checkpointed multi-step skills on Redis and RQ.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("run")(run_command)
app.add_typer(runs_app, name="runs")
app.add_typer(events_app, name="events")
app.add_typer(skills_app, name="skills")
app.add_typer(tokens_app, name="tokens")
app.add_typer(dev_app, name="dev")
app.command()(chat)
app.command()(sidecar)
app.command()(mcp)
app.command()(up)
app.command()(worker)
app.command()(scheduler)
app.command()(doctor)


@app.command()
def inbox(
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20, as_json: JsonFlag = False
) -> None:
    """Show the newest messages skills posted with the notify tool."""
    rt = open_runtime()
    raw: list[str] = rt.redis.lrange(rt.keys.inbox, -limit, -1)  # type: ignore[assignment]
    entries = [json.loads(x) for x in raw]
    if as_json:
        emit_json(entries)
        return
    table = Table("time (UTC)", "skill", "level", "message", "run")
    for e in entries:
        text = f"[bold]{e['title']}[/] {e['message']}" if e.get("title") else e["message"]
        table.add_row(fmt_ts(e["ts"]), e["skill"], e["level"], text, e["run_id"])
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


def _fail(message: str, code: int = 1) -> None:
    sys.stderr.write(f"loopwright: error: {message}\n")
    sys.exit(code)


def run() -> None:
    """Console-script entry point."""
    try:
        rv = app(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _fail("aborted", 130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except LoopwrightError as exc:
        _fail(str(exc))
    except RedisError as exc:
        _fail(f"Redis error: {exc} (is Redis up? see 'loopwright doctor')")
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    sys.exit(rv if isinstance(rv, int) else 0)
