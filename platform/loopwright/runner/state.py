"""``ctx.state``: a skill's small durable JSON store, written with the step's checkpoint.

Stored per skill (every version shares it) in one hash, ``Keys.skill_state``: ``v:KEY`` holds
the JSON value, ``m:KEY`` "version updated_ms run_id", and ``#`` the skill's version clock
(every write takes the next number, so a key's version never repeats, even across deletes).

* Only inside a step attempt (like the host tools): reads outside a step would not be replayed.
* Reads go to Redis once per key per attempt and remember the version they saw; the attempt
  reads its own writes. A finished step is replayed from its checkpoint without running its
  body, so a replay sees exactly what the step returned; a step that runs again reads fresh.
* Writes are buffered per attempt (:class:`StateBuffer`) and applied by the checkpoint commit
  of the attempt that succeeds (``runner/checkpoint.py``), in the same script, under the same
  fence: a step re-run after a crash applies them once; a zombie's commit is refused whole; a
  failed attempt's writes are dropped.
* Consistency between concurrent runs of one skill: a write of a key this attempt *read* is
  compare-and-set on the version read (``get`` then ``set``, or ``update``); when another run
  changed the key first, nothing of the commit is applied and the attempt runs again on fresh
  values (:class:`StateConflictError`, up to ``CONFLICT_RETRIES`` times in place, then the
  skill's retry policy). A write of a key the attempt did not read is last-writer-wins.
* Caps: ``LOOPWRIGHT_STATE_VALUE_MAX_BYTES`` per value (checked at ``set``),
  ``LOOPWRIGHT_STATE_MAX_KEYS`` per skill (checked by the commit script).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from loopwright.keys import Keys
from loopwright.sdk.errors import NonRetriableError, RetryAfterError
from loopwright.sdk.state import check_key, encode_value

CONFLICT_RETRIES = 10  # in-place re-runs of an attempt whose state commit lost a race
TOUCH_FACTOR = 4  # distinct keys one attempt may read or write: 4x the key cap (+100)

# Pieces of the checkpoint commit script (``runner/checkpoint.py``). The state block of ARGV
# starts at index 12: ARGV[12] = n, the number of state arguments that follow; when n > 0,
# ARGV[13] = run id, ARGV[14] = the key cap, then (key, value JSON or '' to delete, version
# read or '' for a blind write) triples. The recorded tool calls follow the block.
# STATE_CHECK runs after the fence and quota checks and before any write: -2 when a key read
# by the attempt changed since (conflict), -3 when new keys would pass the cap.
STATE_CHECK = """
local st_n = tonumber(ARGV[12] or '0') or 0
local st_last = 12 + st_n
if st_n > 0 then
  local adds = 0
  for i = 15, st_last, 3 do
    local meta = redis.call('HGET', KEYS[5], 'm:' .. ARGV[i])
    if ARGV[i + 2] ~= '' then
      local ver = 0
      if meta then ver = tonumber(string.match(meta, '^(%d+)')) end
      if ver ~= tonumber(ARGV[i + 2]) then return -2 end
    end
    if ARGV[i + 1] ~= '' and not meta then adds = adds + 1 end
    if ARGV[i + 1] == '' and meta then adds = adds - 1 end
  end
  if adds > 0 then
    local held = math.floor(redis.call('HLEN', KEYS[5]) / 2)
    if held + adds > tonumber(ARGV[14]) then return -3 end
  end
end
"""

# Apply the checked writes (after the step record is written).
STATE_APPLY = """
if st_n > 0 then
  local t = redis.call('TIME')
  local st_now = tostring(tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  for i = 15, st_last, 3 do
    if ARGV[i + 1] == '' then
      redis.call('HDEL', KEYS[5], 'v:' .. ARGV[i], 'm:' .. ARGV[i])
    else
      local ver = redis.call('HINCRBY', KEYS[5], '#', 1)
      redis.call('HSET', KEYS[5], 'v:' .. ARGV[i], ARGV[i + 1],
        'm:' .. ARGV[i], ver .. ' ' .. st_now .. ' ' .. ARGV[13])
    end
  end
end
"""

# Clear a skill's state, keeping its version clock (a run that read before the reset cannot
# compare-and-set over a key written after it). Returns the number of keys removed.
RESET_LUA = """
local fields = redis.call('HKEYS', KEYS[1])
local gone = 0
for _, f in ipairs(fields) do
  if f ~= '#' then
    redis.call('HDEL', KEYS[1], f)
    if string.sub(f, 1, 2) == 'v:' then gone = gone + 1 end
  end
end
return gone
"""


class StateConflictError(RetryAfterError):
    """Another run changed a key this attempt read before its commit: run the attempt again."""

    def __init__(self, keys: list[str]) -> None:
        shown = ", ".join(repr(k) for k in keys[:5])
        super().__init__(
            f"ctx.state: another run changed {shown} after this step read it; "
            f"the step runs again on the new value",
            random.uniform(0.01, 0.1),
        )


class StateLimitError(NonRetriableError):
    """The commit would take the skill past ``LOOPWRIGHT_STATE_MAX_KEYS``."""


@dataclass
class StateWrites:
    """One attempt's buffered writes as the commit script takes them."""

    skill: str
    args: list[str]
    keys: list[str]  # the keys written under a version condition (named in a conflict)


@dataclass
class StateBuffer:
    """One step attempt's view of the skill's state: reads with their versions, and writes."""

    redis: Redis
    key: str  # the skill's state hash
    skill: str
    seq: int
    max_bytes: int
    max_keys: int
    read: dict[str, tuple[str | None, int]] = field(default_factory=dict)  # key -> (json, ver)
    written: dict[str, str] = field(default_factory=dict)  # key -> json, '' for a delete
    # called with (key, stored json or None) when a key is first read from the store: the
    # run's recording keeps what it read (``runner/recording.py``), so a replay reads it too
    on_read: Callable[[str, str | None], None] | None = None

    def _room(self, key: str) -> None:
        """Bound what one attempt holds on the host (a guest may send any number of requests):
        more new keys than the skill may hold, or a scan of many keys, fails the step."""
        if key in self.read or key in self.written:
            return
        if len(self.written) >= self.max_keys:
            raise StateLimitError(
                f"ctx.state: one step wrote more than {self.max_keys} keys "
                f"(LOOPWRIGHT_STATE_MAX_KEYS)"
            )
        if len(self.read) + len(self.written) >= TOUCH_FACTOR * self.max_keys + 100:
            raise StateLimitError(
                f"ctx.state: one step used more than {TOUCH_FACTOR * self.max_keys + 100} "
                f"different keys; a skill holds at most {self.max_keys}"
            )

    def _load(self, key: str) -> tuple[str | None, int]:
        if key not in self.read:
            self._room(key)
            value, meta = self.redis.hmget(self.key, [f"v:{key}", f"m:{key}"])
            version = int(str(meta).split(" ", 1)[0]) if meta else 0
            self.read[key] = (value if meta else None, version)  # type: ignore[assignment]
            if self.on_read is not None:
                self.on_read(key, self.read[key][0])
        return self.read[key]

    def get(self, key: object, default: Any = None) -> Any:
        """The value of ``key`` as this attempt sees it (its own writes first)."""
        name = check_key(key)
        text = self.written.get(name)
        if text is None:
            text = self._load(name)[0]
        return default if not text else json.loads(text)

    def set(self, key: object, value: Any) -> None:
        """Buffer a write of ``key``."""
        name = check_key(key)
        text = encode_value(name, value, self.max_bytes)
        self._room(name)
        self.written[name] = text

    def delete(self, key: object) -> None:
        """Buffer the removal of ``key``."""
        name = check_key(key)
        self._room(name)
        self.written[name] = ""

    def take(self, run_id: str) -> StateWrites | None:
        """The commit's arguments for the buffered writes (None when nothing was written)."""
        if not self.written:
            return None
        args: list[str] = [run_id, str(self.max_keys)]
        guarded: list[str] = []
        for name, text in self.written.items():
            seen = self.read.get(name)
            args += [name, text, "" if seen is None else str(seen[1])]
            if seen is not None:
                guarded.append(name)
        return StateWrites(self.skill, args, guarded)


class LocalState:
    """``ctx.state`` for in-process skills and, through ``runner/remote.py``, sandboxed ones."""

    def __init__(self, buffer: Callable[[], StateBuffer]) -> None:
        self._buffer = buffer  # the current attempt's buffer (``Execution.state_buffer``)

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        return self._buffer().get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` when the step succeeds."""
        self._buffer().set(key, value)

    def delete(self, key: str) -> None:
        """Remove ``key`` when the step succeeds."""
        self._buffer().delete(key)

    def update(self, key: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """Store ``fn(current value or default)`` (compare-and-set) and return it."""
        buf = self._buffer()
        value = fn(buf.get(key, default))
        buf.set(key, value)
        return value


@dataclass(frozen=True)
class StateEntry:
    """One key of a skill's state as ``loopwright skills state`` shows it."""

    key: str
    value: Any
    version: int
    updated_at: int  # ms
    run_id: str


def read_state(redis: Redis, keys: Keys, skill: str) -> list[StateEntry]:
    """Every key of ``skill``'s state, sorted by key (an undecodable value reads as its text)."""
    raw: dict[str, str] = redis.hgetall(keys.skill_state(skill))  # type: ignore[assignment]
    out: list[StateEntry] = []
    for f in sorted(raw):
        if not f.startswith("v:"):
            continue
        name = f[2:]
        parts = (raw.get(f"m:{name}") or "0 0 ").split(" ", 2)
        try:
            value = json.loads(raw[f])
        except ValueError:
            value = raw[f]
        version = int(parts[0]) if parts[0].isdigit() else 0
        at = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        out.append(StateEntry(name, value, version, at, parts[2] if len(parts) > 2 else ""))
    return out


def reset_state(redis: Redis, keys: Keys, skill: str) -> int:
    """Remove every key of ``skill``'s state; returns how many there were."""
    return int(redis.eval(RESET_LUA, 1, keys.skill_state(skill)))
