"""Replay mode of the harness: a skill version run in the sandbox on a recorded run.

The guest is the one test cases use (``harness.py``); the host is :class:`ReplayHost`, a
:class:`~loopwright.sidecar.harness.CaseHost` whose tools answer from the recording
(``runner/recording.py``) instead of a case's mocks:

* each call is matched to the first unused recorded call with the same tool and request
  (``http``: method, URL, params, body; ``llm``: prompt, schema; ``invoke``: skill, input), in
  order, and answered with what the run saw (its answer, or its error: a retriable error is
  retried by the skill's policy, as the run did);
* side effects (``notify``, ``send_event``, ``invoke`` and non-GET ``http``) are captured and
  never performed;
* a call the recording cannot answer is *off-script*: it fails (non-retriably) in the guest and
  the result lists it, with its step;
* sleeps are skipped and ``wait_for_event`` answers with what the recorded step received; the
  duration is virtual: the recorded ``elapsed_ms`` of the answered calls, never wall time;
* ``ctx.state`` reads answer with what the run read (its ``state`` entries), the replay's own
  writes first; recordings without them read an empty store.

Same version + same recording -> same result: nothing here reads a clock or a random source,
and the guest's own are pinned (``sandbox/pins.py``): ``datetime.now()`` reads a virtual
clock that starts at the recorded run's start and moves by the recorded ``elapsed_ms`` of each
answered call (sent with every reply as ``clock_ms``), and ``random`` is seeded from the run
id.
"""

from __future__ import annotations

import hashlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, Field

from loopwright.keys import Keys
from loopwright.runner.recording import (
    MATCH_FIELDS,
    Recording,
    canonical,
    is_side_effect,
    load_recording,
)
from loopwright.runner.redaction import NO_SECRETS, Redactor
from loopwright.runner.runtime import Runtime
from loopwright.sandbox.backend import SandboxBackend
from loopwright.sandbox.host import Guest, SandboxError
from loopwright.sandbox.pins import seed_of
from loopwright.sdk.errors import NonRetriableError, StepFailedError
from loopwright.sdk.manifest import Manifest
from loopwright.sdk.steps import StepKind, host_kind
from loopwright.settings import Settings
from loopwright.sidecar.cases import TestCase
from loopwright.sidecar.harness import (
    MAX_PARALLEL,
    CaseHost,
    MockToolError,
    _guest_run,
    guest_session,
)
from loopwright.sidecar.quotas import (
    CaseBudget,
    Quotas,
    SubmissionBudget,
    guest_slots,
    quotas_of,
)
from loopwright.sidecar.verdict import ReplayReport

OFF_SCRIPT = "off-script"


class ReplayResult(BaseModel):
    """How one version behaved on one recorded run."""

    run_id: str
    status: str  # completed | failed
    output: Any = None
    error: str | None = None
    side_effects: list[dict[str, Any]] = Field(default_factory=list)
    off_script: list[dict[str, Any]] = Field(default_factory=list)
    answered: int = 0
    duration_ms: float = 0.0  # virtual: recorded elapsed of the answered calls
    call_ms: list[float] = Field(default_factory=list)  # each answered call's recorded elapsed
    steps: list[str] = Field(default_factory=list)


def _same_body(recorded: Any, actual: Any) -> bool:
    """Bodies match; a body recorded truncated matches by its sha256."""
    if isinstance(recorded, dict) and recorded.get("truncated") is True and "sha256" in recorded:
        raw = canonical(actual).encode("utf-8", "surrogatepass")
        return bool(hashlib.sha256(raw).hexdigest() == recorded["sha256"])
    return canonical(recorded) == canonical(actual)


def _matches(entry: dict[str, Any], tool: str, req: dict[str, Any]) -> bool:
    if entry.get("tool") != tool:
        return False
    got = entry.get("req")
    rec: dict[str, Any] = got if isinstance(got, dict) else {}
    return all(_same_body(rec.get(f), req.get(f)) for f in MATCH_FIELDS.get(tool, ()))


def describe(tool: str, req: dict[str, Any]) -> str:
    """One short line naming a call (for off-script lists and terminals)."""
    if tool == "http":
        return f"http {req.get('method')} {str(req.get('url'))[:200]}"
    if tool == "llm":
        return f"llm {str(req.get('prompt'))[:80]!r}"
    if tool == "invoke":
        return f"invoke {str(req.get('skill'))[:80]}"
    if tool == "send_event":
        return f"send_event {str(req.get('event'))[:80]}"
    return f"{tool} {str(req.get('message'))[:80]!r}"


class ReplayHost(CaseHost):
    """Answers one guest's tool calls from one recorded run; captures side effects."""

    def __init__(
        self,
        recording: Recording,
        manifest: Manifest,
        max_output_bytes: int,
        budget: CaseBudget | None = None,
        redactor: Redactor = NO_SECRETS,
    ) -> None:
        super().__init__(
            TestCase(name=f"replay-{recording.run_id}"[:100]), manifest, max_output_bytes, budget
        )
        self.recording = recording
        self.redactor = redactor
        self._used: set[int] = set()
        self._waits_used: set[int] = set()
        self.side_effects: list[dict[str, Any]] = []
        self.off_script: list[dict[str, Any]] = []
        self.answered = 0
        self.call_ms: list[float] = []
        self.virtual_ms = 0.0
        self._state_written: set[str] = set()

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Every reply carries the virtual clock (``sandbox/pins.py``)."""
        reply = super().handle(msg)
        return {**reply, "clock_ms": self.clock_ms}

    @property
    def clock_ms(self) -> int:
        """The recorded start, advanced by the recorded time of the calls answered so far."""
        return self.recording.started_at + round(self.virtual_ms)

    def _step_name(self) -> str | None:
        for rec in reversed(self.steps):
            if rec["seq"] == self.current:
                return str(rec["name"])
        return None

    def _answer(self, tool: str, req: dict[str, Any], step: str | None) -> dict[str, Any]:
        """The recorded entry answering this call (marked used), or raise off-script. The
        request is redacted first, as the recorder redacted the recorded one."""
        req = self.redactor.value(req)
        if is_side_effect(tool, req):
            self._charge(tool, req)
            self.side_effects.append({"tool": tool, "step": step, "req": req})
        for i, entry in enumerate(self.recording.calls):
            if i in self._used or not _matches(entry, tool, req):
                continue
            self._used.add(i)
            if not entry.get("replayable", True):
                self._off(
                    tool, req, step, "its recorded body was truncated (over the per-call share)"
                )
            self.answered += 1
            self.call_ms.append(float(entry.get("elapsed_ms") or 0.0))
            self.virtual_ms += self.call_ms[-1]
            return entry
        self._off(tool, req, step, "the recording has no such call left")
        raise AssertionError("unreachable")

    def _has_next(self, tool: str, req: dict[str, Any]) -> bool:
        """An unused recorded call matches this one."""
        return any(
            i not in self._used and _matches(e, tool, req)
            for i, e in enumerate(self.recording.calls)
        )

    def _off(self, tool: str, req: dict[str, Any], step: str | None, why: str) -> None:
        call = describe(tool, req)
        self.off_script.append({"tool": tool, "step": step, "call": call, "why": why})
        raise NonRetriableError(f"{OFF_SCRIPT}: {call}: {why}")

    def _state(self, msg: dict[str, Any]) -> dict[str, Any]:
        """``ctx.state``: this replay's own writes first (a scratch store, as in test cases),
        else what the recorded run read of the key (its first recorded read: the value the
        key had when the run first read it), else unset. A recording from before state reads
        were recorded has none: its replay reads an empty store, as it always did."""
        action, key = msg.get("action"), msg.get("key")
        if action in ("set", "delete"):
            reply = super()._state(msg)
            self._state_written.add(str(key))
            return reply
        if action != "get" or str(key) in self._state_written:
            return super()._state(msg)
        for entry in self.recording.calls:
            req = entry.get("req")
            if entry.get("tool") != "state" or not isinstance(req, dict) or req.get("key") != key:
                continue
            if not entry.get("replayable", True):
                self._off("state", {"key": key}, self._step_name(), "its recorded value was "
                          "truncated (over the per-call share)")  # fmt: skip
            res = entry.get("res")
            if isinstance(res, dict) and "value" in res:
                return {"ok": {"value": res["value"]}}
            break
        return {"ok": {"value": msg.get("default")}}

    def _tool(self, msg: dict[str, Any]) -> dict[str, Any]:
        if self.current is None:
            raise NonRetriableError(
                "host tools can only be called inside a step: wrap the call in ctx.step.run(...)"
            )
        tool = str(msg.get("tool"))
        if tool not in self.manifest.tools:
            raise NonRetriableError(
                f"tool {tool!r} is not declared: add it to @skill(tools=[...]) to use it"
            )
        step = self._step_name()
        if tool == "notify":
            level, title, channel = msg.get("level", "info"), msg.get("title"), msg.get("channel")
            req = {  # as the worker's host passes them to the notify tool (runner/remote.py)
                "message": str(msg.get("message", "")),
                "title": str(title) if title is not None else None,
                "level": level if level in ("info", "warning", "error") else "info",
                "channel": str(channel) if channel is not None else None,
            }
            try:
                self._answer("notify", req, step)
            except NonRetriableError:
                self.off_script.pop()  # a notice needs no answer: captured, not off-script
            return {"ok": {"result": None}}
        if tool != "http":
            raise NonRetriableError(f"unknown tool {tool!r}")
        method = {"get_json": "GET", "post_json": "POST"}.get(str(msg.get("method")))
        if method is None:
            raise NonRetriableError(f"http tool has no method {msg.get('method')!r}")
        params = msg.get("params") if method == "GET" else None
        req = {
            "method": method,
            "url": str(msg.get("url", "")),
            "params": params if isinstance(params, dict) else None,
            "headers": msg.get("headers") if isinstance(msg.get("headers"), dict) else None,
            "body": msg.get("body") if method == "POST" else None,
        }
        entry = self._answer("http", req, step)
        self._raise_recorded(entry)
        return {"ok": {"result": entry.get("res")}}

    def _raise_recorded(self, entry: dict[str, Any]) -> None:
        """Fail the way the recorded call failed (retriable or not)."""
        error = entry.get("error")
        if error is None:
            return
        if entry.get("retriable"):
            raise MockToolError(str(error))
        raise NonRetriableError(str(error))

    def _other(self, msg: dict[str, Any]) -> dict[str, Any]:
        kind, name = host_kind(msg.get("kind")), str(msg.get("name", ""))
        self._check_declared(kind, name, msg)
        try:
            out = self._other_answer(kind, name, msg)
        except (NonRetriableError, StepFailedError):
            self._record(name, kind, status="failed")
            raise
        self._record(name, kind, output=out)
        return {"ok": {"output": out}}

    def _other_answer(self, kind: StepKind, name: str, msg: dict[str, Any]) -> Any:
        if kind is StepKind.LLM:
            schema = msg.get("schema")
            req = {
                "prompt": str(msg.get("prompt", "")),
                "schema": schema if isinstance(schema, dict) else None,
            }
            try:
                entry = self._answer("llm", req, name)
                # the host retried a failed model call within the step: so does the replay,
                # answering each attempt with the next recorded one while there is one
                while entry.get("error") is not None and self._has_next("llm", req):
                    entry = self._answer("llm", req, name)
            except NonRetriableError as exc:
                raise StepFailedError(name, str(exc)) from None
            if entry.get("error") is not None:
                raise StepFailedError(name, str(entry["error"]))
            return entry.get("res")
        if kind is StepKind.INVOKE:
            req = {"skill": str(msg.get("skill", "")), "data": msg.get("data")}
            try:
                entry = self._answer("invoke", req, name)
            except NonRetriableError as exc:
                raise StepFailedError(name, str(exc)) from None
            rec = self.recording.steps.get(int(entry.get("seq") or 0), {})
            if rec.get("status") == "done":
                return rec.get("output")
            if rec.get("status") == "failed":
                raise StepFailedError(name, str(rec.get("error") or "the child run failed"))
            self._off_step("invoke", req, name, "the recorded child run had not ended")
        if kind is StepKind.SEND_EVENT:
            req = {"event": str(msg.get("event", "")), "data": msg.get("data")}
            try:
                entry = self._answer("send_event", req, name)
            except NonRetriableError:
                self.off_script.pop()  # sending needs no answer: captured, not off-script
                return f"replay:{self.seq + 1}"
            return entry.get("res")
        return self._wait_answer(name, msg)

    def _off_step(self, tool: str, req: dict[str, Any], name: str, why: str) -> None:
        try:
            self._off(tool, req, name, why)
        except NonRetriableError as exc:
            raise StepFailedError(name, str(exc)) from None

    def _wait_answer(self, name: str, msg: dict[str, Any]) -> Any:
        """What the recorded ``wait_for_event`` step of this name received (in order)."""
        event = str(msg.get("event", ""))
        for seq in sorted(self.recording.steps):
            rec = self.recording.steps[seq]
            if seq in self._waits_used or rec.get("kind") != StepKind.WAIT_FOR_EVENT.value:
                continue
            if rec.get("name") == name and rec.get("status") == "done":
                self._waits_used.add(seq)
                return rec.get("output")
        self._off_step("wait_for_event", {"event": event}, name, "the recording has no such wait")
        return None


def _run_fields(
    recording: Recording, manifest: Manifest, host: ReplayHost, max_output_bytes: int
) -> dict[str, Any]:
    """What the guest needs to run the skill on ``recording`` (its ``start`` without source)."""
    params = {k: p.default for k, p in manifest.params.items()} | dict(recording.params)
    return {
        "run_id": recording.run_id,
        "event": recording.event,
        "params": params,
        "max_output_bytes": max_output_bytes,
        "pin": {"clock_ms": host.clock_ms, "seed": seed_of(recording.run_id)},
    }


def _result(
    recording: Recording,
    host: ReplayHost,
    output: Any,
    error: str | None,
    redactor: Redactor,
) -> ReplayResult:
    if host.budget.exceeded is not None and error is None:
        error = f"quota: {host.budget.exceeded}"
    return ReplayResult(
        run_id=recording.run_id,
        status="failed" if error is not None else "completed",
        output=None if error is not None else redactor.value(output),
        error=redactor.text(error) if error is not None else None,
        side_effects=host.side_effects,
        off_script=host.off_script,
        answered=host.answered,
        duration_ms=round(host.virtual_ms, 3),
        call_ms=host.call_ms,
        steps=[str(s["name"]) for s in host.steps],
    )


def replay_one(
    backend: SandboxBackend,
    source: str,
    manifest: Manifest,
    recording: Recording,
    timeout: float,
    max_output_bytes: int,
    quotas: Quotas | None = None,
    submission: SubmissionBudget | None = None,
    redactor: Redactor = NO_SECRETS,
) -> ReplayResult:
    """Run ``source`` on ``recording`` in a fresh guest (from the backend's warm pool).
    ``redactor`` holds the platform's values of the skill's secrets: requests are matched and
    results kept with them replaced, as the recording has them."""
    quotas = quotas or Quotas()
    budget = CaseBudget(quotas.case_max_bytes, submission)
    host = ReplayHost(recording, manifest, max_output_bytes, budget, redactor)
    start = {"source": source, **_run_fields(recording, manifest, host, max_output_bytes)}
    output, error = _guest_run(backend, start, host, timeout, quotas)
    return _result(recording, host, output, error, redactor)


RUNS_PER_GUEST = 16  # a batch takes another guest (up to MAX_PARALLEL) per this many runs


def _replay_batch(
    backend: SandboxBackend,
    source: str,
    manifest: Manifest,
    recordings: list[Recording],
    todo: deque[int],
    results: list[ReplayResult | None],
    timeout: float,
    max_output_bytes: int,
    quotas: Quotas,
    submission: SubmissionBudget,
    redactor: Redactor,
) -> None:
    """Replay recordings taken from ``todo`` in turn, in one guest slot: one warm guest
    serves run after run (``op: next``) until it says it cannot (``reuse``) or a run fails
    as a process (timeout, crash, quota: that guest is dead), then a fresh one goes on."""
    guest: Guest | None = None
    with guest_slots(quotas.max_guests).slot(quotas.guest_wait):
        try:
            while True:
                try:
                    i = todo.popleft()
                except IndexError:
                    return
                rec = recordings[i]
                budget = CaseBudget(quotas.case_max_bytes, submission)
                host = ReplayHost(rec, manifest, max_output_bytes, budget, redactor)
                fields = _run_fields(rec, manifest, host, max_output_bytes)
                op = "next"
                if guest is None:
                    try:
                        guest = backend.acquire()
                    except SandboxError as exc:
                        results[i] = _result(rec, host, None, f"sandbox: {exc}", redactor)
                        continue
                    op, fields = "start", {"source": source, "batch": True, **fields}
                output, error, end = guest_session(guest, fields, host, timeout, op=op, keep=True)
                results[i] = _result(rec, host, output, error, redactor)
                if end is None or not end.get("reuse"):
                    guest.kill()
                    guest = None
        finally:
            if guest is not None:
                guest.kill()


def replay_many(
    backend: SandboxBackend,
    source: str,
    manifest: Manifest,
    recordings: list[Recording],
    timeout: float,
    max_output_bytes: int,
    quotas: Quotas | None = None,
    redactor: Redactor = NO_SECRETS,
) -> list[ReplayResult]:
    """Every recording, results in the order given, each the :class:`ReplayResult` a replay
    in a fresh guest (:func:`replay_one`) gives.

    The recordings are replayed in batches: a warm guest loads and compiles ``source`` once,
    then runs the recordings one after another (``guest.py``'s ``serve``), each from scratch
    (fresh module globals and exec, its own pinned clock and random, a fresh context; each
    answered from its own :class:`ReplayHost`), so one run cannot see another's state. The
    runs sharing a process all replay one skill source for one review: sharing it between
    them is accepted; nothing of another skill or another caller ever runs in it. The policy
    and the guest's limits are those of any guest; a guest serves another run only while
    that run gets the CPU time and memory a fresh guest would give it (``guest.py``:
    ``BATCH_CPU_SLACK``, ``BATCH_MEMORY_SLACK``), and a run that times out, crashes or
    exceeds a quota fails alone, with the error it gets in a fresh guest: its guest is
    killed and the batch goes on in a fresh one. Up to ``MAX_PARALLEL`` guests at a time
    (one per ``RUNS_PER_GUEST`` recordings), each in a guest slot."""
    quotas = quotas or Quotas()
    budget = SubmissionBudget(quotas.submission_max_bytes)
    if not recordings:
        return []
    todo = deque(range(len(recordings)))
    results: list[ReplayResult | None] = [None] * len(recordings)
    guests = max(1, min(MAX_PARALLEL, -(-len(recordings) // RUNS_PER_GUEST)))
    args = (backend, source, manifest, recordings, todo, results, timeout, max_output_bytes)
    with ThreadPoolExecutor(max_workers=guests) as pool:
        futures = [
            pool.submit(_replay_batch, *args, quotas, budget, redactor) for _ in range(guests)
        ]
        for f in futures:
            f.result()
    done = [r for r in results if r is not None]
    assert len(done) == len(recordings), "every recording is replayed"
    return done


def _effect_key(tool: str, req: dict[str, Any]) -> str:
    return canonical([tool, [req.get(f) for f in MATCH_FIELDS.get(tool, ())]])


def recorded_effects(recording: Recording) -> list[dict[str, Any]]:
    """The side effects the recorded run made (every attempt's), in order."""
    out = []
    for entry in recording.calls:
        req = entry.get("req")
        if isinstance(req, dict) and is_side_effect(str(entry.get("tool")), req):
            out.append({"tool": entry["tool"], "req": req})
    return out


class Difference(BaseModel):
    """A recorded run's outcome next to a replayed one, and what differs."""

    run_id: str
    recorded: dict[str, Any]
    replayed: ReplayResult
    status_changed: bool
    output_changed: bool
    effects_changed: bool
    effects_added: list[str] = Field(default_factory=list)
    effects_missing: list[str] = Field(default_factory=list)

    @property
    def kind(self) -> str:
        """``same``, ``off-script``, ``outcome`` (status or output) or ``side-effects``."""
        if self.replayed.off_script:
            return OFF_SCRIPT
        if self.status_changed or self.output_changed:
            return "outcome"
        if self.effects_changed:
            return "side-effects"
        return "same"


def compare(recording: Recording, result: ReplayResult) -> Difference:
    """What changed between the recorded run and its replay (status, output, side effects)."""
    before = recorded_effects(recording)
    old = [_effect_key(e["tool"], e["req"]) for e in before]
    new = [_effect_key(e["tool"], e["req"]) for e in result.side_effects]
    shown_old = {_effect_key(e["tool"], e["req"]): describe(e["tool"], e["req"]) for e in before}
    shown_new = {
        _effect_key(e["tool"], e["req"]): describe(e["tool"], e["req"]) for e in result.side_effects
    }
    added = [shown_new[k] for k in new if k not in old]
    missing = [shown_old[k] for k in old if k not in new]
    status = "completed" if recording.status == "completed" else "failed"
    return Difference(
        run_id=recording.run_id,
        recorded={
            "status": recording.status,
            "output": recording.output,
            "error": recording.error,
            "side_effects": [describe(e["tool"], e["req"]) for e in before],
            "recording": recording.state,
            "feedback": recording.feedback,
        },
        replayed=result,
        status_changed=status != result.status,
        output_changed=status == result.status == "completed"
        and canonical(recording.output) != canonical(result.output),
        effects_changed=old != new,
        effects_added=added,
        effects_missing=missing,
    )


def redactor_for(settings: Settings, manifest: Manifest) -> Redactor:
    """The redactor of runs of ``manifest``: the platform's values of the secrets it declares."""
    held = settings.secrets
    return Redactor({n: held[n].get_secret_value() for n in manifest.secrets if n in held})


SCAN_FACTOR = 20  # newest runs of a skill read to find its recorded runs of one version
ENDED = frozenset({"completed", "failed", "cancelled"})


def recorded_runs(redis: Any, keys: Keys, skill: str, version: str, limit: int) -> list[Recording]:
    """Up to ``limit`` ended, recorded runs of ``skill`` at ``version``: labelled runs first
    (the run hash's ``feedback``), then the newest. Reads a bounded window of the newest runs."""
    if limit <= 0:
        return []
    ids = [str(i) for i in redis.zrevrange(keys.runs_by_skill(skill), 0, limit * SCAN_FACTOR - 1)]
    pipe = redis.pipeline(transaction=False)
    for run_id in ids:
        pipe.hmget(keys.run(run_id), "version", "status", "recording", "feedback")
    labelled: list[str] = []
    other: list[str] = []
    for run_id, (ver, status, state, feedback) in zip(ids, pipe.execute(), strict=True):
        if ver != version or status not in ENDED or state not in ("complete", "partial"):
            continue
        (labelled if feedback else other).append(run_id)
    chosen = (labelled + other)[:limit]
    found = (load_recording(redis, keys, run_id) for run_id in chosen)
    return [r for r in found if r is not None]


def advisory_replay(
    rt: Runtime, backend: SandboxBackend, source: str, manifest: Manifest
) -> ReplayReport | None:
    """The new version ``source`` replayed on recorded runs of the skill's active version
    (None for a new skill or with ``sidecar_replay_runs`` 0). Never raises for the skill's
    behaviour: this is advice next to the verdict, not a stage."""
    st = rt.settings
    active = rt.redis.hget(rt.keys.skills, manifest.name)
    if not active or st.sidecar_replay_runs <= 0:
        return None
    report = ReplayReport(against=str(active))
    recordings = recorded_runs(
        rt.redis, rt.keys, manifest.name, str(active), st.sidecar_replay_runs
    )
    if not recordings:
        return report
    timeout = min(manifest.timeout or float("inf"), st.sidecar_case_timeout)
    results = replay_many(
        backend,
        source,
        manifest,
        recordings,
        timeout,
        st.step_output_max_bytes,
        quotas_of(st),
        redactor_for(st, manifest),
    )
    report.runs = len(results)
    for rec, res in zip(recordings, results, strict=True):
        kind = compare(rec, res).kind
        if rec.feedback:
            report.labelled[rec.run_id] = rec.feedback
        report.duration_ms += res.duration_ms
        if kind == "same":
            report.same += 1
        elif kind == OFF_SCRIPT:
            report.off_script.append(rec.run_id)
        elif kind == "outcome":
            report.outcome.append(rec.run_id)
        else:
            report.side_effects.append(rec.run_id)
    report.duration_ms = round(report.duration_ms, 3)
    return report
