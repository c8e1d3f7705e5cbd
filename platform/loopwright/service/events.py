"""The recent-events feed the API (``GET /api/v1/events``) and the MCP server (``list_events``)
both answer: the newest accepted events of the stream, their JSON fields decoded."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis import Redis

    from loopwright.keys import Keys

JSON_FIELDS = ("data", "lineage")


def recent_events(redis: Redis, keys: Keys, limit: int) -> list[dict[str, Any]]:
    """The newest ``limit`` events, newest first: each entry's fields with its ``stream_id``;
    ``data`` and ``lineage`` parsed (kept as text when a stored value is not JSON)."""
    rows: list[tuple[str, dict[str, str]]] = redis.xrevrange(keys.events, count=limit)  # type: ignore[assignment]
    out = []
    for stream_id, fields in rows:
        entry: dict[str, Any] = {"stream_id": str(stream_id)}
        for k, v in fields.items():
            if k in JSON_FIELDS:
                try:
                    entry[k] = json.loads(v)
                except ValueError:
                    entry[k] = v
            else:
                entry[k] = v
        out.append(entry)
    return out
