"""The ``Context`` protocol a skill receives.

One protocol, two implementations: in-process (trusted built-in skills, ``--trusted`` runs;
``loopwright.runner.context``) and the sandboxed guest, where every call below becomes a
JSON request to the host. Everything that crosses this interface is therefore JSON.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Step(Protocol):
    """Durable steps: each call is checkpointed under (run id, sequence number) with its name
    and kind (``sdk.steps.StepKind``: the method name; ``sleep_until`` records ``sleep``)."""

    def run(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` once; a replay returns the recorded JSON result."""
        ...

    def sleep(self, name: str, duration: float | str) -> None:
        """Park the run for ``duration`` (seconds or "30s", "5m", ...); costs no worker."""
        ...

    def sleep_until(self, name: str, when: datetime | float | str) -> None:
        """Park the run until ``when`` (aware datetime, epoch seconds or ISO 8601 string)."""
        ...

    def invoke(
        self,
        name: str,
        skill: str,
        data: dict[str, Any] | None = None,
        timeout: float | str | None = None,
    ) -> Any:
        """Start ``skill`` as a child run and return its output."""
        ...

    def send_event(self, name: str, event: str, data: dict[str, Any] | None = None) -> str:
        """Send an event exactly once per step; returns the event id."""
        ...

    def wait_for_event(
        self,
        name: str,
        event: str,
        match: dict[str, Any] | None = None,
        timeout: float | str = "1h",
    ) -> dict[str, Any] | None:
        """Park until a matching event arrives; ``None`` at the timeout."""
        ...

    def llm(self, name: str, prompt: str, schema: dict[str, Any] | None = None) -> Any:
        """Ask the configured model once; the answer is checkpointed like any step."""
        ...


class RunLog(Protocol):
    """``ctx.log``: lines recorded with the run (suppressed while replaying finished steps)."""

    def info(self, message: str) -> None:
        """Record an informational line."""
        ...

    def warning(self, message: str) -> None:
        """Record a warning."""
        ...

    def error(self, message: str) -> None:
        """Record an error line."""
        ...


class HttpTool(Protocol):
    """JSON over HTTP to the hosts in the skill's ``http_allow``; only inside a step."""

    def get_json(
        self, url: str, params: dict[str, Any] | None = None, headers: dict[str, Any] | None = None
    ) -> Any:
        """GET ``url`` and return the decoded JSON body (header values may use
        ``{{secret:NAME}}`` for a declared secret)."""
        ...

    def post_json(self, url: str, body: Any, headers: dict[str, Any] | None = None) -> Any:
        """POST ``body`` as JSON and return the decoded JSON answer."""
        ...


class NotifyTool(Protocol):
    """Send a message to the platform inbox; only inside a step, deduplicated per step."""

    def __call__(
        self,
        message: str,
        *,
        title: str | None = None,
        level: str = "info",
        channel: str | None = None,
    ) -> None:
        """Post ``message`` to the inbox, or to ``channel="slack:SECRET_NAME"``."""
        ...


class State(Protocol):
    """``ctx.state``: a small JSON store per skill that outlives its runs; only inside a step.

    Reads see the store as it is when the step runs (and this step's own writes); writes are
    kept until the step succeeds and are stored with its checkpoint, so a step that runs again
    after a crash applies them once. A key this step read and then writes is compare-and-set:
    when another run changed it meanwhile, the step runs again on the fresh value.
    See ``docs/state.md``.
    """

    def get(self, key: str, default: Any = None) -> Any:
        """The value stored under ``key``, or ``default``."""
        ...

    def set(self, key: str, value: Any) -> None:
        """Store the JSON ``value`` under ``key`` when the step succeeds."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` when the step succeeds."""
        ...

    def update(self, key: str, fn: Callable[[Any], Any], default: Any = None) -> Any:
        """Store ``fn(current value or default)`` and return it (compare-and-set)."""
        ...


class Tools(Protocol):
    """Host tools the skill declared in ``tools=[...]``."""

    @property
    def http(self) -> HttpTool:
        """The ``http`` tool."""
        ...

    @property
    def notify(self) -> NotifyTool:
        """The ``notify`` tool."""
        ...


class Context(Protocol):
    """What a skill function receives as its only argument."""

    @property
    def run_id(self) -> str:
        """This run's id."""
        ...

    @property
    def event(self) -> dict[str, Any]:
        """The triggering event: ``{"name", "data", "id", "ts"}``."""
        ...

    @property
    def params(self) -> dict[str, Any]:
        """The skill's params, with this run's overrides applied."""
        ...

    @property
    def step(self) -> Step:
        """Durable steps."""
        ...

    @property
    def tools(self) -> Tools:
        """Declared host tools (call them inside ``ctx.step.run``)."""
        ...

    @property
    def log(self) -> RunLog:
        """Run log."""
        ...

    @property
    def state(self) -> State:
        """The skill's durable state (use it inside ``ctx.step.run``)."""
        ...
