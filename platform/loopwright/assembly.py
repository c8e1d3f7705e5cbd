"""Assembly: a process's :class:`Runtime` with the services the runner takes from above it.

The runner defines what it needs from the event bus, the model providers and the registry as
protocols (:mod:`loopwright.runner.ports`); this module, above all of them, implements those
protocols and passes them in. Every place that builds a runtime for real work (CLI commands,
``loopwright worker``, the tests' cluster, the benchmarks) goes through :func:`build_runtime`.

The implementations are imported when first used, so a CLI command that never sends an event
or calls a model does not pay for importing the providers.
"""

from __future__ import annotations

from loopwright.runner.ports import EventSender, Parts, SkillModel, SkillRegistrar
from loopwright.runner.runtime import Runtime
from loopwright.settings import Settings


class PlatformServices:
    """The runner's ports, implemented by the event bus, the skill model and the registry."""

    def event_sender(self, rt: Parts) -> EventSender:
        """The event stream's write side."""
        from loopwright.events.bus import EventBus

        st = rt.settings
        return EventBus(
            rt.redis,
            rt.keys,
            max_bytes=st.run_input_max_bytes,
            retention_s=st.event_retention,
            backlog_max=st.event_backlog_max,
        )

    def skill_model(self, rt: Parts) -> SkillModel:
        """``ctx.step.llm``: ``skill_model``, else the builder's model."""
        from loopwright.llm.skill_calls import SkillCalls

        return SkillCalls(rt.settings)

    def registrar(self, rt: Parts) -> SkillRegistrar:
        """The versioned registry."""
        from loopwright.skills_registry.store import Registry

        return Registry(rt.redis, rt.keys)


def build_runtime(settings: Settings, redis_url: str | None = None) -> Runtime:
    """A runtime for ``settings`` with the platform's services plugged in."""
    return Runtime(settings, redis_url, services=PlatformServices())
