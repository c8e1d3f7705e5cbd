"""What the runner uses from the layers above it, as small interfaces passed in.

The runner sits low in the layering (docs/layout.md): the event bus, the skills registry and the
model providers all build on it. Three things a run needs live up there: sending an event
(``ctx.step.send_event``), a model call (``ctx.step.llm``) and the registry's answers for
``loopwright run FILE`` and for a skill that cannot run. The runner names them here as
protocols; :mod:`loopwright.assembly` implements them and hands them to :class:`Runtime` where a
process assembles its runtime (CLI commands, the worker, tests, benchmarks). A runtime built
without them runs everything else and says clearly what is missing when a skill needs one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from redis import Redis

from loopwright.errors import LoopwrightError, UserError
from loopwright.keys import Keys
from loopwright.settings import Settings

if TYPE_CHECKING:
    from loopwright.runner.lineage import Lineage, Sender


class SentEvent(Protocol):
    """What happened to an event: its id, its stream entry, and whether it was new."""

    @property
    def id(self) -> str: ...
    @property
    def stream_id(self) -> str: ...
    @property
    def accepted(self) -> bool: ...


class EventBacklogFullError(UserError):
    """Too many accepted events wait to be routed: this one is refused (try again later).

    Raised by the event sender (the bus); a step that sends retries it per its policy."""


class EventSender(Protocol):
    """Accepts an event durably (or recognises a duplicate id): the event bus's write side."""

    def send(
        self,
        name: str,
        data: Any = None,
        event_id: str | None = None,
        *,
        lineage: Lineage | None = None,
        sender: Sender | None = None,
    ) -> SentEvent: ...


class SkillModel(Protocol):
    """The model behind ``ctx.step.llm``: the answer's text, or with ``schema`` its JSON value.

    Retryable failures raise ordinary errors (the step's retry policy applies); a missing model
    or key raises ``NonRetriableError``.
    """

    def __call__(self, prompt: str, schema: dict[str, Any] | None) -> Any: ...


class Registration(Protocol):
    """A registered version."""

    @property
    def version(self) -> str: ...
    @property
    def outcome(self) -> str: ...


class SkillRegistrar(Protocol):
    """The registry as the runner sees it."""

    def register_direct(self, source: str, name: str) -> Registration:
        """Register a person's local file as a version of ``name`` (``loopwright run FILE``)."""
        ...

    def register_draft(self, source: str, name: str) -> Registration:
        """Store a person's local file as a draft version of ``name`` that never becomes
        active (``loopwright run FILE``): its run is pinned to it, no trigger starts it."""
        ...

    def not_runnable(self, name: str) -> Exception:
        """The error for starting ``name`` when it has no active version (unknown, paused…)."""
        ...


class Parts(Protocol):
    """What a service is built from: a runtime's Redis client, key builder and settings."""

    @property
    def redis(self) -> Redis: ...
    @property
    def keys(self) -> Keys: ...
    @property
    def settings(self) -> Settings: ...


class Services(Protocol):
    """The implementations above the runner, built for one runtime on first use."""

    def event_sender(self, rt: Parts) -> EventSender: ...
    def skill_model(self, rt: Parts) -> SkillModel: ...
    def registrar(self, rt: Parts) -> SkillRegistrar: ...


class ServicesMissingError(LoopwrightError):
    """A runtime built without :class:`Services` was asked for one (a wiring mistake)."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"{what} is not available in this process: its runtime was built without the "
            "platform services (build it with loopwright.assembly.build_runtime, or start "
            "workers with 'loopwright worker')"
        )
