"""The guest: runs one skill run inside the sandbox and talks to the host over JSON lines.

Started as ``python -I -m loopwright.sandbox.guest`` (by the process backend inside
bubblewrap, or in a container). It loads nothing but this module, the policy and the SDK, says
``ready``, waits for ``start``, compiles the skill with the restricted policy and calls it with
a ``GuestContext`` whose every ``ctx.step.*``/``ctx.tools.*`` call is a request to the host.
A guest runs one run and exits, so nothing leaks from one run to the next.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import IO, Any, NoReturn

import loopwright.sdk as sdk_package
from loopwright.sandbox.pins import PinnedClock, Pins
from loopwright.sandbox.policy import (
    GuardViolation,
    PolicyViolation,
    compile_skill,
    make_globals,
)
from loopwright.sandbox.protocol import decode, encode
from loopwright.sdk import NonRetriableError, StepFailedError, spec_of
from loopwright.sdk.errors import InfrastructureError
from loopwright.sdk.retry import RETRIED, Failure
from loopwright.sdk.state import encode_value
from loopwright.sdk.steps import StepKind

# The SDK loads its names on first use (``sdk/__init__.py``); a guest loads them all before it
# says ready, so no import runs while skill code does (and a warm guest pays for it once).
for _name in sdk_package.__all__:
    getattr(sdk_package, _name)


class HostToolError(InfrastructureError):
    """A host tool failed in a way worth retrying (timeout, 5xx, connection refused)."""


class _Stop(BaseException):
    """The host ended this run (parked or failed it); unwind without another request."""


class Channel:
    """Request/response over the guest's stdin/stdout pair."""

    def __init__(self, inp: IO[bytes], out: IO[bytes]) -> None:
        self._in = inp
        self._out = out
        self._next = 0
        self.clock: PinnedClock | None = None  # a replay's clock, moved by ``clock_ms``

    def send(self, message: dict[str, Any]) -> None:
        self._out.write(encode(message))
        self._out.flush()

    def recv(self) -> dict[str, Any]:
        line = self._in.readline()
        if not line:
            raise _Stop("the host closed the channel")
        return decode(line)

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        self._next += 1
        self.send({"id": self._next, "op": op, **fields})
        reply = self.recv()
        if self.clock is not None and isinstance(reply.get("clock_ms"), int):
            self.clock.advance_to(reply["clock_ms"])
        if "stop" in reply:
            raise _Stop(str(reply["stop"]))
        if "error" in reply:
            _raise(reply["error"])
        ok = reply.get("ok", {})
        return ok if isinstance(ok, dict) else {}


def _raise(error: dict[str, Any]) -> NoReturn:
    kind = error.get("type")
    message = str(error.get("message", "error"))
    if kind == "StepFailedError":
        raise StepFailedError(str(error.get("step", "?")), str(error.get("reason", message)))
    if kind == "NonRetriableError":
        raise NonRetriableError(message)
    raise HostToolError(message)


def _describe(exc: BaseException) -> str:
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<skill>"]
    where = f" (skill line {lines[-1]})" if lines else ""
    return f"{type(exc).__name__}: {exc}{where}"


class GuestStep:
    """``ctx.step`` in the guest: bodies run here, checkpoints live on the host."""

    def __init__(self, ch: Channel, max_output_bytes: int = 1024 * 1024) -> None:
        self._ch = ch
        self._cap = max_output_bytes

    def run(self, name: str, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` once per the host's checkpoints and retry policy."""
        began = self._ch.call("step.begin", name=str(name))
        if "output" in began:
            return began["output"]
        seq = began["seq"]
        while True:
            try:
                value = fn(*args, **kwargs)
            except RETRIED as exc:  # the host decides with the one retry policy
                failure = Failure.of(exc)
                retry = self._ch.call(
                    "step.fail", seq=seq, error=_describe(exc), **failure.to_wire()
                )
                time.sleep(float(retry.get("retry_in", 0)))
                continue
            try:
                text = json.dumps(value, separators=(",", ":"), allow_nan=False)
            except (TypeError, ValueError) as exc:
                self._ch.call(
                    "step.fail",
                    seq=seq,
                    error=f"step {name!r} output is not JSON ({exc}); return dicts, lists, "
                    f"strings, numbers, booleans or None",
                    retriable=False,
                )
                raise AssertionError("unreachable: the host fails the step") from None
            if len(text) > self._cap:  # checked here so a huge output never crosses the pipe
                self._ch.call(
                    "step.fail",
                    seq=seq,
                    error=f"step {name!r} output is {len(text)} bytes, over the {self._cap}-byte "
                    f"cap; store large data elsewhere and return a reference",
                    retriable=False,
                )
                raise AssertionError("unreachable: the host fails the step")
            done = self._ch.call("step.done", seq=seq, output_json=text)
            if "retry_in" in done:  # its ctx.state writes lost a race: run the body again
                time.sleep(float(done["retry_in"]))
                continue
            return json.loads(text)

    def sleep(self, name: str, duration: float | str) -> None:
        """Park the run for ``duration`` (the host decides and parks)."""
        self._ch.call("step.sleep", name=str(name), duration=duration)

    def sleep_until(self, name: str, when: float | str) -> None:
        """Park the run until ``when`` (epoch seconds or ISO 8601 with offset)."""
        self._ch.call("step.sleep", name=str(name), until=when)

    def llm(self, name: str, prompt: str, schema: dict[str, Any] | None = None) -> Any:
        """Ask the configured model once, as a checkpointed step on the host."""
        return self._ch.call(
            "step.other", kind=StepKind.LLM, name=str(name), prompt=prompt, schema=schema
        ).get("output")

    def invoke(self, name: str, skill: str, data: Any = None, timeout: Any = None) -> Any:
        """Start a child run (host-side)."""
        return self._ch.call(
            "step.other",
            kind=StepKind.INVOKE,
            name=str(name),
            skill=skill,
            data=data,
            timeout=timeout,
        ).get("output")

    def send_event(self, name: str, event: str, data: Any = None) -> Any:
        """Send an event (host-side)."""
        return self._ch.call(
            "step.other", kind=StepKind.SEND_EVENT, name=str(name), event=event, data=data
        ).get("output")

    def wait_for_event(self, name: str, event: str, match: Any = None, timeout: Any = "1h") -> Any:
        """Wait for an event (host-side)."""
        return self._ch.call(
            "step.other",
            kind=StepKind.WAIT_FOR_EVENT,
            name=str(name),
            event=event,
            match=match,
            timeout=timeout,
        ).get("output")


class GuestHttp:
    """``ctx.tools.http`` in the guest: the request is made by the host."""

    def __init__(self, ch: Channel) -> None:
        self._ch = ch

    def get_json(
        self, url: str, params: dict[str, Any] | None = None, headers: dict[str, Any] | None = None
    ) -> Any:
        """GET ``url`` on the host and return the decoded JSON body."""
        return self._ch.call(
            "tool", tool="http", method="get_json", url=url, params=params, headers=headers
        ).get("result")

    def post_json(self, url: str, body: Any, headers: dict[str, Any] | None = None) -> Any:
        """POST ``body`` on the host and return the decoded JSON answer."""
        return self._ch.call(
            "tool", tool="http", method="post_json", url=url, body=body, headers=headers
        ).get("result")


class GuestNotify:
    """``ctx.tools.notify`` in the guest: the inbox write happens on the host."""

    def __init__(self, ch: Channel) -> None:
        self._ch = ch

    def __call__(
        self,
        message: str,
        *,
        title: str | None = None,
        level: str = "info",
        channel: str | None = None,
    ) -> None:
        """Post ``message`` to the platform inbox (or a webhook channel named by a secret)."""
        self._ch.call(
            "tool", tool="notify", message=message, title=title, level=level, channel=channel
        )


class GuestTools:
    """``ctx.tools``: the host checks the skill declared the tool."""

    def __init__(self, ch: Channel) -> None:
        self.http = GuestHttp(ch)
        self.notify = GuestNotify(ch)


class GuestState:
    """``ctx.state`` in the guest: the host keeps the store and checks keys and values."""

    def __init__(self, ch: Channel) -> None:
        self._ch = ch

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        return self._ch.call("state", action="get", key=key, default=default).get("value")

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` when the step succeeds."""
        encode_value(str(key), value, 2**31)  # not JSON: a clear error here, not in the pipe
        self._ch.call("state", action="set", key=key, value=value)

    def delete(self, key: str) -> None:
        """Remove ``key`` when the step succeeds."""
        self._ch.call("state", action="delete", key=key)

    def update(self, key: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """Store ``fn(current value or default)`` (compare-and-set) and return it."""
        value = fn(self.get(key, default))
        self.set(key, value)
        return value


class GuestLog:
    """``ctx.log`` in the guest."""

    def __init__(self, ch: Channel) -> None:
        self._ch = ch

    def info(self, message: str) -> None:
        """Record an informational line."""
        self._ch.call("log", level="info", message=str(message))

    def warning(self, message: str) -> None:
        """Record a warning."""
        self._ch.call("log", level="warning", message=str(message))

    def error(self, message: str) -> None:
        """Record an error line."""
        self._ch.call("log", level="error", message=str(message))


class GuestContext:
    """The ``Context`` a sandboxed skill receives."""

    def __init__(self, ch: Channel, start: dict[str, Any]) -> None:
        self.run_id = str(start.get("run_id", ""))
        self.event = start.get("event") or {}
        self.params = start.get("params") or {}
        self.step = GuestStep(ch, int(start.get("max_output_bytes") or 1024 * 1024))
        self.tools = GuestTools(ch)
        self.log = GuestLog(ch)
        self.state = GuestState(ch)


def _find_skill(namespace: dict[str, object]) -> Callable[..., Any]:
    found = [v for v in namespace.values() if callable(v) and spec_of(v) is not None]
    if len(found) != 1:
        raise NonRetriableError(f"expected one @skill function, found {len(found)}")
    return found[0]


def serve(ch: Channel) -> int:
    """Say ready, run the one run the host starts, report the end."""
    from loopwright import sdk

    ch.send({"op": "ready", "pid": os.getpid()})
    start = ch.recv()
    try:
        compiled = compile_skill(str(start["source"]), "<skill>")
        pins = Pins.from_start(start)  # a replay: datetime and random pinned (sandbox/pins.py)
        ch.clock = pins.clock if pins is not None else None
        namespace = make_globals("skill", sdk_module=sdk, pins=pins)
        exec(compiled.code, namespace)
        fn = _find_skill(namespace)
        value = fn(GuestContext(ch, start))
        try:
            text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            ch.send({"op": "end", "error": f"the skill's return value is not JSON ({exc})"})
            return 0
        cap = int(start.get("max_output_bytes") or 1024 * 1024)
        if len(text) > cap:
            ch.send(
                {
                    "op": "end",
                    "error": f"the skill's return value is {len(text)} bytes, "
                    f"over the {cap}-byte cap",
                }
            )
            return 0
        ch.send({"op": "end", "output_json": text})
    except _Stop:
        return 0
    except PolicyViolation as exc:
        first = exc.findings[0]
        ch.send(
            {
                "op": "end",
                "error": f"policy: line {first.line}: {first.message}",
                "findings": [f.to_dict() for f in exc.findings],
            }
        )
    except GuardViolation as exc:
        ch.send({"op": "end", "error": f"sandbox guard refused: {exc}"})
    except StepFailedError as exc:
        ch.send({"op": "end", "error": str(exc)})
    except MemoryError:
        ch.send({"op": "end", "error": "MemoryError: the skill ran out of its memory limit"})
    except RecursionError:
        ch.send({"op": "end", "error": "RecursionError: maximum recursion depth exceeded"})
    except BaseException as exc:  # the skill's own failure, reported to the author
        ch.send({"op": "end", "error": _describe(exc)})
    return 0


def main() -> int:
    """Entry point: keep fd 1 for the protocol only, then serve one run."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray writes to stdout (C extensions, print) cannot corrupt the channel
    sys.stdout = sys.stderr
    return serve(Channel(sys.stdin.buffer, out))


if __name__ == "__main__":
    sys.exit(main())
