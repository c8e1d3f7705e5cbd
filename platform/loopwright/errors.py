"""The platform's exception tree, sorted by who can fix the problem.

``LoopwrightError`` is the root of every error Loopwright raises on purpose; a handler that
catches it (the CLI, the sidecar service) shows its message as one line. Its four branches say
who acts:

* ``UserError``: the person at the CLI or API (bad input, unknown ids, bad settings).
* ``SkillAuthorError``: the skill's author (policy findings, an unreadable declaration, a skill
  that failed in the sandbox).
* ``InfrastructureError``: whoever runs the machine (Redis unreachable, no container engine, a
  guest that could not start, a model provider that is down).
* ``PlatformError``: a Loopwright bug (the host and guest disagree on the protocol).

The root and the branches are defined in ``loopwright.sdk.errors`` (the guest process imports
only the SDK and the sandbox, whose errors belong to the tree) and re-exported here: import them
from this module. The errors skill code raises or sees (``SkillError`` and its subclasses) and
``RunInterrupt``, the one ``BaseException`` root of what skill code must not catch, live in
``loopwright.sdk.errors`` because skills import them.

Where the subclasses live (each beside the code that raises it):

* user: ``NotFoundError``, ``SkillLoadError`` (here), ``SkillStateError``
  (``skills_registry.store``), ``ModelConfigError`` and ``ModelAuthError`` (``llm.errors``);
* skill author: ``PolicyViolation`` (``sandbox.policy``), ``ManifestError`` (``sdk.manifest``),
  ``ManifestInvalid`` (``skills_registry.manifest``), ``GuestFailedError`` (``runner.execute``),
  ``SkillDefinitionError`` (``sdk.errors``);
* infrastructure: ``RedisUnavailableError`` (here), ``SandboxError`` and ``GuestTimeoutError``
  (``sandbox.host``), ``HostToolError`` (``sandbox.guest``), ``MockToolError``
  (``sidecar.harness``), ``ModelRateLimitedError``, ``ModelUnavailableError`` (``llm.errors``);
* platform: ``ProtocolError`` (``sandbox.protocol``);
* ``ModelError`` (``llm.errors``) is the root of the model errors, each also under its branch.
"""

from __future__ import annotations

from loopwright.sdk.errors import (
    InfrastructureError,
    LoopwrightError,
    PlatformError,
    SkillAuthorError,
    UserError,
)

__all__ = [
    "InfrastructureError",
    "LoopwrightError",
    "NotFoundError",
    "PlatformError",
    "RedisUnavailableError",
    "SkillAuthorError",
    "SkillLoadError",
    "UserError",
]


class NotFoundError(UserError):
    """An id or name that does not exist."""


class SkillLoadError(UserError):
    """A skill file that cannot be loaded: syntax error, failing import, no or several @skill."""


class RedisUnavailableError(InfrastructureError):
    """Redis cannot be reached or started."""
