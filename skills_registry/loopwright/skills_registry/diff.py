"""What changed between two versions of a skill: source lines, manifest fields, test cases."""

from __future__ import annotations

import difflib
import json
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

if TYPE_CHECKING:
    from loopwright.skills_registry.store import Registry


class VersionDiff(BaseModel):
    """The difference from version ``a`` to version ``b``."""

    name: str
    a: str | None
    b: str
    lines_added: int
    lines_removed: int
    manifest: dict[str, dict[str, Any]]
    tests_added: list[str]
    tests_removed: list[str]
    tests_changed: list[str]
    source_diff: str

    def summary(self) -> str:
        """One line a person or an LLM can read: what this version changes."""
        if self.a is None:
            return f"new skill {self.name}"
        parts = []
        if self.lines_added or self.lines_removed:
            parts.append(f"source +{self.lines_added}/-{self.lines_removed} lines")
        if self.manifest:
            parts.append("manifest: " + ", ".join(sorted(self.manifest)))
        tests = []
        for label, names in (
            ("added", self.tests_added),
            ("removed", self.tests_removed),
            ("changed", self.tests_changed),
        ):
            if names:
                tests.append(f"{label} {', '.join(names)}")
        if tests:
            parts.append("tests " + "; ".join(tests))
        return "; ".join(parts) or "no change"


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys, so a diff names the field that changed
    (``params.p95_ms.default``), not the whole ``params`` block."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flatten(value, path + "."))
        else:
            out[path] = value
    return out


def _cases(tests: list[Any] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for i, case in enumerate(tests or []):
        name = str(case.get("name", f"#{i}")) if isinstance(case, dict) else f"#{i}"
        out[name] = json.dumps(case, sort_keys=True)
    return out


def diff_versions(
    name: str,
    a: tuple[str, str, dict[str, Any] | None, list[Any] | None] | None,
    b: tuple[str, str, dict[str, Any] | None, list[Any] | None],
) -> VersionDiff:
    """Diff ``a`` -> ``b``, each given as (version, source, manifest, tests); ``a`` may be None
    (a first version)."""
    b_ver, b_src, b_man, b_tests = b
    a_ver, a_src, a_man, a_tests = a if a is not None else (None, "", {}, [])
    lines = list(
        difflib.unified_diff(
            a_src.splitlines(keepends=True),
            b_src.splitlines(keepends=True),
            fromfile=f"{name}@{(a_ver or 'none')[:12]}",
            tofile=f"{name}@{b_ver[:12]}",
        )
    )
    added = sum(1 for ln in lines if ln.startswith("+") and not ln.startswith("+++"))
    removed = sum(1 for ln in lines if ln.startswith("-") and not ln.startswith("---"))
    manifest: dict[str, dict[str, Any]] = {}
    if a is not None:
        a_m, b_m = _flatten(a_man or {}), _flatten(b_man or {})
        for key in sorted(set(a_m) | set(b_m)):
            if a_m.get(key) != b_m.get(key):
                manifest[key] = {"from": a_m.get(key), "to": b_m.get(key)}
    ca, cb = _cases(a_tests), _cases(b_tests)
    return VersionDiff(
        name=name,
        a=a_ver,
        b=b_ver,
        lines_added=added,
        lines_removed=removed,
        manifest=manifest,
        tests_added=sorted(set(cb) - set(ca)) if a is not None else [],
        tests_removed=sorted(set(ca) - set(cb)),
        tests_changed=sorted(n for n in set(ca) & set(cb) if ca[n] != cb[n]),
        source_diff=""
        if a is None
        else "".join(ln if ln.endswith("\n") else ln + "\n" for ln in lines),
    )


def diff_refs(registry: Registry, name: str, ref_a: str | None, ref_b: str) -> VersionDiff:
    """Diff two stored versions of ``name`` (version ids or unique prefixes)."""

    def load(ref: str) -> tuple[str, str, dict[str, Any] | None, list[Any] | None]:
        rec = registry.version(name, ref)
        return rec.version, registry.source(rec.version), rec.manifest, rec.tests

    return diff_versions(name, load(ref_a) if ref_a else None, load(ref_b))
