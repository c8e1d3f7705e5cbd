"""The host side of a sandboxed run: answers the guest's requests with the runner's step logic.

The guest runs step bodies; everything durable (checkpoints, retry decisions, sleeps, host
tools with their idempotency keys, logs) happens here, through the same ``Execution``
primitives the in-process steps use. Control flow that ends the execution (park, lease lost,
non-determinism, timeout) propagates as exceptions; ``run_session`` then stops the guest.
"""

from __future__ import annotations

import json
from typing import Any

from redis.exceptions import RedisError

from loopwright.runner.context import LocalStep
from loopwright.runner.execution import Execution
from loopwright.runner.records import now_ms
from loopwright.runner.runlog import RunLogger
from loopwright.runner.state import CONFLICT_RETRIES, StateConflictError
from loopwright.runner.tools import HostTools
from loopwright.sandbox.host import RequestHandler
from loopwright.sdk.errors import NonRetriableError, StepFailedError
from loopwright.sdk.retry import Failure
from loopwright.sdk.steps import StepKind, host_kind

LOG_LEVELS = frozenset({"info", "warning", "error"})
RUN = StepKind.RUN
# Reply fields the host computes itself (never text from a tool, an upstream or the store).
PROTOCOL_FIELDS = frozenset({"seq", "retry_in", "type"})


def _duration(value: Any) -> float | str | None:
    """A duration from the guest: a number or a string (validated by the step), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value if isinstance(value, str) else None


class GuestHost(RequestHandler):
    """Handles one guest's requests for one execution."""

    passthrough = (RedisError,)  # infrastructure: the run is retried by another executor

    def __init__(self, ex: Execution) -> None:
        self.ex = ex
        self.step = LocalStep(ex)
        self.log = RunLogger(ex)
        self.tools = HostTools(ex)
        self._open: dict[int, tuple[str, int, int]] = {}  # seq -> (name, attempt, started)
        self._conflicts: dict[int, int] = {}  # seq -> ctx.state conflicts of its commit

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Every reply to the guest, with the values of the run's secrets redacted. The
        envelope's keys and its protocol fields are the host's own and are left alone, so even
        a one-character secret cannot break the protocol."""
        redact = self.ex.redactor.value
        return {
            kind: {f: v if f in PROTOCOL_FIELDS else redact(v) for f, v in body.items()}
            if isinstance(body, dict)
            else body
            for kind, body in super().handle(msg).items()
        }

    def _log(self, msg: dict[str, Any]) -> dict[str, Any]:
        level = str(msg.get("level"))
        if level in LOG_LEVELS:
            getattr(self.log, level)(str(msg.get("message", ""))[:4000])
        return {"ok": {}}

    def _begin(self, name: str) -> dict[str, Any]:
        # step.begin/done/fail is the guest's ``ctx.step.run``: the body runs in the guest.
        # The host's own steps (llm, invoke, send_event, wait_for_event) are ``step.other``.
        ex = self.ex
        ex.check_alive()
        seq, rec = ex.begin(name, RUN)
        attempts = 0
        if rec is not None:
            if rec.status == "done":
                return {"ok": {"output": rec.output}}
            if rec.status == "failed":
                raise StepFailedError(name, rec.error or "failed")
            attempts = rec.attempts
        self._start_attempt(seq, name, attempts + 1)
        return {"ok": {"seq": seq}}

    def _start_attempt(self, seq: int, name: str, attempt: int) -> None:
        self._open[seq] = (name, attempt, now_ms())
        self.ex.enter_step(seq)

    def _current(self, msg: dict[str, Any]) -> tuple[int, str, int, int]:
        seq = msg.get("seq")
        if not isinstance(seq, int) or seq not in self._open:
            raise NonRetriableError("protocol: no such step in progress")
        name, attempt, started = self._open.pop(seq)
        return seq, name, attempt, started

    def _done(self, msg: dict[str, Any]) -> dict[str, Any]:
        seq, name, attempt, started = self._current(msg)
        text = msg.get("output_json")
        cap = self.ex.runtime.settings.step_output_max_bytes
        if not isinstance(text, str):
            self.ex.fail(seq, name, attempt, started, f"step {name!r} output is missing", kind=RUN)
        size = len(text.encode("utf-8"))
        if size > cap:
            self.ex.fail(
                seq,
                name,
                attempt,
                started,
                f"step {name!r} output is {size} bytes, over the {cap}-byte cap; store large "
                f"data elsewhere and return a reference",
                kind=RUN,
            )
        try:
            json.loads(text)
        except ValueError:
            self.ex.fail(seq, name, attempt, started, f"step {name!r} output is not JSON", kind=RUN)
        try:
            self.ex.succeed(seq, name, attempt, started, text, kind=RUN)
        except StateConflictError as exc:  # ctx.state lost a race: the guest runs it again
            n = self._conflicts[seq] = self._conflicts.get(seq, 0) + 1
            if n <= CONFLICT_RETRIES:
                self.ex.check_alive()
                self._start_attempt(seq, name, attempt)
                return {"ok": {"retry_in": exc.seconds}}
            wait = self.ex.retry_or_fail(
                seq, name, attempt, started, str(exc), Failure.of(exc), kind=RUN
            )
            self.ex.check_alive()
            self._start_attempt(seq, name, attempt + 1)
            return {"ok": {"retry_in": wait}}
        return {"ok": {}}

    def _state(self, msg: dict[str, Any]) -> dict[str, Any]:
        buf = self.ex.state_buffer()  # refused outside a step
        action, key = msg.get("action"), msg.get("key")
        if action == "get":
            return {"ok": {"value": buf.get(key, msg.get("default"))}}
        if action == "set":
            buf.set(key, msg.get("value"))
        elif action == "delete":
            buf.delete(key)
        else:
            raise NonRetriableError(f"ctx.state has no action {str(action)[:40]!r}")
        return {"ok": {}}

    def _fail(self, msg: dict[str, Any]) -> dict[str, Any]:
        seq, name, attempt, started = self._current(msg)
        error = str(msg.get("error", "failed"))[:4000]
        failure = Failure.from_wire(msg.get("retriable"), msg.get("delay"))
        wait = self.ex.retry_or_fail(seq, name, attempt, started, error, failure, kind=RUN)
        self.ex.check_alive()
        self._start_attempt(seq, name, attempt + 1)
        return {"ok": {"retry_in": wait}}

    def _sleep(self, msg: dict[str, Any]) -> dict[str, Any]:
        name = str(msg.get("name", ""))
        if "until" in msg:
            self.step.sleep_until(name, msg["until"])
        else:
            self.step.sleep(name, msg.get("duration", 0))
        return {"ok": {}}

    def _other(self, msg: dict[str, Any]) -> dict[str, Any]:
        kind, name = host_kind(msg.get("kind")), str(msg.get("name", ""))
        if kind is StepKind.LLM:
            schema = msg.get("schema")
            out = self.step.llm(
                name, str(msg.get("prompt", "")), schema if isinstance(schema, dict) else None
            )
        elif kind is StepKind.INVOKE:
            out = self.step.invoke(
                name, str(msg.get("skill", "")), msg.get("data"), _duration(msg.get("timeout"))
            )
        elif kind is StepKind.SEND_EVENT:
            out = self.step.send_event(name, str(msg.get("event", "")), msg.get("data"))
        else:  # wait_for_event
            match = msg.get("match")
            out = self.step.wait_for_event(
                name,
                str(msg.get("event", "")),
                match if isinstance(match, dict) else None,
                _duration(msg.get("timeout")) or "1h",
            )
        return {"ok": {"output": out}}

    def _tool(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.ex.current_step is None:
            raise NonRetriableError(
                "host tools can only be called inside a step: wrap the call in ctx.step.run(...)"
            )
        tool = msg.get("tool")
        try:
            if tool == "notify":
                level = str(msg.get("level", "info"))
                title, channel = msg.get("title"), msg.get("channel")
                self.tools.notify(
                    str(msg.get("message", "")),
                    title=str(title) if title is not None else None,
                    level=level if level in LOG_LEVELS else "info",
                    channel=str(channel) if channel is not None else None,
                )
                return {"ok": {"result": None}}
            if tool == "http":
                http = self.tools.http
                url = str(msg.get("url", ""))
                raw_headers = msg.get("headers")
                headers = raw_headers if isinstance(raw_headers, dict) else None
                if msg.get("method") == "get_json":
                    params = msg.get("params")
                    result = http.get_json(
                        url, params if isinstance(params, dict) else None, headers
                    )
                elif msg.get("method") == "post_json":
                    result = http.post_json(url, msg.get("body"), headers)
                else:
                    raise NonRetriableError(f"http tool has no method {msg.get('method')!r}")
                return {"ok": {"result": result}}
        except NonRetriableError:
            raise
        except Exception as exc:  # transient tool failure: the guest's retry policy applies
            return {"error": {"type": "HostToolError", "message": f"{type(exc).__name__}: {exc}"}}
        raise NonRetriableError(f"unknown tool {tool!r}")
