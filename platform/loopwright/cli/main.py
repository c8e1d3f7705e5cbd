"""The ``loopwright`` command: one readable line and a non-zero exit for every failure.

Start-up stays cheap (``bench/cli.py`` measures it against ``rq info``): each command's module
is imported only when that command runs (``COMMANDS`` below, loaded by ``cli/app.py``), and a
command module imports at its top only typer and ``cli.common``; settings, Redis, rich's tables
and the runner load inside the command, the agent, the providers, the sidecar and the sandbox
only in the commands that use them. A new command: a function or ``typer.Typer`` in a module
whose top imports only typer and ``cli.common`` (``--help`` imports every command's module),
one line in ``COMMANDS``, and every other import inside the function.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import typer

from loopwright.cli.app import LoopwrightGroup

# Every command, in the order ``--help`` lists them.
COMMANDS = {
    "run": "loopwright.cli.runs:run_command",
    "chat": "loopwright.cli.chat:chat",
    "sidecar": "loopwright.cli.sidecar:sidecar",
    "mcp": "loopwright.cli.mcp:mcp",
    "up": "loopwright.cli.services:up",
    "worker": "loopwright.cli.services:worker",
    "scheduler": "loopwright.cli.services:scheduler",
    "doctor": "loopwright.cli.doctor:doctor",
    "serve": "loopwright.cli.serve:serve",
    "inbox": "loopwright.cli.inbox:inbox_app",
    "demo": "loopwright.cli.demo_command:demo",
    "runs": "loopwright.cli.runs:runs_app",
    "events": "loopwright.cli.events:events_app",
    "skills": "loopwright.cli.skills:skills_app",
    "review": "loopwright.cli.review:review_app",
    "eval": "loopwright.cli.eval:eval_app",
    "tokens": "loopwright.cli.tokens:tokens_app",
    "redis": "loopwright.cli.redis:redis_app",
    "stop": "loopwright.cli.redis:stop_command",
    "dev": "loopwright.cli.dev:dev_app",
}


class RootGroup(LoopwrightGroup):
    """The ``loopwright`` group: ``COMMANDS`` load on use (``cli/lazy.py``)."""

    lazy: ClassVar[dict[str, str]] = COMMANDS


app = typer.Typer(
    name="loopwright",
    help="Loopwright: durable, checkpointed multi-step skills on Redis and RQ.",
    cls=RootGroup,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)


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


def run() -> None:
    """Console-script entry point (usage errors exit 2, failures 1, see ``cli/app.py``)."""
    app(prog_name="loopwright")
