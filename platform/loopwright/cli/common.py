"""Shared CLI plumbing: settings and runtime at the edge, JSON or rich output, one-line errors."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from loopwright.assembly import build_runtime
from loopwright.errors import UserError
from loopwright.runner.runtime import Runtime
from loopwright.settings import Settings

JsonFlag = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]

console = Console()
err_console = Console(stderr=True)


def load_settings() -> Settings:
    """Settings from the environment, or one readable line about the bad variable."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else "?"
        raise UserError(f"invalid setting LOOPWRIGHT_{field.upper()}: {first['msg']}") from None


def open_runtime(settings: Settings | None = None) -> Runtime:
    """A runtime whose Redis answered a PING."""
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
    """Short one-line JSON preview."""
    if value is None:
        return ""
    text = json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


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
    """Status wrapped in rich markup."""
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"
