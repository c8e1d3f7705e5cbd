"""Host tools for in-process skills: ``notify`` (platform inbox) and ``http`` (JSON over HTTP).

Each tool call must happen inside a step and carries the step's idempotency key
``run_id:seq``, so a step that runs again after a crash does not repeat its effect.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from loopwright.runner.records import now_ms
from loopwright.sdk.errors import NonRetriableError

if TYPE_CHECKING:
    from loopwright.runner.context import Execution

INBOX_MAX = 10_000
HTTP_MAX_BYTES = 4 * 1024 * 1024
HTTP_TIMEOUT_S = 15.0

# Atomically: append a notice to the inbox unless this idempotency key already posted one.
# KEYS: sent marker, inbox   ARGV: entry JSON, marker TTL seconds, inbox cap
NOTIFY_LUA = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[2]) then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[3]), -1)
  return 1
end
return 0
"""


class NotifyTool:
    """Posts messages to the platform inbox (``loopwright inbox``)."""

    def __init__(self, ex: Execution) -> None:
        self._ex = ex

    def __call__(self, message: str, *, title: str | None = None, level: str = "info") -> None:
        """Append ``message`` to the inbox once per step."""
        ex = self._ex
        key = ex.idempotency_key()
        entry = {
            "ts": now_ms(),
            "run_id": ex.run_id,
            "skill": ex.spec.name,
            "level": level,
            "title": title,
            "message": str(message)[:8000],
            "idempotency_key": key,
        }
        keys = ex.runtime.keys
        ex.runtime.redis.eval(
            NOTIFY_LUA, 2, keys.inbox_sent(key), keys.inbox, json.dumps(entry), 7 * 86400, INBOX_MAX
        )


class HttpTool:
    """JSON over HTTP to the hosts the skill declared in ``http_allow``."""

    def __init__(self, ex: Execution) -> None:
        self._ex = ex

    def _check(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise NonRetriableError(f"http tool: only http(s) URLs are allowed, not {url!r}")
        host = parts.hostname or ""
        if host not in self._ex.spec.http_allow:
            raise NonRetriableError(
                f"http tool: host {host!r} is not in this skill's http_allow "
                f"{list(self._ex.spec.http_allow)}"
            )

    def _request(self, method: str, url: str, **kw: Any) -> Any:
        self._check(url)
        headers = {"Idempotency-Key": self._ex.idempotency_key(), "Accept": "application/json"}
        with (
            httpx.Client(timeout=HTTP_TIMEOUT_S, follow_redirects=False) as client,
            client.stream(method, url, headers=headers, **kw) as resp,
        ):
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > HTTP_MAX_BYTES:
                    raise NonRetriableError(
                        f"http tool: response from {url} over {HTTP_MAX_BYTES} bytes"
                    )
            if resp.status_code == 429 or resp.status_code >= 500:
                resp.raise_for_status()  # retried by the step's policy
            if resp.status_code >= 400:
                raise NonRetriableError(f"http tool: {method} {url} answered {resp.status_code}")
        try:
            return json.loads(bytes(body)) if body else None
        except ValueError:
            raise NonRetriableError(f"http tool: {method} {url} did not answer JSON") from None

    def get_json(self, url: str, params: dict[str, Any] | None = None) -> Any:
        """GET ``url`` and decode the JSON body."""
        return self._request("GET", url, params=params)

    def post_json(self, url: str, body: Any) -> Any:
        """POST ``body`` as JSON and decode the JSON answer."""
        return self._request("POST", url, json=body)


class HostTools:
    """``ctx.tools``: only the tools the skill declared are reachable."""

    def __init__(self, ex: Execution) -> None:
        self._ex = ex

    def _declared(self, name: str) -> None:
        if name not in self._ex.spec.tools:
            raise NonRetriableError(
                f"tool {name!r} is not declared: add it to @skill(tools=[...]) to use it"
            )

    @property
    def notify(self) -> NotifyTool:
        """The inbox tool."""
        self._declared("notify")
        return NotifyTool(self._ex)

    @property
    def http(self) -> HttpTool:
        """The HTTP tool."""
        self._declared("http")
        return HttpTool(self._ex)
