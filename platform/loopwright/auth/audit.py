"""The audit log: who did what, when, through which door (API, pages, CLI).

One capped Redis stream (``{p}:audit``). An entry names the principal (``author:name`` and
token id), the action (``runs.cancel``, ``skills.pause`` ...), its target and a short outcome.
Writing it never fails the action it records: an audit write that cannot reach Redis is logged
and dropped, because the action itself already needed Redis and succeeded.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from redis import Redis

    from loopwright.auth.tokens import Principal
    from loopwright.keys import Keys

log = logging.getLogger(__name__)

AUDIT_MAX = 100_000
_FIELD_MAX = 500


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the audit log."""

    id: str
    ts: int
    who: str
    token_id: str
    action: str
    target: str
    outcome: str
    via: str
    detail: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {
            "id": self.id,
            "ts": self.ts,
            "who": self.who,
            "token_id": self.token_id,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "via": self.via,
            "detail": self.detail,
        }


class AuditLog:
    """Appends to and reads the audit stream."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    def record(
        self,
        who: Principal,
        action: str,
        target: str,
        *,
        outcome: str = "ok",
        via: str = "api",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append one entry (capped fields; never raises)."""
        fields = {
            "ts": str(int(time.time() * 1000)),
            "who": who.identity[:_FIELD_MAX],
            "token_id": who.token_id,
            "action": action[:_FIELD_MAX],
            "target": target[:_FIELD_MAX],
            "outcome": outcome[:_FIELD_MAX],
            "via": via,
            "detail": json.dumps(detail or {}, default=str)[: _FIELD_MAX * 4],
        }
        try:
            self.redis.xadd(self.keys.audit, fields, maxlen=AUDIT_MAX, approximate=True)  # type: ignore[arg-type]
        except RedisError:
            log.warning("audit: could not record %s %s by %s", action, target, who.identity)

    def recent(self, limit: int = 100) -> list[AuditEntry]:
        """The newest entries first."""
        rows: list[tuple[str, dict[str, str]]] = self.redis.xrevrange(  # type: ignore[assignment]
            self.keys.audit, count=max(1, min(limit, 1000))
        )
        out = []
        for entry_id, f in rows:
            try:
                detail = json.loads(f.get("detail") or "{}")
            except ValueError:
                detail = {}
            out.append(
                AuditEntry(
                    id=str(entry_id),
                    ts=int(f.get("ts") or 0),
                    who=f.get("who", ""),
                    token_id=f.get("token_id", ""),
                    action=f.get("action", ""),
                    target=f.get("target", ""),
                    outcome=f.get("outcome", ""),
                    via=f.get("via", ""),
                    detail=detail if isinstance(detail, dict) else {},
                )
            )
        return out
