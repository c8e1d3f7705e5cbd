"""Changing one argument of a skill's ``@skill(...)`` declaration and nothing else.

``set_schedule`` and ``set_params`` derive a new version from the active one: the source is
the same text with one keyword's value spliced in (found through the syntax tree, so comments,
formatting and the body stay byte for byte), plus the SDK import the new value needs. The
result is read back and compared with the old declaration, so an edit that changed anything
beyond the field it names is refused rather than submitted.
"""

from __future__ import annotations

import ast
from typing import Any

from loopwright.errors import UserError
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
