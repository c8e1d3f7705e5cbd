"""Replay a run (``loopwright runs replay``; the API will call the same): the recorded outcome
next to the replayed one, with the differences, as JSON-ready data and as plain lines.

Everything shown comes from a skill (outputs, errors, URLs, messages): the lines are made
printable here (control characters escaped, lengths bounded) before any terminal sees them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from loopwright.errors import UserError
from loopwright.history.replay import replay_run
from loopwright.runner.runtime import Runtime
from loopwright.sidecar.replay import Difference

MAX_FILE_BYTES = 512 * 1024
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069]")


def printable(value: Any, width: int = 120) -> str:
    """A one-line, escaped, bounded view of untrusted ``value``."""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group(0)):02x}", text)
    return text if len(text) <= width else text[: width - 1] + "…"


def read_source(path: Path) -> str:
    """A skill file's text, or a one-line ``UserError``."""
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise UserError(f"--file {path}: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise UserError(f"--file {path} is over {MAX_FILE_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"--file {path} is not UTF-8 text") from None


def replay(
    rt: Runtime, run_id: str, *, version: str | None = None, file: Path | None = None
) -> dict[str, Any]:
    """Replay ``run_id`` on a version (its own by default) or a file; the report as data."""
    if version is not None and file is not None:
        raise UserError("give --version or --file, not both")
    source = read_source(file) if file is not None else None
    cand, diff = replay_run(rt, run_id, version=version, source=source)
    return report(diff, cand.version or "file")


def report(diff: Difference, version: str) -> dict[str, Any]:
    """The comparison as JSON-ready data."""
    got = diff.replayed
    return {
        "run_id": diff.run_id,
        "version": version,
        "result": diff.kind,
        "recorded": diff.recorded,
        "replayed": {
            "status": got.status,
            "output": got.output,
            "error": got.error,
            "side_effects": [e["tool"] + " " + printable(e["req"], 200) for e in got.side_effects],
            "off_script": got.off_script,
            "answered_calls": got.answered,
            "duration_ms": got.duration_ms,
            "steps": got.steps,
        },
        "differences": {
            "status": diff.status_changed,
            "output": diff.output_changed,
            "side_effects": diff.effects_changed,
            "side_effects_added": diff.effects_added,
            "side_effects_missing": diff.effects_missing,
            "off_script": len(got.off_script),
        },
    }


def lines(data: dict[str, Any]) -> list[str]:
    """The report as plain lines for a terminal (every untrusted value made printable)."""
    rec, rep, diff = data["recorded"], data["replayed"], data["differences"]
    out = [
        f"run {printable(data['run_id'])} replayed on version {printable(data['version'][:12])}: "
        f"{data['result']}",
        f"  recorded: {rec['status']}  output {printable(rec['output'])}"
        + (f"  error {printable(rec['error'])}" if rec["error"] else ""),
        f"  replayed: {rep['status']}  output {printable(rep['output'])}"
        + (f"  error {printable(rep['error'])}" if rep["error"] else ""),
        f"  side effects: recorded {len(rec['side_effects'])}, replayed "
        f"{len(rep['side_effects'])} (captured, not performed); answered calls "
        f"{rep['answered_calls']}, virtual duration {rep['duration_ms']:.1f} ms",
    ]
    if rec.get("recording") == "partial":
        out.append("  note: the run was not fully recorded (recording: partial)")
    for key in ("status", "output", "side_effects"):
        if diff[key]:
            out.append(f"  differs: {key}")
    for shown in diff["side_effects_added"]:
        out.append(f"  + side effect {printable(shown)}")
    for shown in diff["side_effects_missing"]:
        out.append(f"  - side effect {printable(shown)}")
    for off in rep["off_script"]:
        out.append(
            f"  off-script at step {printable(off.get('step'))}: {printable(off['call'])} "
            f"({printable(off['why'])})"
        )
    return out
