"""The address classifier (``runner/addresses.py``) and the http tool's refusals built on it.

No test here connects anywhere but this machine's loopback: refusals are checked before any
connection, and an audit hook proves that no socket connection was even attempted.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from pydantic import ValidationError

from conftest import Cluster
from loopwright.runner.addresses import AddressKind, PrivateAllow, classify
from loopwright.runner.netguard import HttpPolicy, address_refusal, checked_address, request_json
from loopwright.sdk.errors import NonRetriableError
from loopwright.settings import Settings

K = AddressKind

TABLE: list[tuple[str, AddressKind]] = [
    # IPv4
    ("8.8.8.8", K.GLOBAL),
    ("1.1.1.1", K.GLOBAL),
    ("0.0.0.0", K.UNSPECIFIED),
    ("0.1.2.3", K.RESERVED),
    ("10.1.2.3", K.PRIVATE),
    ("172.16.0.1", K.PRIVATE),
    ("172.32.0.1", K.GLOBAL),
    ("192.168.1.1", K.PRIVATE),
    ("127.0.0.1", K.LOOPBACK),
    ("127.255.255.254", K.LOOPBACK),
    ("100.64.0.1", K.CGNAT),
    ("100.127.255.254", K.CGNAT),
    ("100.128.0.1", K.GLOBAL),
    ("100.100.100.200", K.METADATA),
    ("169.254.169.254", K.METADATA),
    ("169.254.170.2", K.METADATA),
    ("168.63.129.16", K.METADATA),
    ("169.254.1.1", K.LINK_LOCAL),
    ("192.0.0.8", K.RESERVED),
    ("192.0.2.1", K.DOCUMENTATION),
    ("198.18.0.1", K.RESERVED),
    ("198.51.100.1", K.DOCUMENTATION),
    ("203.0.113.1", K.DOCUMENTATION),
    ("224.0.0.1", K.MULTICAST),
    ("239.255.255.250", K.MULTICAST),
    ("240.0.0.1", K.RESERVED),
    ("255.255.255.255", K.RESERVED),
    # IPv6
    ("2606:4700:4700::1111", K.GLOBAL),
    ("::", K.UNSPECIFIED),
    ("::1", K.LOOPBACK),
    ("fe80::1", K.LINK_LOCAL),
    ("fe80::1%eth0", K.LINK_LOCAL),
    ("fec0::1", K.PRIVATE),
    ("fc00::1", K.PRIVATE),
    ("fd12:3456::1", K.PRIVATE),
    ("fd00:ec2::254", K.METADATA),
    ("ff02::1", K.MULTICAST),
    ("2001:db8::1", K.DOCUMENTATION),
    ("3fff::1", K.DOCUMENTATION),
    ("100::1", K.RESERVED),
    ("4000::1", K.RESERVED),
    ("2001:2::1", K.RESERVED),
    ("2001:4:112::1", K.GLOBAL),
    ("64:ff9b:1::1", K.PRIVATE),
    # IPv6 forms carrying an IPv4 address take that address's category
    ("::ffff:127.0.0.1", K.LOOPBACK),
    ("::ffff:10.0.0.1", K.PRIVATE),
    ("::ffff:169.254.169.254", K.METADATA),
    ("::ffff:8.8.8.8", K.GLOBAL),
    ("::127.0.0.1", K.LOOPBACK),  # IPv4-compatible (deprecated)
    ("::8.8.8.8", K.RESERVED),
    ("::ffff:0:10.0.0.1", K.PRIVATE),  # IPv4-translated
    ("64:ff9b::10.0.0.1", K.PRIVATE),  # NAT64
    ("64:ff9b::100.100.100.200", K.METADATA),
    ("64:ff9b::8.8.8.8", K.GLOBAL),
    ("2002:a00:1::1", K.PRIVATE),  # 6to4 of 10.0.0.1
    ("2002:7f00:1::", K.LOOPBACK),  # 6to4 of 127.0.0.1
    ("2002:6440:1::", K.CGNAT),  # 6to4 of 100.64.0.1
    ("2002:808:808::1", K.GLOBAL),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", K.PRIVATE),  # Teredo, client 10.0.0.1
    ("2001:0:4136:e378:8000:63bf:3fff:fdd2", K.DOCUMENTATION),  # Teredo, client 192.0.2.45
    ("2001:0:808:808:8000:63bf:f7f7:f7f7", K.RESERVED),  # Teredo between global addresses
]


@pytest.mark.parametrize(("address", "kind"), TABLE, ids=[a for a, _ in TABLE])
def test_classifier_table(address: str, kind: AddressKind) -> None:
    assert classify(address).kind is kind


def test_refusals_name_the_category_and_the_carried_address() -> None:
    assert classify("100.64.0.1").describe() == (
        "100.64.0.1 is carrier-grade NAT (shared address space, 100.64.0.0/10)"
    )
    assert classify("2002:a00:1::1").describe() == (
        "2002:a00:1::1 is the 6to4 form of 10.0.0.1: private (private network, 10.0.0.0/8)"
    )
    why = address_refusal("fec0::1") or ""
    assert why.startswith("private (deprecated site-local, fec0::/10)")
    assert "LOOPWRIGHT_HTTP_PRIVATE_ALLOW" in why


def allow(text: str) -> PrivateAllow:
    """The allow-list as the settings validate and normalise it."""
    return PrivateAllow.parse(Settings(http_private_allow=text).http_private_allow)


def test_a_named_range_admits_its_private_addresses_and_nothing_else() -> None:
    ranges = allow("10.1.0.0/16, fd12::/48, 100.64.0.0/10")
    assert address_refusal("10.1.2.3", ranges) is None
    assert address_refusal("::ffff:10.1.2.3", ranges) is None  # the IPv4-mapped form too
    assert address_refusal("fd12::7", ranges) is None
    assert address_refusal("100.64.0.1", ranges) is None
    assert address_refusal("8.8.8.8", ranges) is None  # public stays public
    for outside in ("10.2.0.1", "192.168.1.1", "fd13::1"):
        assert "LOOPWRIGHT_HTTP_PRIVATE_ALLOW" in (address_refusal(outside, ranges) or "")


def test_metadata_loopback_and_link_local_need_the_exact_address() -> None:
    # Given ranges wide enough to hold the metadata, loopback and link-local addresses
    wide = allow("0.0.0.0/0,::/0,100.64.0.0/10,169.254.0.0/16,127.0.0.0/8,fd00::/8")
    # Then none of them is admitted by the range: only naming the one address does
    for metadata in (
        "169.254.169.254",
        "100.100.100.200",
        "fd00:ec2::254",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
    ):
        why = address_refusal(metadata, wide) or ""
        assert "cloud metadata addresses are refused" in why, metadata
    for protected, kind in (("127.0.0.1", "loopback"), ("169.254.3.4", "link-local")):
        why = address_refusal(protected, wide) or ""
        assert f"{kind} addresses are refused unless" in why
        assert address_refusal(protected, allow(protected)) is None
    assert address_refusal("127.0.0.2", allow("127.0.0.1")) is not None
    assert address_refusal("::1", allow("127.0.0.1")) is not None
    assert address_refusal("::1", allow("::1")) is None
    assert address_refusal("fd00:ec2::254", allow("fd00:ec2::254/128")) is None


def test_a_host_name_entry_admits_private_answers_never_protected_ones() -> None:
    names = allow("*.internal,db.corp")
    assert address_refusal("10.9.8.7", names, "api.team.internal") is None
    assert address_refusal("100.64.1.1", names, "db.corp") is None
    assert address_refusal("fd12::1", names, "x.internal") is None
    # the glob is for subdomains; other names and bare addresses are not admitted
    assert address_refusal("10.9.8.7", names, "internal") is not None
    assert address_refusal("10.9.8.7", names, "evil.example") is not None
    assert address_refusal("10.9.8.7", names) is not None
    # a name resolving to metadata, loopback or link-local stays refused
    for protected in ("169.254.169.254", "127.0.0.1", "169.254.9.9", "fd00:ec2::254"):
        assert address_refusal(protected, names, "metadata.internal") is not None


def test_a_name_resolving_to_loopback_is_refused_even_when_named(
    connections: list[Any],
) -> None:
    # Given the name itself on the allow-list: a DNS answer is never an exact naming
    with pytest.raises(NonRetriableError) as refused:
        checked_address("localhost", 80, allow("localhost,*.localhost"))
    assert "'localhost' resolves to" in str(refused.value)
    assert "loopback addresses are refused unless" in str(refused.value)
    assert connections == []


@pytest.mark.parametrize(
    "bad", ["*", "a b", "10.0.0.0/33", "http://10.0.0.1/", "*.", "1.2.3", "db_1.internal"]
)
def test_a_bad_allow_list_entry_is_refused_at_start_up(bad: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(http_private_allow=f"10.1.0.0/16,{bad}")
    assert "is neither an address range" in str(refused.value)


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_the_retired_all_or_nothing_setting_says_what_to_set_instead(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("LOOPWRIGHT_HTTP_ALLOW_PRIVATE", value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    text = str(refused.value)
    assert "LOOPWRIGHT_HTTP_ALLOW_PRIVATE was replaced" in text
    assert "LOOPWRIGHT_HTTP_PRIVATE_ALLOW=10.1.0.0/16,*.internal" in text
    monkeypatch.setenv("LOOPWRIGHT_HTTP_ALLOW_PRIVATE", "false")  # asks for nothing: accepted
    assert Settings().http_private_allow == ""


def test_the_cli_refuses_the_retired_setting_in_one_line() -> None:
    env = {**os.environ, "LOOPWRIGHT_HTTP_ALLOW_PRIVATE": "true"}
    done = subprocess.run(
        [sys.executable, "-m", "loopwright.cli", "runs", "list"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "LOOPWRIGHT_HTTP_PRIVATE_ALLOW" in lines[0]


class ConnectAudit:
    """Records every socket connection this process attempts (``socket.connect`` audit
    events), so a test can prove a refusal came before any connection."""

    def __init__(self) -> None:
        self.active = False
        self.seen: list[Any] = []
        self._lock = threading.Lock()

    def __call__(self, event: str, args: tuple[Any, ...]) -> None:
        if self.active and event == "socket.connect":
            with self._lock:
                self.seen.append(args[1])


_AUDIT = ConnectAudit()
sys.addaudithook(_AUDIT)  # audit hooks cannot be removed; this one only records when active


@pytest.fixture
def connections() -> Iterator[list[Any]]:
    _AUDIT.seen.clear()
    _AUDIT.active = True
    try:
        yield _AUDIT.seen
    finally:
        _AUDIT.active = False


def test_the_audit_hook_sees_a_loopback_connection(connections: list[Any]) -> None:
    # The probe itself works: a refused loopback connection is still an attempt it records.
    import socket

    with socket.socket() as s, pytest.raises(OSError):
        s.connect(("127.0.0.1", 9))
    assert connections == [("127.0.0.1", 9)]


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("http://100.100.100.200/latest/meta-data/", "100.100.100.200 is cloud metadata"),
        ("http://100.64.0.1/", "100.64.0.1 is carrier-grade NAT"),
        ("http://[fec0::1]/", "fec0::1 is private (deprecated site-local"),
        ("http://[2002:a00:1::1]/", "the 6to4 form of 10.0.0.1: private"),
        ("http://[64:ff9b::a9fe:a9fe]/", "the NAT64 form of 169.254.169.254: cloud metadata"),
        ("http://[::ffff:7f00:1]/", "the IPv4-mapped form of 127.0.0.1: loopback"),
        ("http://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/", "Teredo form of 10.0.0.1"),
    ],
)
def test_the_http_tool_refuses_before_opening_a_socket(
    connections: list[Any], url: str, fragment: str
) -> None:
    host = url.split("//", 1)[1].split("/", 1)[0].strip("[]")
    policy = HttpPolicy(allow_hosts=(host,), private=allow(""), timeout=1.0, max_bytes=1024)
    with pytest.raises(NonRetriableError) as refused:
        request_json("GET", url, policy)
    assert fragment in str(refused.value)
    assert connections == []


def test_metadata_is_refused_even_with_private_addresses_allowed(
    make_cluster: Callable[..., Cluster],
) -> None:
    # Given an operator who allows a range holding the metadata address, and a skill
    # declaring the metadata host
    cluster = make_cluster(http_private_allow="100.64.0.0/10,127.0.0.1")
    source = """
from loopwright.sdk import skill

@skill(name="imds", tools=["http"], http_allow=["100.100.100.200"], retries=0)
def main(ctx):
    return ctx.step.run("creds", ctx.tools.http.get_json, "http://100.100.100.200/latest/")
"""
    cluster.worker()
    # When the sandboxed skill asks for the metadata service
    run = cluster.wait(cluster.start(cluster.skill(source), {}, trusted=False))
    # Then the run fails with the category, before any connection (see the test above)
    assert run.status.value == "failed"
    assert "100.100.100.200 is cloud metadata (Alibaba Cloud metadata service" in (run.error or "")


@pytest.fixture
def redirector() -> Iterator[str]:
    """A loopback server whose every answer redirects to the metadata service."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://100.100.100.200/latest/meta-data/")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/start"
    httpd.shutdown()
    httpd.server_close()


def test_a_redirect_hop_to_a_metadata_address_is_refused_before_connecting(
    connections: list[Any], redirector: str
) -> None:
    # Given a declared loopback host (allowed exactly) that redirects to metadata, with the
    # range holding it allowed
    wide = allow("127.0.0.1,100.64.0.0/10")
    policy = HttpPolicy(("127.0.0.1", "100.100.100.200"), wide, timeout=2.0, max_bytes=1024)
    # When the tool follows the redirect
    with pytest.raises(NonRetriableError) as refused:
        request_json("GET", redirector, policy)
    # Then the hop is classified and refused: the only connection went to the loopback server
    assert "100.100.100.200 is cloud metadata" in str(refused.value)
    assert [addr[0] for addr in connections] == ["127.0.0.1"]


def test_a_worker_reaches_loopback_named_exactly_and_not_through_a_range(
    make_cluster: Callable[..., Cluster], redirector: str
) -> None:
    # Given a skill fetching from a loopback server (which answers with a redirect to metadata)
    source = """
from loopwright.sdk import skill

@skill(name="local", tools=["http"], http_allow=["127.0.0.1"], retries=0)
def main(ctx):
    return ctx.step.run("get", ctx.tools.http.get_json, ctx.event["data"]["url"])
"""
    errors = {}
    for allowed in ("127.0.0.0/8,10.0.0.0/8", "127.0.0.1"):
        cluster = make_cluster(http_private_allow=allowed)
        cluster.worker()
        run = cluster.wait(cluster.start(cluster.skill(source), {"url": redirector}))
        assert run.status.value == "failed"
        errors[allowed] = run.error or ""
    # Then a range holding loopback does not open it; the exact address does (the server was
    # reached: its redirect is what the run then refused)
    assert "127.0.0.1 is loopback" in errors["127.0.0.0/8,10.0.0.0/8"]
    assert "loopback addresses are refused unless" in errors["127.0.0.0/8,10.0.0.0/8"]
    assert "host '100.100.100.200' is not in this skill's http_allow" in errors["127.0.0.1"]
