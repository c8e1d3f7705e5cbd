"""Which Host and Origin headers a local service answers (DNS rebinding, cross-site requests).

A web page can make a browser send requests to ``127.0.0.1``: directly (cross-site: the
browser sends an ``Origin``), or through DNS rebinding (a name of the attacker's that resolves
to 127.0.0.1 after the page loaded: same-origin for the browser, so no ``Origin`` on GET, but
``Host: evil.example``). A service that only answers its own names and refuses foreign
origins closes both, whatever else it checks. Framework-free: the sidecar's middleware calls
:meth:`HostPolicy.refusal`, and so can the API of issue 13.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")


def is_loopback(host: str) -> bool:
    """True for a loopback address or name (127.0.0.0/8, ::1, localhost)."""
    bare = host.strip().strip("[]").lower()
    if bare in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def host_name(header: str) -> str | None:
    """The host part of a ``Host`` header (``name[:port]`` or ``[v6][:port]``), lower-cased."""
    header = header.strip().lower()
    if not header or any(c in header for c in " /\\@?#"):
        return None
    if header.startswith("["):
        end = header.find("]")
        if end < 0 or (header[end + 1 :] and not header[end + 1 :].startswith(":")):
            return None
        return header[1:end]
    name, _, port = header.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


@dataclass(frozen=True)
class HostPolicy:
    """The names a service bound to ``bind`` answers to.

    Allowed: the bound address, the loopback names, and ``extra`` names. A service bound to
    every interface (``0.0.0.0``, ``::``) also answers any IP-literal Host: a literal address
    cannot be rebound to another server.
    """

    bind: str
    extra: tuple[str, ...] = ()
    setting: str = "LOOPWRIGHT_SIDECAR_ALLOWED_HOSTS"

    @property
    def names(self) -> frozenset[str]:
        """Every allowed host name, lower-case, without brackets or port."""
        bound = self.bind.strip().strip("[]").lower()
        names = {*LOOPBACK_NAMES, *(n.strip().strip("[]").lower().rstrip(".") for n in self.extra)}
        if bound not in WILDCARD_BINDS:
            names.add(bound)
        return frozenset(n for n in names if n)

    def host_allowed(self, header: str | None) -> bool:
        """True when the ``Host`` header names this service."""
        name = host_name(header or "")
        if name is None:
            return False
        if name in self.names:
            return True
        ip = _ip(name)
        if ip is None:
            return False
        if self.bind.strip().strip("[]") in WILDCARD_BINDS:
            return True
        return ip.is_loopback and is_loopback(self.bind)

    def origin_allowed(self, origin: str | None) -> bool:
        """True without an Origin, or for an http(s) origin on an allowed host."""
        if origin is None:
            return True
        parts = urlsplit(origin.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # includes "null" (sandboxed frames, file: pages, redirects)
        return self.host_allowed(parts.netloc)

    def refusal(
        self, host: str | None, origin: str | None, fetch_site: str | None = None
    ) -> tuple[int, str] | None:
        """``(status, message)`` for a request to refuse, or None to let it through."""
        if not self.host_allowed(host):
            return 421, (
                "misdirected request: this service does not answer to that Host "
                f"(add the name to {self.setting} if it is yours)"
            )
        if not self.origin_allowed(origin) or (fetch_site or "").lower() == "cross-site":
            return 403, "cross-site request refused"
        return None
