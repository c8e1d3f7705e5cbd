"""The HTTP plumbing every provider shares: one connection pool, JSON POSTs and retries.

Retried: 408, 429, 5xx (529 included), timeouts, connection failures and bodies that are not
the JSON the provider should send. Waits grow exponentially with jitter unless the provider
says how long to wait (``retry-after-ms``, ``retry-after`` in seconds or as an HTTP date); a
wait longer than ``llm_max_retry_wait`` fails at once instead of stalling the agent.
Not retried: 401/403 (:class:`ModelAuthError`) and the other 4xx (:class:`ModelRequestError`),
because the same request will be refused again.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from loopwright.llm.errors import (
    ModelAuthError,
    ModelError,
    ModelRateLimitedError,
    ModelRequestError,
    ModelResponseError,
    ModelUnavailableError,
)
from loopwright.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BODY_BYTES = 8 * 1024 * 1024
"""Largest response body read; a bigger one is refused rather than held in memory."""

ERROR_DETAIL_CHARS = 500
"""How much of a provider's error message goes into our error messages."""

_RETRYABLE_STATUS = frozenset({408, 429})


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter: retry ``n`` (0-based) waits between half and all of
    ``min(cap, base * 2**n)`` seconds, so clients that failed together do not retry together."""

    base: float = 0.5
    cap: float = 30.0

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        full = min(self.cap, self.base * 2.0**retry)
        return full / 2 + random.uniform(0, full / 2)


def parse_retry_after(headers: Mapping[str, str], now: datetime | None = None) -> float | None:
    """The wait a response asks for, in seconds: ``retry-after-ms``, else ``retry-after`` as
    seconds or an HTTP date; ``None`` when absent or unreadable."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def provider_error_message(body: bytes) -> str:
    """The human part of a provider's error body (``error.message`` in both OpenAI's and
    Anthropic's format), else the body text, cut to :data:`ERROR_DETAIL_CHARS`."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            text = err["message"]
        elif isinstance(err, str):
            text = err
        elif isinstance(data.get("message"), str):
            text = data["message"]
    if len(text) > ERROR_DETAIL_CHARS:
        text = text[:ERROR_DETAIL_CHARS] + "..."
    return text or "(empty body)"


class _RetryableError(Exception):
    """One failed attempt that may be retried; ``error`` is raised if retries run out."""

    def __init__(self, error: ModelError, wait: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait = wait


class JsonHttpClient:
    """POSTs JSON to one provider endpoint with the platform's retry policy.

    ``label`` names the provider in error messages (``OpenAI at https://...``); ``auth_hint``
    says what to fix when the credentials are refused; ``secret`` is scrubbed from every
    message so a provider that echoes the key cannot leak it into logs.
    """

    def __init__(
        self,
        *,
        label: str,
        base_url: str,
        headers: Mapping[str, str],
        settings: Settings,
        auth_hint: str,
        secret: str | None = None,
        backoff: Backoff | None = None,
        max_body_bytes: int = MAX_BODY_BYTES,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.label = label
        self.base_url = base_url.rstrip("/")
        self.max_retries = settings.llm_max_retries
        self.max_retry_wait = settings.llm_max_retry_wait
        self.timeout = settings.llm_timeout
        self.backoff = backoff or Backoff()
        self.max_body_bytes = max_body_bytes
        self._auth_hint = auth_hint
        self._secret = secret or None
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"content-type": "application/json", "user-agent": "loopwright", **headers},
            timeout=httpx.Timeout(settings.llm_timeout),
            transport=transport,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def post(self, path: str, body: Mapping[str, Any], parse: Callable[[Any], T]) -> T:
        """POST ``body`` as JSON to ``path`` and return ``parse(decoded JSON)``.

        ``parse`` raises :class:`ModelResponseError` when the JSON has the wrong shape; that
        counts as a failed attempt and is retried like a 5xx.
        """
        payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
        retry = 0
        while True:
            try:
                return self._attempt(path, payload, parse)
            except _RetryableError as failed:
                if retry >= self.max_retries:
                    raise self._exhausted(failed.error, retry + 1) from None
                wait = failed.wait if failed.wait is not None else self.backoff.delay(retry)
                retry += 1
                log.warning("%s; retry %d/%d in %.2fs", failed.error, retry, self.max_retries, wait)
                time.sleep(wait)

    def _attempt(self, path: str, payload: bytes, parse: Callable[[Any], T]) -> T:
        url = f"{self.base_url}{path}"
        try:
            with self._http.stream("POST", path, content=payload) as resp:
                raw = self._read_capped(resp)
                status, headers = resp.status_code, resp.headers
        except httpx.TimeoutException:
            raise _RetryableError(
                ModelUnavailableError(f"{self.label}: no answer within {self.timeout:g}s ({url})")
            ) from None
        except httpx.TransportError as exc:
            reason = self._scrub(str(exc) or type(exc).__name__)
            raise _RetryableError(
                ModelUnavailableError(
                    f"cannot reach {self.label} ({url}): {reason}; is the server running and "
                    f"the base URL right?"
                )
            ) from None
        if status >= 400:
            raise self._status_error(status, headers, raw)
        try:
            data = json.loads(raw)
        except ValueError:
            snippet = self._scrub(raw[:200].decode("utf-8", "replace"))
            error = ModelResponseError(
                f"{self.label} answered with a body that is not JSON: {snippet!r}"
            )
            raise _RetryableError(error) from None
        try:
            return parse(data)
        except ModelResponseError as exc:
            raise _RetryableError(ModelResponseError(self._scrub(f"{self.label}: {exc}"))) from None

    def _read_capped(self, resp: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        for chunk in resp.iter_bytes():
            size += len(chunk)
            if size > self.max_body_bytes:
                # Not retried: the same request would most likely produce the same giant body.
                raise ModelResponseError(
                    f"{self.label} answered with more than {self.max_body_bytes} bytes; refused"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def _status_error(self, status: int, headers: httpx.Headers, raw: bytes) -> Exception:
        detail = self._scrub(provider_error_message(raw))
        if status in (401, 403):
            return ModelAuthError(
                f"{self.label} refused the credentials (HTTP {status}: {detail}); {self._auth_hint}"
            )
        if status in _RETRYABLE_STATUS or status >= 500:
            wait = parse_retry_after(headers)
            if wait is not None and wait > self.max_retry_wait:
                return ModelRateLimitedError(
                    f"{self.label} asks to retry after {wait:g}s (HTTP {status}: {detail}), longer "
                    f"than llm_max_retry_wait={self.max_retry_wait:g}s; giving up now "
                    f"(raise LOOPWRIGHT_LLM_MAX_RETRY_WAIT to wait that long)"
                )
            error: ModelError
            if status == 429:
                error = ModelRateLimitedError(f"{self.label} is rate limiting (HTTP 429: {detail})")
            else:
                error = ModelUnavailableError(f"{self.label} failed (HTTP {status}: {detail})")
            return _RetryableError(error, wait)
        return ModelRequestError(f"{self.label} rejected the request (HTTP {status}: {detail})")

    def _exhausted(self, error: ModelError, attempts: int) -> ModelError:
        return type(error)(f"{error} (gave up after {attempts} attempts)")

    def _scrub(self, text: str) -> str:
        if self._secret and self._secret in text:
            return text.replace(self._secret, "***")
        return text
