"""The ``@skill(...)`` decorator and the spec it attaches to the skill function."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from loopwright.sdk.durations import parse_duration
from loopwright.sdk.errors import SkillDefinitionError
from loopwright.sdk.names import PARAM_NAME, is_event_pattern, is_skill_name
from loopwright.sdk.triggers import CronTrigger, EventTrigger, IntervalTrigger, Trigger

if TYPE_CHECKING:
    from loopwright.sdk.context import Context

SKILL_ATTR = "__loopwright_skill__"
# Anchored for pydantic (whose regex engine has no trailing-newline ``$``); Python code checks
# names with ``names.is_skill_name`` (a full match).
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")
KNOWN_TOOLS = frozenset({"http", "notify", "llm", "events"})

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class SkillSpec:
    """What ``@skill`` declares: identity, trigger, retry and time policy, capabilities, params."""

    name: str
    description: str = ""
    trigger: Trigger | None = None
    retries: int = 3
    backoff: float = 1.0
    timeout: float | None = None
    concurrency: int | None = None
    tools: tuple[str, ...] = ()
    http_allow: tuple[str, ...] = ()
    secrets: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)
    concurrency_key: str | None = None
    rate_limit: dict[str, Any] | None = None
    debounce: dict[str, Any] | None = None
    idempotency: dict[str, Any] | None = None
    # {"send": (...), "receive": (...)} event-name patterns; None when not declared
    events: dict[str, tuple[str, ...]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form (stored with runs; the registry's manifest builds on it)."""
        return {
            "name": self.name,
            "description": self.description,
            "trigger": self.trigger.to_dict() if self.trigger else None,
            "retries": self.retries,
            "backoff": self.backoff,
            "timeout": self.timeout,
            "concurrency": self.concurrency,
            "tools": list(self.tools),
            "http_allow": list(self.http_allow),
            "secrets": list(self.secrets),
            "params": dict(self.params),
            "concurrency_key": self.concurrency_key,
            "rate_limit": self.rate_limit,
            "debounce": self.debounce,
            "idempotency": self.idempotency,
            "events": (
                None if self.events is None else {k: list(v) for k, v in self.events.items()}
            ),
        }


def _str_tuple(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise SkillDefinitionError(f"{what} must be a list of strings")
    return tuple(value)


def skill(
    *,
    name: str,
    description: str = "",
    trigger: Trigger | None = None,
    retries: int = 3,
    backoff: float | str = 1.0,
    timeout: float | str | None = None,
    concurrency: int | dict[str, Any] | None = None,
    rate_limit: dict[str, Any] | None = None,
    debounce: dict[str, Any] | None = None,
    idempotency: str | dict[str, Any] | None = None,
    tools: list[str] | None = None,
    http_allow: list[str] | None = None,
    secrets: list[str] | None = None,
    params: dict[str, Any] | None = None,
    events: dict[str, list[str]] | None = None,
) -> Callable[[F], F]:
    """Declare the module's skill. One per module; all arguments are literals.

    ``retries`` is the number of *re*-tries of a failing step (so 3 means up to 4 attempts);
    ``backoff`` the first retry delay, doubled per attempt; ``timeout`` the run's active
    execution budget (time parked in sleeps and waits does not count). ``events`` lists the
    event names the skill sends and waits for: ``{"send": ["order.*"], "receive": [...]}``
    (``*`` is one dot-separated segment; an ``event(...)`` trigger's name is received anyway).
    """
    if not is_skill_name(name):
        raise SkillDefinitionError(
            f"skill name {name!r} must be kebab-case (a-z, 0-9, '-'), at most 64 characters"
        )
    if trigger is not None and not isinstance(
        trigger, CronTrigger | EventTrigger | IntervalTrigger
    ):
        raise SkillDefinitionError("trigger must be cron(...), every(...), event(...) or omitted")
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 100:
        raise SkillDefinitionError("retries must be an integer from 0 to 100")
    concurrency_key = None
    if isinstance(concurrency, dict):
        concurrency_key = _key_expr(concurrency.get("key"), "concurrency")
        concurrency = concurrency.get("limit")
    if concurrency is not None and (
        isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
    ):
        raise SkillDefinitionError(
            'concurrency must be a positive integer or {"limit": N, "key": "data.field"}'
        )
    try:
        backoff_s = parse_duration(backoff)
        timeout_s = None if timeout is None else parse_duration(timeout)
    except ValueError as exc:
        raise SkillDefinitionError(str(exc)) from exc
    if timeout_s is not None and timeout_s <= 0:
        raise SkillDefinitionError("timeout must be positive")
    tool_names = _str_tuple(tools, "tools")
    unknown = sorted(set(tool_names) - KNOWN_TOOLS)
    if unknown:
        raise SkillDefinitionError(
            f"unknown tools {unknown}: available tools are {sorted(KNOWN_TOOLS)}"
        )
    if params is not None and not isinstance(params, dict):
        raise SkillDefinitionError("params must be a dict of name -> default value")
    bad = [k for k in params or {} if not isinstance(k, str) or not PARAM_NAME.fullmatch(k)]
    if bad:
        raise SkillDefinitionError(f"param names {bad!r} must be 1-64 of letters, digits and _ . -")
    flow = _flow_options(rate_limit, debounce, idempotency)
    spec = SkillSpec(
        name=name,
        description=description,
        trigger=trigger,
        retries=retries,
        backoff=backoff_s,
        timeout=timeout_s,
        concurrency=concurrency,
        tools=tool_names,
        http_allow=_str_tuple(http_allow, "http_allow"),
        secrets=_str_tuple(secrets, "secrets"),
        params=dict(params or {}),
        concurrency_key=concurrency_key,
        events=_events(events),
        **flow,
    )

    def decorate(fn: F) -> F:
        setattr(fn, SKILL_ATTR, spec)
        return fn

    return decorate


def _events(value: Any) -> dict[str, tuple[str, ...]] | None:
    """The ``events=`` declaration, validated: send/receive lists of event-name patterns."""
    if value is None:
        return None
    example = 'events={"send": ["order.*"], "receive": ["payment.completed"]}'
    if not isinstance(value, dict) or not set(value) <= {"send", "receive"}:
        raise SkillDefinitionError(
            f"events must be a dict with 'send' and 'receive' lists: {example}"
        )
    out: dict[str, tuple[str, ...]] = {}
    for direction in ("send", "receive"):
        patterns = _str_tuple(value.get(direction), f"events {direction!r}")
        bad = [p for p in patterns if not is_event_pattern(p)]
        if bad:
            raise SkillDefinitionError(
                f"events {direction!r}: {bad!r} are not event names (letters, digits, _ : / -, "
                f"dot-separated segments, a segment may be '*'): {example}"
            )
        out[direction] = patterns
    return out


def _key_expr(value: Any, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*", value):
        raise SkillDefinitionError(
            f"{what} key must be a dotted path into the event, e.g. 'data.customer_id'"
        )
    return value


def _period(value: Any, what: str) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise SkillDefinitionError(f"{what}: {exc}") from None
    if seconds <= 0:
        raise SkillDefinitionError(f"{what} must be positive")
    return seconds


def _flow_options(
    rate_limit: Any, debounce: Any, idempotency: Any
) -> dict[str, dict[str, Any] | None]:
    """Validate and normalise the trigger-time flow-control options."""
    out: dict[str, dict[str, Any] | None] = {
        "rate_limit": None,
        "debounce": None,
        "idempotency": None,
    }
    if rate_limit is not None:
        if not isinstance(rate_limit, dict):
            raise SkillDefinitionError(
                'rate_limit must be {"limit": N, "period": "1m", "key": ..., "mode": "drop"}'
            )
        limit = rate_limit.get("limit")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise SkillDefinitionError("rate_limit limit must be a positive integer")
        mode = rate_limit.get("mode", "drop")
        if mode not in ("drop", "delay"):
            raise SkillDefinitionError("rate_limit mode must be 'drop' or 'delay'")
        out["rate_limit"] = {
            "limit": limit,
            "period": _period(rate_limit.get("period"), "rate_limit period"),
            "key": _key_expr(rate_limit.get("key"), "rate_limit"),
            "mode": mode,
        }
    if debounce is not None:
        if not isinstance(debounce, dict):
            raise SkillDefinitionError('debounce must be {"period": "5s", "key": ...}')
        out["debounce"] = {
            "period": _period(debounce.get("period"), "debounce period"),
            "key": _key_expr(debounce.get("key"), "debounce"),
        }
    if idempotency is not None:
        spec = {"key": idempotency} if isinstance(idempotency, str) else idempotency
        if not isinstance(spec, dict) or not spec.get("key"):
            raise SkillDefinitionError(
                'idempotency must be a key path like "data.order_id" or '
                '{"key": ..., "window": "24h"}'
            )
        out["idempotency"] = {
            "key": _key_expr(spec.get("key"), "idempotency"),
            "window": _period(spec.get("window", "24h"), "idempotency window"),
        }
    return out


def spec_of(fn: Callable[[Context], Any]) -> SkillSpec | None:
    """The ``SkillSpec`` attached to ``fn`` by ``@skill``, if any."""
    found = getattr(fn, SKILL_ATTR, None)
    return found if isinstance(found, SkillSpec) else None
