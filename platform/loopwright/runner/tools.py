"""Host tools for in-process skills: ``notify`` (platform inbox) and ``http`` (JSON over HTTP).

Each tool call must happen inside a step and carries the step's idempotency key
``run_id:seq``, so a step that runs again after a crash does not repeat its effect.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from loopwright.inbox import LEVELS, Draft, Inbox, InboxQuotaError, normal_level
from loopwright.inbox.model import BODY_MAX, TITLE_MAX
from loopwright.runner.addresses import private_allow
from loopwright.runner.netguard import Hop, HttpPolicy, follow_redirects, request_json
from loopwright.sdk.capabilities import (
    STEP_DIRECTION,
    allowed_events,
    undeclared_event,
    undeclared_step,
)
from loopwright.sdk.errors import NonRetriableError
from loopwright.sdk.names import is_event_name

if TYPE_CHECKING:
    from loopwright.runner.execution import Execution

# A notify step's dedupe marker and quota counter live this long (a step re-run later than
# this after a crash may post again).
NOTICE_TTL_S = 7 * 86400


class NotifyTool:
    """Posts messages to the platform inbox (``loopwright inbox``)."""

    def __init__(self, ex: Execution) -> None:
        self._ex = ex

    def __call__(
        self,
        message: str,
        *,
        title: str | None = None,
        level: str = "info",
        channel: str | None = None,
    ) -> None:
        """Post ``message`` once per step: to the inbox, or with ``channel="slack:SECRET"`` to
        the Slack-compatible webhook whose URL is the secret SECRET."""
        req = {"message": message, "title": title, "level": level, "channel": channel}
        self._ex.recorded_call("notify", req, lambda: self._post(message, title, level, channel))

    def _post(self, message: str, title: str | None, level: str, channel: str | None) -> None:
        ex = self._ex
        key = ex.idempotency_key()
        if channel is not None:
            self._webhook(channel, message, title, key)
            return
        lvl = normal_level(level)
        if lvl is None:
            raise NonRetriableError(
                f"notify: level {str(level)[:40]!r} is not one of {', '.join(LEVELS)}"
            )
        rt = ex.runtime
        inbox = Inbox(rt.redis, rt.keys, rt.settings)
        draft = Draft(
            level=lvl,
            source="skill",
            title=ex.redactor.text(str(title))[:TITLE_MAX] if title else "",
            body=ex.redactor.text(str(message))[:BODY_MAX],
            skill=ex.spec.name,
            run_id=ex.run_id,
            dedupe_key=key,
        )
        quota = (rt.keys.notices(ex.run_id), rt.settings.notify_max_per_run, NOTICE_TTL_S)
        try:
            inbox.post_draft(draft, quota=quota, old_marker=rt.keys.inbox_sent(key))
        except InboxQuotaError as exc:
            raise NonRetriableError(str(exc)) from None

    def _webhook(self, channel: str, message: str, title: str | None, key: str) -> None:
        kind, _, name = channel.partition(":")
        if kind != "slack" or not name:
            raise NonRetriableError(
                f"notify: unknown channel {channel!r}; use the inbox (no channel) or "
                f"'slack:SECRET_NAME' with the webhook URL stored as a secret"
            )
        url = secret_value(self._ex, name)
        st = self._ex.runtime.settings
        policy = call_budget(
            self._ex,
            HttpPolicy((), private_allow(st.http_private_allow), st.http_timeout, 64 * 1024),
        )
        text = self._ex.redactor.text(f"*{title}*\n{message}" if title else message)
        body = json.dumps({"text": text[:8000]}, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        hop = Hop("POST", url, headers, body, frozenset())
        bounded_call(self._ex, lambda: _post_webhook(hop, policy))


def _post_webhook(hop: Hop, policy: HttpPolicy) -> None:
    """POST to a Slack-compatible webhook: any 2xx is delivered, whatever its body (Slack
    answers the plain text ``ok``); 429/5xx and network errors are retriable, other answers
    are not. The operator chose the URL when storing the secret, so its host is not checked
    against an allow-list (its addresses are, as for every request)."""
    status, _data, host = follow_redirects(hop, policy, check_host=False)
    if status == 429 or status >= 500:
        raise ConnectionError(f"notify: POST {host} answered {status}")
    if status >= 300:
        raise NonRetriableError(f"notify: POST {host} answered {status}")


class HttpTool:
    """JSON over HTTP to the hosts the skill declared in ``http_allow`` (see ``netguard``).

    Header values may name secrets as ``{{secret:NAME}}``; NAME must be in the skill's
    ``secrets`` and is replaced here, on the host.
    """

    def __init__(self, ex: Execution) -> None:
        self._ex = ex

    def _policy(self) -> HttpPolicy:
        st = self._ex.runtime.settings
        policy = HttpPolicy(
            allow_hosts=self._ex.spec.http_allow,
            private=private_allow(st.http_private_allow),
            timeout=st.http_timeout,
            max_bytes=st.http_max_response_bytes,
        )
        return call_budget(self._ex, policy)

    def _headers(
        self, url: str, headers: dict[str, Any] | None
    ) -> tuple[dict[str, str], frozenset[str]]:
        """The headers to send, with ``{{secret:NAME}}`` substituted, and the names of those
        that carry a secret (never sent to another origin on a redirect)."""
        host = urlsplit(url).hostname or ""
        out: dict[str, str] = {}
        secret_headers: set[str] = set()
        for key, raw in (headers or {}).items():
            value, count = SECRET_REF.subn(
                lambda m: secret_value(self._ex, m.group(1), host=host), str(raw)
            )
            out[str(key)] = value
            if count:
                secret_headers.add(str(key))
        out["Idempotency-Key"] = self._ex.idempotency_key()
        return out, frozenset(secret_headers)

    def get_json(
        self, url: str, params: dict[str, Any] | None = None, headers: dict[str, Any] | None = None
    ) -> Any:
        """GET ``url`` and decode the JSON body."""
        req = {"method": "GET", "url": url, "params": params, "headers": headers, "body": None}
        return self._ex.recorded_call("http", req, lambda: self._get(url, params, headers))

    def _get(self, url: str, params: dict[str, Any] | None, headers: dict[str, Any] | None) -> Any:
        sent, secret = self._headers(url, headers)
        policy = self._policy()
        got = bounded_call(
            self._ex,
            lambda: request_json(
                "GET", url, policy, headers=sent, params=params, secret_headers=secret
            ),
        )
        return self._ex.redactor.value(got)

    def post_json(self, url: str, body: Any, headers: dict[str, Any] | None = None) -> Any:
        """POST ``body`` as JSON and decode the JSON answer."""
        req = {"method": "POST", "url": url, "params": None, "headers": headers, "body": body}
        return self._ex.recorded_call("http", req, lambda: self._post(url, body, headers))

    def _post(self, url: str, body: Any, headers: dict[str, Any] | None) -> Any:
        sent, secret = self._headers(url, headers)
        policy = self._policy()
        got = bounded_call(
            self._ex,
            lambda: request_json(
                "POST", url, policy, headers=sent, body=body, secret_headers=secret
            ),
        )
        return self._ex.redactor.value(got)


def call_budget(ex: Execution, policy: HttpPolicy) -> HttpPolicy:
    """``policy`` bounded in wall-clock time: the call ends at the run's deadline (its
    active-time budget left), after ``http_call_max_seconds`` at most, or as soon as the run
    stops running here (cancelled, lease lost). The per-read timeout alone lets a server that
    drips one byte per second hold the worker indefinitely."""
    cap = time.monotonic() + ex.runtime.settings.http_call_max_seconds
    lost = ex.lease.lost
    return dataclasses.replace(
        policy, deadline=min(cap, ex.deadline), alive=lambda: not lost.is_set()
    )


def bounded_call(ex: Execution, call: Callable[[], Any]) -> Any:
    """Run a host-tool call; when it fails, stop the run instead if that is why it failed
    (the run's deadline passed or the run was cancelled): those are not retriable."""
    try:
        return call()
    except RecursionError:  # deeply nested data: the same call would fail again
        raise NonRetriableError("http tool: the answer is nested too deeply to use") from None
    except Exception:
        ex.check_alive()
        raise


SECRET_REF = re.compile(r"\{\{secret:([A-Za-z0-9_.-]{1,64})\}\}")


def secret_value(ex: Execution, name: str, host: str | None = None) -> str:
    """A declared secret's value (host side only), within the operator's grant for it."""
    if name not in ex.spec.secrets:
        raise NonRetriableError(
            f"secret {name!r} is not declared: add it to @skill(secrets=[...]) to use it"
        )
    grant = ex.runtime.settings.secret_grants.get(name)
    if grant is not None:
        skills, hosts = grant.get("skills"), grant.get("hosts")
        if skills is not None and ex.spec.name not in skills:
            raise NonRetriableError(f"secret {name!r} is not granted to skill {ex.spec.name!r}")
        if host is not None and hosts is not None and host not in hosts:
            raise NonRetriableError(f"secret {name!r} may not be sent to {host!r}")
    value = ex.runtime.settings.secrets.get(name)
    if value is None:
        raise NonRetriableError(
            f"secret {name!r} is not configured on this platform (LOOPWRIGHT_SECRETS)"
        )
    return value.get_secret_value()


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


def check_step(ex: Execution, kind: str, event: str | None = None) -> None:
    """Refuse, non-retriably, a step the skill's declaration does not allow (see
    ``sdk.capabilities``): a capability step kind without its tool, or an event name outside
    the declared ``events``. Enforced here, on the host, because static reading cannot see
    aliases (``s = ctx.step; s.send_event(...)``).

    Event access binds untrusted runs (trusted code runs in the worker and is not bounded by
    declarations). A version registered before events were declared (its stored manifest has
    no ``events``) keeps its old, unrestricted access until it is resubmitted.
    """
    why = undeclared_step(kind, ex.spec.tools)
    direction = STEP_DIRECTION.get(kind)
    if why is None and direction is not None and event is not None:
        if not is_event_name(event):
            why = undeclared_event(direction, event, {})
        elif not ex.trusted and not (ex.spec.events is None and _legacy_events(ex)):
            why = undeclared_event(
                direction, event, allowed_events(ex.spec.events, ex.spec.trigger)
            )
    if why is not None:
        raise NonRetriableError(why)


def _legacy_events(ex: Execution) -> bool:
    """The run's version was stored with a manifest from before event declarations."""
    redis, keys = ex.runtime.redis, ex.runtime.keys
    version = redis.hget(keys.run(ex.run_id), "version")
    stored = redis.hget(keys.registry_version(str(version)), "manifest") if version else None
    if not stored:
        return False
    try:
        manifest = json.loads(stored)
    except ValueError:
        return False
    return isinstance(manifest, dict) and "events" not in manifest
