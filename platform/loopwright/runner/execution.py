"""The state of one execution of a run: position, checkpoints, fence, deadline.

``Execution`` holds the step primitives (begin, commit, succeed, fail, retry, sleep, wait,
invoke, send_event) shared by the in-process step API (``runner/context.py``) and the sandbox
host (``runner/remote.py``), so both checkpoint, fence, retry and park identically.

Replay works from the checkpoints loaded by the acquire: a finished step returns its stored
output without touching Redis, so replaying N steps costs N dictionary lookups.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from loopwright.errors import UserError
from loopwright.runner.checkpoint import LeaseLostError
from loopwright.runner.lineage import (
    Lineage,
    Sender,
    budget_refusal,
    hop_refusal,
    post_limit_notice,
)
from loopwright.runner.ports import EventBacklogFullError
from loopwright.runner.recording import CallRecorder, state_read
from loopwright.runner.records import StepRecord, now_ms
from loopwright.runner.redaction import Redactor
from loopwright.runner.signals import RunTimeoutError, Suspend
from loopwright.runner.state import StateBuffer
from loopwright.runner.usage import peek_usage, take_usage
from loopwright.sdk.errors import (
    NonDeterminismError,
    NonRetriableError,
    StepFailedError,
)
from loopwright.sdk.names import EVENT_NAME
from loopwright.sdk.retry import Failure, RetryPolicy
from loopwright.sdk.spec import SkillSpec
from loopwright.sdk.steps import StepKind

if TYPE_CHECKING:
    from loopwright.runner.lease import HeldLease
    from loopwright.runner.runtime import Runtime

T = TypeVar("T")


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
        self.retry_policy = RetryPolicy(
            spec.retries, spec.backoff, runtime.settings.inline_retry_max_delay
        )
        self._raw = recorded
        self._max_recorded = max((int(s) for s in recorded), default=0)
        # Outputs stored in their own keys are fetched together, once, before replay starts.
        # The substring test may over-select (a user value shaped like the marker); the extra
        # keys simply do not exist.
        big = [int(s) for s, raw in recorded.items() if '"ref":true' in raw]
        self._big = runtime.checkpoints.fetch_outputs(run_id, big)
        self.seq = 0
        self.current_step: int | None = None
        self.failed_step = ""  # the last step that failed for good (the run's rollup names it)
        self._effects = 0
        self.redactor = Redactor.for_skill(runtime.settings, spec)  # see runner/redaction.py
        self.lineage = Lineage(0, f"run:{run_id}")  # the executor sets the run's own
        st = runtime.settings
        self.recorder = CallRecorder(self.redactor, st.run_recording_max_bytes, st.run_recording)
        self._state: StateBuffer | None = None  # ctx.state of the attempt in progress

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

    def state_buffer(self) -> StateBuffer:
        """``ctx.state`` of the step attempt in progress (``runner/state.py``); refused
        outside a step, where a read would not be replayed."""
        seq = self.current_step
        if seq is None:
            raise NonRetriableError(
                "ctx.state can only be used inside a step: wrap it in ctx.step.run(...)"
            )
        if self._state is None or self._state.seq != seq:
            rt, st = self.runtime, self.runtime.settings
            self._state = StateBuffer(
                rt.redis,
                rt.keys.skill_state(self.spec.name),
                self.spec.name,
                seq,
                st.state_value_max_bytes,
                st.state_max_keys,
                on_read=lambda key, text: self.recorder.add(
                    seq, "state", {"key": key}, at=now_ms(), elapsed_ms=0.0, res=state_read(text)
                ),
            )
        return self._state

    def commit(self, rec: StepRecord, output_json: str | None, *, with_state: bool = False) -> None:
        """Write a checkpoint under this execution's fence (secret values redacted); a record
        ending an ``llm`` step carries the model usage of its attempts (``runner/usage.py``);
        ``with_state``: the attempt's ``ctx.state`` writes go with it (a successful attempt)."""
        rec.error = self.redactor.text(rec.error) if rec.error else rec.error
        output_json = self.redactor.json_text(output_json) if output_json else output_json
        calls = self.recorder.take(rec.seq, rec.attempts)  # this attempt's tool calls
        ends_llm = rec.kind is StepKind.LLM and rec.status in ("done", "failed")
        usage = take_usage() if ends_llm else (0, 0, 0)
        buf, self._state = self._state, None  # an attempt's writes are committed or dropped
        state = buf.take(self.run_id) if with_state and buf and buf.seq == rec.seq else None
        self.runtime.checkpoints.commit(
            self.run_id, self.token, rec, output_json, calls, usage, state
        )

    def recorded_call(
        self,
        tool: str,
        req: dict[str, Any],
        call: Callable[[], T],
        seq: int | None = None,
        view: Callable[[T], Any] | None = None,
        *,
        usage: bool = False,
    ) -> T:
        """Make one host-tool call and record it (``runner/recording.py``) for the checkpoint
        of step ``seq`` (the current step by default): its answer (as ``view`` shows it) or its
        error, and timing; with ``usage``, the model tokens and cost the call added
        (``runner/usage.py``)."""
        at, began = now_ms(), time.perf_counter()
        before = peek_usage() if usage else None
        where = seq if seq is not None else self.current_step

        def spent() -> dict[str, int] | None:
            if before is None:
                return None
            after = peek_usage()
            keys = ("tokens_in", "tokens_out", "cost_micros")
            return {k: after[i] - before[i] for i, k in enumerate(keys)}

        try:
            res = call()
        except Exception as exc:
            if where is not None:
                elapsed = (time.perf_counter() - began) * 1000
                retriable = not isinstance(exc, NonRetriableError)
                self.recorder.add(
                    where,
                    tool,
                    req,
                    at=at,
                    elapsed_ms=elapsed,
                    error=exc,
                    retriable=retriable,
                    usage=spent(),
                )
            raise
        if where is not None:
            elapsed = (time.perf_counter() - began) * 1000
            shown = view(res) if view is not None else res
            self.recorder.add(where, tool, req, at=at, elapsed_ms=elapsed, res=shown, usage=spent())
        return res

    # Step primitives shared by the in-process step API and the sandbox host.

    def begin(self, name: str, kind: StepKind) -> tuple[int, StepRecord | None]:
        """Position of the next step and its checkpoint, if any; checks the recorded name and
        kind (``NonDeterminismError`` naming both when either differs)."""
        seq = self.next_seq()
        if kind is StepKind.LLM:
            take_usage()  # nothing left over from a step that never reached its checkpoint
        rec = self.recorded(seq)
        if rec is not None and (rec.name != name or not rec.replays_as(kind)):
            raise NonDeterminismError(seq, rec.name, name, rec.kind.value, kind.value)
        return seq, rec

    def succeed(
        self, seq: int, name: str, attempts: int, started: int, encoded: str, *, kind: StepKind
    ) -> None:
        """Checkpoint a successful attempt with its encoded output and its ``ctx.state``
        writes (``StateConflictError`` when another run changed a key it read: nothing is
        written and the caller runs the attempt again)."""
        self.current_step = None
        rec = StepRecord(seq, name, kind, "done", attempts, started, now_ms())
        self.commit(rec, encoded, with_state=True)

    def fail(
        self, seq: int, name: str, attempts: int, started: int, message: str, *, kind: StepKind
    ) -> NoReturn:
        """Checkpoint the step as failed for good and raise ``StepFailedError`` into the skill."""
        self.current_step = None
        self.failed_step = name
        self.commit(
            StepRecord(seq, name, kind, "failed", attempts, started, now_ms(), error=message),
            None,
        )
        raise StepFailedError(name, message)

    def retry_or_fail(
        self,
        seq: int,
        name: str,
        attempts: int,
        started: int,
        error: str,
        failure: Failure,
        *,
        kind: StepKind,
    ) -> float:
        """After a failed attempt: fail for good, park the run, or return the in-process wait."""
        self.current_step = None
        decision = self.retry_policy.decide(attempts, failure)
        if not decision.retry:
            self.fail(seq, name, attempts, started, error, kind=kind)
        wake = now_ms() + int(decision.delay * 1000)
        self.commit(
            StepRecord(
                seq, name, kind, "retrying", attempts, started, now_ms(), error=error, until=wake
            ),
            None,
        )
        if decision.park:
            raise Suspend(wake, f"retry of step {name!r}")
        return decision.delay

    def sleep(self, name: str, until: Callable[[], int]) -> None:
        """A durable sleep step: park the run until the recorded wake time."""
        seq, rec = self.begin(name, StepKind.SLEEP)
        if rec is not None:
            wake = rec.until or 0
        else:
            self.check_alive()
            wake = until()
            ts = now_ms()
            self.commit(StepRecord(seq, name, StepKind.SLEEP, "done", 1, ts, ts, until=wake), None)
        if now_ms() < wake:
            raise Suspend(wake, f"sleep {name!r}")

    def wait_for_event(
        self, name: str, event: str, match: dict[str, Any] | None, timeout_s: float
    ) -> dict[str, Any] | None:
        """Park until a matching event resolves this step, or return None at the timeout."""
        seq, rec = self.begin(name, StepKind.WAIT_FOR_EVENT)
        if rec is not None:
            if rec.status == "done":
                return rec.output  # type: ignore[no-any-return]
            until = rec.until or 0
            if now_ms() >= until:  # the deadline woke us: time out (CAS-free: we hold the fence)
                self.commit(
                    StepRecord(
                        seq,
                        name,
                        StepKind.WAIT_FOR_EVENT,
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
                StepKind.WAIT_FOR_EVENT,
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
        seq, rec = self.begin(name, StepKind.INVOKE)
        if rec is not None:
            if rec.status == "done":
                return rec.output
            if rec.status == "failed":
                raise StepFailedError(name, rec.error or "the child run failed")
            child, until = rec.child or "", rec.until
            if until and now_ms() >= until:
                rt.runs.cancel(child, f"parent run {self.run_id} stopped waiting (timeout)")
                self.fail(
                    seq,
                    name,
                    1,
                    rec.started_at,
                    f"child run {child} did not end in time",
                    kind=StepKind.INVOKE,
                )
        else:
            self.check_alive()
            rt.sources.resolve(skill)  # an unknown skill fails here, before anything is recorded
            self._within_limits(seq, name, f"invoking {skill!r}", charge=True, kind=StepKind.INVOKE)
            child = new_run_id()
            ts = now_ms()
            until = ts + int(timeout_s * 1000) if timeout_s else None
            # the child's result is the step's output, recorded when the child ends
            req = {"skill": skill, "data": data}
            self.recorder.add(seq, "invoke", req, at=ts, elapsed_ms=0.0, res={"child": child})
            self.commit(
                StepRecord(
                    seq, name, StepKind.INVOKE, "pending", 1, ts, 0, until=until, child=child
                ),
                None,
            )
        if not rt.runs.exists(child):  # created here, or the last executor died before it did
            version = rt.sources.resolve(skill)
            rt.runs.create_if_absent(  # a racing executor's create leaves this one a no-op
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
        kind = StepKind.SEND_EVENT
        seq, rec = self.begin(name, kind)
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
            what = f"sending event {str(event)[:128]!r}"
            self._within_limits(seq, name, what, charge=False, kind=kind)
            try:
                sent = self.recorded_call(
                    "send_event",
                    {"event": event, "data": data},
                    lambda: self.runtime.bus.send(
                        event,
                        data,
                        event_id=f"{self.run_id}:{seq}",
                        lineage=self.lineage.next(),
                        sender=Sender(self.run_id, self.token, quota),
                    ),
                    seq,
                    view=lambda s: s.id,
                )
            except EventBacklogFullError as exc:
                failure = Failure.of(exc)
                wait = self.retry_or_fail(
                    seq, name, attempts, started, str(exc), failure, kind=kind
                )
                time.sleep(wait)
                continue
            except UserError as exc:  # a bad name or data: fails once, clearly
                self.fail(seq, name, attempts, started, str(exc), kind=kind)
            self.succeed(seq, name, attempts, started, json.dumps(sent.id), kind=kind)
            return str(sent.id)

    def _within_limits(
        self, seq: int, name: str, what: str, *, charge: bool, kind: StepKind
    ) -> None:
        """Fail step ``seq`` for good (and tell the inbox once) when going one hop further
        would pass the hop limit or this chain's run budget."""
        rt, nxt = self.runtime, self.lineage.next()
        why, limit = hop_refusal(rt, nxt, what), "hops"
        if why is None:
            why, limit = budget_refusal(rt, nxt.root, what, charge=charge), "budget"
        if why is not None:
            post_limit_notice(rt, nxt.root, limit, why, self.run_id)
            self.fail(seq, name, 1, now_ms(), why, kind=kind)

    def enter_step(self, seq: int) -> None:
        """Mark the start of one attempt of step ``seq`` (host tools become callable)."""
        self.current_step = seq
        self._effects = 0
        self._state = None  # a new attempt reads fresh

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
    if not isinstance(event, str) or not EVENT_NAME.fullmatch(event):
        shown = ascii(str(event)[:80])
        ex.fail(
            seq,
            name,
            1,
            now_ms(),
            f"event name {shown} must be 1-128 of letters, digits and _ . : / -",
            kind=StepKind.WAIT_FOR_EVENT,
        )
