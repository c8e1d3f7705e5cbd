"""Skill operations the CLI, MCP and the API share: deleting a skill.

Deleting is more than retiring: ``retire`` keeps the versions for history and rollback, while
``delete`` purges them (versions, sources, approvals waiting on them, the active pointer, the
cron cursor) so the name is free again, and keeps what happened (runs, their checkpoints and
the rollups) readable. It refuses while a run of the skill is in flight, because that run
would need the source being deleted. The registry does the purge in one Lua script
(``Registry.delete``); a trigger racing the delete cannot start a run of the deleted skill
because trigger starts check the runnable index inside the run-creating script
(``RunStore.create_if_absent(require_active=True)``).
"""

from __future__ import annotations

from redis import Redis

from loopwright.errors import UserError
from loopwright.keys import Keys
from loopwright.sdk.names import is_reserved
from loopwright.skills_registry.store import Deletion, Registry


class SkillBusyError(UserError):
    """The skill has runs in flight: nothing was deleted."""

    def __init__(self, name: str, in_flight: dict[str, int]) -> None:
        total = sum(in_flight.values())
        parts = ", ".join(f"{n} {status}" for status, n in sorted(in_flight.items()))
        super().__init__(
            f"skill {name!r} has {total} run(s) in flight ({parts}); nothing was deleted: "
            f"list them with 'loopwright runs list --skill {name}', cancel each with "
            f"'loopwright runs cancel RUN_ID' (or let them finish), then delete again"
        )
        self.in_flight = in_flight


def refuse_builtin(name: str) -> None:
    """``UserError`` for a built-in (reserved) name: the platform's own skills stay."""
    if is_reserved(name):
        raise UserError(f"skill {name!r} is built into the platform and cannot be deleted")


def delete_skill(redis: Redis, keys: Keys, name: str) -> Deletion:
    """Purge ``name`` from the registry, keeping its run history.

    Raises ``UserError`` for a built-in (reserved) name, ``NotFoundError`` for an unknown one
    and :class:`SkillBusyError` while any of its runs is queued, running, sleeping or waiting.
    """
    refuse_builtin(name)
    result = Registry(redis, keys).delete(name)
    if result.outcome == "busy":
        raise SkillBusyError(name, result.in_flight)
    return result
