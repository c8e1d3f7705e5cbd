"""Folder watch: a skill file dropped or changed in a folder goes through the same pipeline.

Polling (no inotify dependency): every ``interval`` the folder's ``*.py`` files and their
``NAME.tests.json`` are looked at; a file whose size and mtime held still for one interval
(so a half-written file is not taken) and whose content changed since it was last processed is
submitted. Every outcome is reported — accepted, rejected with its findings, or unreadable —
never silently skipped; each file is submitted on its own, so a broken file never disturbs the
other skills.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopwright.errors import LoopwrightError
from loopwright.sidecar.pipeline import Sidecar
from loopwright.skills_registry.files import tests_path

log = logging.getLogger(__name__)
Report = Callable[[dict[str, Any]], None]


@dataclass
class _Seen:
    signature: tuple[int, int, int, int]
    digest: str = ""
    report: dict[str, Any] = field(default_factory=dict)


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    tpath = tests_path(path)
    try:
        tst = tpath.stat()
        tests = (tst.st_size, tst.st_mtime_ns)
    except OSError:
        tests = (-1, 0)
    return (st.st_size, st.st_mtime_ns, *tests)


class Watcher:
    """Watches one folder and submits what changes (author ``person`` by default)."""

    def __init__(
        self,
        sidecar: Sidecar,
        directory: Path,
        *,
        interval: float = 0.3,
        author: str = "person",
        on_report: Report | None = None,
        max_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.sidecar = sidecar
        self.directory = directory
        self.interval = interval
        self.author = author
        self.on_report = on_report
        self.max_bytes = max_bytes
        self._seen: dict[Path, _Seen] = {}
        self._pending: dict[Path, tuple[int, int, int, int]] = {}
        self._lock = threading.Lock()

    def reports(self) -> list[dict[str, Any]]:
        """The latest report of every file seen (for ``GET /v1/watch``)."""
        with self._lock:
            return [s.report for _, s in sorted(self._seen.items()) if s.report]

    def scan(self, settle: bool = True) -> list[dict[str, Any]]:
        """One pass over the folder; returns the reports of files processed in it.

        With ``settle`` a file is taken only once its size and mtime held still since the
        previous pass; without it (``--once``) everything is taken now.
        """
        out: list[dict[str, Any]] = []
        try:
            paths = sorted(p for p in self.directory.glob("*.py") if not p.name.startswith("."))
        except OSError as exc:
            log.error("cannot list %s: %s", self.directory, exc)
            return out
        for gone in set(self._seen) - set(paths):
            self._emit(out, {"file": gone.name, "event": "removed", "summary": _REMOVED})
            with self._lock:
                del self._seen[gone]
        for path in paths:
            sig = _signature(path)
            if sig is None:
                continue
            seen = self._seen.get(path)
            if seen is not None and seen.signature == sig:
                self._pending.pop(path, None)
                continue
            if settle and self._pending.get(path) != sig:
                self._pending[path] = sig  # changed since the last pass: wait until it settles
                continue
            self._pending.pop(path, None)
            report = self._process(path, sig, seen)
            if report is not None:
                self._emit(out, report)
        return out

    def _emit(self, out: list[dict[str, Any]], report: dict[str, Any]) -> None:
        out.append(report)
        if self.on_report is not None:
            self.on_report(report)
        else:  # nobody shows the reports: the log must
            level = logging.INFO if report.get("accepted") else logging.ERROR
            if report.get("event") == "removed":
                level = logging.WARNING
            log.log(level, "watch: %s: %s", report["file"], report["summary"])

    def _read(self, path: Path) -> tuple[str, str | None]:
        def text(p: Path) -> str:
            if p.stat().st_size > self.max_bytes:
                raise ValueError(f"{p.name} is over {self.max_bytes} bytes")
            return p.read_text(encoding="utf-8")

        tpath = tests_path(path)
        return text(path), (text(tpath) if tpath.exists() else None)

    def _process(
        self, path: Path, sig: tuple[int, int, int, int], seen: _Seen | None
    ) -> dict[str, Any] | None:
        try:
            source, tests = self._read(path)
        except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
            report = {"file": path.name, "event": "unreadable", "accepted": False}
            report["summary"] = f"cannot read {path.name}: {exc}"
            self._remember(path, _Seen(sig, "", report))
            return report
        digest = hashlib.sha256(f"{source}\x00{tests}".encode()).hexdigest()
        if seen is not None and seen.digest == digest:  # touched, not changed
            self._remember(path, _Seen(sig, digest, seen.report))
            return None
        began = time.perf_counter()
        try:
            verdict = self.sidecar.submit(source, tests, author=self.author)
        except LoopwrightError as exc:  # not remembered: the next pass tries again
            return {"file": path.name, "event": "error", "accepted": False, "summary": str(exc)}
        report = {
            "file": path.name,
            "event": "accepted" if verdict.accepted else "rejected",
            "accepted": verdict.accepted,
            "name": verdict.name,
            "version": verdict.version,
            "stage": verdict.stage,
            "summary": verdict.first_line(),
            "findings": [f.to_dict() for f in verdict.findings],
            "took_ms": round((time.perf_counter() - began) * 1000, 1),
        }
        self._remember(path, _Seen(sig, digest, report))
        return report

    def _remember(self, path: Path, seen: _Seen) -> None:
        with self._lock:
            self._seen[path] = seen

    def run(self, stop: threading.Event) -> None:
        """Scan every ``interval`` until ``stop`` is set; a failing pass is logged, not fatal."""
        while not stop.is_set():
            try:
                self.scan()
            except Exception:  # the watch must outlive one bad pass (e.g. Redis blip)
                log.exception("watch pass over %s failed", self.directory)
            stop.wait(self.interval)


_REMOVED = (
    "file removed; the skill stays registered (retire it with 'loopwright skills retire NAME')"
)
