"""The Loopwright skill SDK: what a skill module imports.

from loopwright.sdk import skill, cron, Context

@skill(name="service-health", trigger=cron("*/30 * * * *"), tools=["http", "notify"])
def main(ctx: Context):
    metrics = ctx.step.run("fetch", ctx.tools.http.get_json, "https://metrics.example/summary")
    ...
"""

from loopwright.sdk.context import Context, HttpTool, NotifyTool, RunLog, State, Step, Tools
from loopwright.sdk.durations import parse_duration
from loopwright.sdk.errors import (
    NonDeterminismError,
    NonRetriableError,
    RetryAfterError,
    SkillDefinitionError,
    SkillError,
    StepFailedError,
    StepOutputError,
)
from loopwright.sdk.skill import SkillSpec, skill, spec_of
from loopwright.sdk.triggers import (
    CronTrigger,
    EventTrigger,
    IntervalTrigger,
    Trigger,
    cron,
    event,
    every,
)

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
