"""The guest: runs one skill run inside the sandbox and talks to the host over JSON lines.

Started as ``python -I -m loopwright.sandbox.guest`` (by the process backend inside
bubblewrap, or in a container). It loads nothing but this module, the policy and the SDK, says
``ready``, waits for ``start``, compiles the skill with the restricted policy and calls it with
a ``GuestContext`` whose every ``ctx.step.*``/``ctx.tools.*`` call is a request to the host.
A guest runs one run and exits, so nothing leaks from one run to the next; the one exception
is a replay batch (:func:`serve`): recordings of one skill source replayed for one review run
in turn in one guest, each from fresh globals, a fresh exec and a fresh context, under the
same policy and the same process limits.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import json
import os
import sys
import time
import traceback
import types
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
from loopwright.sdk.spec import SKILL_ATTR
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


# A batch guest serves another run only while that run gets what a fresh guest would give it:
# CPU seconds within the rlimit's granularity, memory within a few pages of the first run's.
BATCH_CPU_SLACK = 0.5  # seconds of CPU the guest may have used since its first run started
BATCH_MEMORY_SLACK = 8 * 1024 * 1024  # bytes its size may have grown since then


def _usage() -> tuple[float, int, int] | None:
    """CPU seconds used by this process, its address-space size and resident size in bytes
    (None when ``/proc`` cannot tell: the guest then serves no further run)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            size, resident = (int(v) for v in f.read().split()[:2])
    except (OSError, ValueError):
        return None
    page = os.sysconf("SC_PAGE_SIZE")
    return time.process_time(), size * page, resident * page


class _Skill:
    """The batch's source, compiled once; its policy refusal kept to give every run."""

    def __init__(self, source: Any) -> None:
        self.source = source  # None: the start had none (a KeyError for the run, as ever)
        self._compiled: Any = None
        self._refused: PolicyViolation | None = None

    def code(self) -> Any:
        if self._refused is not None:
            raise self._refused
        if self._compiled is None:
            if self.source is None:
                raise KeyError("source")
            try:
                self._compiled = compile_skill(str(self.source), "<skill>").code
            except PolicyViolation as exc:
                self._refused = exc
                raise
        return self._compiled


class _Marks:
    """The one write a skill can make to an object it shares with later runs of its guest:
    ``@skill(...)`` marks whatever function it decorates (a stdlib function too). In a batch
    the guest's SDK records every mark and :meth:`undo` removes them after each run, so the
    next run sees every shared function as a fresh guest has it."""

    def __init__(self) -> None:
        self._done: list[tuple[Any, Any]] = []

    def sdk(self) -> types.ModuleType:
        """``loopwright.sdk`` with a ``skill`` that records what it marks."""
        from loopwright import sdk

        real = sdk.skill
        done = self._done

        @functools.wraps(real)
        def skill(*args: Any, **kwargs: Any) -> Callable[[Any], Any]:
            decorate = real(*args, **kwargs)  # its own errors, as a fresh guest gives them

            @functools.wraps(decorate)
            def mark(fn: Any) -> Any:
                held = getattr(fn, "__dict__", None)
                done.append((fn, held.get(SKILL_ATTR, _NONE) if isinstance(held, dict) else _NONE))
                return decorate(fn)

            return mark

        proxy = types.ModuleType(sdk.__name__, sdk.__doc__)
        names = list(sdk.__all__)
        for name in names:
            setattr(proxy, name, getattr(sdk, name))
        proxy.skill = skill  # type: ignore[attr-defined]
        proxy.__all__ = names  # type: ignore[attr-defined]
        return proxy

    def undo(self) -> None:
        """Give every function marked since the last undo its attribute back."""
        while self._done:
            fn, before = self._done.pop()
            held = getattr(fn, "__dict__", None)
            if not isinstance(held, dict):
                continue
            if before is _NONE:
                held.pop(SKILL_ATTR, None)
            else:
                held[SKILL_ATTR] = before


_NONE = object()


def run_one(
    ch: Channel, skill: _Skill, start: dict[str, Any], sdk: types.ModuleType | None = None
) -> dict[str, Any] | None:
    """One run from scratch: fresh globals (imports, the pinned clock and random, the print
    buffer), a fresh exec of the compiled code, a fresh context. Its ``end`` message, or None
    when the host stopped it. ``sdk``: the SDK module the skill imports (a batch's records
    its marks: :class:`_Marks`)."""
    if sdk is None:
        from loopwright import sdk

    try:
        code = skill.code()
        pins = Pins.from_start(start)  # a replay: datetime and random pinned (sandbox/pins.py)
        ch.clock = pins.clock if pins is not None else None
        namespace = make_globals("skill", sdk_module=sdk, pins=pins)
        exec(code, namespace)
        fn = _find_skill(namespace)
        value = fn(GuestContext(ch, start))
        try:
            text = json.dumps(value, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError) as exc:
            return {"op": "end", "error": f"the skill's return value is not JSON ({exc})"}
        cap = int(start.get("max_output_bytes") or 1024 * 1024)
        if len(text) > cap:
            return {
                "op": "end",
                "error": f"the skill's return value is {len(text)} bytes, over the {cap}-byte cap",
            }
        return {"op": "end", "output_json": text}
    except _Stop:
        return None
    except PolicyViolation as exc:
        first = exc.findings[0]
        return {
            "op": "end",
            "error": f"policy: line {first.line}: {first.message}",
            "findings": [f.to_dict() for f in exc.findings],
        }
    except GuardViolation as exc:
        return {"op": "end", "error": f"sandbox guard refused: {exc}"}
    except StepFailedError as exc:
        return {"op": "end", "error": str(exc)}
    except MemoryError:
        return {
            "op": "end",
            "error": "MemoryError: the skill ran out of its memory limit",
            "reuse": False,
        }
    except RecursionError:
        return {"op": "end", "error": "RecursionError: maximum recursion depth exceeded"}
    except BaseException as exc:  # the skill's own failure, reported to the author
        return {"op": "end", "error": _describe(exc)}
    finally:
        ch.clock = None


def serve(ch: Channel) -> int:
    """Say ready, run the run the host starts, report the end.

    A ``start`` with ``"batch": true`` (the sidecar's replays: recordings of one source, for
    one review) keeps the guest after the run's ``end``: the host may send ``{"op": "next",
    ...}`` with the next run's fields (``run_id``, ``event``, ``params``,
    ``max_output_bytes``, ``pin``; the source is the batch's, compiled once) and the next run
    starts from scratch (:func:`run_one`). Each ``end`` of a batch says ``reuse``: whether
    this guest can give another run the limits a fresh guest would (its CPU time and size
    since its first run within ``BATCH_CPU_SLACK`` and ``BATCH_MEMORY_SLACK``, and no
    ``MemoryError``); the host starts a fresh guest when it cannot. Any other message, or the
    channel closing, ends the guest.
    """
    ch.send({"op": "ready", "pid": os.getpid()})
    start = ch.recv()
    skill = _Skill(start.get("source"))
    if not start.get("batch"):
        end = run_one(ch, skill, start)
        if end is not None:
            ch.send(end)
        return 0
    marks = _Marks()
    sdk = marks.sdk()
    with contextlib.suppress(Exception):
        skill.code()  # compiled before the baseline; a refusal is given to every run
    gc.collect()
    gc.freeze()  # the guest's own objects: each run's collection walks only the run's
    first = _usage()
    while True:
        end = run_one(ch, skill, start, sdk)
        if end is None:
            return 0
        marks.undo()
        gc.collect()  # the run's globals are a cycle (functions <-> namespace): free them now
        now = _usage()
        reuse = end.get("reuse", True) and first is not None and now is not None
        if first is not None and now is not None:
            reuse = (
                reuse
                and now[0] - first[0] <= BATCH_CPU_SLACK
                and now[1] - first[1] <= BATCH_MEMORY_SLACK
                and now[2] - first[2] <= BATCH_MEMORY_SLACK
            )
        ch.send({**end, "reuse": bool(reuse)})
        try:
            nxt = ch.recv()
        except _Stop:  # the host closed the channel: the batch is over
            return 0
        if nxt.get("op") != "next" or not reuse:
            return 0
        start = nxt


def main() -> int:
    """Entry point: keep fd 1 for the protocol only, then serve one run."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray writes to stdout (C extensions, print) cannot corrupt the channel
    sys.stdout = sys.stderr
    return serve(Channel(sys.stdin.buffer, out))


if __name__ == "__main__":
    sys.exit(main())
