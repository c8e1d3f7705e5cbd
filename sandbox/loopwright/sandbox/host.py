"""The host's side of one guest session: send ``start``, answer requests, collect ``end``."""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

from loopwright.sandbox.protocol import ProtocolError, decode, encode
from loopwright.sdk.errors import InfrastructureError, NonRetriableError, StepFailedError
from loopwright.sdk.state import MemoryState


class SandboxError(InfrastructureError):
    """The guest failed as a process: crashed, broke the protocol, or could not start."""


class GuestTimeoutError(SandboxError):
    """The guest used up its wall-clock time and was killed."""


class Guest(Protocol):
    """A started guest, whatever the backend (process or container)."""

    def send(self, data: bytes, deadline: float | None = None) -> None:
        """Write bytes to the guest's channel by ``deadline``; ``TimeoutError`` after it."""
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
    guest: Guest,
    start: dict[str, Any],
    handler: Handler,
    deadline: float | None,
    *,
    op: str = "start",
    keep: bool = False,
) -> dict[str, Any]:
    """Drive one run in ``guest``; returns its ``end`` message.

    Whatever the handler raises (the run parks, is fenced out, times out) ends the session:
    the guest is told to stop and killed, and the exception propagates to the runner. The
    guest is always killed before this returns, so it can never outlive its run; except with
    ``keep`` (a replay batch, ``guest.py``'s ``serve``), where a guest that ended its run
    cleanly is left running for the caller to send it the batch's ``next`` run (``op``) or to
    kill it. A run that fails as a process (timeout, crash, broken protocol, a host error)
    kills its guest in every mode.
    """
    ended = False
    try:
        _send(guest, encode({"op": op, **start}), deadline)
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
                ended = True
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
            _send(guest, data, deadline)
    except (BrokenPipeError, ConnectionError):
        raise SandboxError(f"the guest died: {guest.describe_exit()}") from None
    finally:
        if not (keep and ended):
            guest.kill()


def _send(guest: Guest, data: bytes, deadline: float | None) -> None:
    """Send under the run's deadline: a guest that stops reading cannot hold the host."""
    try:
        guest.send(data, deadline)
    except TimeoutError:
        raise GuestTimeoutError(
            "the guest ran out of time (it stopped reading its input)"
        ) from None


def _best_effort(guest: Guest, message: dict[str, Any]) -> None:
    with contextlib.suppress(OSError, ValueError):  # TimeoutError is an OSError
        guest.send(encode(message), time.monotonic() + 0.5)


def failed_reply(exc: StepFailedError) -> dict[str, Any]:
    """The reply that raises ``StepFailedError`` in the guest."""
    return {
        "error": {
            "type": "StepFailedError",
            "step": exc.step,
            "reason": exc.reason,
            "message": str(exc),
        }
    }


REFUSAL_MAX_CHARS = 2000


def quoted(value: Any, limit: int = 64) -> str:
    """``repr`` of a value a guest sent, cut to ``limit`` characters: a refusal names what it
    refuses but never echoes a guest's input back in full (a 5 MB op name)."""
    text = repr(value if isinstance(value, str | int | float | bool | None) else type(value))
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def refused_reply(message: str) -> dict[str, Any]:
    """The reply that raises ``NonRetriableError`` in the guest (its message capped)."""
    if len(message) > REFUSAL_MAX_CHARS:
        message = message[:REFUSAL_MAX_CHARS] + " [cut]"
    return {"error": {"type": "NonRetriableError", "message": message}}


class RequestHandler(ABC):
    """Routes one guest request to its operation and turns skill-level errors into replies.

    Subclasses implement the operations (``_begin`` takes the step name; the others the whole
    message). Exceptions listed in ``passthrough`` (infrastructure) propagate; ``_translate``
    may map other exceptions to a reply; anything else becomes a refusal, so a request the host
    cannot serve never crashes it. Control flow (``BaseException``) always propagates.
    """

    passthrough: tuple[type[Exception], ...] = ()
    _scratch: MemoryState | None = None  # the default ctx.state (see ``_state``)

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        """One request -> one reply (``{"ok": ...}`` or ``{"error": ...}``)."""
        op = msg.get("op")
        routes: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "step.done": self._done,
            "step.fail": self._fail,
            "step.sleep": self._sleep,
            "step.other": self._other,
            "tool": self._tool,
            "log": self._log,
            "state": self._state,
        }
        try:
            if op == "step.begin":
                return self._begin(str(msg.get("name", "")))
            route = routes.get(str(op))
            if route is not None:
                return route(msg)
        except StepFailedError as exc:
            return failed_reply(exc)
        except NonRetriableError as exc:
            return refused_reply(str(exc))
        except self.passthrough:
            raise
        except Exception as exc:
            reply = self._translate(exc)
            if reply is not None:
                return reply
            return refused_reply(
                f"the host could not serve {quoted(op)}: {type(exc).__name__}: {exc}"
            )
        return refused_reply(f"unknown request {quoted(op)}")

    def _translate(self, exc: Exception) -> dict[str, Any] | None:
        """A reply for an exception this host understands, or None."""
        return None

    @abstractmethod
    def _begin(self, name: str) -> dict[str, Any]:
        """Start (or replay) the step named ``name``."""

    @abstractmethod
    def _done(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Checkpoint a step's output."""

    @abstractmethod
    def _fail(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Decide what follows a failed attempt."""

    @abstractmethod
    def _sleep(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A durable sleep."""

    @abstractmethod
    def _other(self, msg: dict[str, Any]) -> dict[str, Any]:
        """invoke, send_event, wait_for_event, llm."""

    @abstractmethod
    def _tool(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A host tool call inside a step."""

    @abstractmethod
    def _log(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A ``ctx.log`` line."""

    def _state(self, msg: dict[str, Any]) -> dict[str, Any]:
        """A ``ctx.state`` request (``action``: get, set, delete). By default a scratch store
        that starts empty and lives as long as this handler (the sidecar's test cases); the
        runner's host keeps the durable one (``runner/remote.py``)."""
        if self._scratch is None:
            self._scratch = MemoryState()
        store, action, key = self._scratch, msg.get("action"), msg.get("key")
        if action == "get":
            return {"ok": {"value": store.get(key, msg.get("default"))}}
        if action == "set":
            store.set(key, msg.get("value"))
        elif action == "delete":
            store.delete(key)
        else:
            raise NonRetriableError(f"ctx.state has no action {quoted(action)}")
        return {"ok": {}}
