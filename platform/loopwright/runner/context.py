"""The in-process ``Context``: durable steps executed in the worker (trusted skills).

``LocalStep`` is ``ctx.step``: it runs step bodies here and uses the ``Execution`` primitives
(``runner/execution.py``) for checkpoints, retries and parking.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from loopwright.runner.execution import Execution
from loopwright.runner.records import encode_json, now_ms
from loopwright.runner.runlog import RunLogger
from loopwright.runner.state import CONFLICT_RETRIES, LocalState, StateConflictError
from loopwright.runner.tools import check_step
from loopwright.sdk.durations import parse_duration
from loopwright.sdk.errors import NonRetriableError, StepFailedError, StepOutputError
from loopwright.sdk.retry import MAX_DELAY_S, RETRIED, Failure
from loopwright.sdk.steps import StepKind

if TYPE_CHECKING:
    from loopwright.runner.tools import HostTools

T = TypeVar("T")


class LocalStep:
    """``ctx.step`` for in-process execution."""

    def __init__(self, ex: Execution) -> None:
        self._ex = ex

    def run(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` once, retrying per the skill's policy; replay returns the checkpoint."""
        return self._body(StepKind.RUN, name, fn, args, kwargs)

    def _body(
        self,
        kind: StepKind,
        name: str,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        """A step whose body runs here (``run``, ``llm``): checkpointed, retried, replayed."""
        ex = self._ex
        seq, rec = ex.begin(name, kind)
        attempts = 0
        if rec is not None:
            if rec.status == "done":
                return rec.output  # type: ignore[no-any-return]
            if rec.status == "failed":
                raise StepFailedError(name, rec.error or "failed")
            attempts = rec.attempts
        max_bytes = ex.runtime.settings.step_output_max_bytes
        conflicts = 0
        while True:
            ex.check_alive()
            attempts += 1
            started = now_ms()
            ex.enter_step(seq)
            try:
                value = fn(*args, **kwargs)
                encoded = encode_json(value, what=f"step {name!r} output", max_bytes=max_bytes)
            except RETRIED as exc:  # a skill's sys.exit() must not end the worker
                failure, error = Failure.of(exc), _error(exc)
            else:
                try:
                    ex.succeed(seq, name, attempts, started, encoded, kind=kind)
                    return json.loads(encoded)  # type: ignore[no-any-return]
                except StateConflictError as exc:  # ctx.state lost a race: run it again
                    conflicts += 1
                    if conflicts <= CONFLICT_RETRIES:
                        attempts -= 1  # not a failure of the step: the same attempt again
                        time.sleep(exc.seconds)
                        continue
                    failure, error = Failure.of(exc), _error(exc)
            finally:
                ex.current_step = None
            time.sleep(ex.retry_or_fail(seq, name, attempts, started, error, failure, kind=kind))

    def sleep(self, name: str, duration: float | str) -> None:
        """Park the run for ``duration``."""
        seconds = _seconds(duration)
        self._ex.sleep(name, lambda: now_ms() + int(seconds * 1000))

    def sleep_until(self, name: str, when: datetime | float | str) -> None:
        """Park the run until ``when``."""
        if isinstance(when, datetime):
            if when.tzinfo is None:
                raise NonRetriableError("sleep_until needs a timezone-aware datetime")
            target = int(when.timestamp() * 1000)
        elif isinstance(when, str):
            try:
                parsed = datetime.fromisoformat(when)
            except ValueError:
                raise NonRetriableError(f"sleep_until: {when!r} is not ISO 8601") from None
            if parsed.tzinfo is None:
                raise NonRetriableError("sleep_until needs a time with a UTC offset")
            target = int(parsed.timestamp() * 1000)
        elif isinstance(when, int | float) and not isinstance(when, bool):
            if not abs(when) < 1e11:  # also refuses NaN and infinity
                raise NonRetriableError(f"sleep_until: {when!r} is not a time")
            target = int(when * 1000)
        else:
            raise NonRetriableError(f"sleep_until: cannot read a time from {when!r}")
        if target - now_ms() > MAX_DELAY_S * 1000:
            raise NonRetriableError("sleep_until: that is more than a year away")
        self._ex.sleep(name, lambda: target)

    def llm(self, name: str, prompt: str, schema: dict[str, Any] | None = None) -> Any:
        """Ask the configured model once, as a checkpointed step."""
        check_step(self._ex, "llm")
        ex = self._ex

        def ask(p: str, s: dict[str, Any] | None) -> Any:  # recorded for replay
            req = {"prompt": p, "schema": s}
            call = lambda: ex.runtime.llm_complete(p, s)  # noqa: E731
            return ex.recorded_call("llm", req, call, usage=True)

        return self._body(StepKind.LLM, name, ask, (prompt, schema), {})

    def invoke(
        self,
        name: str,
        skill: str,
        data: dict[str, Any] | None = None,
        timeout: float | str | None = None,
    ) -> Any:
        """Start ``skill`` as a child run and return its output (its failure fails the step)."""
        seconds = _seconds(timeout) if timeout is not None else None
        return self._ex.invoke(name, skill, data, seconds, self._ex.trusted)

    def send_event(self, name: str, event: str, data: dict[str, Any] | None = None) -> str:
        """Send an event once per step; returns its id."""
        check_step(self._ex, "send_event", event)
        return self._ex.send_event(name, event, data)

    def wait_for_event(
        self,
        name: str,
        event: str,
        match: dict[str, Any] | None = None,
        timeout: float | str = "1h",
    ) -> dict[str, Any] | None:
        """Park until an event named ``event`` matching ``match`` arrives; None at the timeout."""
        if match is not None and not isinstance(match, dict):
            raise NonRetriableError("wait_for_event match must be a dict")
        check_step(self._ex, "wait_for_event", event)
        return self._ex.wait_for_event(name, event, match, _seconds(timeout))


def _error(exc: BaseException) -> str:
    """The recorded error of a failed attempt (an output error already says what it is)."""
    return str(exc) if isinstance(exc, StepOutputError) else f"{type(exc).__name__}: {exc}"


def _seconds(value: float | str) -> float:
    """A duration for a sleep, wait or timeout: finite, not negative, at most a year."""
    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError) as exc:
        raise NonRetriableError(str(exc)) from None
    if not seconds <= MAX_DELAY_S:  # also refuses NaN and infinity
        raise NonRetriableError(f"duration {value!r} is longer than a year")
    return seconds


class LocalContext:
    """The ``Context`` a trusted skill receives."""

    def __init__(
        self, ex: Execution, event: dict[str, Any], params: dict[str, Any], tools: HostTools
    ) -> None:
        self._ex = ex
        self._event = event
        self._params = params
        self._step = LocalStep(ex)
        self._log = RunLogger(ex)
        self._tools = tools
        self._state = LocalState(ex.state_buffer)

    @property
    def run_id(self) -> str:
        """This run's id."""
        return self._ex.run_id

    @property
    def event(self) -> dict[str, Any]:
        """The triggering event."""
        return self._event

    @property
    def params(self) -> dict[str, Any]:
        """Params with overrides applied."""
        return self._params

    @property
    def step(self) -> LocalStep:
        """Durable steps."""
        return self._step

    @property
    def tools(self) -> HostTools:
        """Declared host tools."""
        return self._tools

    @property
    def log(self) -> RunLogger:
        """Run log."""
        return self._log

    @property
    def state(self) -> LocalState:
        """The skill's durable state (``runner/state.py``)."""
        return self._state
