"""Sending events: one Lua script dedupes the id and appends to the stream, atomically."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from redis import Redis

from loopwright.errors import UserError
from loopwright.keys import Keys
from loopwright.runner.records import encode_json, now_ms
from loopwright.sdk.errors import StepOutputError
from loopwright.sdk.names import EVENT_ID, EVENT_NAME  # checked with fullmatch

# Atomically: accept an event id once per retention window and append the event to the stream.
# A duplicate id appends nothing and returns the stream id of the first acceptance.
# KEYS: seen marker, stream   ARGV: name, id, data JSON, ts, retention s, stream cap
SEND_LUA = """
local first = redis.call('GET', KEYS[1])
if first then return {0, first} end
local sid = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*',
  'name', ARGV[1], 'id', ARGV[2], 'data', ARGV[3], 'ts', ARGV[4])
redis.call('SET', KEYS[1], sid, 'EX', ARGV[5])
return {1, sid}
"""


@dataclass(frozen=True, slots=True)
class SentEvent:
    """What happened to an event: its id, its stream entry, and whether it was new."""

    id: str
    stream_id: str
    accepted: bool


class EventBus:
    """The event stream's write side."""

    def __init__(
        self, redis: Redis, keys: Keys, *, max_bytes: int, retention_s: int, stream_cap: int
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._max = max_bytes
        self._retention = retention_s
        self._cap = stream_cap
        self._send = redis.register_script(SEND_LUA)

    def send(self, name: str, data: Any = None, event_id: str | None = None) -> SentEvent:
        """Accept an event (durably in the stream) or recognise a duplicate id."""
        if not isinstance(name, str) or not EVENT_NAME.fullmatch(name):
            raise UserError(
                f"event name {str(name)[:80]!r} must be 1-128 of letters, digits and _ . : / -"
            )
        if event_id is not None and (
            not isinstance(event_id, str) or not EVENT_ID.fullmatch(event_id)
        ):
            raise UserError("event id must be 1-200 of letters, digits and _ . : / -")
        eid = event_id or uuid.uuid4().hex
        try:
            payload = encode_json(
                data if data is not None else {}, what="event data", max_bytes=self._max
            )
        except StepOutputError as exc:
            raise UserError(str(exc)) from None
        k = self._keys
        res = self._send(
            keys=[k.event_seen(eid), k.events],
            args=[name, eid, payload, now_ms(), self._retention, self._cap],
        )
        return SentEvent(id=eid, stream_id=str(res[1]), accepted=bool(int(res[0])))


def decode_entry(fields: dict[str, str]) -> dict[str, Any]:
    """A stream entry as the event dict skills see: ``{"name", "data", "id", "ts"}``."""
    return {
        "name": fields.get("name", ""),
        "data": json.loads(fields.get("data") or "{}"),
        "id": fields.get("id", ""),
        "ts": int(fields.get("ts") or 0),
    }


def matches(match: dict[str, Any] | None, event: dict[str, Any]) -> bool:
    """Every ``match`` key (a dotted path into the event's data) equals the event's value."""
    for path, expected in (match or {}).items():
        value: Any = event.get("data")
        for part in str(path).removeprefix("data.").split("."):
            if not isinstance(value, dict) or part not in value:
                return False
            value = value[part]
        if value != expected:
            return False
    return True
