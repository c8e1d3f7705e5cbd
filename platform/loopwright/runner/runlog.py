"""``ctx.log`` on the host: lines appended to the run's capped log list."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from loopwright.runner.records import now_ms

if TYPE_CHECKING:
    from loopwright.runner.execution import Execution


class RunLogger:
    """``ctx.log``: appends to the run's capped log list; silent while replaying."""

    def __init__(self, ex: Execution) -> None:
        self._ex = ex

    def _write(self, level: str, message: str) -> None:
        ex = self._ex
        if ex.replaying:
            return
        message = ex.redactor.text(str(message))
        line = json.dumps(
            {"ts": now_ms(), "level": level, "step": ex.seq, "message": str(message)[:4000]}
        )
        key = ex.runtime.keys.logs(ex.run_id)
        pipe = ex.runtime.redis.pipeline(transaction=False)
        pipe.rpush(key, line)
        pipe.ltrim(key, -ex.runtime.settings.run_log_max_entries, -1)
        pipe.execute()

    def info(self, message: str) -> None:
        """Record an informational line."""
        self._write("info", message)

    def warning(self, message: str) -> None:
        """Record a warning."""
        self._write("warning", message)

    def error(self, message: str) -> None:
        """Record an error line."""
        self._write("error", message)
