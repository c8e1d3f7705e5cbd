"""Run operations the CLI, MCP and the API share: feedback on a run, pin and unpin, and what
retention keeps (the numbers ``doctor`` shows).

Feedback is a person's verdict on a run ("false alarm" on a run that notified). It is stored
on the run hash (``feedback``, ``feedback_note``, ``feedback_at``, ``feedback_by``), counted
in the run's rollup bucket (``fb_good``/``fb_bad`` in ``Keys.rollup(skill, version, day)``,
day = the day the run was rolled up in, else its UTC creation day; a relabel moves the
count, never doubles it) and it pins the run: labelled runs are the most valuable replay
cases, so retention keeps them.
"""

from __future__ import annotations

import time
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from redis import Redis

from loopwright.errors import NotFoundError, UserError
from loopwright.keys import Keys

NOTE_MAX_CHARS = 2000
WHO_MAX_CHARS = 200
# Text direction overrides can make a note display as something else on a terminal.
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")

# Atomically: label a run good or bad, pin it, and move its rollup count from the old label
# to the new one (one count per run, whatever the number of relabels).
# The bucket is the run's ``feedback_day`` once labelled (so a relabel moves the count inside
# the bucket that holds it), else the day the run was rolled up in (``rolled``), else its
# creation day: the caller reads them and passes the bucket's key, and the day is recorded.
# KEYS: run, pins, rollup   ARGV: run_id, label ('good'|'bad'), note ('' = none), at ms, who, day
# Returns the previous label ('' when none), or -1 when the run does not exist.
FEEDBACK_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local old = redis.call('HGET', KEYS[1], 'feedback') or ''
redis.call('HSET', KEYS[1], 'feedback', ARGV[2], 'feedback_at', ARGV[4], 'feedback_by',
  ARGV[5], 'pinned', '1', 'feedback_day', ARGV[6])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'feedback_note', ARGV[3])
else redis.call('HDEL', KEYS[1], 'feedback_note') end
redis.call('SADD', KEYS[2], ARGV[1])
if old ~= ARGV[2] then
  redis.call('HINCRBY', KEYS[3], 'fb_' .. ARGV[2], 1)
  if old == 'good' or old == 'bad' then redis.call('HINCRBY', KEYS[3], 'fb_' .. old, -1) end
end
return old
"""

# Atomically: pin (ARGV[2] = '1') or unpin ('0') a run. KEYS: run, pins  ARGV: run_id, pin
# Returns 1, or -1 when the run does not exist.
PIN_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[1], 'pinned', '1')
  redis.call('SADD', KEYS[2], ARGV[1])
else
  redis.call('HDEL', KEYS[1], 'pinned')
  redis.call('SREM', KEYS[2], ARGV[1])
end
return 1
"""


def checked_text(value: str, what: str, max_chars: int) -> str:
    """``value`` if it is printable text within ``max_chars``; else a one-line ``UserError``.
    Stored literally and shown on terminals later, so no control characters (no newlines)."""
    if len(value) > max_chars:
        raise UserError(f"{what} is {len(value)} characters, over the {max_chars} limit")
    bad = next(
        (c for c in value if unicodedata.category(c) in ("Cc", "Cs") or c in BIDI_CONTROLS), None
    )
    if bad is not None:
        raise UserError(f"{what} contains a control character (U+{ord(bad):04X}); use plain text")
    return value


def creation_day(created_at_ms: int) -> str:
    """The UTC day (``yyyymmdd``) a run was created: its rollup bucket."""
    return datetime.fromtimestamp(created_at_ms / 1000, UTC).strftime("%Y%m%d")


@dataclass(frozen=True, slots=True)
class Feedback:
    """A run's recorded verdict."""

    run_id: str
    good: bool
    note: str | None
    at: int
    by: str
    previous: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {
            "run_id": self.run_id,
            "feedback": "good" if self.good else "bad",
            "note": self.note,
            "at": self.at,
            "by": self.by,
            "previous": self.previous,
            "pinned": True,
        }


@dataclass(frozen=True, slots=True)
class Kept:
    """What the history holds: runs kept, pinned runs, the oldest run's creation time."""

    runs: int
    pinned: int
    oldest_ms: int | None
    deleted: int


class RunService:
    """Feedback, pins and history figures over one Redis and key prefix."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._feedback = redis.register_script(FEEDBACK_LUA)
        self._pin = redis.register_script(PIN_LUA)

    def _unknown(self, run_id: str) -> NotFoundError:
        return NotFoundError(
            f"unknown run id {run_id[:80]!r} (list runs with: loopwright runs list)"
        )

    def feedback(self, run_id: str, good: bool, note: str | None, who: str) -> Feedback:
        """Record a person's verdict on a run and pin it (see the module docstring)."""
        if note is not None:
            checked_text(note, "--note", NOTE_MAX_CHARS)
        checked_text(who, "who", WHO_MAX_CHARS)
        k = self._keys
        fields = ["skill", "version", "created_at", "feedback_day", "rolled"]
        raw = self._redis.hmget(k.run(run_id), fields)
        skill, version, created, fb_day, rolled = (str(x) if x is not None else "" for x in raw)
        if not created:
            raise self._unknown(run_id)
        day = fb_day or rolled or creation_day(int(created))
        at = int(time.time() * 1000)
        label = "good" if good else "bad"
        prev = self._feedback(
            keys=[k.run(run_id), k.pins, k.rollup(skill, version, day)],
            args=[run_id, label, note or "", at, who, day],
        )
        if prev == -1:
            raise self._unknown(run_id)
        return Feedback(run_id, good, note or None, at, who, str(prev) or None)

    def pin(self, run_id: str) -> None:
        """Keep a run until it is unpinned (retention skips it)."""
        self._set_pin(run_id, True)

    def unpin(self, run_id: str) -> None:
        """Release a pin: the run is deleted once its retention has passed."""
        self._set_pin(run_id, False)

    def _set_pin(self, run_id: str, pinned: bool) -> None:
        k = self._keys
        res = self._pin(keys=[k.run(run_id), k.pins], args=[run_id, "1" if pinned else "0"])
        if int(res) == -1:
            raise self._unknown(run_id)

    def kept(self) -> Kept:
        """How many runs the history holds and how old the oldest is (O(1) reads)."""
        k = self._keys
        pipe = self._redis.pipeline(transaction=False)
        pipe.zcard(k.runs)
        pipe.scard(k.pins)
        pipe.zrange(k.runs, 0, 0, withscores=True)
        pipe.get(k.retention_deleted)
        runs, pinned, first, deleted = pipe.execute()
        oldest = int(first[0][1]) if first else None
        return Kept(int(runs), int(pinned), oldest, int(deleted or 0))
