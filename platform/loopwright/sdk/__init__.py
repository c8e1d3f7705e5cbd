"""The Loopwright skill SDK: what a skill module imports.

from loopwright.sdk import skill, cron, Context

@skill(name="service-health", trigger=cron("*/30 * * * *"), tools=["http", "notify"])
def main(ctx: Context):
    metrics = ctx.step.run("fetch", ctx.tools.http.get_json, "https://metrics.example/summary")
    ...

The names below are imported on first use (PEP 562): the runner and the CLI import small
modules of this package (``sdk.errors``, ``sdk.steps``, ``sdk.durations``) on every start, and
importing a submodule runs this file first, so it must not pull in the decorator, the triggers
and the context (measured in ``bench/cli.py``). No submodule may be named like an exported
name: importing ``sdk.X`` sets the package attribute ``X`` to the module (the decorator's
module is therefore ``sdk.spec``, not ``sdk.skill``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loopwright.sdk.context import (
        Context as Context,
    )
    from loopwright.sdk.context import (
        HttpTool as HttpTool,
    )
    from loopwright.sdk.context import (
        NotifyTool as NotifyTool,
    )
    from loopwright.sdk.context import (
        RunLog as RunLog,
    )
    from loopwright.sdk.context import (
        State as State,
    )
    from loopwright.sdk.context import (
        Step as Step,
    )
    from loopwright.sdk.context import (
        Tools as Tools,
    )
    from loopwright.sdk.durations import parse_duration as parse_duration
    from loopwright.sdk.errors import (
        NonDeterminismError as NonDeterminismError,
    )
    from loopwright.sdk.errors import (
        NonRetriableError as NonRetriableError,
    )
    from loopwright.sdk.errors import (
        RetryAfterError as RetryAfterError,
    )
    from loopwright.sdk.errors import (
        SkillDefinitionError as SkillDefinitionError,
    )
    from loopwright.sdk.errors import (
        SkillError as SkillError,
    )
    from loopwright.sdk.errors import (
        StepFailedError as StepFailedError,
    )
    from loopwright.sdk.errors import (
        StepOutputError as StepOutputError,
    )
    from loopwright.sdk.spec import SkillSpec as SkillSpec
    from loopwright.sdk.spec import skill as skill
    from loopwright.sdk.spec import spec_of as spec_of
    from loopwright.sdk.triggers import (
        CronTrigger as CronTrigger,
    )
    from loopwright.sdk.triggers import (
        EventTrigger as EventTrigger,
    )
    from loopwright.sdk.triggers import (
        IntervalTrigger as IntervalTrigger,
    )
    from loopwright.sdk.triggers import (
        Trigger as Trigger,
    )
    from loopwright.sdk.triggers import (
        cron as cron,
    )
    from loopwright.sdk.triggers import (
        event as event,
    )
    from loopwright.sdk.triggers import (
        every as every,
    )

# exported name -> the submodule that defines it
_HOMES = {
    **dict.fromkeys(
        ("Context", "HttpTool", "NotifyTool", "RunLog", "State", "Step", "Tools"), "context"
    ),
    "parse_duration": "durations",
    **dict.fromkeys(
        (
            "NonDeterminismError",
            "NonRetriableError",
            "RetryAfterError",
            "SkillDefinitionError",
            "SkillError",
            "StepFailedError",
            "StepOutputError",
        ),
        "errors",
    ),
    **dict.fromkeys(("SkillSpec", "skill", "spec_of"), "spec"),
    **dict.fromkeys(
        ("CronTrigger", "EventTrigger", "IntervalTrigger", "Trigger", "cron", "event", "every"),
        "triggers",
    ),
}

__all__ = [
    "Context",
    "CronTrigger",
    "EventTrigger",
    "HttpTool",
    "IntervalTrigger",
    "NonDeterminismError",
    "NonRetriableError",
    "NotifyTool",
    "RetryAfterError",
    "RunLog",
    "SkillDefinitionError",
    "SkillError",
    "SkillSpec",
    "State",
    "Step",
    "StepFailedError",
    "StepOutputError",
    "Tools",
    "Trigger",
    "cron",
    "event",
    "every",
    "parse_duration",
    "skill",
    "spec_of",
]
assert sorted(__all__) == sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'loopwright.sdk' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"loopwright.sdk.{home}"), name)
    globals()[name] = value  # once: later lookups do not come back here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})
