"""Parse human durations such as ``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"``, ``"1d"``."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(value: float | int | str) -> float:
    """Seconds in ``value``; a bare number means seconds. Raises ``ValueError`` when unreadable."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative: {value!r}")
        return float(value)
    if isinstance(value, str):
        m = _PATTERN.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2) or "s"]
    raise ValueError(f"not a duration: {value!r} (use e.g. 30, '500ms', '30s', '2m', '1h', '1d')")
