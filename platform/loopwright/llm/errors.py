"""Model errors, sorted by what the caller can do about them."""

from __future__ import annotations

from loopwright.errors import InfrastructureError, LoopwrightError, UserError


class ModelError(LoopwrightError):
    """A model call failed. ``retryable`` tells the agent loop whether trying later may work."""

    retryable = False


class ModelConfigError(ModelError, UserError):
    """Unknown model string, missing API key or base URL: fix the configuration."""


class ModelAuthError(ModelError, UserError):
    """The provider refused the credentials (401/403)."""


class ModelRequestError(ModelError):
    """The provider rejected the request itself (400, 404, 413, 422...)."""


class ModelRateLimitedError(ModelError, InfrastructureError):
    """429 after every retry was used."""

    retryable = True


class ModelUnavailableError(ModelError, InfrastructureError):
    """5xx, timeouts and connection failures after every retry was used."""

    retryable = True


class ModelResponseError(ModelError, InfrastructureError):
    """The provider answered with something that is not a valid response (malformed JSON,
    missing fields). Retried like a 5xx; raised when retries run out."""

    retryable = True
