"""Sending events: one Lua script dedupes the id and appends to the stream, atomically."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from redis import Redis

from loopwright.errors import UserError
from loopwright.keys import Keys
from loopwright.runner.lineage import Lineage, Sender
from loopwright.runner.ports import EventBacklogFullError
from loopwright.runner.records import encode_json, now_ms
from loopwright.sdk.errors import StepOutputError
from loopwright.sdk.names import EVENT_ID, EVENT_NAME  # checked with fullmatch

# Atomically: accept an event id once per retention window and append the event to the stream.
# A duplicate id appends nothing and returns the stream id of the first acceptance.
# Backpressure: the stream is never trimmed below what the router has routed (see
# ``router.TRIM_LUA``), so when more than ``backlog max`` accepted events wait to be routed
# (the largest lag + pending of any consumer group, or the stream's length before any group
# exists) a new event is refused ({-3, backlog}) instead of pushing an unrouted one out.
# An event sent by a run is charged to the run's checkpoint storage quota (the ``stored``
# counter the commit script keeps): {-1} over the quota, {-2} when the sender no longer holds
# the run's fence. ``token`` is '' for events from outside a run (KEYS[3] is then unused).
# KEYS: seen marker, stream, sender's run
# ARGV: name, id, data JSON, ts, retention s, backlog max, hop, root, token, quota bytes
SEND_LUA = """
local first = redis.call('GET', KEYS[1])
if first then return {0, first} end
local size = string.len(ARGV[1]) + string.len(ARGV[2]) + string.len(ARGV[3])
if ARGV[9] ~= '' then
  local cur = redis.call('HMGET', KEYS[3], 'fence', 'status', 'stored')
  if cur[1] ~= ARGV[9] or cur[2] ~= 'running' then return {-2, ''} end
  if tonumber(cur[3] or '0') + size > tonumber(ARGV[10]) then return {-1, ''} end
end
local backlog = redis.call('XLEN', KEYS[2])
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[2])
if type(groups) == 'table' and groups.err == nil and #groups > 0 then
  backlog = 0
  for _, g in ipairs(groups) do
    local f = {}
    for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
    local waiting = redis.call('XLEN', KEYS[2])
    if type(f['lag']) == 'number' then waiting = f['lag'] + f['pending'] end
    if waiting > backlog then backlog = waiting end
  end
end
if backlog >= tonumber(ARGV[6]) then return {-3, tostring(backlog)} end
local sid = redis.call('XADD', KEYS[2], '*', 'name', ARGV[1], 'id', ARGV[2], 'data', ARGV[3],
  'ts', ARGV[4], 'hop', ARGV[7], 'root', ARGV[8])
redis.call('SET', KEYS[1], sid, 'EX', ARGV[5])
if ARGV[9] ~= '' then redis.call('HINCRBY', KEYS[3], 'stored', size) end
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
        self, redis: Redis, keys: Keys, *, max_bytes: int, retention_s: int, backlog_max: int
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._max = max_bytes
        self._retention = retention_s
        self._backlog_max = backlog_max
        self._send = redis.register_script(SEND_LUA)

    def send(
        self,
        name: str,
        data: Any = None,
        event_id: str | None = None,
        *,
        lineage: Lineage | None = None,
        sender: Sender | None = None,
    ) -> SentEvent:
        """Accept an event (durably in the stream) or recognise a duplicate id.

        ``lineage`` is the event's place in a chain of runs (see ``runner.lineage``; an event
        from outside is hop 0 and its own root); ``sender`` the run that sends it.
        """
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
        lin = lineage or Lineage(0, f"ev:{eid}")
        res = self._send(
            keys=[k.event_seen(eid), k.events, k.run(sender.run_id) if sender else k.events],
            args=[
                name, eid, payload, now_ms(), self._retention, self._backlog_max,
                lin.hop, lin.root, sender.token if sender else "",
                sender.quota_bytes if sender else 0,
            ],
        )  # fmt: skip
        code = int(res[0])
        if code == -3:
            raise EventBacklogFullError(
                f"event {name!r} refused: {res[1]} accepted events are waiting to be routed "
                f"(limit {self._backlog_max}, LOOPWRIGHT_EVENT_BACKLOG_MAX); is the scheduler "
                f"running? Send it again later"
            )
        if code == -2:  # only a run's send gets -2 and -1 (``sender``)
            from loopwright.runner.checkpoint import LeaseLostError

            raise LeaseLostError(f"run {sender.run_id if sender else ''}: fenced out")
        if code == -1:
            from loopwright.runner.checkpoint import StorageQuotaError

            quota = sender.quota_bytes if sender else 0
            raise StorageQuotaError(
                f"run exceeded its storage quota of {quota} bytes sending event {name!r} "
                f"(events count with checkpoints; LOOPWRIGHT_RUN_STORAGE_MAX_BYTES)"
            )
        return SentEvent(id=eid, stream_id=str(res[1]), accepted=bool(code))


def decode_entry(fields: dict[str, str]) -> dict[str, Any]:
    """A stream entry as the event dict skills see: ``{"name", "data", "id", "ts", "hop",
    "root"}`` (entries written before lineage existed are hop 0, their own root)."""
    eid = fields.get("id", "")
    hop = fields.get("hop", "0")
    return {
        "name": fields.get("name", ""),
        "data": json.loads(fields.get("data") or "{}"),
        "id": eid,
        "ts": int(fields.get("ts") or 0),
        "hop": int(hop) if hop.isdigit() else 0,
        "root": fields.get("root") or f"ev:{eid}",
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
