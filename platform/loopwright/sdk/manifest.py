"""Read a skill's ``@skill(...)`` declaration from its syntax tree, without running the code.

The host needs a sandboxed skill's retry policy, timeout, tools and hosts, but must never
execute untrusted code in its own process. The decorator's arguments are literals by rule, so
they are read with ``ast.literal_eval`` and then validated by the real ``skill()`` factory.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from loopwright.sdk.errors import SkillAuthorError, SkillDefinitionError
from loopwright.sdk.skill import SkillSpec, skill, spec_of
from loopwright.sdk.triggers import cron, event

_TRIGGERS: dict[str, Callable[..., Any]] = {"cron": cron, "event": event}


@dataclass(frozen=True, slots=True)
class ManifestError(SkillAuthorError):
    """The declaration cannot be read: what, where, and how to fix it."""

    rule: str
    line: int
    col: int
    message: str
    hint: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message} ({self.hint})"


@dataclass(frozen=True, slots=True)
class Declaration:
    """The spec and the name of the decorated entry function."""

    spec: SkillSpec
    function: str
    line: int


def _callee(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _literal(node: ast.expr, what: str) -> Any:
    if isinstance(node, ast.Call) and _callee(node.func) in _TRIGGERS:
        name = _callee(node.func)
        assert name is not None
        args = [_literal(a, what) for a in node.args]
        kwargs = {k.arg: _literal(k.value, what) for k in node.keywords if k.arg}
        try:
            return _TRIGGERS[name](*args, **kwargs)
        except (SkillDefinitionError, TypeError) as exc:
            raise ManifestError(
                "manifest-invalid",
                node.lineno,
                node.col_offset + 1,
                f"{what}: {exc}",
                "fix the trigger arguments",
            ) from None
    try:
        return ast.literal_eval(node)
    except ValueError:
        raise ManifestError(
            "manifest-not-literal",
            node.lineno,
            node.col_offset + 1,
            f"@skill argument {what!r} is not a literal",
            "write the value itself (strings, numbers, lists, dicts, cron(...), event(...)), "
            "not a variable or expression",
        ) from None


def read_declaration(source: str) -> Declaration:
    """The single ``@skill(...)`` declaration of ``source``; ``ManifestError`` otherwise."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ManifestError(
            "syntax-error",
            exc.lineno or 0,
            exc.offset or 0,
            f"syntax error: {exc.msg}",
            "fix the Python syntax",
        ) from None
    except (MemoryError, RecursionError, ValueError):
        raise ManifestError(
            "too-complex",
            1,
            0,
            "the source is nested too deeply to parse",
            "flatten deeply nested expressions",
        ) from None
    found: list[tuple[ast.FunctionDef, ast.Call]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and _callee(dec.func) == "skill":
                    found.append((node, dec))  # type: ignore[arg-type]
                elif _callee(dec) == "skill":
                    raise ManifestError(
                        "manifest-invalid",
                        dec.lineno,
                        dec.col_offset + 1,
                        "@skill needs arguments",
                        'write @skill(name="my-skill", ...)',
                    )
    if not found:
        raise ManifestError(
            "no-skill",
            1,
            0,
            "no @skill-decorated function",
            "decorate the entry function with @skill(name=...) from loopwright.sdk",
        )
    if len(found) > 1:
        fn, _ = found[1]
        raise ManifestError(
            "several-skills",
            fn.lineno,
            fn.col_offset + 1,
            f"{len(found)} @skill functions ({', '.join(f.name for f, _ in found)})",
            "keep one @skill per module",
        )
    fn, call = found[0]
    if call.args:
        raise ManifestError(
            "manifest-invalid",
            call.lineno,
            call.col_offset + 1,
            "@skill takes keyword arguments only",
            'write @skill(name="my-skill", ...)',
        )
    kwargs: dict[str, Any] = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise ManifestError(
                "manifest-not-literal",
                kw.value.lineno,
                kw.value.col_offset + 1,
                "@skill(**...) is not allowed",
                "write each argument out",
            )
        kwargs[kw.arg] = _literal(kw.value, kw.arg)

    def entry(ctx: Any) -> None:
        """Stand-in for the declared function (never called)."""

    try:
        spec = spec_of(skill(**kwargs)(entry))
    except (SkillDefinitionError, TypeError) as exc:
        raise ManifestError(
            "manifest-invalid",
            call.lineno,
            call.col_offset + 1,
            f"invalid @skill(...): {exc}",
            "see the @skill reference in the README",
        ) from None
    assert spec is not None
    return Declaration(spec=spec, function=fn.name, line=fn.lineno)
