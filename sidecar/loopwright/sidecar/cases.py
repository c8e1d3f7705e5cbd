"""Test cases that travel with a skill (``NAME.tests.json``): the format and its validation.

A test case file is a JSON list; each case has a ``name``, an input ``event``, optional
``params`` overrides, ``mocks`` for host tools and the LLM, and what to ``expect``. The minimal
valid file is ``[{"name": "smoke", "event": {}, "expect": {"status": "completed"}}]``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loopwright.sidecar.verdict import Finding
from loopwright.skills_registry.manifest import Manifest

MAX_CASES = 50

FORMAT_HINT = (
    "add NAME.tests.json beside NAME.py (or pass --tests FILE): a JSON list of cases, e.g. "
    '[{"name": "smoke", "event": {"data": {"orders": 3}}, "expect": {"status": "completed"}}]. '
    'A case may also set "params": {...} overrides, "mocks": {"http": [{"method": "GET", '
    '"url": "https://host/path", "response": {...}}], "llm": ["answer", ...], "invoke": '
    '{"skill-name": output}, "events": {"event.name": {...}}} and "expect": {"status": '
    '"completed"|"failed", "output": exact, "output_contains": subset, "error_contains": '
    '"text", "steps": ["step", ...], "notify_count": n}'
)


class HttpMock(BaseModel):
    """A canned answer for ``ctx.tools.http``: by method and URL (a trailing ``*`` matches a
    prefix). ``response`` is the JSON body; ``status`` >= 400 or ``error`` make it fail the way
    the real tool does (429/5xx and ``error`` are retried, other 4xx are not)."""

    model_config = ConfigDict(extra="forbid")
    method: Literal["GET", "POST"] = "GET"
    url: str = Field(min_length=1)
    response: Any = None
    status: int = Field(default=200, ge=100, le=599)
    error: str | None = None

    def matches(self, method: str, url: str) -> bool:
        """True for a request this mock answers."""
        if method != self.method:
            return False
        if self.url.endswith("*"):
            return url.startswith(self.url[:-1])
        return url == self.url or url.split("?", 1)[0] == self.url


class Mocks(BaseModel):
    """Everything a case fakes on the host side."""

    model_config = ConfigDict(extra="forbid")
    http: list[HttpMock] = Field(default_factory=list)
    llm: list[Any] = Field(default_factory=list)
    invoke: dict[str, Any] = Field(default_factory=dict)
    events: dict[str, Any] = Field(default_factory=dict)


class Expect(BaseModel):
    """What the case asserts. Only the fields given are checked."""

    model_config = ConfigDict(extra="forbid")
    status: Literal["completed", "failed"] = "completed"
    output: Any = None
    output_contains: Any = None
    error_contains: str | None = None
    steps: list[str] | None = None
    notify_count: int | None = Field(default=None, ge=0)


class TestCase(BaseModel):
    """One case: name, input event, params overrides, mocks, expectations."""

    __test__ = False  # not a pytest class
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    event: dict[str, Any] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    mocks: Mocks = Field(default_factory=Mocks)
    expect: Expect = Field(default_factory=Expect)

    @field_validator("event")
    @classmethod
    def _event_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        extra = sorted(set(value) - {"name", "data", "id", "ts"})
        if extra:
            raise ValueError(
                f"unknown event keys {extra}: an event is {{'name', 'data', 'id', 'ts'}}; "
                f"put the input under 'data'"
            )
        return value

    def full_event(self, manifest: Manifest) -> dict[str, Any]:
        """The event the skill sees: defaults from the trigger, overridden by the case."""
        trig = manifest.trigger
        name = trig.name if trig is not None and trig.type == "event" else "manual"
        if trig is not None and trig.type in ("cron", "every"):
            name = "loopwright/cron"  # an interval tick is delivered like a cron tick
        base = {"name": name, "data": {}, "id": f"test:{self.name}", "ts": 0}
        return {**base, **self.event}


def _position(text: str, index: int) -> int:
    """1-based line in ``text`` where JSON list item ``index`` starts (best effort)."""
    depth, item, line = 0, -1, 1
    in_str = esc = False
    for ch in text:
        if ch == "\n":
            line += 1
        if in_str:
            esc = not esc and ch == "\\"
            if ch == '"' and not esc:
                in_str = False
            continue
        if ch == '"':
            in_str = True
        elif ch in "[{":
            depth += 1
            if depth == 2:
                item += 1
                if item == index:
                    return line
        elif ch in "]}":
            depth -= 1
    return 1


def parse_cases(
    tests: str | list[Any] | None, manifest: Manifest, max_bytes: int
) -> tuple[list[TestCase], list[Any], list[Finding]]:
    """Validated cases, the raw JSON list (hashed with the version), and findings."""

    def finding(rule: str, message: str, line: int = 1, col: int = 0) -> Finding:
        return Finding(
            rule=rule, line=line, col=col, message=message, hint=FORMAT_HINT, file="tests"
        )

    if tests is None or (isinstance(tests, str) and not tests.strip()):
        return [], [], [finding("tests-missing", "the skill has no test cases", 0)]
    text = tests if isinstance(tests, str) else ""
    if isinstance(tests, str):
        if len(tests.encode("utf-8")) > max_bytes:
            return [], [], [finding("tests-too-large", f"the tests are over {max_bytes} bytes")]
        try:
            raw = json.loads(tests)
        except ValueError as exc:
            line, col = getattr(exc, "lineno", 1), getattr(exc, "colno", 0)
            return [], [], [finding("tests-invalid", f"the tests are not JSON: {exc}", line, col)]
    else:
        raw = tests
    if not isinstance(raw, list):
        return [], [], [finding("tests-invalid", "the tests must be a JSON list of cases")]
    if not raw:
        return [], raw, [finding("tests-missing", "the test case list is empty")]
    if len(raw) > MAX_CASES:
        return [], raw, [finding("tests-invalid", f"{len(raw)} cases; at most {MAX_CASES}")]
    cases: list[TestCase] = []
    findings: list[Finding] = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        line = _position(text, i) if text else 0
        try:
            case = TestCase.model_validate(item)
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err["loc"]) or "case"
                findings.append(finding("tests-invalid", f"case #{i}: {where}: {err['msg']}", line))
            continue
        if case.name in seen:
            findings.append(finding("tests-invalid", f"case #{i}: duplicate name {case.name!r}"))
        seen.add(case.name)
        for key, value in case.params.items():
            spec = manifest.params.get(key)
            problem = "not a declared param" if spec is None else spec.accepts(value)
            if problem:
                findings.append(
                    finding("tests-invalid", f"case {case.name!r}: params.{key}: {problem}", line)
                )
        cases.append(case)
    return cases, raw, findings
