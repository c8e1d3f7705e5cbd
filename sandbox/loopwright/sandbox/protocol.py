"""The JSON-lines protocol between the host (a worker) and a sandboxed guest process.

Only JSON crosses the boundary, one object per line, never pickle. The guest speaks first
(``ready``), the host sends ``start``, then every ``ctx.step.*`` and ``ctx.tools.*`` call in
the guest is a request ``{"id": n, "op": ...}`` that the host answers with exactly one of
``{"id": n, "ok": {...}}``, ``{"id": n, "error": {"type", "message", ...}}`` or
``{"id": n, "stop": reason}`` (the guest must end: the host parks or fails the run and kills
it). The guest ends with ``{"op": "end", "output": ...}`` or ``{"op": "end", "error": ...}``.

A replay batch (the sidecar's replays of one source) sends ``start`` with ``"batch": true``:
each ``end`` then carries ``reuse`` and the guest waits for ``{"op": "next", ...}`` (the next
run's fields, the batch's source) or for the channel to close (``guest.py``'s ``serve``).

Operations (guest -> host): ``step.begin``, ``step.done``, ``step.fail``, ``step.sleep``,
``step.other`` (invoke/send_event/wait_for_event/llm), ``tool``, ``log``, ``end``.
"""

from __future__ import annotations

import json
import os
import select
import time
from typing import Any

from loopwright.sdk.errors import PlatformError

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class ProtocolError(PlatformError):
    """A message that is not one JSON object on one line, or is over the size cap."""


def encode(message: dict[str, Any]) -> bytes:
    """One message as a JSON line: strict JSON (no NaN/Infinity), ASCII only, so a lone
    surrogate or any other unencodable text cannot break the channel."""
    return json.dumps(message, separators=(",", ":"), allow_nan=False).encode("ascii") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    """A JSON line back into a message; ``ProtocolError`` for anything else."""
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not a JSON line: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError("a message must be a JSON object")
    return value


SEND_TIMEOUT = 30.0  # a send without a deadline still ends: a guest may stop reading


def write_all(fd: int, data: bytes, deadline: float | None) -> None:
    """Write ``data`` to a non-blocking ``fd`` by ``deadline`` (or ``SEND_TIMEOUT`` from now).

    A guest that stops reading its input fills the pipe; a blocking write would then hold the
    host past the run's deadline. ``TimeoutError`` when the guest does not take it in time.
    """
    end = deadline if deadline is not None else time.monotonic() + SEND_TIMEOUT
    view = memoryview(data)
    while view:
        left = end - time.monotonic()
        if left <= 0:
            raise TimeoutError("the guest stopped reading its input")
        _, ready, _ = select.select([], [fd], [], left)
        if not ready:
            continue
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            continue


class LineReader:
    """Reads capped lines from a file descriptor with a deadline (host side of a pipe)."""

    def __init__(self, fd: int, limit: int = DEFAULT_MAX_MESSAGE_BYTES) -> None:
        self._fd = fd
        self._limit = limit
        self._buf = bytearray()
        self._eof = False

    def read_line(self, deadline: float | None) -> bytes | None:
        """The next line without its newline; None at EOF. ``TimeoutError`` past the deadline."""
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line
            if len(self._buf) > self._limit:
                raise ProtocolError(f"message over the {self._limit}-byte cap")
            if self._eof:
                return None
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._fd], [], [], timeout)
            if not ready:
                raise TimeoutError("the guest did not answer in time")
            chunk = os.read(self._fd, 1 << 16)
            if not chunk:
                self._eof = True
            self._buf += chunk
