"""Wiring: one ``Runtime`` per process holds the Redis clients and the runner's components.

What the runner needs from the layers above it (the event bus, a model for ``ctx.step.llm``, the
registry) comes in as :class:`loopwright.runner.ports.Services`; ``loopwright.assembly`` builds a
runtime with them.
"""

from __future__ import annotations

import os
import socket
import uuid
from functools import cached_property
from typing import TYPE_CHECKING, Any

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from loopwright.errors import RedisUnavailableError
from loopwright.keys import Keys
from loopwright.runner.ports import (
    EventSender,
    Services,
    ServicesMissingError,
    SkillModel,
    SkillRegistrar,
)
from loopwright.runner.store import Dispatcher, RunStore
from loopwright.settings import Settings

if TYPE_CHECKING:
    from loopwright.runner.checkpoint import Checkpoints
    from loopwright.runner.lease import LeaseKeeper, Leases
    from loopwright.runner.sources import SourceStore
    from loopwright.runner.transitions import Transitions
    from loopwright.sandbox.backend import SandboxBackend


def _client_identity() -> dict[str, Any]:
    """redis-py's name and version for CLIENT SETINFO, given rather than looked up: its own
    lookup scans every installed package's metadata on each connection (~10 ms of a CLI
    command's start-up)."""
    import redis

    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # redis-py before 7
        return {"lib_version": redis.__version__}
    return {"driver_info": DriverInfo(lib_version=redis.__version__)}


def connect(url: str, settings: Settings, *, decode: bool = True) -> Redis:
    """A Redis client for ``url`` with the configured socket timeouts."""
    return Redis.from_url(
        url,
        decode_responses=decode,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=min(5.0, settings.redis_socket_timeout),
        health_check_interval=30,
        **_client_identity(),
    )


class Runtime:
    """The runner's components bound to one Redis and one settings object."""

    def __init__(
        self, settings: Settings, redis_url: str | None = None, *, services: Services | None = None
    ) -> None:
        from loopwright.redis_server import redis_url_for

        self.settings = settings
        self.services = services
        self.redis_url = redis_url or redis_url_for(settings)
        self.keys = Keys(settings.key_prefix)
        self.redis = connect(self.redis_url, settings)
        self.rq_redis = connect(self.redis_url, settings, decode=False)
        # This process: lease holder, scheduler leader and heartbeat (the run hash's ``owner``).
        self.instance_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def ping(self) -> None:
        """Raise ``RedisUnavailableError`` with a how-to-fix line when Redis does not answer."""
        try:
            self.redis.ping()
        except RedisError as exc:
            hint = (
                "check the server or unset LOOPWRIGHT_REDIS_URL to use the managed local Redis"
                if self.settings.redis_url
                else "run 'loopwright doctor' to see why the managed Redis is not up"
            )
            kind = "cannot reach" if isinstance(exc, RedisConnectionError) else "error from"
            raise RedisUnavailableError(
                f"{kind} Redis at {self.redis_url}: {exc}; {hint}"
            ) from None

    @cached_property
    def leases(self) -> Leases:
        """Lease acquire/renew."""
        # The runner's parts are imported when first used (here and below): a command that
        # only reads history never loads them (its start-up is measured, bench/cli.py).
        from loopwright.runner.lease import Leases

        return Leases(self.redis, self.keys, self.settings.lease_ttl)

    @cached_property
    def keeper(self) -> LeaseKeeper:
        """The lease renewal thread of this process."""
        from loopwright.runner.lease import LeaseKeeper

        return LeaseKeeper(self.leases)

    @cached_property
    def checkpoints(self) -> Checkpoints:
        """Step checkpoints."""
        from loopwright.runner.checkpoint import Checkpoints

        st = self.settings
        return Checkpoints(
            self.redis,
            self.keys,
            st.step_output_inline_bytes,
            st.run_storage_max_bytes,
            st.run_recording_max_bytes if st.run_recording else -1,  # history: recorded calls
        )

    @cached_property
    def transitions(self) -> Transitions:
        """Run state transitions."""
        from loopwright.runner.transitions import Transitions

        return Transitions(self.redis, self.keys, self.settings.max_run_reaps)

    @cached_property
    def sources(self) -> SourceStore:
        """Skill sources and the loaded-skill cache."""
        # Imported here: it reads declarations with the pydantic manifest model, which the
        # read-only CLI commands never need (their start-up is measured, bench/cli.py).
        from loopwright.runner.sources import SourceStore

        registrar = self.registrar if self.services is not None else None
        return SourceStore(self.redis, self.keys, self.settings.skill_cache_size, registrar)

    @cached_property
    def registrar(self) -> SkillRegistrar:
        """The registry as the runner sees it (from the services)."""
        return self._services("the skills registry").registrar(self)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        """RQ dispatch."""
        return Dispatcher(self.rq_redis, self.settings.queue)

    @cached_property
    def runs(self) -> RunStore:
        """Run history and run entry points."""
        return RunStore(
            self.redis,
            self.rq_redis,
            self.keys,
            self.dispatcher,
            lambda: self.transitions,
            lambda: self.checkpoints,
            self.settings.run_input_max_bytes,
        )

    @cached_property
    def bus(self) -> EventSender:
        """The event stream's write side (from the services)."""
        return self._services("sending events").event_sender(self)

    @cached_property
    def skill_model(self) -> SkillModel:
        """The model behind ``ctx.step.llm`` (from the services), built once per runtime."""
        return self._services("ctx.step.llm").skill_model(self)

    def _services(self, what: str) -> Services:
        if self.services is None:
            raise ServicesMissingError(what)
        return self.services

    @cached_property
    def sandbox(self) -> SandboxBackend:
        """Where untrusted skills run (settings.sandbox_backend), with this machine's limits."""
        from loopwright.sandbox.backend import make_backend
        from loopwright.sandbox.limits import GuestLimits

        st = self.settings
        limits = GuestLimits(
            memory_bytes=st.sandbox_memory_mb * 1024 * 1024,
            cpu_seconds=st.sandbox_cpu_seconds,
            max_processes=st.sandbox_max_processes,
            open_files=st.sandbox_open_files,
            message_max_bytes=6 * st.step_output_max_bytes + 64 * 1024,  # \uXXXX escapes
        )
        return make_backend(
            st.sandbox_backend,
            limits,
            pool_size=st.sandbox_pool_size,
            require_isolation=st.sandbox_require_isolation,
            docker_image=st.sandbox_docker_image,
        )

    def llm_complete(self, prompt: str, schema: dict[str, Any] | None = None) -> Any:
        """The model behind ``ctx.step.llm`` (``skill_model``, else the builder's model).

        Returns the answer's text, or with ``schema`` the JSON value it parsed to (checked for
        the schema's top-level ``type`` and ``required`` keys). Retryable provider failures and
        an answer that is not the JSON asked for raise ordinary errors, so the step's retry
        policy applies; a missing model or key fails the step for good.
        """
        return self.skill_model(prompt, schema)

    def close(self) -> None:
        """Stop the lease thread and close the connection pools."""
        if "keeper" in self.__dict__:
            self.keeper.stop()
        if "sandbox" in self.__dict__:
            self.sandbox.close()
        self.redis.close()
        self.rq_redis.close()
