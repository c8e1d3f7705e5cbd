"""Changing a skill's ``@skill(...)`` declaration in its source, and nothing else.

One home for the two ways versions are derived from a version's source (issue 12's
``set_schedule``/``set_params`` builder tools, issue 11's review candidates):

* :func:`derive` sets one keyword argument to an expression (``set_keyword``, plus the SDK
  import the new value needs) and refuses when any other manifest field would change;
* :func:`with_values` sets ``params`` defaults inside the declared dict literal and the policy
  keywords (``retries``, ``backoff``, ``timeout``), checking that the manifest reads back with
  exactly those values.

Both find the call through the syntax tree and replace only the text span of the values they
change, so comments, formatting and the body stay byte for byte (a search-and-replace would
touch a look-alike string elsewhere).
"""

from __future__ import annotations

import ast
from typing import Any

from loopwright.errors import SkillAuthorError, UserError
from loopwright.sdk.manifest import ManifestInvalid, read_declaration, read_manifest


def _offset(lines: list[bytes], lineno: int, col: int) -> int:
    """Byte offset in the UTF-8 source of (1-based line, byte column), as ``ast`` reports."""
    return sum(len(ln) for ln in lines[: lineno - 1]) + col


def set_keyword(source: str, keyword: str, text: str) -> str:
    """``source`` with the ``@skill`` argument ``keyword`` set to the expression ``text``
    (replaced when present, appended as the last argument otherwise)."""
    try:
        decl = read_declaration(source)
    except ManifestInvalid as exc:
        raise UserError(f"the active version's @skill declaration does not read: {exc}") from None
    data = source.encode("utf-8")
    lines = data.splitlines(keepends=True)
    node = decl.positions.get(keyword)
    piece = text.encode("utf-8")
    if node is not None:
        assert node.end_lineno is not None and node.end_col_offset is not None
        start = _offset(lines, node.lineno, node.col_offset)
        end = _offset(lines, node.end_lineno, node.end_col_offset)
        out = data[:start] + piece + data[end:]
    else:
        last = decl.call.keywords[-1].value
        assert last.end_lineno is not None and last.end_col_offset is not None
        end = _offset(lines, last.end_lineno, last.end_col_offset)
        out = data[:end] + b", " + keyword.encode() + b"=" + piece + data[end:]
    return out.decode("utf-8")


def ensure_import(source: str, name: str) -> str:
    """``source`` importing ``name`` from ``loopwright.sdk`` (added to the first such import,
    or as a new line after it / at the top)."""
    tree = ast.parse(source)
    for node in tree.body:
        if (
            isinstance(node, ast.ImportFrom)
            and node.module == "loopwright.sdk"
            and any(a.name == name and a.asname is None for a in node.names)
        ):
            return source
    lines = source.splitlines(keepends=True)
    first = next(
        (n for n in tree.body if isinstance(n, ast.ImportFrom) and n.module == "loopwright.sdk"),
        None,
    )
    line = f"from loopwright.sdk import {name}\n"
    at = first.end_lineno if first is not None and first.end_lineno is not None else 0
    return "".join(lines[:at]) + line + "".join(lines[at:])


def changed_fields(old: str, new: str) -> set[str]:
    """The manifest fields that differ between two sources (both must read)."""
    a = read_manifest(old)[0].model_dump()
    b = read_manifest(new)[0].model_dump()
    return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}


def derive(source: str, keyword: str, text: str, imports: tuple[str, ...] = ()) -> str:
    """The derived source; refuses when more than ``keyword`` would change."""
    out = set_keyword(source, keyword, text)
    for name in imports:
        out = ensure_import(out, name)
    try:
        extra = changed_fields(source, out) - {keyword}
    except ManifestInvalid as exc:
        raise UserError(f"the changed declaration does not read: {exc}") from None
    if extra:
        raise UserError(f"changing {keyword} would also change {sorted(extra)}; not submitted")
    return out


def literal(value: Any) -> str:
    """A Python literal for a JSON value (``repr`` of str/int/float/bool/None/list/dict)."""
    return repr(value)


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
