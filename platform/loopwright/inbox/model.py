"""What a notice is: its fields, the levels and sources it may have, and how the inbox written
before issue 15 (a capped list of JSON entries) reads in today's shape.

A notice is stored as one Redis hash (``Keys.inbox_notice``) so that acknowledging it is a field
update, never a rewrite of text a skill controls.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Final

LEVELS: Final = ("info", "warning", "error")
SOURCES: Final = ("skill", "platform", "alert", "review", "security")
TITLE_MAX: Final = 300
BODY_MAX: Final = 8000

# What skills wrote as ``level`` before levels were checked, read as one of LEVELS.
LEVEL_ALIASES: Final = {
    "debug": "info",
    "notice": "info",
    "warn": "warning",
    "critical": "error",
    "fatal": "error",
    "err": "error",
}


def normal_level(level: str) -> str | None:
    """``level`` as one of :data:`LEVELS` (case and the usual aliases forgiven), else None."""
    low = str(level).strip().lower()
    low = LEVEL_ALIASES.get(low, low)
    return low if low in LEVELS else None


@dataclass(frozen=True, slots=True)
class Notice:
    """One inbox notice. ``id`` is an increasing integer (as text): newer notices have larger
    ids, and an id never changes or comes back. ``ts`` is the server time in ms."""

    id: str
    ts: int
    level: str
    source: str
    title: str
    body: str = ""
    skill: str | None = None
    run_id: str | None = None
    dedupe_key: str | None = None
    acked_by: str | None = None
    acked_at: int | None = None

    @property
    def acknowledged(self) -> bool:
        """Someone acknowledged it (``loopwright inbox ack``)."""
        return self.acked_at is not None

    @classmethod
    def from_hash(cls, h: dict[str, str]) -> Notice:
        """From the stored hash (every value text)."""
        acked_at = h.get("acked_at")
        return cls(
            id=h["id"],
            ts=int(h.get("ts") or 0),
            level=h.get("level") or "info",
            source=h.get("source") or "platform",
            title=h.get("title") or "",
            body=h.get("body") or "",
            skill=h.get("skill") or None,
            run_id=h.get("run_id") or None,
            dedupe_key=h.get("dedupe") or None,
            acked_by=h.get("acked_by") or None,
            acked_at=int(acked_at) if acked_at else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON shape (``loopwright inbox --json``); ``message`` repeats ``body`` for what
        read the inbox before issue 15."""
        d = asdict(self)
        d["acknowledged"] = self.acknowledged
        d["message"] = self.body
        return d


@dataclass(frozen=True, slots=True)
class Draft:
    """A notice before it has an id and a time (what ``Inbox.post`` stores)."""

    level: str
    source: str
    title: str
    body: str = ""
    skill: str | None = None
    run_id: str | None = None
    dedupe_key: str | None = None
    ts: int | None = None  # None: the server's clock when stored (legacy entries keep theirs)


def legacy_draft(raw: str) -> Draft:
    """An entry of the pre-issue-15 list (``{ts, run_id, skill, level, title, message,
    idempotency_key}``) as a draft. Nothing is dropped: an entry that is not that JSON
    becomes a platform notice whose body is its text."""
    try:
        e = json.loads(raw)
    except ValueError:
        e = None
    if not isinstance(e, dict):
        return Draft(level="info", source="platform", title="", body=raw[:BODY_MAX])
    skill = str(e.get("skill") or "") or None
    ts = e.get("ts")
    key = e.get("idempotency_key")
    return Draft(
        level=normal_level(str(e.get("level") or "info")) or "info",
        source="skill" if skill else "platform",
        title=str(e.get("title") or "")[:TITLE_MAX],
        body=str(e.get("message") or "")[:BODY_MAX],
        skill=skill,
        run_id=str(e.get("run_id") or "") or None,
        dedupe_key=str(key) if key else None,
        ts=ts if isinstance(ts, int) and not isinstance(ts, bool) else 0,
    )
