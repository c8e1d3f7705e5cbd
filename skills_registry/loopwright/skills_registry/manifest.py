"""The manifest: a skill's ``@skill(...)`` declaration as a validated pydantic model.

The manifest is read from the syntax tree, never by running the code: decorator arguments are
literals by rule. Reading reports *every* problem it can find in one pass as a
:class:`ManifestFinding` with the rule, the line and column of the offending argument and a hint,
so an author (often an LLM) can fix them all at once.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from loopwright.sdk.errors import SkillAuthorError, SkillDefinitionError
from loopwright.sdk.manifest import ManifestError, read_declaration
from loopwright.sdk.skill import KNOWN_TOOLS, NAME_RE, SkillSpec
from loopwright.sdk.triggers import cron, event

MAX_NAME = 64
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOST_RE = re.compile(rf"^(\*\.)?(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_TRIGGERS: dict[str, Callable[..., Any]] = {"cron": cron, "event": event}


@dataclass(frozen=True, slots=True)
class ManifestFinding:
    """One problem with the declaration: rule id, position (1-based), message, hint."""

    rule: str
    line: int
    col: int
    message: str
    hint: str


class ManifestInvalid(SkillAuthorError):  # noqa: N818 - carries findings, like PolicyViolation
    """The declaration has problems; ``findings`` lists every one found."""

    def __init__(self, findings: list[ManifestFinding]) -> None:
        super().__init__("; ".join(f"line {f.line}: {f.message}" for f in findings))
        self.findings = findings


class CronSpec(BaseModel):
    """A cron trigger: five fields (or six, seconds last), timezone, missed-tick policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["cron"] = "cron"
    expr: str
    tz: str | None = None
    missed: Literal["latest", "skip"] = "latest"

    def next_fires(self, count: int = 3, after: datetime | None = None) -> list[str]:
        """The next ``count`` fire times as ISO 8601 strings in the trigger's timezone."""
        from croniter import croniter

        tz = ZoneInfo(self.tz) if self.tz else UTC
        it = croniter(self.expr, (after or datetime.now(UTC)).astimezone(tz))
        return [it.get_next(datetime).isoformat() for _ in range(count)]


class EventSpec(BaseModel):
    """An event trigger: the event name and the data fields it must match."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["event"] = "event"
    name: str = Field(min_length=1, max_length=128)
    match: dict[str, Any] = Field(default_factory=dict)


ParamType = Literal["int", "float", "bool", "str", "list", "dict", "null"]


class ParamSpec(BaseModel):
    """A tunable parameter: its type (from its default), default and optional bounds.

    Bounds (``min``/``max`` for numbers, ``choices`` otherwise) are what a tuner (the weekly
    review) may move the value within; the SDK declares defaults only today, so they are unset
    unless given.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: ParamType
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: list[Any] | None = None

    def accepts(self, value: Any) -> str | None:
        """Why ``value`` cannot be this parameter's value, or None when it can."""
        kind = type_of(value)
        widened = self.type == "float" and kind == "int"
        if kind != self.type and not widened and self.type != "null":  # null accepts anything
            return f"expected {self.type}, got {kind}"
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.min is not None and value < self.min:
                return f"{value} is below the minimum {self.min:g}"
            if self.max is not None and value > self.max:
                return f"{value} is above the maximum {self.max:g}"
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not one of {self.choices}"
        return None


def type_of(value: Any) -> ParamType:
    """The manifest's name for the JSON type of ``value``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    return "dict"


class Manifest(BaseModel):
    """Everything ``@skill(...)`` declares, validated. Part of a version's content hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(max_length=MAX_NAME, pattern=NAME_RE.pattern)
    description: str = Field(default="", max_length=2000)
    trigger: Annotated[CronSpec | EventSpec, Field(discriminator="type")] | None = None
    retries: int = Field(default=3, ge=0, le=100)
    backoff: float = Field(default=1.0, ge=0)
    timeout: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, ge=1)
    concurrency_key: str | None = None
    rate_limit: dict[str, Any] | None = None
    debounce: dict[str, Any] | None = None
    idempotency: dict[str, Any] | None = None
    tools: list[str] = Field(default_factory=list)
    http_allow: list[str] = Field(default_factory=list)
    secrets: list[str] = Field(default_factory=list)
    params: dict[str, ParamSpec] = Field(default_factory=dict)

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - KNOWN_TOOLS)
        if unknown:
            raise ValueError(f"unknown tools {unknown}; available: {sorted(KNOWN_TOOLS)}")
        return value

    @field_validator("http_allow")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        bad = [h for h in value if not HOST_RE.match(h)]
        if bad:
            raise ValueError(
                f"{bad} are not host names; write bare lower-case names like "
                f"'api.example.com' or '*.example.com' (no scheme, port or path)"
            )
        return value

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if not SECRET_NAME_RE.match(s)]
        if bad:
            raise ValueError(f"{bad} are not secret names (letters, digits, _ . -; at most 64)")
        return value

    @classmethod
    def from_spec(cls, spec: SkillSpec) -> Manifest:
        """The manifest of a validated ``SkillSpec`` (raises ``ValidationError``)."""
        data = spec.to_dict()
        data["params"] = {
            k: {"type": type_of(v), "default": v} for k, v in dict(spec.params).items()
        }
        return cls.model_validate(data)

    def identity(self) -> dict[str, Any]:
        """JSON form used in content hashes and stored with the version."""
        return self.model_dump(mode="json")


_RULE_BY_FIELD = {
    "http_allow": "invalid-host",
    "secrets": "invalid-secret-name",
    "name": "invalid-name",
}


def _callee(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def skill_call(tree: ast.Module) -> ast.Call | None:
    """The first ``@skill(...)`` decorator call in ``tree``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and _callee(dec.func) == "skill":
                    return dec
    return None


def _at(node: ast.AST) -> tuple[int, int]:
    return getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1


class _Reader:
    """Evaluates each decorator argument on its own, collecting findings for all of them."""

    def __init__(self) -> None:
        self.findings: list[ManifestFinding] = []

    def add(self, node: ast.AST, rule: str, message: str, hint: str) -> None:
        line, col = _at(node)
        self.findings.append(ManifestFinding(rule, line, col, message, hint))

    def literal(self, node: ast.expr, what: str) -> Any:
        if isinstance(node, ast.Call) and _callee(node.func) in _TRIGGERS:
            return self.trigger(node, what)
        try:
            return ast.literal_eval(node)
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            self.add(
                node,
                "manifest-not-literal",
                f"@skill argument {what!r} is not a literal",
                "write the value itself (strings, numbers, lists, dicts, cron(...), "
                "event(...)), not a variable, call or expression",
            )
            return None

    def trigger(self, node: ast.Call, what: str) -> Any:
        kind = _callee(node.func)
        args = [self.literal(a, what) for a in node.args]
        kwargs = {k.arg: self.literal(k.value, what) for k in node.keywords if k.arg}
        if kind == "cron":
            expr = args[0] if args else kwargs.get("expr")
            if not self._cron_ok(node, expr):
                return None
            tz = args[1] if len(args) > 1 else kwargs.get("tz")
            if tz is not None and not self._tz_ok(node, tz):
                return None
        try:
            return _TRIGGERS[str(kind)](*args, **kwargs)
        except (SkillDefinitionError, TypeError) as exc:
            rule = "invalid-cron" if kind == "cron" else "invalid-trigger"
            self.add(node, rule, f"{what}: {exc}", f"fix the {kind}(...) arguments")
            return None

    def _cron_ok(self, node: ast.Call, expr: Any) -> bool:
        from croniter import croniter

        example = 'cron("*/30 * * * *") is every 30 min; fields: minute hour day month weekday'
        if not isinstance(expr, str) or len(expr.split()) not in (5, 6):
            self.add(
                node,
                "invalid-cron",
                f"cron expression {expr!r} must have five fields (six with seconds last)",
                example,
            )
            return False
        try:
            ok = bool(croniter.is_valid(expr))
        except Exception:
            ok = False
        if not ok:
            self.add(node, "invalid-cron", f"cron expression {expr!r} does not parse", example)
        return ok

    def _tz_ok(self, node: ast.Call, tz: Any) -> bool:
        try:
            ZoneInfo(str(tz))
            return isinstance(tz, str)
        except (ZoneInfoNotFoundError, ValueError):
            self.add(
                node,
                "invalid-timezone",
                f"unknown timezone {tz!r} in the cron trigger",
                'use an IANA name such as "UTC" or "Europe/Paris"',
            )
            return False

    def name(self, node: ast.expr, value: Any) -> None:
        if isinstance(value, str) and (not NAME_RE.match(value) or len(value) > MAX_NAME):
            self.add(
                node,
                "invalid-name",
                f"skill name {value!r} is not kebab-case of at most {MAX_NAME} characters",
                'use lower-case letters, digits and single dashes, e.g. name="service-health"',
            )


def read_manifest(source: str) -> tuple[Manifest, int]:
    """The validated manifest of ``source`` and the line of its entry function.

    Raises :class:`ManifestInvalid` with every finding (the source must already parse).
    """
    tree = ast.parse(source)
    call = skill_call(tree)
    reader = _Reader()
    positions: dict[str, ast.expr] = {}
    if call is not None:
        for kw in call.keywords:
            if kw.arg is None:
                reader.add(
                    kw.value, "manifest-not-literal", "@skill(**...) is not allowed",
                    "write each argument out",
                )  # fmt: skip
                continue
            positions[kw.arg] = kw.value
            value = reader.literal(kw.value, kw.arg)
            if kw.arg == "name":
                reader.name(kw.value, value)
    if reader.findings:
        raise ManifestInvalid(reader.findings)
    try:
        decl = read_declaration(source)
    except ManifestError as exc:
        raise ManifestInvalid(
            [ManifestFinding(exc.rule, exc.line, exc.col, exc.message, exc.hint)]
        ) from None
    try:
        manifest = Manifest.from_spec(decl.spec)
    except ValidationError as exc:
        findings = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else ""
            node = positions.get(field, call)
            line, col = _at(node) if node is not None else (decl.line, 0)
            findings.append(
                ManifestFinding(
                    _RULE_BY_FIELD.get(field, "manifest-invalid"),
                    line,
                    col,
                    f"{field}: {err['msg']}",
                    "see the @skill reference in docs/registry.md",
                )
            )
        raise ManifestInvalid(findings) from None
    return manifest, decl.line


def manifest_or_none(source: str) -> Manifest | None:
    """The manifest when it reads cleanly (for sources registered without the sidecar)."""
    try:
        return read_manifest(source)[0]
    except (ManifestInvalid, SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # e.g. nesting too deep for the parser: stored, and its runs fail cleanly
