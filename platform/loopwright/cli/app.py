"""The root command group: every expected failure becomes one line on stderr.

Typer ships its own copy of click (``typer._click``); catching the separate ``click`` package's
exceptions misses every usage error. The translation therefore lives in the group's ``invoke``,
the one choke point both the console script and typer's ``CliRunner`` pass through: usage
errors stay click's own (the usage line, exit 2), the platform's errors become
``loopwright: error: MESSAGE`` with exit 1, and only a genuine bug keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import IO, Any

from typer._click.exceptions import ClickException

from loopwright.cli.lazy import LazyGroup
from loopwright.cli.text import one_line


class CommandFailed(ClickException):
    """A command failed for a reason its message explains: printed as one line, exit 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        (file or sys.stderr).write(f"loopwright: error: {one_line(self.message)}\n")


def failure_message(exc: BaseException) -> str | None:
    """The one line to print for an expected failure, or ``None`` for a bug."""
    from pydantic_core import ValidationError
    from redis.exceptions import RedisError

    from loopwright.errors import LoopwrightError

    if isinstance(exc, LoopwrightError):
        return str(exc)
    if isinstance(exc, RedisError):
        return f"Redis error: {exc} (is Redis up? see 'loopwright doctor')"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "?"
        return f"invalid value for {loc}: {first['msg']}"
    return None


class LoopwrightGroup(LazyGroup):
    """The root group: commands load on use (``cli/lazy.py``), failures are one line."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ClickException:
            raise
        except Exception as exc:
            message = failure_message(exc)
            if message is None:
                raise
            raise CommandFailed(message) from exc
