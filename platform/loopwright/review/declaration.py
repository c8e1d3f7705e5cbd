"""Changing a skill's declared values (``params`` defaults, ``retries``, ``backoff``,
``timeout``) in its source, through the syntax tree.

The ``@skill(...)`` call is found in the parsed module and only the text span of the one value
node is replaced (or a keyword appended before the call's closing parenthesis), so comments,
formatting and every other line stay as written, and a string elsewhere that happens to look
like the value is never touched (what a text search-and-replace would get wrong). The result is
parsed again and its manifest must carry the new values, or :class:`DeclarationError` says why.
"""

from __future__ import annotations

import ast
from typing import Any

from loopwright.errors import SkillAuthorError
from loopwright.sdk.manifest import ManifestInvalid, read_manifest

POLICY = ("retries", "backoff", "timeout")


class DeclarationError(SkillAuthorError, ValueError):
    """The declaration cannot be changed as asked (no literal to edit, or the result is
    invalid): a matter of how the skill's author wrote it."""


def _skill_call(tree: ast.Module) -> ast.Call:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call):
                    f = dec.func
                    name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", None)
                    if name == "skill":
                        return dec
    raise DeclarationError("no @skill(...) declaration")


def _offsets(raw: bytes) -> list[int]:
    """Byte offset of each line's start (ast columns are UTF-8 byte offsets)."""
    starts, at = [0], 0
    for line in raw.splitlines(keepends=True):
        at += len(line)
        starts.append(at)
    return starts


def _span(node: ast.expr, starts: list[int]) -> tuple[int, int]:
    end_line, end_col = node.end_lineno, node.end_col_offset
    if end_line is None or end_col is None:
        raise DeclarationError("the declaration has no source positions")
    return starts[node.lineno - 1] + node.col_offset, starts[end_line - 1] + end_col


def _literal(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise DeclarationError(f"only numbers and strings are set here, not {value!r}")
    return repr(value)


def with_values(source: str, params: dict[str, Any], policy: dict[str, Any]) -> str:
    """``source`` with the given ``params`` defaults and policy keywords (``retries``,
    ``backoff``, ``timeout``) set; every param named must already be declared."""
    raw = source.encode("utf-8", "surrogatepass")
    tree = ast.parse(raw)
    call = _skill_call(tree)
    starts = _offsets(raw)
    edits: list[tuple[int, int, str]] = []
    keywords = {k.arg: k for k in call.keywords if k.arg}
    if params:
        kw = keywords.get("params")
        if kw is None or not isinstance(kw.value, ast.Dict):
            raise DeclarationError("params is not declared as a dict literal in @skill(...)")
        found: dict[str, ast.expr] = {}
        for key, value in zip(kw.value.keys, kw.value.values, strict=True):
            if isinstance(key, ast.Constant) and isinstance(key.value, str):
                found[key.value] = value
        for name, value in params.items():
            if name not in found:
                raise DeclarationError(f"param {name!r} is not declared in @skill(params=...)")
            a, b = _span(found[name], starts)
            edits.append((a, b, _literal(value)))
    for name, value in policy.items():
        if name not in POLICY:
            raise DeclarationError(f"{name!r} is not one of {', '.join(POLICY)}")
        if name in keywords:
            a, b = _span(keywords[name].value, starts)
            edits.append((a, b, _literal(value)))
        else:
            _, end = _span(call, starts)
            close = end - 1  # the call's ")"
            before = raw[:close].rstrip()
            sep = "" if before.endswith(b",") else ", "
            edits.append((close, close, f"{sep}{name}={_literal(value)}"))
    out = raw
    order = sorted(range(len(edits)), key=lambda i: (-edits[i][0], -i))  # last edit first
    for a, b, text in (edits[i] for i in order):
        out = out[:a] + text.encode("utf-8") + out[b:]
    new = out.decode("utf-8", "surrogatepass")
    _check(new, params, policy)
    return new


def _check(source: str, params: dict[str, Any], policy: dict[str, Any]) -> None:
    try:
        manifest, _ = read_manifest(source)
    except (ManifestInvalid, SyntaxError) as exc:
        raise DeclarationError(f"the changed declaration is invalid: {exc}") from None
    for name, value in params.items():
        if manifest.params[name].default != value:
            raise DeclarationError(f"param {name!r} did not take the value {value!r}")
    for name, value in policy.items():
        got = getattr(manifest, name)
        if name != "retries" and isinstance(value, str):
            continue  # a duration text ("2m"): the manifest holds its seconds
        if got != value:
            raise DeclarationError(f"{name} did not take the value {value!r}")
