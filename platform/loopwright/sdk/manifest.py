"""Read a skill's ``@skill(...)`` declaration from its syntax tree, without running the code.

The host needs a sandboxed skill's retry policy, timeout, tools and hosts, but must never
execute untrusted code in its own process. The decorator's arguments are literals by rule, so
each is read with ``ast.literal_eval`` (triggers through the real ``cron``/``event``
factories) and the whole is validated by the real ``skill()`` factory. One reader serves every
caller: the runner takes the ``SkillSpec``, the registry and the sidecar the validated
:class:`~loopwright.sdk.manifest_model.Manifest`. Every problem found in one pass is reported
as a :class:`~loopwright.sdk.findings.Finding`, so an author (often an LLM) fixes them at once.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from loopwright.sdk.errors import SkillAuthorError, SkillDefinitionError
from loopwright.sdk.findings import Finding
from loopwright.sdk.manifest_model import (
    MAX_NAME,
    CronSpec,
    EventAccess,
    EventSpec,
    IntervalSpec,
    Manifest,
    ParamSpec,
    type_of,
)
from loopwright.sdk.names import is_skill_name
from loopwright.sdk.spec import SkillSpec, skill, spec_of
from loopwright.sdk.triggers import cron, event, every

__all__ = [
    "CronSpec",
    "Declaration",
    "EventAccess",
    "EventSpec",
    "IntervalSpec",
    "Manifest",
    "ManifestError",
    "ManifestInvalid",
    "ParamSpec",
    "read_declaration",
    "read_manifest",
    "type_of",
]

_TRIGGERS: dict[str, Callable[..., Any]] = {"cron": cron, "event": event, "every": every}
_RULE_BY_FIELD = {
    "http_allow": "invalid-host",
    "secrets": "invalid-secret-name",
    "name": "invalid-name",
}


class ManifestInvalid(SkillAuthorError):  # noqa: N818 - carries findings, like PolicyViolation
    """The declaration cannot be read or is invalid; ``findings`` lists every problem found."""

    def __init__(self, findings: list[Finding]) -> None:
        self.findings = list(findings)
        first = self.findings[0]
        more = f" (+{len(self.findings) - 1} more)" if len(self.findings) > 1 else ""
        super().__init__(f"line {first.line}: {first.message} ({first.hint}){more}")

    @property
    def rule(self) -> str:
        """The first finding's rule id (what a one-line error quotes)."""
        return self.findings[0].rule


ManifestError = ManifestInvalid  # the name the runner and the CLI catch


@dataclass(frozen=True, slots=True)
class Declaration:
    """The declaration of one source: its spec, entry function and (lazily) its manifest."""

    spec: SkillSpec
    function: str
    line: int
    positions: dict[str, ast.expr]
    call: ast.Call

    def manifest(self) -> Manifest:
        """The validated manifest (raises :class:`ManifestInvalid` with every finding)."""
        try:
            return Manifest.from_spec(self.spec)
        except ValidationError as exc:
            findings = []
            for err in exc.errors():
                field = str(err["loc"][0]) if err["loc"] else ""
                line, col = _at(self.positions.get(field, self.call))
                findings.append(
                    Finding(
                        _RULE_BY_FIELD.get(field, "manifest-invalid"),
                        line,
                        col,
                        f"{field}: {err['msg']}",
                        "see the @skill reference in docs/registry.md",
                    )
                )
            raise ManifestInvalid(findings) from None


def _callee(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _at(node: ast.AST) -> tuple[int, int]:
    return getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1


def _invalid(node: ast.AST | None, rule: str, message: str, hint: str) -> ManifestInvalid:
    line, col = _at(node) if node is not None else (1, 0)
    return ManifestInvalid([Finding(rule, line, col, message, hint)])


class _Reader:
    """Evaluates each decorator argument on its own, collecting findings for all of them."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def add(self, node: ast.AST, rule: str, message: str, hint: str) -> None:
        line, col = _at(node)
        self.findings.append(Finding(rule, line, col, message, hint))

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
        if isinstance(value, str) and not is_skill_name(value):
            self.add(
                node,
                "invalid-name",
                f"skill name {value!r} must be kebab-case (a-z, 0-9, '-'), at most {MAX_NAME} "
                "characters",
                'use lower-case letters, digits and single dashes, e.g. name="service-health"',
            )


def _parse(source: str) -> ast.Module:
    try:
        return ast.parse(source)
    except SyntaxError as exc:
        raise ManifestInvalid(
            [
                Finding(
                    "syntax-error",
                    exc.lineno or 0,
                    exc.offset or 0,
                    f"syntax error: {exc.msg}",
                    "fix the Python syntax",
                )
            ]
        ) from None
    except (MemoryError, RecursionError, ValueError):
        raise _invalid(
            None,
            "too-complex",
            "the source is nested too deeply to parse",
            "flatten deeply nested expressions",
        ) from None


def _skill_call(tree: ast.Module) -> tuple[ast.FunctionDef, ast.Call]:
    """The one ``@skill(...)``-decorated function and its decorator call."""
    found: list[tuple[ast.FunctionDef, ast.Call]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and _callee(dec.func) == "skill":
                    found.append((node, dec))  # type: ignore[arg-type]
                elif _callee(dec) == "skill":
                    raise _invalid(
                        dec,
                        "manifest-invalid",
                        "@skill needs arguments",
                        'write @skill(name="my-skill", ...)',
                    )
    if not found:
        raise ManifestInvalid(
            [
                Finding(
                    "no-skill",
                    1,
                    0,
                    "no @skill-decorated function",
                    "decorate the entry function with @skill(name=...) from loopwright.sdk",
                )
            ]
        )
    if len(found) > 1:
        fn, _ = found[1]
        raise _invalid(
            fn,
            "several-skills",
            f"{len(found)} @skill functions ({', '.join(f.name for f, _ in found)})",
            "keep one @skill per module",
        )
    fn, call = found[0]
    if call.args:
        raise _invalid(
            call,
            "manifest-invalid",
            "@skill takes keyword arguments only",
            'write @skill(name="my-skill", ...)',
        )
    return fn, call


def read_declaration(source: str) -> Declaration:
    """The single ``@skill(...)`` declaration of ``source``; :class:`ManifestInvalid` otherwise.

    Validates what ``@skill`` itself validates (enough to run the skill); the stricter
    manifest rules (host and secret name shapes) are :meth:`Declaration.manifest`.
    """
    fn, call = _skill_call(_parse(source))
    reader = _Reader()
    kwargs: dict[str, Any] = {}
    positions: dict[str, ast.expr] = {}
    for kw in call.keywords:
        if kw.arg is None:
            reader.add(
                kw.value,
                "manifest-not-literal",
                "@skill(**...) is not allowed",
                "write each argument out",
            )
            continue
        positions[kw.arg] = kw.value
        kwargs[kw.arg] = reader.literal(kw.value, kw.arg)
        if kw.arg == "name":
            reader.name(kw.value, kwargs[kw.arg])
    if reader.findings:
        raise ManifestInvalid(reader.findings)

    def entry(ctx: Any) -> None:
        """Stand-in for the declared function (never called)."""

    try:
        spec = spec_of(skill(**kwargs)(entry))
    except (SkillDefinitionError, TypeError) as exc:
        raise _invalid(
            call,
            "manifest-invalid",
            f"invalid @skill(...): {exc}",
            "see the @skill reference in docs/registry.md",
        ) from None
    assert spec is not None
    return Declaration(spec=spec, function=fn.name, line=fn.lineno, positions=positions, call=call)


def read_manifest(source: str) -> tuple[Manifest, int]:
    """The validated manifest of ``source`` and the line of its entry function.

    Raises :class:`ManifestInvalid` with every finding.
    """
    decl = read_declaration(source)
    return decl.manifest(), decl.line


def manifest_or_none(source: str) -> Manifest | None:
    """The manifest when it reads cleanly (for sources registered without the sidecar)."""
    try:
        return read_manifest(source)[0]
    except ManifestInvalid:
        return None  # e.g. nesting too deep for the parser: stored, and its runs fail cleanly
