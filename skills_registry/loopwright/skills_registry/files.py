"""Export the registry's active skills to a folder a person can review and commit, and read such
a folder back for import.

Layout (deterministic, so a re-export of an unchanged registry is a no-op in git)::

    DIR/registry.json          index: name -> version, status, author, owner, parent, files
    DIR/NAME.py                the active version's source
    DIR/NAME.tests.json        its test cases (absent for versions run straight from a file)

Import sends every ``NAME.py`` with its ``NAME.tests.json`` through the sidecar's pipeline, so
an edited file is validated like any submission; the same content gets the same version id.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loopwright.errors import UserError
from loopwright.skills_registry.store import Registry

INDEX = "registry.json"
TESTS_SUFFIX = ".tests.json"
FORMAT = 1


def tests_path(skill_file: Path) -> Path:
    """``NAME.tests.json`` beside ``NAME.py``."""
    return skill_file.with_name(skill_file.stem + TESTS_SUFFIX)


def _write(path: Path, text: str) -> bool:
    """Write ``text`` atomically unless the file already holds it; True when written."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (FileNotFoundError, UnicodeDecodeError):
        pass
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def export_dir(registry: Registry, directory: Path) -> dict[str, Any]:
    """Write every active or paused skill's active version into ``directory``."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {directory}: {exc.strerror}") from None
    index: dict[str, Any] = {}
    written: list[str] = []
    untested: list[str] = []
    for skill in registry.skills():
        if skill.active is None or skill.status not in ("active", "paused"):
            continue
        rec = registry.version(skill.name, skill.active)
        files = {"source": f"{skill.name}.py"}
        if _write(directory / files["source"], registry.source(rec.version)):
            written.append(files["source"])
        if rec.tests is not None:
            files["tests"] = f"{skill.name}{TESTS_SUFFIX}"
            text = json.dumps(rec.tests, indent=2, ensure_ascii=False) + "\n"
            if _write(directory / files["tests"], text):
                written.append(files["tests"])
        else:
            untested.append(skill.name)
        index[skill.name] = {
            "version": rec.version,
            "status": skill.status,
            "author": rec.author,
            "owner": skill.owner,
            "parent": rec.parent,
            "created_at": rec.created_at,
            "files": files,
        }
    removed = _remove_stale(directory, index)
    text = json.dumps({"format": FORMAT, "skills": index}, indent=2, sort_keys=True) + "\n"
    if _write(directory / INDEX, text):
        written.append(INDEX)
    return {
        "directory": str(directory),
        "skills": index,
        "written": written,
        "removed": removed,
        "untested": untested,
    }


def _remove_stale(directory: Path, index: dict[str, Any]) -> list[str]:
    """Delete the files a previous export wrote for skills no longer exported (retired), and
    only those: other files in the folder are the person's."""
    try:
        old = json.loads((directory / INDEX).read_text(encoding="utf-8")).get("skills") or {}
    except (OSError, ValueError, AttributeError):
        return []
    keep = {f for entry in index.values() for f in entry["files"].values()}
    removed = []
    for name, entry in old.items():
        if name in index or not isinstance(entry, dict):
            continue
        for fname in (entry.get("files") or {}).values():
            path = directory / str(fname)
            if str(fname) not in keep and path.parent == directory and path.exists():
                path.unlink()
                removed.append(str(fname))
    return removed


@dataclass(frozen=True, slots=True)
class ExportedSkill:
    """One skill file found in a folder, with its tests text (None when there is none)."""

    path: Path
    source: str
    tests: str | None
    status: str | None


def _read(path: Path, max_bytes: int) -> str:
    try:
        if path.stat().st_size > max_bytes:
            raise UserError(f"{path}: over the {max_bytes}-byte cap")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot read: {exc.strerror}") from None


def read_dir(directory: Path, max_bytes: int) -> list[ExportedSkill | tuple[Path, str]]:
    """Every ``*.py`` in ``directory`` (sorted) with its tests and exported status; a file that
    cannot be read comes back as (path, reason), never silently skipped."""
    if not directory.is_dir():
        raise UserError(f"{directory}: not a folder")
    statuses: dict[str, str] = {}
    index = directory / INDEX
    if index.exists():
        try:
            data = json.loads(_read(index, max_bytes))
            for entry in (data.get("skills") or {}).values():
                statuses[str(entry["files"]["source"])] = str(entry.get("status"))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise UserError(f"{index}: not a Loopwright export index ({exc})") from None
    out: list[ExportedSkill | tuple[Path, str]] = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith((".", "_")):
            continue
        try:
            source = _read(path, max_bytes)
            tpath = tests_path(path)
            tests = _read(tpath, max_bytes) if tpath.exists() else None
        except UserError as exc:
            out.append((path, str(exc)))
            continue
        out.append(ExportedSkill(path, source, tests, statuses.get(path.name)))
    return out
