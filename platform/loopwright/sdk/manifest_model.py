"""The manifest: a skill's ``@skill(...)`` declaration as one validated pydantic model.

``Manifest`` is what the registry stores with a version (and hashes into its id), what the
sidecar checks capabilities against and what the runner reads retries, timeouts, tools and
event access from. It is built from the ``SkillSpec`` that ``@skill`` validates, so the
decorator and the stored manifest cannot disagree. Host side only (pydantic is not in the
guest image); the reader that builds it from a source is ``loopwright.sdk.manifest``.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, field_validator

from loopwright.sdk.names import is_event_name
from loopwright.sdk.spec import KNOWN_TOOLS, NAME_RE, SkillSpec

MAX_NAME = 64
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
HOST_RE = re.compile(rf"^(\*\.)?(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
SECRET_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class CronSpec(BaseModel):
    """A cron trigger: five fields (or six, seconds last), timezone, missed-tick policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["cron"] = "cron"
    expr: str
    tz: str | None = None
    missed: Literal["latest", "skip"] = "latest"

    def next_fires(self, count: int = 3, after: datetime | None = None) -> list[str]:
        """The next ``count`` fire times as ISO 8601 strings in the trigger's timezone."""
        from croniter import croniter

        tz = ZoneInfo(self.tz) if self.tz else UTC
        it = croniter(self.expr, (after or datetime.now(UTC)).astimezone(tz))
        return [it.get_next(datetime).isoformat() for _ in range(count)]


class IntervalSpec(BaseModel):
    """An interval trigger: fire every ``seconds`` (as written: ``every``), on a fixed grid."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["every"] = "every"
    every: str = Field(min_length=1, max_length=32)
    seconds: float = Field(ge=10, le=366 * 86400)
    missed: Literal["latest", "skip"] = "latest"

    def next_fires(self, count: int = 3, after: datetime | None = None) -> list[str]:
        """The next ``count`` fire times counted from ``after`` (default now), UTC ISO 8601.

        The scheduler's grid starts when it first sees the version, so these are estimates."""
        start = after or datetime.now(UTC)
        return [
            (start + timedelta(seconds=self.seconds * i)).isoformat() for i in range(1, count + 1)
        ]


class EventSpec(BaseModel):
    """An event trigger: the event name and the data fields it must match."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["event"] = "event"
    name: str = Field(min_length=1, max_length=128)
    match: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _event_name(cls, value: str) -> str:
        if not is_event_name(value):
            raise ValueError(f"{value!r} is not an event name (1-128 of letters, digits, _.:/-)")
        return value


ParamType = Literal["int", "float", "bool", "str", "list", "dict", "null"]


class ParamSpec(BaseModel):
    """A tunable parameter: its type (from its default), default and optional bounds.

    Bounds (``min``/``max`` for numbers, ``choices`` otherwise) are what a tuner (the weekly
    review) may move the value within; the SDK declares defaults only today, so they are unset
    unless given.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: ParamType
    default: Any = None
    min: float | None = None
    max: float | None = None
    choices: list[Any] | None = None

    def accepts(self, value: Any) -> str | None:
        """Why ``value`` cannot be this parameter's value, or None when it can."""
        kind = type_of(value)
        widened = self.type == "float" and kind == "int"
        if kind != self.type and not widened and self.type != "null":  # null accepts anything
            return f"expected {self.type}, got {kind}"
        if isinstance(value, int | float) and not isinstance(value, bool):
            if self.min is not None and value < self.min:
                return f"{value} is below the minimum {self.min:g}"
            if self.max is not None and value > self.max:
                return f"{value} is above the maximum {self.max:g}"
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not one of {self.choices}"
        return None


def type_of(value: Any) -> ParamType:
    """The manifest's name for the JSON type of ``value``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list | tuple):
        return "list"
    return "dict"


class EventAccess(BaseModel):
    """Event names (``*`` is one dot-separated segment) the skill sends and waits for."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    send: list[str] = Field(default_factory=list)
    receive: list[str] = Field(default_factory=list)


class Manifest(BaseModel):
    """Everything ``@skill(...)`` declares, validated. Part of a version's content hash."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(max_length=MAX_NAME, pattern=NAME_RE.pattern)
    description: str = Field(default="", max_length=2000)
    trigger: Annotated[CronSpec | EventSpec | IntervalSpec, Field(discriminator="type")] | None = (
        None
    )
    retries: int = Field(default=3, ge=0, le=100)
    backoff: float = Field(default=1.0, ge=0)
    timeout: float | None = Field(default=None, gt=0)
    concurrency: int | None = Field(default=None, ge=1)
    concurrency_key: str | None = None
    rate_limit: dict[str, Any] | None = None
    debounce: dict[str, Any] | None = None
    idempotency: dict[str, Any] | None = None
    tools: list[str] = Field(default_factory=list)
    http_allow: list[str] = Field(default_factory=list)
    secrets: list[str] = Field(default_factory=list)
    params: dict[str, ParamSpec] = Field(default_factory=dict)
    # Always set for a version registered since events were declared (empty lists when the
    # source declares none); None only in manifests stored before: "legacy, allowed".
    events: EventAccess | None = None

    @field_validator("tools")
    @classmethod
    def _known_tools(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - KNOWN_TOOLS)
        if unknown:
            raise ValueError(f"unknown tools {unknown}; available: {sorted(KNOWN_TOOLS)}")
        return value

    @field_validator("http_allow")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        bad = [h for h in value if not HOST_RE.fullmatch(h)]
        if bad:
            raise ValueError(
                f"{bad} are not host names; write bare lower-case names like "
                f"'api.example.com' or '*.example.com' (no scheme, port or path)"
            )
        return value

    @field_validator("secrets")
    @classmethod
    def _secret_names(cls, value: list[str]) -> list[str]:
        bad = [s for s in value if not SECRET_NAME_RE.fullmatch(s)]
        if bad:
            raise ValueError(f"{bad} are not secret names (letters, digits, _ . -; at most 64)")
        return value

    @classmethod
    def from_spec(cls, spec: SkillSpec) -> Manifest:
        """The manifest of a validated ``SkillSpec`` (raises ``ValidationError``)."""
        data = spec.to_dict()
        data["params"] = {
            k: {"type": type_of(v), "default": v} for k, v in dict(spec.params).items()
        }
        data["events"] = data["events"] or {"send": [], "receive": []}
        return cls.model_validate(data)

    def identity(self) -> dict[str, Any]:
        """JSON form used in content hashes and stored with the version."""
        return self.model_dump(mode="json")
