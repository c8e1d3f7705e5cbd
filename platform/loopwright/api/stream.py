"""``GET /api/v1/stream?topics=...``: live updates over Server-Sent Events, resumable.

Topics:

* ``events`` — every accepted event, read from the event stream itself (``XREAD``);
* ``runs`` — runs created and runs ended, read from the run index and the ``ended`` index
  (both sorted sets, durable in Redis);
* ``run:<id>`` — one run's status and step count whenever they change.

Each message's SSE ``id`` is the position after it in every topic (opaque), so a browser that
reconnects sends it back as ``Last-Event-ID`` and gets exactly what it missed: nothing lost,
nothing repeated. The durable indexes are the truth; the runs' pub/sub channel only wakes the
stream early, and without it the stream looks again every ``POLL_S`` seconds. The stream runs
in a worker thread with its own pub/sub connection and ends when the client goes away (the
next write fails) or after ``MAX_AGE_S`` (the browser reconnects and resumes). Keep-alive
comments come from FastAPI every 15 s, so proxies keep the connection open; an idle page costs
one sorted-set read per topic per ``POLL_S``.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from fastapi.sse import EventSourceResponse, ServerSentEvent

from loopwright.api.context import ApiContext
from loopwright.errors import UserError
from loopwright.runner.runtime import Runtime

POLL_S = 2.0
MAX_AGE_S = 300.0
IDLE_COMMENT_S = 10.0
BATCH = 200
TOPICS_MAX = 8


@dataclass
class Position:
    """Where a client is in every topic: the event stream id, and (score, member) in the run
    index (created) and the ended index."""

    events: str = "$"
    created: tuple[float, str] = (0.0, "")
    ended: tuple[float, str] = (0.0, "")
    run: dict[str, str] = field(default_factory=dict)  # run id -> last state sent

    def encode(self) -> str:
        doc = {"e": self.events, "c": list(self.created), "x": list(self.ended), "r": self.run}
        raw = json.dumps(doc, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Position:
        if len(text) > 4096:
            raise UserError("Last-Event-ID: too long")
        try:
            doc = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            pos = cls(
                events=str(doc["e"]),
                created=(float(doc["c"][0]), str(doc["c"][1])),
                ended=(float(doc["x"][0]), str(doc["x"][1])),
                run={str(k): str(v) for k, v in dict(doc.get("r") or {}).items()},
            )
        except (binascii.Error, ValueError, KeyError, TypeError, IndexError):
            raise UserError("Last-Event-ID: not an id this stream sent") from None
        return pos


def parse_topics(text: str) -> list[str]:
    """The requested topics, or :class:`UserError`."""
    topics = [t.strip() for t in text.split(",") if t.strip()]
    if not topics or len(topics) > TOPICS_MAX:
        raise UserError(f"topics: 1 to {TOPICS_MAX} of events, runs, run:<id>")
    for t in topics:
        if t in ("events", "runs"):
            continue
        if t.startswith("run:") and 0 < len(t) - 4 <= 100 and t[4:].isprintable():
            continue
        raise UserError(f"topics: unknown topic {t[:60]!r} (events, runs, run:<id>)")
    return topics


class Stream:
    """Reads what changed after a position, topic by topic."""

    def __init__(self, rt: Runtime, topics: list[str], pos: Position) -> None:
        self.rt = rt
        self.topics = topics
        self.pos = pos

    def start_now(self) -> None:
        """Position a fresh client at "now" in every topic (no backlog replay)."""
        r, k = self.rt.redis, self.rt.keys
        last = r.xrevrange(k.events, count=1)
        self.pos.events = str(last[0][0]) if last else "0-0"
        now = time.time() * 1000
        self.pos.created = (now, "")
        self.pos.ended = (now, "")

    def changes(self) -> list[dict[str, Any]]:
        """Everything after the position, oldest first; the position moves past it."""
        out: list[dict[str, Any]] = []
        if "events" in self.topics:
            out += self._events()
        if "runs" in self.topics:
            out += self._index("created", self.rt.keys.runs)
            out += self._index("ended", self.rt.keys.ended)
        for t in self.topics:
            if t.startswith("run:"):
                out += self._run(t[4:])
        return out

    def _events(self) -> list[dict[str, Any]]:
        r, k = self.rt.redis, self.rt.keys
        start = self.pos.events if self.pos.events != "$" else "0-0"
        rows: list[tuple[str, dict[str, str]]] = r.xrange(  # type: ignore[assignment]
            k.events, min=f"({start}" if start != "0-0" else "-", count=BATCH
        )
        out = []
        for sid, f in rows:
            self.pos.events = str(sid)
            out.append(
                {"topic": "events", "stream_id": str(sid), "name": f.get("name"), "id": f.get("id")}
            )
        return out

    def _index(self, kind: str, key: str) -> list[dict[str, Any]]:
        r = self.rt.redis
        score, member = getattr(self.pos, kind)
        rows: list[tuple[str, float]] = r.zrangebyscore(  # type: ignore[assignment]
            key, score, "+inf", start=0, num=BATCH, withscores=True
        )
        fresh = [(str(m), float(s)) for m, s in rows if (float(s), str(m)) > (score, member)]
        if not fresh:
            return []
        pipe = r.pipeline(transaction=False)
        for m, _ in fresh:
            pipe.hmget(self.rt.keys.run(m), "skill", "status")
        out = []
        for (m, s), (skill, status) in zip(fresh, pipe.execute(), strict=True):
            setattr(self.pos, kind, (s, m))
            out.append(
                {"topic": "runs", "kind": kind, "run_id": m, "skill": skill, "status": status}
            )
        return out

    def _run(self, run_id: str) -> list[dict[str, Any]]:
        r, k = self.rt.redis, self.rt.keys
        status, updated = (
            str(x) if x is not None else None
            for x in r.hmget(k.run(run_id), "status", "updated_at")
        )
        steps = r.hlen(k.steps(run_id))
        state = f"{status}|{updated}|{steps}"
        if self.pos.run.get(run_id) == state:
            return []
        self.pos.run[run_id] = state
        return [
            {"topic": f"run:{run_id}", "run_id": run_id, "status": status, "steps": steps,
             "updated_at": int(updated) if updated else None}
        ]  # fmt: skip


def router(ctx: ApiContext) -> APIRouter:
    """The stream route."""
    r = APIRouter(prefix="/api/v1", tags=["stream"])
    rt = ctx.rt
    read = ctx.need("read")

    def opened(
        topics: str = "runs,events",
        last_event_id: Annotated[str | None, Header()] = None,
    ) -> Stream:
        # A dependency: bad topics or a bad Last-Event-ID are answered with a problem
        # document before the stream starts.
        names = parse_topics(topics)
        pos = Position.decode(last_event_id) if last_event_id else Position()
        s = Stream(rt, names, pos)
        if last_event_id is None:
            s.start_now()
        return s

    opened_stream = Depends(opened)

    @r.get("/stream", response_class=EventSourceResponse, dependencies=[read])
    def stream(s: Stream = opened_stream) -> Iterator[ServerSentEvent]:
        yield from _follow(rt, s)

    return r


def _follow(rt: Runtime, s: Stream) -> Iterator[ServerSentEvent]:
    pubsub = rt.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(rt.keys.run_changes_channel)
    deadline = time.monotonic() + MAX_AGE_S
    quiet_since = time.monotonic()
    try:
        yield ServerSentEvent(retry=1000, comment="resume with Last-Event-ID")
        while time.monotonic() < deadline:
            for change in s.changes():
                quiet_since = time.monotonic()
                yield ServerSentEvent(data=change, event=change["topic"].split(":")[0],
                                      id=s.pos.encode())  # fmt: skip
            if time.monotonic() - quiet_since >= IDLE_COMMENT_S:
                # Yielding is the only moment a stream whose client left can stop: a comment
                # now and then frees this thread soon after a disconnect (browsers ignore it).
                quiet_since = time.monotonic()
                yield ServerSentEvent(comment="idle")
            pubsub.get_message(timeout=POLL_S)
            while pubsub.get_message(timeout=0.0):
                pass  # one look at the indexes answers every notice that arrived together
    finally:
        pubsub.close()
