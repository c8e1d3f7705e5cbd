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
    """Workers on the runtime's queue that are alive.

    RQ's ``Worker.all`` lists a SIGKILLed worker until its key expires, and an idle worker
    beats only once per dequeue timeout (minutes), so neither the listing nor the key's TTL
    tells a dead worker from a quiet one. A worker on this host is alive when its process
    exists; a worker elsewhere when its last heartbeat is younger than its TTL. ``doctor``
    and ``run --wait`` both count through here.
    """
    import socket
    import time

    from rq import Worker

    here = socket.gethostname()
    live = 0
    for w in Worker.all(queue=rt.dispatcher.queue):
        if w.hostname == here and w.pid:
            live += _process_exists(w.pid)
            continue
        beat = w.last_heartbeat
        ttl = float(w.worker_ttl or 420)  # RQ's default
        if beat is not None and time.time() - beat.timestamp() <= ttl + 60:
            live += 1
    return live


def _process_exists(pid: int) -> bool:
    """Whether ``pid`` is a running process (a zombie, killed but not reaped, is not)."""
    import os
    from pathlib import Path

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: trust kill(0)
    return stat.rpartition(")")[2].split()[:1] != ["Z"]
