"""``ctx.state`` rules shared by every host: key names, JSON values, their size cap.

A skill's state is a small JSON store that outlives its runs (a streak counter, the last value
seen). The durable store is the runner's (``runner/state.py``: written with the step's
checkpoint, compare-and-set per key); the sidecar's test harness keeps a scratch store in
memory (``sandbox/host.py``). Both check what a skill hands them here, so a key or value is
accepted or refused the same way wherever the skill runs. Pure (no I/O): the guest imports it.
"""

from __future__ import annotations

import json
from typing import Any

from loopwright.sdk.errors import NonRetriableError

KEY_MAX_CHARS = 200
DEFAULT_VALUE_MAX_BYTES = 64 * 1024
DEFAULT_MAX_KEYS = 100


def check_key(key: object) -> str:
    """``key`` when it is a usable state key (1-200 printable characters), else a clear
    ``NonRetriableError`` (a bad key is a bug in the skill, not worth a retry)."""
    if not isinstance(key, str) or not key:
        what = type(key).__name__
        raise NonRetriableError(f"ctx.state key must be a non-empty string, not {what}")
    if len(key) > KEY_MAX_CHARS:
        raise NonRetriableError(f"ctx.state key is {len(key)} characters, over {KEY_MAX_CHARS}")
    if not key.isprintable():
        raise NonRetriableError(f"ctx.state key {key[:40]!a} has control characters")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise NonRetriableError(f"ctx.state key {key[:40]!a} is not valid text") from None
    return key


def encode_value(key: str, value: Any, max_bytes: int) -> str:
    """``value`` as compact JSON text, refused (``NonRetriableError``) when it is not JSON or
    its encoding is over ``max_bytes`` (``LOOPWRIGHT_STATE_VALUE_MAX_BYTES``)."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise NonRetriableError(
            f"ctx.state value for {key!r} is not JSON ({exc}); store dicts, lists, strings, "
            f"numbers, booleans or None"
        ) from None
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise NonRetriableError(f"ctx.state value for {key!r} is not valid text") from None
    if size > max_bytes:
        raise NonRetriableError(
            f"ctx.state value for {key!r} is {size} bytes, over the {max_bytes}-byte cap "
            f"(LOOPWRIGHT_STATE_VALUE_MAX_BYTES); keep large data elsewhere"
        )
    return text


class MemoryState:
    """A scratch ``ctx.state`` kept in one process (the sidecar's test cases start empty):
    the same checks as the durable store, nothing durable."""

    def __init__(
        self, max_bytes: int = DEFAULT_VALUE_MAX_BYTES, max_keys: int = DEFAULT_MAX_KEYS
    ) -> None:
        self._values: dict[str, str] = {}
        self._max_bytes = max_bytes
        self._max_keys = max_keys

    def get(self, key: object, default: Any = None) -> Any:
        """The stored value of ``key`` (a fresh copy), or ``default``."""
        text = self._values.get(check_key(key))
        return default if text is None else json.loads(text)

    def set(self, key: object, value: Any) -> None:
        """Store ``value`` under ``key`` (within the caps)."""
        name = check_key(key)
        text = encode_value(name, value, self._max_bytes)
        if name not in self._values and len(self._values) >= self._max_keys:
            raise NonRetriableError(
                f"ctx.state already holds {self._max_keys} keys (LOOPWRIGHT_STATE_MAX_KEYS); "
                f"delete one before adding {name!r}"
            )
        self._values[name] = text

    def delete(self, key: object) -> None:
        """Forget ``key`` (no error when absent)."""
        self._values.pop(check_key(key), None)
