"""Recorded host-tool calls: what a run's tools saw, kept with the run for replay.

Every host-tool call a step makes (``http``, ``llm``, ``notify``, ``send_event``, ``invoke``)
becomes one JSON entry. The recorder lives in the runner (the host side of the tools calls it);
``history.replay`` and the sidecar's replay host (``sidecar/replay.py``) read the entries.
Entries are buffered per step attempt by :class:`CallRecorder` and
written by the checkpoint commit of that attempt (``runner/checkpoint.py``), under the same
fence: a zombie executor's calls are never stored. Every attempt's calls are appended (a
failed attempt's calls are evidence too), each entry carrying its step ``seq``, ``attempt`` and
per-step index ``i``. Stored under ``Keys.run_calls`` (``{p}:run:{id}:calls``, a list).

Entry format (version 1)::

    {"v": 1, "seq": 2, "attempt": 1, "i": 0, "tool": "http", "at": 1700000000000,
     "req": {"method": "GET", "url": "...", "params": {...}, "headers": {...}, "body": ...},
     "res": <answer>, "error": null | "text", "retriable": bool, "status": 200 | null,
     "elapsed_ms": 12.5, "replayable": true}

A ``state`` entry is a ``ctx.state`` read: the first read of a key from the store in a step
attempt, ``"req": {"key": k}``, ``"res": {"value": v}`` (``null`` when the key was not set),
``elapsed_ms`` 0 (:func:`state_read`). Recordings from before it have none: their replays
read an empty store, as they always did.

An ``llm`` entry also carries what the call cost, ``"usage": {"tokens_in": n, "tokens_out":
n, "cost_micros": n}`` (micro-dollars, priced as the run's counters are), read with
:func:`call_usage`; entries recorded before it was added have none and read as zero.

Secrets are replaced by their names (``[secret:NAME]``) in every string of an entry before it
leaves the worker; header templates are recorded as written (``{{secret:NAME}}``), never
substituted. A body (request or answer) larger than the per-call share of the run's recording
budget is kept as ``{"truncated": true, "sha256": ..., "bytes": n}`` and the call is marked
``replayable: false``.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from loopwright.keys import Keys
from loopwright.runner.redaction import Redactor

FORMAT = 1
CALL_SHARE = 16  # one body may take 1/16 of the run's recording budget
STATUS_IN_ERROR = re.compile(r"answered (\d{3})")

# What replay compares to match a call to its recording, per tool.
MATCH_FIELDS: dict[str, tuple[str, ...]] = {
    "http": ("method", "url", "params", "body"),
    "llm": ("prompt", "schema"),
    "notify": ("message", "level", "channel"),
    "send_event": ("event", "data"),
    "invoke": ("skill", "data"),
    "state": ("key",),
}
SIDE_EFFECTS = frozenset({"notify", "send_event", "invoke"})


def is_side_effect(tool: str, req: dict[str, Any]) -> bool:
    """A call that changes the world: replay captures it and never performs it."""
    return tool in SIDE_EFFECTS or (tool == "http" and req.get("method") != "GET")


def state_read(text: str | None) -> dict[str, Any] | None:
    """The ``res`` of a recorded ``ctx.state`` read: ``{"value": v}``, None when unset."""
    return None if text is None else {"value": json.loads(text)}


def canonical(value: Any) -> str:
    """A stable text of a JSON-like value (sorted keys): what matching compares."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def match_key(tool: str, req: dict[str, Any]) -> str:
    """The key a call is matched on: its tool and the fields of ``MATCH_FIELDS``."""
    return canonical([tool, [req.get(f) for f in MATCH_FIELDS.get(tool, ())]])


def _bounded(value: Any, share: int) -> tuple[Any, bool]:
    """``value``, or a truncation marker with its sha256 when its JSON is over ``share``."""
    if value is None or isinstance(value, bool | int | float):
        return value, True
    size = len(json.dumps(value, separators=(",", ":"), default=str))  # >= chars, cheap
    if size <= share // 6 or len(_dump(value).encode("utf-8", "surrogatepass")) <= share:
        return value, True
    raw = canonical(value).encode("utf-8", "surrogatepass")
    digest = hashlib.sha256(raw).hexdigest()
    return {"truncated": True, "sha256": digest, "bytes": len(raw)}, False


@dataclass
class CallRecorder:
    """Buffers one execution's tool calls until the checkpoint of their step is committed."""

    redactor: Redactor
    max_bytes: int
    enabled: bool = True
    _pending: list[dict[str, Any]] = field(default_factory=list)
    _index: dict[int, int] = field(default_factory=dict)

    @property
    def share(self) -> int:
        """Bytes one body may take before it is truncated."""
        return max(1024, self.max_bytes // CALL_SHARE)

    def add(
        self,
        seq: int,
        tool: str,
        req: dict[str, Any],
        *,
        at: int,
        elapsed_ms: float,
        res: Any = None,
        error: BaseException | str | None = None,
        retriable: bool = False,
        usage: dict[str, int] | None = None,
    ) -> None:
        """Buffer one call of step ``seq`` (redacted, bounded); written with the step's next
        checkpoint by :meth:`take`."""
        if not self.enabled:
            return
        red = self.redactor
        ok_req = True
        bounded: dict[str, Any] = {}
        for key, value in red.value(req).items():  # a body, a prompt, a message, event data
            bounded[key], ok = _bounded(value, self.share)
            ok_req = ok_req and ok
        req = bounded
        res, ok_res = _bounded(red.value(res), self.share)
        text = red.text(str(error))[:4000] if error is not None else None
        status = None
        if text is not None:
            found = STATUS_IN_ERROR.search(text)
            status = int(found.group(1)) if found else None
        elif tool == "http":
            status = 200
        i = self._index.get(seq, 0)
        self._index[seq] = i + 1
        entry: dict[str, Any] = {
            "v": FORMAT,
            "seq": seq,
            "i": i,
            "tool": tool,
            "at": at,
            "req": req,
            "res": res,
            "error": text,
            "retriable": retriable,
            "status": status,
            "elapsed_ms": round(elapsed_ms, 3),
            "replayable": ok_req and ok_res,
        }
        if usage is not None:
            entry["usage"] = usage
        self._pending.append(entry)

    def take(self, seq: int, attempt: int) -> list[str]:
        """The buffered calls of step ``seq`` as JSON lines (stamped with ``attempt``); calls
        of other steps stay buffered."""
        if not self._pending:
            return []
        mine = [c for c in self._pending if c["seq"] == seq]
        if not mine:
            return []
        self._pending = [c for c in self._pending if c["seq"] != seq]
        self._index.pop(seq, None)
        return [_dump({**c, "attempt": attempt}) for c in mine]


USAGE_FIELDS = ("tokens_in", "tokens_out", "cost_micros")


def call_usage(entry: dict[str, Any]) -> tuple[int, int, int]:
    """Tokens in, tokens out and micro-dollars of a recorded call (zeros when it has none:
    not a model call, or recorded before usage was)."""
    usage = entry.get("usage")
    if not isinstance(usage, dict):
        return 0, 0, 0
    values = [usage.get(k) for k in USAGE_FIELDS]
    n = [v if isinstance(v, int) and not isinstance(v, bool) else 0 for v in values]
    return n[0], n[1], n[2]


def parse_calls(raw: list[str]) -> list[dict[str, Any]]:
    """Stored entries, decoded in order (an undecodable entry is skipped, never fatal)."""
    out: list[dict[str, Any]] = []
    for line in raw:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("tool"), str):
            out.append(entry)
    return out


@dataclass
class Recording:
    """A recorded run as replay needs it: input, outcome, calls in order, the clock it saw."""

    run_id: str
    skill: str
    version: str
    status: str
    output: Any
    error: str | None
    event: dict[str, Any]
    params: dict[str, Any]
    state: str  # complete | partial | none (the run hash's ``recording``; absent: none)
    calls: list[dict[str, Any]]
    clock: dict[int, int]  # step seq -> started_at (ms) the run saw
    steps: dict[int, dict[str, Any]] = field(default_factory=dict)  # seq -> step record
    feedback: str | None = None
    started_at: int = 0  # ms: when the run first started (created, if it never did)

    @property
    def model_usage(self) -> tuple[int, int, int]:
        """Tokens in, tokens out and micro-dollars of every recorded model call (all attempts)."""
        total = [0, 0, 0]
        for call in self.calls:
            for i, n in enumerate(call_usage(call)):
                total[i] += n
        return total[0], total[1], total[2]

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The recorded tool and model calls, without the ``state`` reads kept beside them
        (what the run read from ``ctx.state``, answered to a replay but not a call)."""
        return [c for c in self.calls if c.get("tool") != "state"]

    @property
    def ended(self) -> bool:
        """True when the run reached a terminal status."""
        return self.status in ("completed", "failed", "cancelled", "skipped")


def _json(text: str | bytes | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return default


def load_recording(redis: Redis, keys: Keys, run_id: str) -> Recording | None:
    """The recording of ``run_id`` (None when the run does not exist). Runs from before
    recording existed read as ``state="none"`` with no calls."""
    pipe = redis.pipeline(transaction=False)
    pipe.hgetall(keys.run(run_id))
    pipe.lrange(keys.run_calls(run_id), 0, -1)
    pipe.hgetall(keys.steps(run_id))
    h, raw_calls, steps = pipe.execute()
    if not h:
        return None
    clock: dict[int, int] = {}
    records: dict[int, dict[str, Any]] = {}
    for seq, text in steps.items():
        rec = _json(text, {})
        if isinstance(rec, dict) and str(seq).isdigit():
            clock[int(seq)] = int(rec.get("started_at") or 0)
            records[int(seq)] = rec
    big = [s for s, r in records.items() if r.get("ref")]
    if big:
        for s, text in zip(
            big, redis.mget([keys.step_output(run_id, s) for s in big]), strict=True
        ):
            records[s]["output"] = _json(text, None)
    return Recording(
        run_id=run_id,
        skill=h.get("skill", ""),
        version=h.get("version", ""),
        status=h.get("status", ""),
        output=_json(h.get("output"), None),
        error=h.get("error") or None,
        event=_json(h.get("event"), {}),
        params=_json(h.get("params"), {}),
        state=h.get("recording") or "none",
        calls=parse_calls(raw_calls),
        clock=clock,
        steps=records,
        feedback=h.get("feedback") or None,
        started_at=int(h.get("started_at") or h.get("created_at") or 0),
    )
