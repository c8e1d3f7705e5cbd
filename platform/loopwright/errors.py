"""The platform's exception tree, sorted by who can fix the problem.

``LoopwrightError`` is the root. ``UserError`` is for the person at the CLI or API (bad input,
unknown ids); ``InfrastructureError`` for things outside the code (Redis unreachable, a missing
binary). Skill-author errors live in ``loopwright.sdk.errors`` because skills import them.
"""

from __future__ import annotations


class LoopwrightError(Exception):
    """Root of every error Loopwright raises on purpose."""


class UserError(LoopwrightError):
    """The input was wrong: the message says what to change."""


class NotFoundError(UserError):
    """An id or name that does not exist."""


class SkillLoadError(UserError):
    """A skill file that cannot be loaded: syntax error, failing import, no or several @skill."""


class InfrastructureError(LoopwrightError):
    """Something outside the code is missing or down; the message says how to fix it."""


class RedisUnavailableError(InfrastructureError):
    """Redis cannot be reached or started."""
