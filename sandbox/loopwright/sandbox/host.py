"""The host's side of one guest session: send ``start``, answer requests, collect ``end``."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any, Protocol

from loopwright.sandbox.protocol import ProtocolError, decode, encode


class SandboxError(Exception):
    """The guest failed as a process: crashed, broke the protocol, or could not start."""


class GuestTimeoutError(SandboxError):
    """The guest used up its wall-clock time and was killed."""


class Guest(Protocol):
    """A started guest, whatever the backend (process or container)."""

    def send(self, data: bytes) -> None:
        """Write bytes to the guest's channel."""
        ...

    def read_line(self, deadline: float | None) -> bytes | None:
        """The next line from the guest; None when it closed the channel."""
        ...

    def kill(self) -> None:
        """Stop the guest and everything it started, now."""
        ...

    def describe_exit(self) -> str:
        """How the guest ended (exit code or signal) and the tail of its stderr."""
        ...


Handler = Callable[[dict[str, Any]], dict[str, Any]]


def wait_ready(guest: Guest, timeout: float) -> int:
    """Wait for the guest's ``ready`` line; returns its pid."""
    try:
        line = guest.read_line(time.monotonic() + timeout)
    except TimeoutError:
        guest.kill()
        raise SandboxError(f"the guest did not start within {timeout:g}s") from None
    if line is None:
        raise SandboxError(f"the guest exited before it was ready: {guest.describe_exit()}")
    msg = decode(line)
    if msg.get("op") != "ready":
        guest.kill()
        raise SandboxError(f"the guest spoke before it was ready: {msg.get('op')!r}")
    return int(msg.get("pid", 0))


def run_session(
    guest: Guest, start: dict[str, Any], handler: Handler, deadline: float | None
) -> dict[str, Any]:
    """Drive one run in ``guest``; returns its ``end`` message.

    Whatever the handler raises (the run parks, is fenced out, times out) ends the session:
    the guest is told to stop and killed, and the exception propagates to the runner. The
    guest is always killed before this returns, so it can never outlive its run.
    """
    try:
        guest.send(encode({"op": "start", **start}))
        while True:
            try:
                line = guest.read_line(deadline)
            except TimeoutError:
                raise GuestTimeoutError("the guest ran out of time") from None
            except ProtocolError as exc:
                raise SandboxError(f"the guest broke the protocol: {exc}") from None
            if line is None:
                raise SandboxError(f"the guest died: {guest.describe_exit()}")
            try:
                msg = decode(line)
            except ProtocolError as exc:
                raise SandboxError(f"the guest broke the protocol: {exc}") from None
            if msg.get("op") == "end":
                return msg
            try:
                reply = handler(msg)
            except BaseException:
                _best_effort(guest, {"id": msg.get("id"), "stop": "ended by the host"})
                raise
            try:
                data = encode({"id": msg.get("id"), **reply})
            except ValueError as exc:  # e.g. NaN from an upstream: refuse it, keep the host up
                data = encode(
                    {
                        "id": msg.get("id"),
                        "error": {
                            "type": "NonRetriableError",
                            "message": f"the host's answer is not strict JSON ({exc})",
                        },
                    }
                )
            guest.send(data)
    except (BrokenPipeError, ConnectionError):
        raise SandboxError(f"the guest died: {guest.describe_exit()}") from None
    finally:
        guest.kill()


def _best_effort(guest: Guest, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError, ValueError):
        guest.send(encode(message))
