"""Errors a skill raises or sees, sorted by who can act on them.

* ``NonRetriableError``, ``RetryAfterError``: raised *by skill code* inside a step to steer retries.
* ``StepFailedError``: raised *to skill code* when a step exhausted its retries; catch it to
  run a fallback. A replay raises it again at the same step, so the run stays deterministic.
* ``StepOutputError``: a step returned something that is not JSON or is too large.
* ``NonDeterminismError``, ``SkillDefinitionError``: for the skill's author.
* ``RunInterrupt``: the one ``BaseException`` root of what skill code must not catch
  (``NonDeterminismError``, the sandbox guards' refusals and the runner's suspension, timeout,
  quota and lease-lost signals).

The root of the platform's own exception tree (``LoopwrightError`` and its four branches,
sorted by who can fix the problem) is defined here too, because the guest process imports only
``loopwright.sdk`` and ``loopwright.sandbox`` and the sandbox's errors belong to the tree. Its
documented home is ``loopwright.errors``, which re-exports these classes.
"""

from __future__ import annotations


class LoopwrightError(Exception):
    """Root of every error Loopwright raises on purpose (see ``loopwright.errors``)."""


class UserError(LoopwrightError):
    """The person at the CLI or API gave wrong input: the message says what to change."""


class SkillAuthorError(LoopwrightError):
    """The skill's source or declaration is wrong: its author fixes the skill."""


class InfrastructureError(LoopwrightError):
    """Something outside the code is missing or down: the message says how to fix it."""


class PlatformError(LoopwrightError):
    """Loopwright itself broke an internal contract: a bug to report, not to work around."""


class SkillError(Exception):
    """Root of the errors skill code raises or catches."""


class NonRetriableError(SkillError):
    """Raise inside a step to fail it at once, without retries."""


class RetryAfterError(SkillError):
    """Raise inside a step to retry it after ``seconds`` (e.g. an upstream said 429)."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.seconds = max(0.0, float(seconds))


class StepFailedError(SkillError):
    """A step failed for good (retries exhausted or non-retriable); catch it to fall back."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(f"step {step!r} failed: {message}")
        self.step = step
        self.reason = message


class StepOutputError(NonRetriableError):
    """A step's return value is not JSON-serialisable or exceeds the configured size cap."""


class SkillDefinitionError(SkillAuthorError, TypeError):
    """The ``@skill(...)`` arguments are invalid; raised when the module is loaded."""


class RunInterrupt(BaseException):
    """Root of the exceptions skill code must not catch.

    The platform raises them through skill code to park, stop or fail a run (a lease lost, a
    quota or timeout reached, a non-deterministic replay, a suspension). They derive from
    ``BaseException`` so that ``except Exception`` in a skill cannot swallow them.
    """


class NonDeterminismError(RunInterrupt):
    """Replay reached a step whose name or kind differs from the checkpoint recorded there.

    Code between steps must be deterministic: the same inputs and step results must lead to the
    same sequence of steps (names and kinds: ``run``, ``sleep``, ``llm``...). Fix the skill (move
    the varying code into a step) and start a new run; this run cannot continue.
    """

    def __init__(
        self,
        seq: int,
        recorded: str,
        requested: str,
        recorded_kind: str | None = None,
        requested_kind: str | None = None,
    ) -> None:
        def step(kind: str | None, name: str) -> str:
            return f"{kind} step {name!r}" if kind else f"step {name!r}"

        super().__init__(
            f"non-determinism at step #{seq}: the run recorded {step(recorded_kind, recorded)} "
            f"here but the code now asks for {step(requested_kind, requested)}. Code between "
            f"steps must be deterministic (move clocks, randomness and I/O into ctx.step.run); "
            f"start a new run after fixing the skill."
        )
        self.seq = seq
        self.recorded = recorded
        self.requested = requested
        self.recorded_kind = recorded_kind
        self.requested_kind = requested_kind
