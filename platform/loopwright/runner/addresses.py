"""Which kind of network an IP address belongs to, for refusing server-side request forgery.

``ipaddress``'s ``is_private``/``is_global`` are not enough on their own: their tables change
between Python releases, carrier-grade NAT space (``100.64.0.0/10``, where one cloud's
metadata service lives) is neither private nor global there, ``fec0::/10`` counts as global,
and IPv6 forms that carry an IPv4 address inside them (IPv4-mapped, IPv4-compatible,
IPv4-translated, NAT64, 6to4, Teredo) are judged by their IPv6 prefix rather than by the
IPv4 host they reach. This module keeps its own table, taken from the IANA special-purpose
address registries, picks the most specific range that holds an address, and classifies the
embedded IPv4 address of the tunnelling forms. Callers get a category and a label to name in
a refusal; the operator's private allow-list (:class:`PrivateAllow`) builds on the same table.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressKind(StrEnum):
    """The category of an address, as a refusal names it."""

    GLOBAL = "global"
    UNSPECIFIED = "unspecified"
    LOOPBACK = "loopback"
    PRIVATE = "private"
    LINK_LOCAL = "link-local"
    METADATA = "cloud metadata"
    CGNAT = "carrier-grade NAT"
    MULTICAST = "multicast"
    DOCUMENTATION = "documentation"
    RESERVED = "reserved"


@dataclass(frozen=True, slots=True)
class Classification:
    """Where an address lives: its kind, the range that decided it, and for tunnelling forms
    the IPv4 address it carries (whose own classification decided the kind)."""

    address: IPAddress
    kind: AddressKind
    network: IPNetwork | None
    label: str
    embedded: Classification | None = None

    @property
    def is_global(self) -> bool:
        """True when the address is publicly routable (and so is any address it carries)."""
        return self.kind is AddressKind.GLOBAL

    def summary(self) -> str:
        """The kind and why, e.g. ``carrier-grade NAT (shared address space, 100.64.0.0/10)``
        or ``the 6to4 form of 10.0.0.1: private (private network, 10.0.0.0/8)``."""
        inner = self.embedded
        if inner is not None and not inner.is_global:
            return f"the {self.label} form of {inner.address}: {inner.summary()}"
        where = f", {self.network}" if self.network is not None else ""
        return f"{self.kind.value} ({self.label}{where})"

    def describe(self) -> str:
        """One line for a refusal, e.g. ``100.100.100.200 is cloud metadata (Alibaba Cloud
        metadata service, 100.100.100.200/32)``."""
        return f"{self.address} is {self.summary()}"


K = AddressKind

# (range, kind, label). The most specific range wins, so an exception inside a larger range
# (a metadata address inside link-local space, a global block inside 2001::/23) is listed on
# its own. IPv4 addresses outside every range are global.
_V4: tuple[tuple[str, AddressKind, str], ...] = (
    ("0.0.0.0/8", K.RESERVED, "'this network'"),
    ("0.0.0.0/32", K.UNSPECIFIED, "unspecified address"),
    ("10.0.0.0/8", K.PRIVATE, "private network"),
    ("100.64.0.0/10", K.CGNAT, "shared address space"),
    ("100.100.100.200/32", K.METADATA, "Alibaba Cloud metadata service"),
    ("127.0.0.0/8", K.LOOPBACK, "loopback"),
    ("169.254.0.0/16", K.LINK_LOCAL, "link-local"),
    ("169.254.169.253/32", K.METADATA, "cloud DNS resolver"),
    ("169.254.169.254/32", K.METADATA, "cloud instance metadata service"),
    ("169.254.170.2/32", K.METADATA, "container task metadata service"),
    ("168.63.129.16/32", K.METADATA, "Azure platform endpoint"),
    ("172.16.0.0/12", K.PRIVATE, "private network"),
    ("192.0.0.0/24", K.RESERVED, "IETF protocol assignments"),
    ("192.0.2.0/24", K.DOCUMENTATION, "TEST-NET-1"),
    ("192.88.99.0/24", K.RESERVED, "deprecated 6to4 relay anycast"),
    ("192.168.0.0/16", K.PRIVATE, "private network"),
    ("198.18.0.0/15", K.RESERVED, "benchmarking"),
    ("198.51.100.0/24", K.DOCUMENTATION, "TEST-NET-2"),
    ("203.0.113.0/24", K.DOCUMENTATION, "TEST-NET-3"),
    ("224.0.0.0/4", K.MULTICAST, "multicast"),
    ("240.0.0.0/4", K.RESERVED, "reserved for future use"),
    ("255.255.255.255/32", K.RESERVED, "limited broadcast"),
)

# IPv6 addresses outside 2000::/3 (global unicast) and outside every range are reserved.
_V6: tuple[tuple[str, AddressKind, str], ...] = (
    ("::/128", K.UNSPECIFIED, "unspecified address"),
    ("::1/128", K.LOOPBACK, "loopback"),
    ("64:ff9b:1::/48", K.PRIVATE, "local-use NAT64"),
    ("100::/64", K.RESERVED, "discard-only"),
    ("2000::/3", K.GLOBAL, "global unicast"),
    ("2001::/23", K.RESERVED, "IETF protocol assignments"),
    ("2001:1::1/128", K.GLOBAL, "port control protocol anycast"),
    ("2001:1::2/128", K.GLOBAL, "TURN anycast"),
    ("2001:3::/32", K.GLOBAL, "AMT"),
    ("2001:4:112::/48", K.GLOBAL, "AS112-v6"),
    ("2001:20::/28", K.GLOBAL, "ORCHIDv2"),
    ("2001:30::/28", K.GLOBAL, "drone remote ID"),
    ("2001:db8::/32", K.DOCUMENTATION, "documentation"),
    ("3fff::/20", K.DOCUMENTATION, "documentation"),
    ("5f00::/16", K.RESERVED, "SRv6 segment identifiers"),
    ("fc00::/7", K.PRIVATE, "unique local"),
    ("fd00:ec2::254/128", K.METADATA, "cloud instance metadata service"),
    ("fd00:ec2::253/128", K.METADATA, "cloud DNS resolver"),
    ("fe80::/10", K.LINK_LOCAL, "link-local"),
    ("fec0::/10", K.PRIVATE, "deprecated site-local"),
    ("ff00::/8", K.MULTICAST, "multicast"),
)

# IPv6 forms that carry an IPv4 address: (range, label, how to get the IPv4 address out).
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_COMPATIBLE = ipaddress.IPv6Network("::/96")
_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_SIXTOFOUR = ipaddress.IPv6Network("2002::/16")
_TEREDO = ipaddress.IPv6Network("2001::/32")
# Forms still used to reach an IPv4 host; the other forms carry nothing a skill needs.
_ROUTED = frozenset({"IPv4-mapped", "NAT64", "6to4"})


@lru_cache(maxsize=2)
def _table(version: int) -> tuple[tuple[IPNetwork, AddressKind, str], ...]:
    rows = _V4 if version == 4 else _V6
    nets = [(ipaddress.ip_network(net), kind, label) for net, kind, label in rows]
    return tuple(sorted(nets, key=lambda row: row[0].prefixlen, reverse=True))


def _lookup(ip: IPAddress) -> Classification:
    for net, kind, label in _table(ip.version):
        if ip in net:
            return Classification(ip, kind, net, label)
    if ip.version == 4:
        return Classification(ip, K.GLOBAL, None, "public")
    return Classification(ip, K.RESERVED, None, "outside global unicast space")


def _last32(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def _embedded(ip: ipaddress.IPv6Address) -> tuple[str, list[ipaddress.IPv4Address]] | None:
    """The IPv4 addresses an IPv6 tunnelling or translation form carries, with its name."""
    if ip in _MAPPED:
        return "IPv4-mapped", [_last32(ip)]
    if ip in _TRANSLATED:
        return "IPv4-translated", [_last32(ip)]
    if ip in _COMPATIBLE and int(ip) > 1:
        return "deprecated IPv4-compatible", [_last32(ip)]
    if ip in _NAT64:
        return "NAT64", [_last32(ip)]
    if ip in _SIXTOFOUR:
        return "6to4", [ipaddress.IPv4Address((int(ip) >> 80) & 0xFFFFFFFF)]
    if ip in _TEREDO:
        server = ipaddress.IPv4Address((int(ip) >> 64) & 0xFFFFFFFF)
        client = ipaddress.IPv4Address(~int(ip) & 0xFFFFFFFF)
        return "Teredo", [client, server]
    return None


def classify(address: str | IPAddress) -> Classification:
    """The category of ``address`` (a literal; an IPv6 zone such as ``%eth0`` is ignored).

    An IPv6 form that carries an IPv4 address takes the category of that address when it is
    not global: ``::ffff:10.0.0.1`` and ``2002:a00:1::`` are private. Forms that are only
    transition leftovers (IPv4-compatible, IPv4-translated, Teredo) are reserved even when
    they carry a global address; NAT64 and 6to4 carrying a global address are global.
    """
    if isinstance(address, str):
        address = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(int(address))
    if isinstance(address, ipaddress.IPv4Address):
        return _lookup(address)
    carried = _embedded(address)
    if carried is None:
        return _lookup(address)
    label, inner = carried
    for v4 in inner:
        found = _lookup(v4)
        if not found.is_global:
            return Classification(address, found.kind, None, label, embedded=found)
    kind = K.GLOBAL if label in _ROUTED else K.RESERVED
    return Classification(address, kind, None, label, embedded=_lookup(inner[0]))


# Kinds an allow-list range never opens: only an entry naming the one address does (an exact
# /32 or /128). Loopback and the unspecified address reach the worker itself; link-local and
# metadata addresses hand out the worker's cloud credentials.
PROTECTED = frozenset({K.LOOPBACK, K.UNSPECIFIED, K.LINK_LOCAL, K.METADATA})
# Kinds a host-name entry admits when its name resolves to them (besides global addresses).
NAMEABLE = frozenset({K.PRIVATE, K.CGNAT})


@dataclass(frozen=True, slots=True)
class PrivateAllow:
    """The operator's private allow-list (``LOOPWRIGHT_HTTP_PRIVATE_ALLOW``): address ranges
    and host names the http tool may reach although they are not public.

    * A range admits the non-public addresses inside it, except the ``PROTECTED`` kinds,
      which only an entry naming exactly that address admits.
    * A host name (``db.internal``) or glob (``*.internal``, its subdomains) admits that name
      when it resolves to private or carrier-grade NAT addresses (or public ones), never to a
      protected kind: a DNS answer can change, so a name is never an exact naming.
    """

    networks: tuple[IPNetwork, ...] = ()
    hosts: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> PrivateAllow:
        """The allow-list from its setting (checked by ``settings._private_allow``)."""
        nets: list[IPNetwork] = []
        hosts: list[str] = []
        for raw in text.split(","):
            entry = raw.strip().lower().rstrip(".")
            if not entry:
                continue
            try:
                nets.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.append(entry)
        return cls(tuple(nets), tuple(hosts))

    def __bool__(self) -> bool:
        return bool(self.networks or self.hosts)

    def names_exactly(self, address: IPAddress) -> bool:
        """True when an entry is this one address (``127.0.0.1``, ``fd00:ec2::254/128``)."""
        return any(
            n.prefixlen == n.max_prefixlen and n.network_address == address for n in self.networks
        )

    def in_range(self, address: IPAddress) -> bool:
        """True when a range entry holds ``address``."""
        return any(address.version == n.version and address in n for n in self.networks)

    def names_host(self, host: str) -> bool:
        """True when ``host`` is a name entry or a subdomain of a ``*.`` entry."""
        host = host.lower().rstrip(".")
        for entry in self.hosts:
            if entry.startswith("*.") and host.endswith(entry[1:]) and host != entry[2:]:
                return True
            if host == entry:
                return True
        return False

    def refusal(self, found: Classification, host: str | None = None) -> str | None:
        """Why ``found`` (not global) stays refused under this list, or None when admitted;
        ``host`` is the name that resolved to it (None for an address written in the URL)."""
        inner = found.embedded or found
        targets = {found.address, inner.address}
        if any(self.names_exactly(a) for a in targets):
            return None
        kinds = {found.kind, inner.kind}
        if K.METADATA in kinds:
            return f"{found.summary()}; cloud metadata addresses are refused"
        if kinds & PROTECTED:
            what = sorted(k.value for k in kinds & PROTECTED)[0]
            return (
                f"{found.summary()}; {what} addresses are refused unless "
                f"LOOPWRIGHT_HTTP_PRIVATE_ALLOW names that exact address"
            )
        if any(self.in_range(a) for a in targets):
            return None
        if host is not None and inner.kind in NAMEABLE and self.names_host(host):
            return None
        return (
            f"{found.summary()}; non-public addresses are refused unless "
            f"LOOPWRIGHT_HTTP_PRIVATE_ALLOW names their range or host"
        )


@lru_cache(maxsize=8)
def private_allow(setting: str) -> PrivateAllow:
    """The allow-list of a ``http_private_allow`` setting (parsed once per distinct value)."""
    return PrivateAllow.parse(setting)


# Names reserved for examples and tests (RFC 2606, RFC 6761) and the stand-ins models invent
# when a request gave no host: a skill pointing at one can only fail.
PLACEHOLDER_DOMAINS = ("example.com", "example.org", "example.net", "example.edu")
PLACEHOLDER_TLDS = ("example", "invalid", "test", "localhost")
PLACEHOLDER_LABELS = frozenset(
    {"your-domain", "yourdomain", "your-company", "yourcompany", "your-api", "placeholder"}
)


def is_placeholder(host: str) -> bool:
    """True for a name that stands for "some host" rather than a real one."""
    h = host.lower().rstrip(".")
    if h == "localhost" or any(h == d or h.endswith("." + d) for d in PLACEHOLDER_DOMAINS):
        return True
    if h.rsplit(".", 1)[-1] in PLACEHOLDER_TLDS:
        return True
    return any(label in PLACEHOLDER_LABELS for label in h.split("."))
