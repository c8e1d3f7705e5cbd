"""The ``loopwright`` command: one readable line and a non-zero exit for every failure.

Startup stays cheap: the command modules import only typer at the top and what a command needs
when it runs (see ``bench/cli.py``). The failure handling lives in ``cli/app.py``.
"""

from __future__ import annotations

from typing import Annotated

import typer

from loopwright.cli.app import LoopwrightGroup
from loopwright.cli.chat import chat
from loopwright.cli.dev import dev_app
from loopwright.cli.doctor import doctor
from loopwright.cli.eval import eval_app
from loopwright.cli.events import events_app
from loopwright.cli.inbox import inbox_app
from loopwright.cli.mcp import mcp
from loopwright.cli.redis import redis_app, stop_command
from loopwright.cli.review import review_app
from loopwright.cli.runs import run_command, runs_app
from loopwright.cli.serve import serve
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
app.add_typer(inbox_app, name="inbox")
app.add_typer(review_app, name="review")
app.add_typer(eval_app, name="eval")
app.command()(chat)
app.command()(sidecar)
app.command()(mcp)
app.command()(up)
app.command()(worker)
app.command()(scheduler)
app.command()(doctor)
app.command()(serve)
app.add_typer(redis_app, name="redis")
app.command("stop")(stop_command)


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
    review: Annotated[
        bool,
        typer.Option(
            "--review", help="The weekly review instead, on five weeks of seeded history."
        ),
    ] = False,
) -> None:
    """The seed scenario: the builder writes, tests and registers skills that then run."""
    if review:
        from loopwright.cli.demo_review import run_review_demo

        raise typer.Exit(run_review_demo(workdir))
    if runner:
        from loopwright.cli.demo import run_demo

        raise typer.Exit(run_demo(workdir, examples))
    from loopwright.cli.scenario import run_scenario

    raise typer.Exit(run_scenario(workdir))


def run() -> None:
    """Console-script entry point (usage errors exit 2, failures 1, see ``cli/app.py``)."""
    app(prog_name="loopwright")
