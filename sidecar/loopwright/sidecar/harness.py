"""Runs a skill's test cases in the sandbox, with an in-memory host instead of the runner's.

The guest is the same one workers use (same policy, same isolation); only the host side
differs: nothing is checkpointed in Redis, every step executes, sleeps are skipped, retries
follow the skill's policy without waiting, and host tools answer from the case's mocks (http by
method and URL, notify recorded, llm responses in order, invoke and wait_for_event from the
mocks). The real host's rules still hold: tools only inside a step, only declared tools, only
allowed hosts, only declared secrets.
"""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from loopwright.errors import InfrastructureError
from loopwright.runner.netguard import host_allowed
from loopwright.runner.tools import SECRET_REF
from loopwright.sandbox.backend import SandboxBackend
from loopwright.sandbox.host import (
    Guest,
    GuestTimeoutError,
    RequestHandler,
    SandboxError,
    run_session,
)
from loopwright.sdk.capabilities import (
    STEP_DIRECTION,
    allowed_events,
    undeclared_event,
    undeclared_step,
)
from loopwright.sdk.durations import parse_duration
from loopwright.sdk.errors import NonRetriableError, StepFailedError
from loopwright.sdk.manifest import Manifest
from loopwright.sdk.retry import Failure, RetryPolicy
from loopwright.sdk.steps import StepKind, host_kind
from loopwright.sidecar.cases import HttpMock, TestCase
from loopwright.sidecar.quotas import (
    CaseBudget,
    QuotaExceeded,
    Quotas,
    SubmissionBudget,
    guest_slots,
)
from loopwright.sidecar.verdict import CaseResult

SKILL_LINE = re.compile(r"skill line (\d+)")
MAX_PARALLEL = 4


class MockToolError(InfrastructureError):
    """A mocked tool failure worth retrying (the guest's retry policy applies)."""


class CaseHost(RequestHandler):
    """Answers one guest's requests for one test case, in memory (within ``budget``)."""

    passthrough = (QuotaExceeded,)  # ends the session: the guest is killed, the case fails

    def __init__(
        self,
        case: TestCase,
        manifest: Manifest,
        max_output_bytes: int,
        budget: CaseBudget | None = None,
    ) -> None:
        self.budget = budget or CaseBudget(Quotas().case_max_bytes)
        self.case = case
        self.manifest = manifest
        self.max_output = max_output_bytes
        self.retry_policy = RetryPolicy(manifest.retries, manifest.backoff)
        self.seq = 0
        self.current: int | None = None
        self.steps: list[dict[str, Any]] = []
        self.notifications: list[dict[str, Any]] = []
        self.logs: list[dict[str, str]] = []
        self._open: dict[int, dict[str, Any]] = {}
        self._llm = list(case.mocks.llm)
        self._http_used: dict[int, int] = {}

    def _log(self, msg: dict[str, Any]) -> dict[str, Any]:
        entry = {"level": str(msg.get("level"))[:20], "message": str(msg.get("message"))[:4000]}
        self.budget.take(len(json.dumps(entry)))  # ASCII-escaped: its length is its bytes
        self.logs.append(entry)
        return {"ok": {}}

    def _charge(self, name: str, fields: dict[str, Any]) -> None:
        """Charge a record's size to the case's quota before it is kept."""
        self.budget.take(len(name) + len(json.dumps(fields, default=str)))

    def _translate(self, exc: Exception) -> dict[str, Any] | None:
        if isinstance(exc, MockToolError):  # a mocked transient failure: retried like a real one
            return {"error": {"type": "HostToolError", "message": str(exc)}}
        return None

    def _record(self, name: str, kind: StepKind, **fields: Any) -> dict[str, Any]:
        self._charge(name, fields)
        self.seq += 1
        rec = {"seq": self.seq, "name": name, "kind": kind.value, "status": "done", "attempts": 1}
        rec.update(fields)
        self.steps.append(rec)
        return rec

    def _begin(self, name: str) -> dict[str, Any]:
        rec = self._record(name, StepKind.RUN, status="running")
        self._open[rec["seq"]] = rec
        self.current = rec["seq"]
        return {"ok": {"seq": rec["seq"]}}

    def _take(self, msg: dict[str, Any]) -> dict[str, Any]:
        seq = msg.get("seq")
        if not isinstance(seq, int) or seq not in self._open:
            raise NonRetriableError("protocol: no such step in progress")
        self.current = None
        return self._open[seq]

    def _done(self, msg: dict[str, Any]) -> dict[str, Any]:
        rec = self._take(msg)
        text = msg.get("output_json")
        if not isinstance(text, str) or len(text.encode("utf-8")) > self.max_output:
            rec["status"] = "failed"
            raise StepFailedError(rec["name"], f"output missing or over {self.max_output} bytes")
        self.budget.take(len(text.encode("utf-8", "surrogatepass")))
        rec["status"], rec["output"] = "done", json.loads(text)
        del self._open[rec["seq"]]
        return {"ok": {}}

    def _fail(self, msg: dict[str, Any]) -> dict[str, Any]:
        rec = self._take(msg)
        rec["error"] = str(msg.get("error", "failed"))[:4000]
        self.budget.take(len(rec["error"].encode("utf-8", "surrogatepass")))
        failure = Failure.from_wire(msg.get("retriable"), msg.get("delay"))
        if not self.retry_policy.decide(rec["attempts"], failure).retry:
            rec["status"] = "failed"
            del self._open[rec["seq"]]
            raise StepFailedError(rec["name"], rec["error"])
        rec["attempts"] += 1  # retried at once: the delay the real host would wait is skipped
        self.current = rec["seq"]
        return {"ok": {"retry_in": 0}}

    def _sleep(self, msg: dict[str, Any]) -> dict[str, Any]:
        name = str(msg.get("name", ""))
        if "until" not in msg:
            try:
                parse_duration(msg.get("duration", 0))
            except ValueError as exc:
                raise NonRetriableError(str(exc)) from None
        self._record(name, StepKind.SLEEP, skipped=True)
        return {"ok": {}}

    def _other(self, msg: dict[str, Any]) -> dict[str, Any]:
        kind, name = host_kind(msg.get("kind")), str(msg.get("name", ""))
        self._check_declared(kind, name, msg)
        mocks = self.case.mocks
        if kind is StepKind.LLM:
            if not self._llm:
                self._record(name, kind, status="failed")
                raise StepFailedError(name, "no mocked LLM response left: add one to mocks.llm")
            out = self._llm.pop(0)
        elif kind is StepKind.INVOKE:
            skill = str(msg.get("skill", ""))
            if skill not in mocks.invoke:
                self._record(name, kind, status="failed")
                raise StepFailedError(
                    name, f"no mocked output for invoking {skill!r}: add it to mocks.invoke"
                )
            out = mocks.invoke[skill]
        elif kind is StepKind.SEND_EVENT:
            out = f"test:{self.seq + 1}"
        else:  # wait_for_event
            out = mocks.events.get(str(msg.get("event", "")))
        self._record(name, kind, output=out)
        return {"ok": {"output": out}}

    def _check_declared(self, kind: StepKind, name: str, msg: dict[str, Any]) -> None:
        """The worker's run-time declaration checks (``sdk.capabilities``), so a case fails
        where a real run would: a capability step without its tool, an undeclared event."""
        why = undeclared_step(kind, self.manifest.tools)
        direction = STEP_DIRECTION.get(kind)
        if why is None and direction is not None:
            declared = self.manifest.events.model_dump() if self.manifest.events else None
            allowed = allowed_events(declared, self.manifest.trigger)
            why = undeclared_event(direction, str(msg.get("event", "")), allowed)
        if why is not None:
            self._record(name, kind, status="failed")
            raise NonRetriableError(why)

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
        if tool == "notify":
            channel = msg.get("channel")
            if channel is not None:
                self._secret(str(channel).partition(":")[2])
            notice = {
                "message": str(msg.get("message", "")),
                "title": msg.get("title"),
                "level": msg.get("level", "info"),
                "channel": channel,
                "step": self.current,
            }
            self._charge("notify", notice)
            self.notifications.append(notice)
            return {"ok": {"result": None}}
        if tool == "http":
            return {"ok": {"result": self._http(msg)}}
        raise NonRetriableError(f"unknown tool {tool!r}")

    def _secret(self, name: str) -> None:
        if name not in self.manifest.secrets:
            raise NonRetriableError(
                f"secret {name!r} is not declared: add it to @skill(secrets=[...]) to use it"
            )

    def _http(self, msg: dict[str, Any]) -> Any:
        method = {"get_json": "GET", "post_json": "POST"}.get(str(msg.get("method")))
        if method is None:
            raise NonRetriableError(f"http tool has no method {msg.get('method')!r}")
        url = str(msg.get("url", ""))
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise NonRetriableError(f"http tool: only http(s) URLs are allowed, not {url[:200]!r}")
        if not host_allowed(parts.hostname, tuple(self.manifest.http_allow)):
            raise NonRetriableError(
                f"http tool: host {parts.hostname!r} is not in this skill's http_allow "
                f"{self.manifest.http_allow}"
            )
        headers = msg.get("headers")
        for value in (headers or {}).values() if isinstance(headers, dict) else ():
            for ref in SECRET_REF.findall(str(value)):
                self._secret(ref)
        mock = self._mock(method, url)
        if mock is None:
            raise NonRetriableError(
                f"no mocked response for {method} {url}: add "
                f'{{"method": "{method}", "url": "{url}", "response": ...}} to mocks.http'
            )
        if mock.error is not None:
            raise MockToolError(f"http tool: {mock.error}")
        if mock.status == 429 or mock.status >= 500:
            raise MockToolError(f"http tool: {method} {parts.hostname} answered {mock.status}")
        if mock.status >= 400:
            raise NonRetriableError(f"http tool: {method} {parts.hostname} answered {mock.status}")
        return mock.response

    def _mock(self, method: str, url: str) -> HttpMock | None:
        """The first unused matching mock, else the last matching one (answers repeat)."""
        matching = [(i, m) for i, m in enumerate(self.case.mocks.http) if m.matches(method, url)]
        for i, m in matching:
            if not self._http_used.get(i):
                self._http_used[i] = 1
                return m
        return matching[-1][1] if matching else None


def _contains(expected: Any, actual: Any) -> bool:
    """Subset match: dict keys recursively, list items, substrings; equality otherwise."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and _contains(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        if not isinstance(actual, list):
            return False
        return all(any(_contains(e, a) for a in actual) for e in expected)
    if isinstance(expected, str) and isinstance(actual, str):
        return expected in actual
    return bool(expected == actual)


def _check(case: TestCase, host: CaseHost, result: CaseResult) -> list[str]:
    exp, given, problems = case.expect, case.expect.model_fields_set, []
    if result.status != exp.status:
        why = f": {result.error}" if result.error else ""
        problems.append(f"expected status {exp.status!r}, got {result.status!r}{why}")
    if "output" in given and result.output != exp.output:
        problems.append(
            f"expected output {json.dumps(exp.output)[:300]}, got {json.dumps(result.output)[:300]}"
        )
    if "output_contains" in given and not _contains(exp.output_contains, result.output):
        problems.append(
            f"output {json.dumps(result.output)[:300]} does not contain "
            f"{json.dumps(exp.output_contains)[:300]}"
        )
    if exp.error_contains is not None and exp.error_contains not in (result.error or ""):
        problems.append(
            f"expected an error containing {exp.error_contains!r}, got {result.error!r}"
        )
    if exp.steps is not None:
        names = [s["name"] for s in host.steps]
        if names != exp.steps:
            problems.append(f"expected steps {exp.steps}, got {names}")
    if exp.notify_count is not None and len(host.notifications) != exp.notify_count:
        problems.append(
            f"expected {exp.notify_count} notification(s), got {len(host.notifications)}"
        )
    return problems


def _guest_run(
    backend: SandboxBackend,
    start: dict[str, Any],
    host: CaseHost,
    timeout: float,
    quotas: Quotas,
) -> tuple[Any, str | None]:
    """One guest session inside a guest slot, within the case's budget: (output, error)."""
    with guest_slots(quotas.max_guests).slot(quotas.guest_wait):
        try:
            guest = backend.acquire()
        except SandboxError as exc:
            return None, f"sandbox: {exc}"
        output, error, _ = guest_session(guest, start, host, timeout)
        return output, error


def guest_session(
    guest: Guest,
    fields: dict[str, Any],
    host: CaseHost,
    timeout: float,
    *,
    op: str = "start",
    keep: bool = False,
) -> tuple[Any, str | None, dict[str, Any] | None]:
    """One run in ``guest`` (``op``: ``start``, or ``next`` in a batch) within ``timeout`` and
    the case's budget: (output, error, its ``end`` message). The end is None when the run
    failed as a process (timeout, crash, quota): the guest is dead then. With ``keep`` a
    guest that ended its run is left running (``run_session``); the caller kills it."""
    try:
        end = run_session(guest, fields, host.handle, time.monotonic() + timeout, op=op, keep=keep)
    except QuotaExceeded as exc:
        return None, f"quota: {exc}", None
    except GuestTimeoutError:
        return (
            None,
            f"the case did not finish within {timeout:g}s (infinite loop? slow step?)",
            None,
        )
    except SandboxError as exc:
        return None, f"sandbox: {exc}", None
    if "error" in end:
        return None, str(end["error"])[:4000], end
    text = end.get("output_json")
    if not isinstance(text, str) or len(text.encode("utf-8")) > host.max_output:
        return None, "the skill's return value is missing or too large", end
    try:
        host.budget.take(len(text.encode("utf-8", "surrogatepass")))
    except QuotaExceeded as exc:
        return None, f"quota: {exc}", end
    return json.loads(text), None, end


def run_case(
    backend: SandboxBackend,
    source: str,
    manifest: Manifest,
    case: TestCase,
    timeout: float,
    max_output_bytes: int,
    quotas: Quotas | None = None,
    submission: SubmissionBudget | None = None,
) -> CaseResult:
    """Run one case in a fresh guest and compare the outcome with its expectations."""
    quotas = quotas or Quotas()
    host = CaseHost(case, manifest, max_output_bytes, CaseBudget(quotas.case_max_bytes, submission))
    params = {k: p.default for k, p in manifest.params.items()} | case.params
    start = {
        "source": source,
        "run_id": f"test-{case.name}",
        "event": case.full_event(manifest),
        "params": params,
    }
    began = time.perf_counter()
    output, error = _guest_run(backend, start, host, timeout, quotas)
    result = CaseResult(
        name=case.name,
        passed=False,
        status="failed" if error is not None else "completed",
        output=output,
        error=error,
        steps=host.steps,
        notifications=host.notifications,
        duration_ms=round((time.perf_counter() - began) * 1000, 2),
    )
    result.problems = _check(case, host, result)
    if host.budget.exceeded is not None:  # over quota fails the case, whatever it expected
        result.problems.insert(0, f"quota: {host.budget.exceeded}")
    result.passed = not result.problems
    return result


def run_cases(
    backend: SandboxBackend,
    source: str,
    manifest: Manifest,
    cases: list[TestCase],
    timeout: float,
    max_output_bytes: int,
    quotas: Quotas | None = None,
) -> list[CaseResult]:
    """Every case, a few in parallel (one guest each), in the order given, within ``quotas``
    (:class:`SidecarBusyError` when no guest slot comes free in time)."""
    quotas = quotas or Quotas()
    budget = SubmissionBudget(quotas.submission_max_bytes)
    args = (backend, source, manifest)
    if len(cases) == 1:
        return [run_case(*args, cases[0], timeout, max_output_bytes, quotas, budget)]
    with ThreadPoolExecutor(max_workers=min(MAX_PARALLEL, len(cases))) as pool:
        futures = [
            pool.submit(run_case, *args, c, timeout, max_output_bytes, quotas, budget)
            for c in cases
        ]
        return [f.result() for f in futures]


def failure_line(result: CaseResult, default: int) -> int:
    """The skill line a failed case points at (from the guest's error), else ``default``."""
    found = SKILL_LINE.findall(result.error or "")
    return int(found[-1]) if found else default
