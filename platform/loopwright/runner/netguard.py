"""Outbound HTTP for host tools, guarded against server-side request forgery.

Each request (and each redirect hop) is checked: http(s) only; the host must be in the skill's
``http_allow``; the name is resolved here and every address it resolves to must be global
(``addresses.classify``: loopback, private, link-local, carrier-grade NAT, multicast, reserved,
unspecified and the IPv6 forms carrying such an IPv4 address are refused) or admitted by the
operator's private allow-list (``addresses.PrivateAllow``, ``LOOPWRIGHT_HTTP_PRIVATE_ALLOW``:
named ranges and host names; loopback, link-local and metadata addresses only when named
exactly); the connection then
goes to the checked address itself, so a second DNS answer cannot swap it (DNS rebinding).
Redirects are followed here, hop by hop (``follow_redirects``): every hop is checked again,
headers carrying secrets or credentials are dropped when the origin changes, and an https to
http downgrade is refused. Responses are size-capped while streaming and bounded in time.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

import httpx

from loopwright.runner.addresses import PrivateAllow, classify
from loopwright.sdk.errors import NonRetriableError

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
HOP_HEADERS = frozenset({"host", "connection", "transfer-encoding", "content-length", "upgrade"})
# Dropped on a cross-origin redirect whatever their value, as browsers and curl do.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


@dataclass(frozen=True, slots=True)
class HttpPolicy:
    """What a request may reach."""

    allow_hosts: tuple[str, ...]
    private: PrivateAllow
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


NOTHING_PRIVATE = PrivateAllow()


def address_refusal(
    address: str, private: PrivateAllow = NOTHING_PRIVATE, host: str | None = None
) -> str | None:
    """Why the http tool may not connect to ``address`` (a phrase that follows "which is"),
    or None when it may: a global address, or one the operator's allow-list admits (``host``:
    the name that resolved to it, for the allow-list's host entries)."""
    found = classify(address)
    if found.is_global:
        return None
    return private.refusal(found, host)


def checked_address(host: str, port: int, private: PrivateAllow) -> str:
    """The address to connect to; refuses names resolving to any address it may not reach.
    Every address is checked before any connection is made."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConnectionError(f"http tool: cannot resolve {host!r}: {exc.strerror}") from None
    addresses = sorted({str(info[4][0]) for info in infos})
    literal = _is_literal(host)
    for addr in addresses:
        why = address_refusal(addr, private, None if literal else host)
        if why is not None:
            if host.strip("[]") == addr:
                raise NonRetriableError(f"http tool: {addr} is {why}")
            raise NonRetriableError(f"http tool: {host!r} resolves to {addr}, which is {why}")
    return addresses[0]


def _is_literal(host: str) -> bool:
    """True for an address written in the URL (never matched against host-name entries)."""
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    return True


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


@dataclass(frozen=True, slots=True)
class Hop:
    """One request of a redirect chain: what is sent, and which headers carry secrets."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None
    secret_headers: frozenset[str]


def request_json(
    method: str,
    url: str,
    policy: HttpPolicy,
    *,
    headers: dict[str, str] | None = None,
    params: dict[str, Any] | None = None,
    body: Any = None,
    check_host: bool = True,
    secret_headers: frozenset[str] = frozenset(),
) -> Any:
    """One JSON request under ``policy``; 429/5xx and network errors raise retriable errors.

    ``secret_headers`` names the headers whose values hold secrets: they are never sent to
    another origin than the first request's.
    """
    sent = {k: v for k, v in (headers or {}).items() if k.lower() not in HOP_HEADERS}
    sent.setdefault("Accept", "application/json")
    content = None
    if body is not None:
        content = json.dumps(body, separators=(",", ":")).encode()
        sent["Content-Type"] = "application/json"
    if params:  # once, into the URL: a redirect's Location then stands as the server sent it
        try:
            url = str(httpx.Request(method, url, params=params).url)
        except (httpx.InvalidURL, TypeError, ValueError) as exc:
            raise NonRetriableError(f"http tool: cannot add params to the URL: {exc}") from None
    secrets = frozenset(h.lower() for h in secret_headers)
    first = Hop(method, url, sent, content, secrets)
    status, data, host = follow_redirects(first, policy, check_host)
    if status == 429 or status >= 500:
        raise ConnectionError(f"http tool: {method} {host} answered {status}")
    if status >= 400:
        raise NonRetriableError(f"http tool: {method} {host} answered {status}")
    if not data:
        return None
    try:
        return json.loads(data)
    except ValueError:
        raise NonRetriableError(f"http tool: {method} {host} did not answer JSON") from None
    except RecursionError:  # the same answer would fail again: not retriable
        raise NonRetriableError(
            f"http tool: {method} {host} answered JSON nested too deeply to read"
        ) from None


def follow_redirects(hop: Hop, policy: HttpPolicy, check_host: bool) -> tuple[int, bytes, str]:
    """Send ``hop`` and follow redirects (at most ``MAX_REDIRECTS``), checking every hop as
    the first: URL, allow-list, resolved addresses. Returns (status, body, host)."""
    for _ in range(MAX_REDIRECTS + 1):
        scheme, host, port = _check_url(hop.url, policy, check_host)
        ip = checked_address(host, port, policy.private)
        status, location, data = _send(hop, (scheme, host, port), ip, policy)
        if location is None:
            return status, data, host
        hop = next_hop(hop, status, location, check_host)
    raise NonRetriableError(f"http tool: more than {MAX_REDIRECTS} redirects")


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port): what a redirect must keep for secrets to follow it."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme.lower(), (parts.hostname or "").lower().rstrip("."), port


def next_hop(hop: Hop, status: int, location: str, check_host: bool) -> Hop:
    """The request a redirect asks for: refuses https to http; drops the headers carrying
    secrets or credentials when the origin changes; turns the method into GET where HTTP
    says so."""
    url = urljoin(hop.url, location)
    if urlsplit(hop.url).scheme == "https" and urlsplit(url).scheme != "https":
        shown = f"to {url[:200]!r}" if check_host else "away from https"
        raise NonRetriableError(f"http tool: refused a redirect from https {shown} (a downgrade)")
    headers = hop.headers
    if origin(url) != origin(hop.url):
        drop = hop.secret_headers | CREDENTIAL_HEADERS
        headers = {k: v for k, v in headers.items() if k.lower() not in drop}
    method, content = hop.method, hop.content
    if status == 303 or (status in (301, 302) and method != "GET"):
        method, content = "GET", None
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
    return replace(hop, method=method, url=url, headers=headers, content=content)


def _send(
    hop: Hop, target: tuple[str, str, int], ip: str, policy: HttpPolicy
) -> tuple[int, str | None, bytes]:
    """One request to the checked address ``ip``: (status, redirect location or None, body)."""
    scheme, host, port = target
    parts = urlsplit(hop.url)
    netloc = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    pinned = urlunsplit((scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = host if parts.port is None else f"{host}:{parts.port}"
    extensions = {"sni_hostname": host} if scheme == "https" else {}
    budget = policy.time_left(f"{hop.method} {host}")
    with (
        httpx.Client(timeout=budget, follow_redirects=False) as client,
        client.stream(
            hop.method,
            pinned,
            headers={**hop.headers, "Host": host_header},
            content=hop.content,
            extensions=extensions,
        ) as resp,
    ):
        if resp.status_code in REDIRECTS and "location" in resp.headers:
            return resp.status_code, resp.headers["location"], b""
        data = bytearray()
        for chunk in resp.iter_bytes():
            policy.time_left(f"{hop.method} {host}")  # between chunks: a drip cannot outlast it
            data += chunk
            if len(data) > policy.max_bytes:
                raise NonRetriableError(
                    f"http tool: response from {host} is over {policy.max_bytes} bytes"
                )
        return resp.status_code, None, bytes(data)
