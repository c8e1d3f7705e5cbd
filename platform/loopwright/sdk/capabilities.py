"""Which step kinds are capabilities, and which event names a skill may send and receive.

One set of rules, applied in three places: statically by the sidecar (its capabilities stage),
at run time by the worker (``runner/tools.py``) and by the sidecar's test harness. Static
reading cannot see aliases (``s = ctx.step; s.send_event(...)``); the run-time checks can.

* ``ctx.step.llm`` needs the ``llm`` tool and ``ctx.step.send_event`` the ``events`` tool in
  ``@skill(tools=[...])``. ``wait_for_event`` needs no tool (its event access is declared, see
  below), ``invoke`` none (the child runs under its own declaration).
* Event access: ``@skill(events={"send": [...], "receive": [...]})`` lists event names, each
  dot-separated segment may be ``*`` (one whole segment). An ``event("x")`` trigger implies
  receiving ``x``. ``send_event`` needs a ``send`` entry, ``wait_for_event`` a ``receive``
  entry.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Literal

from loopwright.sdk.names import event_matches, is_event_name

Direction = Literal["send", "receive"]
STEP_TOOLS: Mapping[str, str] = {"llm": "llm", "send_event": "events"}
STEP_DIRECTION: Mapping[str, Direction] = {"send_event": "send", "wait_for_event": "receive"}


def undeclared_step(kind: str, tools: Collection[str]) -> str | None:
    """Why a ``kind`` step may not run with these declared tools, or None when it may."""
    tool = STEP_TOOLS.get(kind)
    if tool is None or tool in tools:
        return None
    wanted = sorted({*tools, tool})
    return (
        f"ctx.step.{kind} uses the {tool!r} tool, which the skill does not declare: "
        f"declare it: @skill(..., tools={wanted})"
    )


def allowed_events(
    declared: Mapping[str, Sequence[str]] | None, trigger: Any
) -> dict[Direction, list[str]]:
    """The declared patterns per direction, with the event trigger's name as received."""
    out: dict[Direction, list[str]] = {
        "send": list((declared or {}).get("send", ())),
        "receive": list((declared or {}).get("receive", ())),
    }
    name = _trigger_event(trigger)
    if name and name not in out["receive"]:
        out["receive"].append(name)
    return out


def _trigger_event(trigger: Any) -> str | None:
    if isinstance(trigger, Mapping):
        return str(trigger["name"]) if trigger.get("type") == "event" else None
    if getattr(trigger, "type", None) == "event" or type(trigger).__name__ == "EventTrigger":
        return str(trigger.name)
    return None


def undeclared_event(
    direction: Direction, event: str, allowed: Mapping[Direction, Sequence[str]]
) -> str | None:
    """Why ``event`` may not be sent or received under ``allowed``, or None when it may."""
    if not is_event_name(event):
        return (
            f"event name {event[:80]!r} must be 1-128 of letters, digits and _ . : / - "
            f"(nothing before or after)"
        )
    patterns = allowed.get(direction, ())
    if any(event_matches(p, event) for p in patterns):
        return None
    verb = "send" if direction == "send" else "wait for"
    current = {d: list(allowed.get(d, ())) for d in ("send", "receive")}
    current[direction] = [*current[direction], event]
    return (
        f"this skill may not {verb} event {event!r}: declare it: "
        f"@skill(..., events={{'send': {current['send']}, 'receive': {current['receive']}}})"
    )
