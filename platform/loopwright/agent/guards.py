"""What the builder's tools refuse before anything reaches the sidecar, whatever the model.

Two questions about the hosts a skill would reach (its ``http_allow`` and every URL written in
its source):

- **placeholders** (``runner.addresses.is_placeholder``): ``example.com`` and friends (RFC 2606
  / RFC 6761 names, ``localhost``) are
  what a model invents when a request gave no URL. A skill polling one registers cleanly and
  fails forever, so the tools refuse it unless the call says ``placeholder_ok`` (and the answer
  then says so loudly);
- **harm**: cloud metadata services, link-local, loopback and private addresses (unless the
  platform's network policy admits private ones), and well-known metadata host names. These are
  refused with a sentence saying why; the message never suggests turning a protection off.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from loopwright.runner.addresses import AddressKind, classify, is_placeholder, private_allow
from loopwright.settings import Settings

METADATA_NAMES = frozenset(
    {"metadata.google.internal", "metadata", "instance-data", "metadata.azure.com"}
)
URL_HOST_RE = re.compile(r"""https?://(?:[^/\s"'@]*@)?(\[[0-9a-fA-F:.]+\]|[^/\s"':?#]+)""", re.I)
ALWAYS_REFUSED = frozenset(
    {AddressKind.METADATA, AddressKind.LINK_LOCAL, AddressKind.UNSPECIFIED, AddressKind.MULTICAST}
)
PRIVATE_KINDS = frozenset({AddressKind.PRIVATE, AddressKind.LOOPBACK, AddressKind.CGNAT})


def hosts_of(source: str, http_allow: Iterable[str]) -> list[str]:
    """Every host the skill names: its ``http_allow`` entries and the hosts of URLs in its
    source, lower-cased, wildcards stripped, in first-seen order."""
    seen: dict[str, None] = {}
    for raw in [*http_allow, *(m.group(1) for m in URL_HOST_RE.finditer(source))]:
        host = str(raw).strip().lower().removeprefix("*.").strip("[]").rstrip(".")
        if host:
            seen.setdefault(host, None)
    return list(seen)


def placeholders(hosts: Iterable[str]) -> list[str]:
    """The placeholder hosts among ``hosts``."""
    return [h for h in hosts if is_placeholder(h)]


@dataclass(frozen=True, slots=True)
class Refusal:
    """A host the builder will not point a skill at, and the sentence saying why."""

    host: str
    reason: str


PrivatePolicy = Callable[[str], bool]  # may skills reach this private address?


def refusals(hosts: Iterable[str], *, private_ok: PrivatePolicy | bool) -> list[Refusal]:
    """The hosts no skill built by the agent may reach under the active network policy
    (``private_ok``: the policy for private addresses, or one answer for all of them)."""
    allows: PrivatePolicy = (
        (lambda _host: private_ok) if isinstance(private_ok, bool) else private_ok
    )
    out: list[Refusal] = []
    for host in hosts:
        if host in METADATA_NAMES:
            out.append(Refusal(host, f"{host} is a cloud metadata service, which hands out the "
                               "machine's own credentials; no skill needs it"))  # fmt: skip
            continue
        try:
            c = classify(host)
        except ValueError:
            continue  # a name: the runner resolves and checks it at request time
        if c.kind in ALWAYS_REFUSED:
            out.append(Refusal(host, f"{c.describe()}; skills never reach such addresses"))
        elif c.kind in PRIVATE_KINDS and not allows(host):
            out.append(
                Refusal(host, f"{c.describe()}, which the platform's network policy refuses")
            )
    return out


def refusal_text(found: list[Refusal]) -> str:
    """The tool error for refused hosts: plain words, no advice to weaken the policy."""
    reasons = "; ".join(r.reason for r in found)
    return (
        f"refused: this skill would reach {', '.join(r.host for r in found)}: {reasons}. "
        "Tell the person plainly that this cannot be built and why; do not suggest changing "
        "the platform's protections."
    )


def private_allowed(settings: Settings) -> PrivatePolicy:
    """The active network policy for private addresses: the one place that follows the setting
    (``LOOPWRIGHT_HTTP_PRIVATE_ALLOW``, checked address by address as the http tool does)."""
    allow = private_allow(settings.http_private_allow)

    def admitted(host: str) -> bool:
        try:
            found = classify(host)
        except ValueError:
            return False
        return allow.refusal(found) is None

    return admitted
