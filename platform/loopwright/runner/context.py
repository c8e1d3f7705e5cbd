"""The in-process ``Context``: durable steps executed in the worker (trusted skills).

Replay works from the checkpoints loaded by the acquire: a finished step returns its stored
output without touching Redis, so replaying N steps costs N dictionary lookups.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from loopwright.errors import UserError
from loopwright.runner.checkpoint import LeaseLostError
from loopwright.runner.lineage import Lineage, budget_refusal, hop_refusal, post_limit_notice
from loopwright.runner.records import StepRecord, encode_json, now_ms
from loopwright.sdk.durations import parse_duration
from loopwright.sdk.errors import (
    NonDeterminismError,
    NonRetriableError,
    RetryAfterError,
    RunInterrupt,
    StepFailedError,
    StepOutputError,
)
from loopwright.sdk.skill import SkillSpec

if TYPE_CHECKING:
    from loopwright.runner.lease import HeldLease
    from loopwright.runner.runtime import Runtime
    from loopwright.runner.tools import HostTools

T = TypeVar("T")
MAX_BACKOFF_S = 300.0
MAX_PARK_S = 366 * 86400.0  # a sleep, wait or retry delay longer than a year is a bug


class Suspend(RunInterrupt):
    """Control flow: end this execution and park the run until ``wake_ms``.

    ``waiting`` parks it in the waiting state instead (an event or a child run resolves it;
    ``wake_ms`` is then the optional deadline), with an optional event ``waiter``
    (event name, waiter field, match JSON) and a ``child`` to check right after parking.
    """

    def __init__(
        self,
        wake_ms: int | None,
        reason: str,
        *,
        waiting: bool = False,
        waiter: tuple[str, str, str] | None = None,
        child: tuple[str, int] | None = None,
    ) -> None:
        super().__init__(f"suspend until {wake_ms} ({reason})")
        self.wake_ms = wake_ms
        self.reason = reason
        self.waiting = waiting
        self.waiter = waiter
        self.child = child


class RunTimeoutError(RunInterrupt):
    """Control flow: the run used up its active-time budget."""


class Execution:
    """State of one execution of a run: token, checkpoints, position, deadline."""

    def __init__(
        self,
        runtime: Runtime,
        run_id: str,
        token: str,
        spec: SkillSpec,
        recorded: dict[str, str],
        lease: HeldLease,
        deadline: float,
        trusted: bool = False,
    ) -> None:
        self.runtime = runtime
        self.trusted = trusted
        self.run_id = run_id
        self.token = token
        self.spec = spec
        self.lease = lease
        self.deadline = deadline
        self._raw = recorded
        self._max_recorded = max((int(s) for s in recorded), default=0)
        # Outputs stored in their own keys are fetched together, once, before replay starts.
        # The substring test may over-select (a user value shaped like the marker); the extra
        # keys simply do not exist.
        big = [int(s) for s, raw in recorded.items() if '"ref":true' in raw]
        self._big = runtime.checkpoints.fetch_outputs(run_id, big)
        self.seq = 0
        self.current_step: int | None = None
        self._effects = 0
        self.lineage = Lineage(0, f"run:{run_id}")  # the executor sets the run's own

    @property
    def replaying(self) -> bool:
        """True while the code is re-walking steps that already have checkpoints."""
        return self.seq < self._max_recorded

    def next_seq(self) -> int:
        """Position of the next step."""
        self.seq += 1
        return self.seq

    def recorded(self, seq: int) -> StepRecord | None:
        """The checkpoint at ``seq``, decoded (large outputs fetched on demand)."""
        raw = self._raw.get(str(seq))
        if raw is None:
            return None
        rec = StepRecord.from_json(raw)
        if rec.ref:
            rec.output = self._big.get(seq)
        return rec

    def check_alive(self) -> None:
        """Raise when this executor must stop: lease lost, cancelled or out of time."""
        if not self.lease.ensure():
            raise LeaseLostError(f"run {self.run_id}: lease lost")
        if time.monotonic() > self.deadline:
            raise RunTimeoutError()

    def commit(self, rec: StepRecord, output_json: str | None) -> None:
        """Write a checkpoint under this execution's fence."""
        self.runtime.checkpoints.commit(self.run_id, self.token, rec, output_json)

    # Step primitives shared by the in-process step API and the sandbox host.

    def begin(self, name: str) -> tuple[int, StepRecord | None]:
        """Position of the next step and its checkpoint, if any; checks the recorded name."""
        seq = self.next_seq()
        rec = self.recorded(seq)
        if rec is not None and rec.name != name:
            raise NonDeterminismError(seq, rec.name, name)
        return seq, rec

    def succeed(self, seq: int, name: str, attempts: int, started: int, encoded: str) -> None:
        """Checkpoint a successful attempt with its encoded output."""
        self.current_step = None
        self.commit(StepRecord(seq, name, "run", "done", attempts, started, now_ms()), encoded)

    def fail(self, seq: int, name: str, attempts: int, started: int, message: str) -> NoReturn:
        """Checkpoint the step as failed for good and raise ``StepFailedError`` into the skill."""
        self.current_step = None
        self.commit(
            StepRecord(seq, name, "run", "failed", attempts, started, now_ms(), error=message),
            None,
        )
        raise StepFailedError(name, message)

    def backoff(self, attempts: int) -> float:
        """Delay before the next attempt after ``attempts`` failures."""
        return float(min(MAX_BACKOFF_S, self.spec.backoff * 2 ** (attempts - 1)))

    def retry_or_fail(
        self, seq: int, name: str, attempts: int, started: int, error: str, delay: float
    ) -> float:
        """After a failed attempt: fail for good, park the run, or return the in-process wait."""
        self.current_step = None
        delay = min(max(0.0, delay), MAX_PARK_S) if math.isfinite(delay) else MAX_BACKOFF_S
        if attempts > self.spec.retries:
            self.fail(seq, name, attempts, started, error)
        wake = now_ms() + int(delay * 1000)
        self.commit(
            StepRecord(
                seq, name, "run", "retrying", attempts, started, now_ms(), error=error, until=wake
            ),
            None,
        )
        if delay > self.runtime.settings.inline_retry_max_delay:
            raise Suspend(wake, f"retry of step {name!r}")
        return delay

    def sleep(self, name: str, until: Callable[[], int]) -> None:
        """A durable sleep step: park the run until the recorded wake time."""
        seq, rec = self.begin(name)
        if rec is not None:
            wake = rec.until or 0
        else:
            self.check_alive()
            wake = until()
            ts = now_ms()
            self.commit(StepRecord(seq, name, "sleep", "done", 1, ts, ts, until=wake), None)
        if now_ms() < wake:
            raise Suspend(wake, f"sleep {name!r}")

    def wait_for_event(
        self, name: str, event: str, match: dict[str, Any] | None, timeout_s: float
    ) -> dict[str, Any] | None:
        """Park until a matching event resolves this step, or return None at the timeout."""
        seq, rec = self.begin(name)
        if rec is not None:
            if rec.status == "done":
                return rec.output  # type: ignore[no-any-return]
            until = rec.until or 0
            if now_ms() >= until:  # the deadline woke us: time out (CAS-free: we hold the fence)
                self.commit(
                    StepRecord(
                        seq,
                        name,
                        "wait",
                        "done",
                        1,
                        rec.started_at,
                        now_ms(),
                        until=until,
                        event=rec.event,
                        match=rec.match,
                    ),
                    "null",
                )
                self.runtime.redis.hdel(
                    self.runtime.keys.waiters(rec.event or event), f"{self.run_id}:{seq}"
                )
                return None
            match_json = json.dumps(rec.match or {}, separators=(",", ":"))
            raise Suspend(
                until,
                f"wait {name!r}",
                waiting=True,
                waiter=(rec.event or event, f"{self.run_id}:{seq}", match_json),
            )
        self.check_alive()
        ts = now_ms()
        _check_event_name(self, seq, name, event)
        until = ts + int(timeout_s * 1000)
        self.commit(
            StepRecord(
                seq,
                name,
                "wait",
                "pending",
                1,
                ts,
                0,
                until=until,
                event=event,
                match=dict(match or {}),
            ),
            None,
        )
        match_json = json.dumps(match or {}, separators=(",", ":"))
        raise Suspend(
            until,
            f"wait {name!r}",
            waiting=True,
            waiter=(event, f"{self.run_id}:{seq}", match_json),
        )

    def invoke(
        self, name: str, skill: str, data: Any, timeout_s: float | None, trusted: bool
    ) -> Any:
        """Start ``skill`` as a child run (exactly once) and park until it ends."""
        from loopwright.runner.store import new_run_id

        rt = self.runtime
        seq, rec = self.begin(name)
        if rec is not None:
            if rec.status == "done":
                return rec.output
            if rec.status == "failed":
                raise StepFailedError(name, rec.error or "the child run failed")
            child, until = rec.child or "", rec.until
            if until and now_ms() >= until:
                rt.runs.cancel(child, f"parent run {self.run_id} stopped waiting (timeout)")
                self.fail(seq, name, 1, rec.started_at, f"child run {child} did not end in time")
        else:
            self.check_alive()
            rt.sources.resolve(skill)  # an unknown skill fails here, before anything is recorded
            self._within_limits(seq, name, f"invoking {skill!r}", charge=True)
            child = new_run_id()
            ts = now_ms()
            until = ts + int(timeout_s * 1000) if timeout_s else None
            self.commit(
                StepRecord(seq, name, "invoke", "pending", 1, ts, 0, until=until, child=child), None
            )
        if not rt.runs.exists(child):  # created here, or the last executor died before it did
            version = rt.sources.resolve(skill)
            rt.runs.create(
                skill=skill,
                version=version,
                spec=rt.sources.declaration(version, skill)[1],
                data=data,
                run_id=child,
                parent=self.run_id,
                parent_seq=seq,
                trusted=trusted,
                trigger={"type": "invoke", "parent": self.run_id},
                event={
                    "name": "loopwright/manual",
                    "data": data if data is not None else {},
                    "id": child,
                    "ts": now_ms(),
                    **self.lineage.next().fields(),
                },
            )
        raise Suspend(until, f"invoke {name!r}", waiting=True, child=(child, seq))

    def send_event(self, name: str, event: str, data: Any) -> str:
        """Send an event exactly once per step: its id is ``run_id:seq``.

        Its bytes count against the run's storage quota; a chain past the hop limit or its
        root's run budget fails the step for good; a full backlog is retried per the policy.
        """
        from loopwright.events.bus import EventBacklogFullError, Sender

        seq, rec = self.begin(name)
        attempts = 0
        if rec is not None:
            if rec.status == "done":
                return str(rec.output)
            if rec.status == "failed":
                raise StepFailedError(name, rec.error or "failed")
            attempts = rec.attempts
        quota = self.runtime.settings.run_storage_max_bytes
        while True:
            self.check_alive()
            attempts += 1
            started = now_ms()
            self._within_limits(seq, name, f"sending event {str(event)[:128]!r}", charge=False)
            try:
                sent = self.runtime.bus.send(
                    event,
                    data,
                    event_id=f"{self.run_id}:{seq}",
                    lineage=self.lineage.next(),
                    sender=Sender(self.run_id, self.token, quota),
                )
            except EventBacklogFullError as exc:
                delay = self.backoff(attempts)
                time.sleep(self.retry_or_fail(seq, name, attempts, started, str(exc), delay))
                continue
            except UserError as exc:  # a bad name or data: fails once, clearly
                self.fail(seq, name, attempts, started, str(exc))
            self.succeed(seq, name, attempts, started, json.dumps(sent.id))
            return str(sent.id)

    def _within_limits(self, seq: int, name: str, what: str, *, charge: bool) -> None:
        """Fail step ``seq`` for good (and tell the inbox once) when going one hop further
        would pass the hop limit or this chain's run budget."""
        rt, nxt = self.runtime, self.lineage.next()
        why, limit = hop_refusal(rt, nxt, what), "hops"
        if why is None:
            why, limit = budget_refusal(rt, nxt.root, what, charge=charge), "budget"
        if why is not None:
            post_limit_notice(rt, nxt.root, limit, why, self.run_id)
            self.fail(seq, name, 1, now_ms(), why)

    def enter_step(self, seq: int) -> None:
        """Mark the start of one attempt of step ``seq`` (host tools become callable)."""
        self.current_step = seq
        self._effects = 0

    def idempotency_key(self) -> str:
        """``run_id:seq`` for a step's first host-tool call, ``run_id:seq:n`` for the n-th.

        The counter restarts with every attempt, so a step body that runs again after a crash
        repeats the same keys and the effects are deduplicated downstream.
        """
        if self.current_step is None:
            raise NonRetriableError(
                "host tools can only be called inside a step: wrap the call in ctx.step.run(...)"
            )
        self._effects += 1
        base = f"{self.run_id}:{self.current_step}"
        return base if self._effects == 1 else f"{base}:{self._effects}"


def _check_event_name(ex: Execution, seq: int, name: str, event: str) -> None:
    """Fail step ``seq`` for good when ``event`` is not a valid event name (a lone surrogate
    would otherwise break the waiter's Redis key after the step is recorded)."""
    from loopwright.events.bus import EVENT_NAME

    if not isinstance(event, str) or not EVENT_NAME.fullmatch(event):
        shown = ascii(str(event)[:80])
        ex.fail(
            seq,
            name,
            1,
            now_ms(),
            f"event name {shown} must be 1-128 of letters, digits and _ . : / -",
        )


class LocalStep:
    """``ctx.step`` for in-process execution."""

    def __init__(self, ex: Execution) -> None:
        self._ex = ex

    def run(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` once, retrying per the skill's policy; replay returns the checkpoint."""
        ex = self._ex
        seq, rec = ex.begin(name)
        attempts = 0
        if rec is not None:
            if rec.status == "done":
                return rec.output  # type: ignore[no-any-return]
            if rec.status == "failed":
                raise StepFailedError(name, rec.error or "failed")
            attempts = rec.attempts
        max_bytes = ex.runtime.settings.step_output_max_bytes
        while True:
            ex.check_alive()
            attempts += 1
            started = now_ms()
            ex.enter_step(seq)
            try:
                value = fn(*args, **kwargs)
                encoded = encode_json(value, what=f"step {name!r} output", max_bytes=max_bytes)
            except StepOutputError as exc:
                ex.fail(seq, name, attempts, started, str(exc))
            except NonRetriableError as exc:
                ex.fail(seq, name, attempts, started, f"{type(exc).__name__}: {exc}")
            except RetryAfterError as exc:
                delay, error = exc.seconds, f"RetryAfterError: {exc}"
            except (Exception, SystemExit) as exc:  # a skill's sys.exit() must not end the worker
                delay, error = ex.backoff(attempts), f"{type(exc).__name__}: {exc}"
            else:
                ex.succeed(seq, name, attempts, started, encoded)
                return json.loads(encoded)  # type: ignore[no-any-return]
            finally:
                ex.current_step = None
            time.sleep(ex.retry_or_fail(seq, name, attempts, started, error, delay))

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
        if target - now_ms() > MAX_PARK_S * 1000:
            raise NonRetriableError("sleep_until: that is more than a year away")
        self._ex.sleep(name, lambda: target)

    def llm(self, name: str, prompt: str, schema: dict[str, Any] | None = None) -> Any:
        """Ask the configured model once, as a checkpointed step."""
        return self.run(name, self._ex.runtime.llm_complete, prompt, schema)

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
        return self._ex.wait_for_event(name, event, match, _seconds(timeout))


def _seconds(value: float | str) -> float:
    """A duration for a sleep, wait or timeout: finite, not negative, at most a year."""
    try:
        seconds = parse_duration(value)
    except (ValueError, TypeError) as exc:
        raise NonRetriableError(str(exc)) from None
    if not seconds <= MAX_PARK_S:  # also refuses NaN and infinity
        raise NonRetriableError(f"duration {value!r} is longer than a year")
    return seconds


class RunLogger:
    """``ctx.log``: appends to the run's capped log list; silent while replaying."""

    def __init__(self, ex: Execution) -> None:
        self._ex = ex

    def _write(self, level: str, message: str) -> None:
        ex = self._ex
        if ex.replaying:
            return
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
