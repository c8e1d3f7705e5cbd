"""Shared CLI plumbing: settings and runtime at the edge, JSON or rich output, one-line errors.

Imports stay cheap at the top (typer, rich's console): settings, Redis and the runner load when
a command asks for them, so ``--help`` and the read-only commands start fast.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from loopwright.cli.text import literal, one_line, plain

if TYPE_CHECKING:
    from rich.console import Console

    from loopwright.runner.runtime import Runtime
    from loopwright.settings import Settings

__all__ = [
    "JsonFlag",
    "console",
    "emit_json",
    "err_console",
    "fmt_ts",
    "literal",
    "live_workers",
    "load_settings",
    "one_line",
    "open_runtime",
    "plain",
    "preview",
    "styled",
]

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


class _LazyConsole:
    """A rich ``Console`` made on first use, so commands that print nothing never import rich."""

    def __init__(self, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            # emoji=False: ``:name:`` in printed text stays literal (skills control much of
            # it), and rich does not load its 4,000-entry emoji table on every command.
            self._console = Console(stderr=self._stderr, emoji=False)
        return getattr(self._console, name)


console: Console = _LazyConsole(stderr=False)  # type: ignore[assignment]
err_console: Console = _LazyConsole(stderr=True)  # type: ignore[assignment]


def load_settings() -> Settings:
    """Settings from the environment, or one readable line about the bad variable."""
    from loopwright.errors import UserError
    from loopwright.settings import Settings

    try:
        return Settings()
    except Exception as exc:
        # Valid settings never load pydantic-core (loopwright.envmodel): name its error only
        # once one was raised.
        from pydantic_core import ValidationError

        if not isinstance(exc, ValidationError):
            raise
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        raise UserError(f"invalid setting LOOPWRIGHT_{field.upper()}: {first['msg']}") from None


def open_runtime(settings: Settings | None = None) -> Runtime:
    """A runtime whose Redis answered a PING."""
    from loopwright.assembly import build_runtime

    rt = build_runtime(settings or load_settings())
    rt.ping()
    return rt


def emit_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def fmt_ts(ms: int | None) -> str:
    """Milliseconds since the epoch as a local-free UTC timestamp."""
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def preview(value: Any, width: int = 60) -> str:
    """Short one-line JSON preview, safe to print through rich (see ``literal``)."""
    if value is None:
        return ""
    text = json.dumps(value, default=str)
    return literal(text if len(text) <= width else text[: width - 1] + "…")


STATUS_STYLE = {
    "completed": "green",
    "failed": "red",
    "cancelled": "yellow",
    "running": "cyan",
    "queued": "white",
    "sleeping": "blue",
    "waiting": "blue",
    "done": "green",
    "retrying": "yellow",
}


def styled(status: str) -> str:
    """Status wrapped in rich markup (the status itself printed literally)."""
    return f"[{STATUS_STYLE.get(status, 'white')}]{literal(status)}[/]"


def live_workers(rt: Runtime) -> int:
    """Workers on the runtime's queue that are alive (``service.health.live_workers``)."""
    from loopwright.service.health import live_workers as count

    return count(rt)
