"""Outbound HTTP for host tools, guarded against server-side request forgery.

Each request (and each redirect hop) is checked: http(s) only; the host must be in the skill's
``http_allow``; the name is resolved here and every address it resolves to must be public
(loopback, private, link-local — cloud metadata included —, multicast, reserved and
unspecified addresses are refused unless the operator allows them); the connection then goes
to the checked address itself, so a second DNS answer cannot swap it (DNS rebinding). Responses
are size-capped while streaming and bounded in time.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from loopwright.sdk.errors import NonRetriableError

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
HOP_HEADERS = frozenset({"host", "connection", "transfer-encoding", "content-length", "upgrade"})


@dataclass(frozen=True, slots=True)
class HttpPolicy:
    """What a request may reach."""

    allow_hosts: tuple[str, ...]
    allow_private: bool
    timeout: float
    max_bytes: int
    # The call's wall-clock budget (monotonic time) and a liveness check (the run was not
    # cancelled): httpx's timeout is per read, so a server dripping one byte per second would
    # otherwise hold the worker forever. See ``tools.call_budget``.
    deadline: float | None = None
    alive: Callable[[], bool] | None = None

    def time_left(self, what: str) -> float:
        """Seconds this call may still take; raises ``TimeoutError`` when none are left."""
        if self.alive is not None and not self.alive():
            raise TimeoutError(f"http tool: {what} stopped: the run no longer runs here")
        if self.deadline is None:
            return self.timeout
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"http tool: {what} ran out of its time budget")
        return min(self.timeout, left)


def host_allowed(host: str, allow: tuple[str, ...]) -> bool:
    """Exact name, or ``*.example.com`` for any subdomain of example.com."""
    host = host.lower().rstrip(".")
    for raw in allow:
        entry = raw.lower().rstrip(".")
        if entry.startswith("*.") and host.endswith(entry[1:]) and host != entry[2:]:
            return True
        if host == entry:
            return True
    return False


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


def resolve_checked(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to; refuses names resolving to any non-public address."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectionError(f"http tool: cannot resolve {host!r}: {exc.strerror}") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    if not allow_private:
        for addr in addresses:
            if not _public(ipaddress.ip_address(addr.split("%")[0])):
                raise NonRetriableError(
                    f"http tool: {host!r} resolves to {addr}, a loopback/private/link-local "
                    f"address; such addresses are refused (operators can allow them with "
                    f"LOOPWRIGHT_HTTP_ALLOW_PRIVATE)"
                )
    return addresses[0]


def _check_url(url: str, policy: HttpPolicy, check_host: bool) -> tuple[str, str, int]:
    parts = urlsplit(url)
    # A URL that came from a secret (check_host=False) is never quoted back to the skill.
    shown = repr(url[:200]) if check_host else "the URL stored in the secret"
    if parts.scheme not in ("http", "https"):
        raise NonRetriableError(f"http tool: only http(s) URLs are allowed, not {shown}")
    host = parts.hostname or ""
    if not host:
        raise NonRetriableError(f"http tool: no host in {shown}")
    if parts.username or parts.password:
        raise NonRetriableError("http tool: credentials in URLs are refused; use secrets")
    if check_host and not host_allowed(host, policy.allow_hosts):
        raise NonRetriableError(
            f"http tool: host {host!r} is not in this skill's http_allow {list(policy.allow_hosts)}"
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, host, port


def request_json(
    method: str,
    url: str,
    policy: HttpPolicy,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    body: Any = None,
    check_host: bool = True,
) -> Any:
    """One JSON request under ``policy``; 429/5xx and network errors raise retriable errors."""
    sent = {k: v for k, v in (headers or {}).items() if k.lower() not in HOP_HEADERS}
    sent.setdefault("Accept", "application/json")
    content = None
    if body is not None:
        content = json.dumps(body, separators=(",", ":")).encode()
        sent["Content-Type"] = "application/json"
    for _hop in range(MAX_REDIRECTS + 1):
        scheme, host, port = _check_url(url, policy, check_host)
        ip = resolve_checked(host, port, policy.allow_private)
        parts = urlsplit(url)
        netloc = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        pinned = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        extensions = {"sni_hostname": host} if scheme == "https" else {}
        budget = policy.time_left(f"{method} {host}")
        with (
            httpx.Client(timeout=budget, follow_redirects=False) as client,
            client.stream(
                method,
                pinned,
                headers={**sent, "Host": host_header},
                params=params,
                content=content,
                extensions=extensions,
            ) as resp,
        ):
            if resp.status_code in REDIRECTS and "location" in resp.headers:
                url = urljoin(url, resp.headers["location"])
                if resp.status_code == 303 or (resp.status_code in (301, 302) and method != "GET"):
                    method, content, params = "GET", None, None
                continue
            data = bytearray()
            for chunk in resp.iter_bytes():
                policy.time_left(f"{method} {host}")  # between chunks: a drip cannot outlast it
                data += chunk
                if len(data) > policy.max_bytes:
                    raise NonRetriableError(
                        f"http tool: response from {host} is over {policy.max_bytes} bytes"
                    )
            status = resp.status_code
        if status == 429 or status >= 500:
            raise ConnectionError(f"http tool: {method} {host} answered {status}")
        if status >= 400:
            raise NonRetriableError(f"http tool: {method} {host} answered {status}")
        if not data:
            return None
        try:
            return json.loads(bytes(data))
        except ValueError:
            raise NonRetriableError(f"http tool: {method} {host} did not answer JSON") from None
        except RecursionError:  # the same answer would fail again: not retriable
            raise NonRetriableError(
                f"http tool: {method} {host} answered JSON nested too deeply to read"
            ) from None
    raise NonRetriableError(f"http tool: more than {MAX_REDIRECTS} redirects")
