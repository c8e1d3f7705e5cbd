"""What a skill name, an event name, an event id and an event-name pattern may look like.

Every check is a *full* match (``re.fullmatch``): Python's ``$`` also matches before a trailing
newline, so ``re.match(r"^[a-z-]+$", "rt-baseline\\n")`` accepts a lookalike of
``rt-baseline``. One module holds the shapes so the SDK, the registry, the sidecar, the event
bus and the runtime agree on them. Also the reserved skill names: the platform's built-in
skills, which only the built-in installer may register.
"""

from __future__ import annotations

import re
from typing import Any, Final

SKILL_NAME: Final = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
MAX_SKILL_NAME: Final = 64
EVENT_NAME: Final = re.compile(r"[A-Za-z0-9_.:/-]{1,128}")
EVENT_ID: Final = re.compile(r"[A-Za-z0-9_.:/-]{1,200}")
PARAM_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_:/-]+|\*")

RESERVED_NAMES: Final = frozenset({"builder-session", "weekly-review"})
RESERVED_PREFIX: Final = "loopwright-"


def is_skill_name(value: Any) -> bool:
    """Kebab-case, at most 64 characters, nothing before or after."""
    return (
        isinstance(value, str)
        and len(value) <= MAX_SKILL_NAME
        and SKILL_NAME.fullmatch(value) is not None
    )


def is_event_name(value: Any) -> bool:
    """1-128 of letters, digits and ``_ . : / -``."""
    return isinstance(value, str) and EVENT_NAME.fullmatch(value) is not None


def is_event_id(value: Any) -> bool:
    """1-200 of letters, digits and ``_ . : / -``."""
    return isinstance(value, str) and EVENT_ID.fullmatch(value) is not None


def is_event_pattern(value: Any) -> bool:
    """An event name whose dot-separated segments may each be ``*`` (one whole segment)."""
    if not isinstance(value, str) or not 1 <= len(value) <= 128:
        return False
    return all(_SEGMENT.fullmatch(seg) for seg in value.split("."))


def event_matches(pattern: str, name: str) -> bool:
    """``pattern`` names ``name``: segment by segment, ``*`` standing for any one segment.

    ``order.*`` matches ``order.created`` but neither ``order`` nor ``order.item.added``.
    """
    want, got = pattern.split("."), name.split(".")
    return len(want) == len(got) and all(w in ("*", g) for w, g in zip(want, got, strict=True))


def is_reserved(name: str) -> bool:
    """A name only the platform's built-in installer may register."""
    return name in RESERVED_NAMES or name.startswith(RESERVED_PREFIX)


def reserved_message(name: str) -> str:
    """The one-line refusal for a reserved name (the same at every entry point)."""
    return (
        f"skill name {name!r} is reserved for a built-in skill (reserved: "
        f"{', '.join(sorted(RESERVED_NAMES))} and every name starting with "
        f"{RESERVED_PREFIX!r}); choose another name"
    )
