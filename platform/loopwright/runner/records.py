"""Run and step records as they live in Redis, and the JSON codec with size caps."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from loopwright.sdk.errors import StepOutputError
from loopwright.sdk.steps import StepKind, kind_matches, read_kind

# Step records carry ``"v": 2`` since replay checks kinds; records without it were written
# before (``wait`` for wait_for_event; ``llm``, ``send_event`` and a failed ``invoke`` as
# ``run``) and are read with ``sdk.steps.read_kind``/``kind_matches``.
STEP_RECORD_FORMAT = 2


class RunStatus(StrEnum):
    """A run's state. ``queued`` -> ``running`` -> (``sleeping`` -> ``queued`` ...) -> terminal."""

    QUEUED = "queued"
    RUNNING = "running"
    SLEEPING = "sleeping"
    WAITING = "waiting"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"

    @property
    def terminal(self) -> bool:
        """No further change will happen."""
        return self in (
            RunStatus.COMPLETED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.SKIPPED,
        )


def now_ms() -> int:
    """Wall-clock milliseconds (timestamps in records)."""
    import time

    return int(time.time() * 1000)


def _int(value: str | None, default: int = 0) -> int:
    return int(value) if value not in (None, "") else default


@dataclass(slots=True)
class Run:
    """A run record, decoded from its hash."""

    id: str
    skill: str
    version: str
    status: RunStatus
    trigger: dict[str, Any]
    event: dict[str, Any]
    params: dict[str, Any]
    attempts: int = 0
    created_at: int = 0
    started_at: int | None = None
    finished_at: int | None = None
    updated_at: int | None = None
    output: Any = None
    error: str | None = None
    parent: str | None = None
    fence: int = 0
    timeout: float | None = None
    active_ms: int = 0
    wake_at: int | None = None
    reaps: int = 0
    trusted: bool = False
    parent_seq: int | None = None
    raw: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Run:
        """Decode the hash ``HGETALL`` returned (decoded strings)."""
        return cls(
            id=h["id"],
            skill=h.get("skill", ""),
            version=h.get("version", ""),
            status=RunStatus(h.get("status", "queued")),
            trigger=json.loads(h.get("trigger") or "{}"),
            event=json.loads(h.get("event") or "{}"),
            params=json.loads(h.get("params") or "{}"),
            attempts=_int(h.get("attempts")),
            created_at=_int(h.get("created_at")),
            started_at=_int(h.get("started_at")) or None,
            finished_at=_int(h.get("finished_at")) or None,
            updated_at=_int(h.get("updated_at")) or None,
            output=json.loads(h["output"]) if h.get("output") else None,
            error=h.get("error") or None,
            parent=h.get("parent") or None,
            fence=_int(h.get("fence")),
            timeout=float(h["timeout"]) if h.get("timeout") else None,
            active_ms=_int(h.get("active_ms")),
            wake_at=_int(h.get("wake_at")) or None,
            reaps=_int(h.get("reaps")),
            trusted=h.get("trusted") == "1",
            parent_seq=_int(h.get("parent_seq")) or None,
            raw=h,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON view for the CLI and API."""
        return {
            "id": self.id,
            "skill": self.skill,
            "version": self.version,
            "status": self.status.value,
            "trigger": self.trigger,
            "event": self.event,
            "params": self.params,
            "attempts": self.attempts,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "output": self.output,
            "error": self.error,
            "parent": self.parent,
            "timeout": self.timeout,
            "active_ms": self.active_ms,
            "wake_at": self.wake_at,
            "reaps": self.reaps,
            "trusted": self.trusted,
        }


@dataclass(slots=True)
class StepRecord:
    """One checkpoint: a step at position ``seq`` with its name, kind, status and result.

    ``legacy`` marks a record written before kinds were checked (no format version).
    """

    seq: int
    name: str
    kind: StepKind
    status: str
    attempts: int = 1
    started_at: int = 0
    ended_at: int = 0
    output: Any = None
    ref: bool = False
    error: str | None = None
    until: int | None = None
    child: str | None = None
    event: str | None = None
    match: dict[str, Any] | None = None
    legacy: bool = False

    @classmethod
    def from_json(cls, raw: str) -> StepRecord:
        """Decode a record stored in the steps hash."""
        d = json.loads(raw)
        return cls(
            seq=int(d["seq"]),
            name=d["name"],
            kind=read_kind(d.get("kind")),
            status=d["status"],
            attempts=int(d.get("attempts", 1)),
            started_at=int(d.get("started_at", 0)),
            ended_at=int(d.get("ended_at", 0)),
            output=d.get("output"),
            ref=bool(d.get("ref", False)),
            error=d.get("error"),
            until=d.get("until"),
            child=d.get("child"),
            event=d.get("event"),
            match=d.get("match"),
            legacy="v" not in d,
        )

    def replays_as(self, kind: StepKind) -> bool:
        """True when a step of ``kind`` may replay this record (old records included)."""
        return kind_matches(self.kind, kind, legacy=self.legacy)

    def to_dict(self) -> dict[str, Any]:
        """JSON view for the CLI and API."""
        return {
            "seq": self.seq,
            "name": self.name,
            "kind": self.kind.value,
            "status": self.status,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "duration_ms": max(0, self.ended_at - self.started_at) if self.ended_at else None,
            "output": self.output,
            "error": self.error,
            "until": self.until,
            "child": self.child,
            "event": self.event,
        }

    def header_json(self) -> str:
        """The record without ``output``, as a JSON object missing its closing brace.

        The caller appends the already-encoded output, which avoids encoding it twice on the
        hot path.
        """
        head: dict[str, Any] = {
            "seq": self.seq,
            "name": self.name,
            "kind": self.kind.value,
            "status": self.status,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "v": STEP_RECORD_FORMAT,
        }
        if self.ref:
            head["ref"] = True
        if self.error is not None:
            head["error"] = self.error
        if self.until is not None:
            head["until"] = self.until
        if self.child is not None:
            head["child"] = self.child
        if self.event is not None:
            head["event"] = self.event
            head["match"] = self.match or {}
        return json.dumps(head, separators=(",", ":"))[:-1]


def encode_json(value: Any, *, what: str, max_bytes: int) -> str:
    """Encode ``value`` as strict JSON or raise ``StepOutputError`` saying what is wrong."""
    try:
        encoded = json.dumps(value, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
        size = len(encoded.encode("utf-8")) if not encoded.isascii() else len(encoded)
    except RecursionError:
        raise StepOutputError(f"{what} is nested too deeply to be stored as JSON") from None
    except UnicodeEncodeError:
        raise StepOutputError(
            f"{what} contains text that is not valid Unicode (a lone surrogate such as \\ud800)"
        ) from None
    except (TypeError, ValueError) as exc:
        raise StepOutputError(
            f"{what} is not JSON ({exc}); return dicts, lists, strings, numbers, booleans or None"
        ) from exc
    if size > max_bytes:
        raise StepOutputError(
            f"{what} is {size} bytes, over the {max_bytes}-byte cap; store large data elsewhere "
            f"and return a reference, or raise LOOPWRIGHT_STEP_OUTPUT_MAX_BYTES"
        )
    return encoded
