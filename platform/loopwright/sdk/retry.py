"""The one retry policy for failed step attempts: what is retried, how often, how long to wait.

The in-process steps (``runner/context.py``), the sandbox host (``runner/remote.py``), the guest
(``sandbox/guest.py``) and the sidecar's test harness all decide through this module, so a
skill retries the same way wherever it runs. It lives in the SDK because the guest imports
nothing but ``loopwright.sdk`` and ``loopwright.sandbox``; it is pure (no I/O, no clock).

* What: every ``Exception`` (and ``SystemExit``) raised by a step body is retried, except
  ``NonRetriableError`` (and its ``StepOutputError``), which fails the step at once.
  ``RunInterrupt`` and other ``BaseException``\\ s are control flow and are never caught.
* How often: ``retries`` re-tries, so ``retries + 1`` attempts in all.
* How long: ``backoff * 2 ** (attempt - 1)`` seconds, capped at 5 minutes; a
  ``RetryAfterError`` names its own delay instead (at most a year; infinity means the cap).
* Where: a delay up to ``inline_max_delay`` (1 s by default) is waited in place; a longer one
  parks the run, so a waiting retry holds no worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from loopwright.sdk.errors import NonRetriableError, RetryAfterError

MAX_BACKOFF_S = 300.0
MAX_DELAY_S = 366 * 86400.0  # a sleep, wait or retry delay longer than a year is a bug

RETRIED: tuple[type[BaseException], ...] = (Exception, SystemExit)
"""What a step body may raise and have handled by the policy (``except RETRIED``); a skill's
``sys.exit()`` must not end the worker."""


def clamp_delay(seconds: float) -> float:
    """A usable delay: not negative, at most a year; NaN and infinity become the backoff cap."""
    if not math.isfinite(seconds):
        return MAX_BACKOFF_S
    return min(max(0.0, seconds), MAX_DELAY_S)


@dataclass(frozen=True, slots=True)
class Failure:
    """What a failed attempt says about retrying: whether it may, and after which delay
    (``None``: the policy's backoff)."""

    retriable: bool
    delay: float | None = None

    @classmethod
    def of(cls, exc: BaseException) -> Failure:
        """Classify an exception raised by a step body."""
        if isinstance(exc, NonRetriableError):
            return cls(False)
        if isinstance(exc, RetryAfterError):
            return cls(True, clamp_delay(exc.seconds))
        return cls(True)

    def to_wire(self) -> dict[str, object]:
        """The fields of the guest's ``step.fail`` request (strict JSON: the delay is finite)."""
        fields: dict[str, object] = {"retriable": self.retriable}
        if self.delay is not None:
            fields["delay"] = self.delay
        return fields

    @classmethod
    def from_wire(cls, retriable: object, delay: object) -> Failure:
        """Read ``step.fail`` fields from an untrusted guest: a delay that is not a
        non-negative number means the policy's backoff."""
        if isinstance(delay, int | float) and not isinstance(delay, bool) and not delay < 0:
            return cls(bool(retriable), clamp_delay(float(delay)))
        return cls(bool(retriable))


@dataclass(frozen=True, slots=True)
class Decision:
    """After a failed attempt: fail the step, or retry after ``delay`` seconds, waiting in
    place or (``park``) with the run parked."""

    retry: bool
    delay: float = 0.0
    park: bool = False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """A skill's retry settings (``@skill(retries=..., backoff=...)``)."""

    retries: int
    backoff: float
    inline_max_delay: float = 1.0

    def backoff_delay(self, attempt: int) -> float:
        """Delay before the next attempt after ``attempt`` failed: doubled each time, capped."""
        return clamp_delay(min(MAX_BACKOFF_S, self.backoff * 2 ** (attempt - 1)))

    def decide(self, attempt: int, failure: Failure) -> Decision:
        """What follows the failure of attempt number ``attempt`` (counted from 1)."""
        if not failure.retriable or attempt > self.retries:
            return Decision(False)
        delay = self.backoff_delay(attempt) if failure.delay is None else clamp_delay(failure.delay)
        return Decision(True, delay, park=delay > self.inline_max_delay)
