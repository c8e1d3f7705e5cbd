"""The event router: a consumer of the event stream's ``router`` group.

For each event it starts every matching event-triggered skill (exactly once per event id and
skill) and resolves every run waiting for it, then acknowledges the entry. Entries left pending
by a router that died are claimed again after ``RECLAIM_IDLE_MS``; processing is idempotent, so
a retried entry changes nothing that already happened.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from redis.exceptions import RedisError, ResponseError

from loopwright.events.bus import decode_entry, matches
from loopwright.runner.lineage import Lineage, budget_refusal, hop_refusal, post_limit_notice
from loopwright.runner.records import now_ms
from loopwright.runner.runtime import Runtime
from loopwright.scheduler.admission import Admission
from loopwright.scheduler.catalog import Catalog
from loopwright.sdk.triggers import EventTrigger

log = logging.getLogger(__name__)
GROUP = "router"
RECLAIM_IDLE_MS = 15_000

# Atomically: drop the stream entries every consumer group is done with, and nothing else. An
# accepted event must never be trimmed before it is routed (the sender was told it was
# accepted); so the floor is, per group, its oldest pending entry or, with none pending, just
# past its last delivered one, and the stream is trimmed below the lowest floor. Without a
# group nothing is trimmed. Backpressure at send time (``bus.SEND_LUA``) bounds the stream.
# KEYS: stream
TRIM_LUA = """
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if type(groups) ~= 'table' or groups.err ~= nil or #groups == 0 then return 0 end
local best_ms, best_seq = nil, nil
for _, g in ipairs(groups) do
  local f = {}
  for i = 1, #g, 2 do f[g[i]] = g[i + 1] end
  local pend = redis.call('XPENDING', KEYS[1], f['name'])
  local ms, seq
  if tonumber(pend[1]) > 0 then
    ms, seq = string.match(pend[2], '(%d+)-(%d+)')
    ms, seq = tonumber(ms), tonumber(seq)
  else
    ms, seq = string.match(f['last-delivered-id'], '(%d+)-(%d+)')
    ms, seq = tonumber(ms), tonumber(seq) + 1
  end
  if best_ms == nil or ms < best_ms or (ms == best_ms and seq < best_seq) then
    best_ms, best_seq = ms, seq
  end
end
return redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', best_ms, best_seq))
"""


class Router:
    """Routes accepted events to triggers and waiting runs."""

    def __init__(self, rt: Runtime, catalog: Catalog, consumer: str) -> None:
        self.rt = rt
        self.catalog = catalog
        self.consumer = consumer
        self.admission = Admission(rt)
        self._group_ready = False
        self._trim = rt.redis.register_script(TRIM_LUA)

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self.rt.redis.xgroup_create(self.rt.keys.events, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def poll(self, block_ms: int = 1000) -> int:
        """Route what is pending for this consumer, reclaimed or new; returns entries routed."""
        self._ensure_group()
        r, k = self.rt.redis, self.rt.keys
        claimed = r.xautoclaim(k.events, GROUP, self.consumer, RECLAIM_IDLE_MS, "0-0", count=100)
        entries: list[tuple[str, dict[str, str]]] = list(claimed[1]) if claimed else []
        if not entries:
            resp: Any = r.xreadgroup(
                GROUP, self.consumer, {k.events: ">"}, count=100, block=block_ms
            )
            for _stream, items in resp or []:
                entries.extend(items)
        for sid, fields in entries:
            if fields:  # a trimmed entry comes back empty: nothing to route
                self.route(fields)
            r.xack(k.events, GROUP, sid)
        if entries:
            self._trim(keys=[k.events])
        return len(entries)

    def route(self, fields: dict[str, str]) -> None:
        """Start matching triggers and resolve matching waiters for one event."""
        event = decode_entry(fields)
        for entry in self.catalog.entries():
            trig = entry.spec.trigger
            wanted = isinstance(trig, EventTrigger) and trig.name == event["name"]
            if wanted and matches(trig.match, event):  # type: ignore[union-attr]
                if not self._within_limits(event, entry.name):
                    continue
                self.admission.start(
                    entry, f"ev:{event['id']}", event,
                    {"type": "event", "name": event["name"], "event_id": event["id"]},
                )  # fmt: skip
        self._resolve_waiters(event)

    def _within_limits(self, event: dict[str, Any], skill: str) -> bool:
        """Whether this event may start ``skill``: its chain is within the hop limit and its
        root's run budget (charged here). A refusal is logged and told to the inbox once."""
        lin = Lineage.of_event(event, f"ev:{event['id']}")
        what = f"starting {skill!r} for event {event['name']!r}"
        why = hop_refusal(self.rt, lin, what)
        limit = "hops"
        if why is None:
            why, limit = budget_refusal(self.rt, lin.root, what, charge=True), "budget"
        if why is None:
            return True
        log.warning("event router: %s", why)
        post_limit_notice(self.rt, lin.root, limit, why)
        return False

    def _resolve_waiters(self, event: dict[str, Any]) -> None:
        rt = self.rt
        waiters: dict[str, str] = rt.redis.hgetall(rt.keys.waiters(event["name"]))  # type: ignore[assignment]
        payload = json.dumps(event, separators=(",", ":"))
        for field, match_json in waiters.items():
            run_id, _, seq = field.rpartition(":")
            if not run_id or not seq.isdigit() or not matches(json.loads(match_json), event):
                continue
            jid = rt.transitions.resolve(
                run_id,
                int(seq),
                status="done",
                output_json=payload,
                waiter=(event["name"], field),
                ended_at=now_ms(),
            )
            if jid:
                rt.dispatcher.enqueue(run_id, jid)

    def run(self, stop: threading.Event) -> None:
        """Poll until ``stop``; ride out Redis outages."""
        wait = 0.5
        while not stop.is_set():
            try:
                self.poll(block_ms=500)
                wait = 0.5
            except RedisError as exc:
                self._group_ready = False
                log.warning("event router: %s; retrying in %.1fs", exc, wait)
                stop.wait(wait)
                wait = min(30.0, wait * 2)
