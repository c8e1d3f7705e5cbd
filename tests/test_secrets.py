"""Secret values cannot leak: through error messages, echoes, encodings, numbers or redirects.

Every string leaving the host (replies to the guest, step and run records, logs, notices) goes
through one redactor (``runner/redaction.py``); redirects are followed hop by hop and secret
headers never cross origins (``runner/netguard.py``). The end-to-end tests use real workers,
real guests on both sandbox backends where the harm goes through the guest, and real HTTP
servers on loopback addresses (127.0.0.1 and 127.0.0.2 are different hosts).
"""

from __future__ import annotations

import base64
import json
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import quote

import pytest

from conftest import DOCKER_IMAGE, Cluster
from loopwright.inbox import Inbox
from loopwright.runner.netguard import Hop, next_hop
from loopwright.runner.records import Run
from loopwright.runner.redaction import Redactor
from loopwright.sdk.errors import NonRetriableError

# ----------------------------------------------------------------------------- the redactor

# The two loopback hosts of these tests, each named exactly (a loopback range admits nothing).
LOOPBACKS = "127.0.0.1,127.0.0.2"


def test_redactor_finds_a_secret_in_its_common_encodings() -> None:
    secret = "sk-live/4f+9'a=b"
    r = Redactor({"API_KEY": secret})
    spelled = {
        "as is": f"token {secret} end",
        "bytes repr": f"Illegal header value {(secret + chr(10)).encode()!r}",
        "str repr": repr({"k": secret + '"'}),
        "json": json.dumps({"k": secret}),
        "url-encoded": "https://x/?key=" + quote(secret, safe=""),
        "basic auth": base64.b64encode(f"alice:{secret}".encode()).decode(),
        "basic auth, other offset": base64.b64encode(f"bob:{secret}".encode()).decode(),
        "urlsafe base64": base64.urlsafe_b64encode(f"u:{secret}".encode()).decode(),
    }
    for how, text in spelled.items():
        out = r.text(text)
        assert "[secret:API_KEY]" in out, how
        assert secret not in out and "4f+9" not in out, how


def test_redactor_rewrites_numbers_and_keeps_json_valid() -> None:
    r = Redactor({"PIN": "9071234567"})
    assert r.value({"pin": 9071234567, "f": 9071234567.0, "n": 7, "t": True}) == {
        "pin": "[secret:PIN]",
        "f": "[secret:PIN]",
        "n": 7,
        "t": True,
    }
    encoded = r.json_text('{"a":[9071234567,"x9071234567y"],"b":1}')
    assert json.loads(encoded) == {"a": ["[secret:PIN]", "x[secret:PIN]y"], "b": 1}
    untouched = '{"a": 1}'
    assert r.json_text(untouched) is untouched  # nothing to redact: the same text, no re-encode


def test_redactor_replaces_the_longer_of_two_overlapping_secrets_whole() -> None:
    r = Redactor({"SHORT": "abc-123", "LONG": "abc-123-xyz-789"})
    assert r.text("abc-123-xyz-789 / abc-123") == "[secret:LONG] / [secret:SHORT]"


# ------------------------------------------------------------------------- HTTP test servers


@dataclass
class Server:
    """A real HTTP server on a loopback address that records requests. ``routes`` answer a
    path; by default the server answers with the request's headers (an echoing upstream)."""

    host: str
    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    httpd: ThreadingHTTPServer | None = None

    def start(self) -> Server:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                server.requests.append({"path": self.path, "headers": headers})
                route = server.routes.get(self.path.split("?")[0])
                if route is not None:
                    route(self)
                else:
                    reply(self, 200, headers)

            do_GET = _serve  # noqa: N815 - the http.server handler API
            do_POST = _serve  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                del format, args

        self.httpd = ThreadingHTTPServer((self.host, 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    @property
    def port(self) -> int:
        assert self.httpd is not None
        return int(self.httpd.server_address[1])

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        def answer(h: BaseHTTPRequestHandler) -> None:
            h.send_response(status)
            h.send_header("Location", location)
            h.send_header("Content-Length", "0")
            h.end_headers()

        self.routes[path] = answer

    def stop(self) -> None:
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()


def reply(h: BaseHTTPRequestHandler, status: int, payload: Any, raw: bytes | None = None) -> None:
    body = raw if raw is not None else json.dumps(payload).encode()
    h.send_response(status)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def granted() -> Iterator[Server]:
    """The host the secret is granted to."""
    server = Server("127.0.0.1").start()
    yield server
    server.stop()


@pytest.fixture
def other() -> Iterator[Server]:
    """A host the skill declares but the secret is not granted to."""
    server = Server("127.0.0.2").start()
    yield server
    server.stop()


@pytest.fixture
def secret() -> str:
    return "sk-live-" + uuid.uuid4().hex


def skill_source(name: str, body: str, *, secrets: str = '["API_KEY"]', retries: int = 0) -> str:
    """A skill with the http and notify tools, allowed to reach both loopback hosts."""
    lines = "\n".join("    " + line for line in body.strip("\n").splitlines())
    return f"""
from loopwright.sdk import skill

@skill(name="{name}", tools=["http", "notify"], http_allow=["127.0.0.1", "127.0.0.2"],
       secrets={secrets}, retries={retries}, backoff=0.01)
def main(ctx):
{lines}
"""


def recorded(cluster: Cluster, run: Run) -> str:
    """Everything stored about a run that a person or an API can read: the run, its steps,
    its log and the inbox."""
    rt = cluster.rt
    return json.dumps(
        [
            run.to_dict(),
            [s.to_dict() for s in rt.runs.steps(run.id)],
            rt.runs.logs(run.id),
            [n.to_json() for n in Inbox(rt.redis, rt.keys, rt.settings).list(limit=10_000)],
        ],
        default=str,
    )


def start(cluster: Cluster, source: str, data: Any, trusted: bool) -> Run:
    name = cluster.skill(source, filename=f"skill-{uuid.uuid4().hex[:8]}.py")
    return cluster.wait(cluster.start(name, data, trusted=trusted), timeout=60)


def sandboxed(make_cluster: Callable[..., Cluster], backend: str, **settings: Any) -> Cluster:
    cluster = make_cluster(
        sandbox_backend=backend,
        sandbox_docker_image=DOCKER_IMAGE,
        sandbox_cpu_seconds=5,
        http_private_allow=LOOPBACKS,
        **settings,
    )
    cluster.worker()
    return cluster


# ----------------------------------------------------------- item 1: leaks through errors

ILLEGAL_HEADER = """
url = ctx.event["data"]["url"]
bad = {"X-Api-Key": "{{secret:API_KEY}}\\n"}

def caught():
    try:
        return ctx.tools.http.get_json(url, None, bad)
    except Exception as exc:
        ctx.log.error("the call failed: " + str(exc))
        ctx.tools.notify(str(exc), title="call failed")
        return {"caught": str(exc)}

seen = ctx.step.run("caught", caught)
ctx.step.run("raises", lambda: ctx.tools.http.get_json(url, None, bad))
return seen
"""


def _assert_illegal_header_redacted(cluster: Cluster, run: Run, secret: str) -> None:
    assert run.status.value == "failed"
    assert "Illegal header value" in (run.error or ""), run.error
    assert "[secret:API_KEY]" in (run.error or "")
    caught = cluster.rt.runs.steps(run.id)[0]
    assert "[secret:API_KEY]" in json.dumps(caught.output), caught.output
    assert secret not in recorded(cluster, run)


def test_an_illegal_header_error_does_not_leak_the_secret_in_process(
    make_cluster: Callable[..., Cluster], granted: Server, secret: str
) -> None:
    # Given a trusted (in-process) skill whose header value makes httpx quote it in an error
    cluster = make_cluster(http_private_allow=LOOPBACKS, secrets={"API_KEY": secret})
    cluster.worker()
    # When it catches the error, logs it, posts it as a notice, and then lets it fail the run
    run = start(
        cluster, skill_source("illegal-header", ILLEGAL_HEADER), {"url": granted.url("/")}, True
    )
    # Then the step output, step error, run error, log, notice and `runs show` name the secret
    _assert_illegal_header_redacted(cluster, run, secret)
    assert "[secret:API_KEY]" in json.dumps(cluster.rt.runs.logs(run.id))
    shown = cluster.cli("runs", "show", run.id, "--json")
    assert shown.returncode == 0 and run.id in shown.stdout
    assert secret not in shown.stdout and "[secret:API_KEY]" in shown.stdout


def test_an_illegal_header_error_does_not_reach_the_guest(
    make_cluster: Callable[..., Cluster], sandbox_backend: str, granted: Server, secret: str
) -> None:
    # Given a sandboxed skill (both backends) doing the same
    cluster = sandboxed(make_cluster, sandbox_backend, secrets={"API_KEY": secret})
    source = skill_source("illegal-header-guest", ILLEGAL_HEADER)
    # When it runs
    run = start(cluster, source, {"url": granted.url("/")}, False)
    # Then the guest only ever saw the marker: nothing it returned, logged or posted, nor the
    # run's record, holds the value
    _assert_illegal_header_redacted(cluster, run, secret)


def test_a_secret_echoed_url_encoded_into_a_redirect_does_not_leak_through_the_refusal(
    make_cluster: Callable[..., Cluster], sandbox_backend: str, granted: Server
) -> None:
    # Given a secret that URL-encoding changes, and a granted upstream that puts the header it
    # received into the query string of a redirect the tool must refuse (not http(s))
    secret = "sk/live+" + uuid.uuid4().hex + "=="
    cluster = sandboxed(make_cluster, sandbox_backend, secrets={"API_KEY": secret})

    def bounce(h: BaseHTTPRequestHandler) -> None:
        key = quote(h.headers.get("X-Api-Key", ""), safe="")
        h.send_response(302)
        h.send_header("Location", f"ftp://127.0.0.1/?key={key}")
        h.send_header("Content-Length", "0")
        h.end_headers()

    granted.routes["/bounce"] = bounce
    body = """
def call():
    try:
        ctx.tools.http.get_json(ctx.event["data"]["url"], None, {"X-Api-Key": "{{secret:API_KEY}}"})
    except Exception as exc:
        return str(exc)
return ctx.step.run("call", call)
"""
    # When the sandboxed skill calls it and returns the error text
    run = start(cluster, skill_source("query-echo", body), {"url": granted.url("/bounce")}, False)
    # Then the refusal quoted the URL, with the encoded secret replaced by its marker
    assert run.status.value == "completed", run.error
    assert "only http(s) URLs are allowed" in str(run.output)
    assert "key=[secret:API_KEY]" in str(run.output)
    assert quote(secret, safe="") not in recorded(cluster, run)
    assert secret not in recorded(cluster, run)


def test_a_replayed_run_redacts_a_secret_it_did_not_resolve_in_this_attempt(
    make_cluster: Callable[..., Cluster], granted: Server, secret: str
) -> None:
    # Given an upstream that remembers the key it was sent and hands it back later
    remembered: dict[str, str] = {}

    def store(h: BaseHTTPRequestHandler) -> None:
        remembered["key"] = h.headers.get("X-Api-Key", "")
        reply(h, 200, {"stored": True})

    granted.routes["/store"] = store
    granted.routes["/recall"] = lambda h: reply(h, 200, {"key": remembered.get("key")})
    cluster = make_cluster(http_private_allow=LOOPBACKS, secrets={"API_KEY": secret})
    cluster.worker()
    cluster.scheduler()  # wakes the parked run
    body = """
base = ctx.event["data"]["base"]
key = {"X-Api-Key": "{{secret:API_KEY}}"}
ctx.step.run("store", ctx.tools.http.get_json, base + "/store", None, key)
ctx.step.sleep("park", 0.2)
got = ctx.step.run("recall", ctx.tools.http.get_json, base + "/recall")
ctx.log.info("recalled " + str(got))
return got
"""
    # When the run parks after sending the secret and a new execution (no secret resolved in
    # it) reads it back
    run = start(cluster, skill_source("replay", body), {"base": granted.url("")}, False)
    # Then the later execution redacts it too
    assert run.status.value == "completed", run.error
    assert run.attempts >= 2
    assert run.output == {"key": "[secret:API_KEY]"}
    assert secret not in recorded(cluster, run)


def test_a_one_character_secret_cannot_break_the_guest_protocol(
    make_cluster: Callable[..., Cluster], sandbox_backend: str
) -> None:
    # Given a (silly) one-digit secret, and a skill with several steps and a retry: every reply
    # the host sends carries sequence numbers and delays that contain that digit
    cluster = sandboxed(make_cluster, sandbox_backend, secrets={"TINY": "1"})
    body = """
tries = []

def flaky():
    tries.append(1)
    if len(tries) < 2:
        raise ConnectionError("try again")
    return {"n": 11, "text": "a1b", "ok": 2}

first = ctx.step.run("one", lambda: 21)
second = ctx.step.run("two", flaky)
return {"first": first, "second": second}
"""
    # When it runs
    run = start(
        cluster, skill_source("tiny-secret", body, secrets='["TINY"]', retries=2), {}, False
    )
    # Then the protocol is intact (the run completes) and only the values are redacted
    assert run.status.value == "completed", run.error
    assert run.output == {
        "first": "[secret:TINY]",
        "second": {"n": "[secret:TINY]", "text": "a[secret:TINY]b", "ok": 2},
    }


# ------------------------------------------------------------- item 3: numeric secrets


def test_a_numeric_secret_echoed_as_a_json_number_is_redacted(
    make_cluster: Callable[..., Cluster], sandbox_backend: str, granted: Server
) -> None:
    # Given a numeric secret and an upstream that echoes it back as numbers and in text
    pin = "9071234567"

    def echo_number(h: BaseHTTPRequestHandler) -> None:
        value = h.headers.get("X-Pin", "0")
        raw = f'{{"pin": {value}, "float": {value}.0, "text": "pin={value}", "other": 7}}'
        reply(h, 200, None, raw=raw.encode())

    granted.routes["/pin"] = echo_number
    cluster = sandboxed(make_cluster, sandbox_backend, secrets={"PIN": pin})
    body = """
headers = {"X-Pin": "{{secret:PIN}}"}
return ctx.step.run("pin", ctx.tools.http.get_json, ctx.event["data"]["url"], None, headers)
"""
    # When the sandboxed skill reads the answer
    source = skill_source("numeric-secret", body, secrets='["PIN"]')
    run = start(cluster, source, {"url": granted.url("/pin")}, False)
    # Then the numbers that spell the secret became markers, and the others are untouched
    assert run.status.value == "completed", run.error
    assert run.output == {
        "pin": "[secret:PIN]",
        "float": "[secret:PIN]",
        "text": "pin=[secret:PIN]",
        "other": 7,
    }
    assert pin not in recorded(cluster, run)


# ------------------------------------------------------------------- item 2: redirects


def granted_cluster(make: Callable[..., Cluster], secret: str, hosts: list[str]) -> Cluster:
    """A cluster whose secret API_KEY is granted to ``hosts`` only, with one worker."""
    grants = {"API_KEY": {"hosts": hosts}}
    allowed = {"http_private_allow": LOOPBACKS}
    cluster = make(**allowed, secrets={"API_KEY": secret}, secret_grants=grants)
    cluster.worker(
        env={"LOOPWRIGHT_SECRET_GRANTS": json.dumps(grants)}
    )  # JSON, as operators set it
    return cluster


REDIRECTED_CALL = """
headers = {"Authorization": "Bearer {{secret:API_KEY}}", "X-Api-Key": "{{secret:API_KEY}}",
           "X-Trace": "t-1"}
return ctx.step.run("call", ctx.tools.http.get_json, ctx.event["data"]["url"], None, headers)
"""


def test_a_redirect_to_an_ungranted_host_does_not_carry_the_secret(
    make_cluster: Callable[..., Cluster], granted: Server, other: Server, secret: str
) -> None:
    # Given a secret granted to 127.0.0.1 only, and a skill that declares both hosts
    cluster = granted_cluster(make_cluster, secret, ["127.0.0.1"])
    granted.redirect("/start", other.url("/landing"))
    # When the granted host redirects the call to the other host
    run = start(
        cluster, skill_source("redirect", REDIRECTED_CALL), {"url": granted.url("/start")}, False
    )
    # Then the redirect is followed without the secret-bearing headers; other headers go along
    assert run.status.value == "completed", run.error
    assert granted.requests[0]["headers"]["authorization"] == f"Bearer {secret}"
    (landed,) = other.requests
    assert "authorization" not in landed["headers"] and "x-api-key" not in landed["headers"]
    assert landed["headers"]["x-trace"] == "t-1"
    assert secret not in json.dumps(other.requests)


def test_a_three_hop_redirect_chain_drops_secrets_at_the_first_origin_change(
    make_cluster: Callable[..., Cluster], granted: Server, other: Server, secret: str
) -> None:
    # Given a chain: 127.0.0.1/a -> 127.0.0.1/b (same origin) -> 127.0.0.2/c -> 127.0.0.1/d
    cluster = granted_cluster(make_cluster, secret, ["127.0.0.1"])
    granted.redirect("/a", "/b", status=307)
    granted.redirect("/b", other.url("/c"), status=301)
    other.redirect("/c", granted.url("/d"), status=308)
    # When the skill calls the first link
    run = start(cluster, skill_source("chain", REDIRECTED_CALL), {"url": granted.url("/a")}, False)
    # Then the secret went to /a and /b only: once dropped it stays dropped, even back home
    assert run.status.value == "completed", run.error
    paths = [r["path"] for r in granted.requests] + [r["path"] for r in other.requests]
    assert sorted(paths) == ["/a", "/b", "/c", "/d"]
    carried = {
        r["path"]: "authorization" in r["headers"] for r in granted.requests + other.requests
    }
    assert carried == {"/a": True, "/b": True, "/c": False, "/d": False}
    assert all(r["headers"].get("x-trace") == "t-1" for r in granted.requests + other.requests)


def test_a_redirect_to_another_port_on_the_same_host_is_another_origin(
    make_cluster: Callable[..., Cluster], granted: Server, secret: str
) -> None:
    # Given a second server on the same host name, another port
    second = Server("127.0.0.1").start()
    try:
        cluster = make_cluster(http_private_allow=LOOPBACKS, secrets={"API_KEY": secret})
        cluster.worker()
        granted.redirect("/start", second.url("/landing"))
        # When the first redirects to the second
        source = skill_source("port-hop", REDIRECTED_CALL)
        run = start(cluster, source, {"url": granted.url("/start")}, False)
        # Then the secret does not follow (origin = scheme, host and port)
        assert run.status.value == "completed", run.error
        (landed,) = second.requests
        assert "authorization" not in landed["headers"]
    finally:
        second.stop()


def test_a_redirect_beyond_the_hop_cap_is_refused(
    make_cluster: Callable[..., Cluster], granted: Server
) -> None:
    cluster = make_cluster(http_private_allow=LOOPBACKS)
    cluster.worker()
    for n in range(7):
        granted.redirect(f"/r{n}", f"/r{n + 1}")
    body = 'return ctx.step.run("call", ctx.tools.http.get_json, ctx.event["data"]["url"])'
    run = start(
        cluster, skill_source("loop", body, secrets="[]"), {"url": granted.url("/r0")}, False
    )
    assert run.status.value == "failed" and "more than 5 redirects" in (run.error or "")
    assert len(granted.requests) == 6


def test_an_https_to_http_redirect_is_refused() -> None:
    # No TLS server runs in the tests: the hop decision is a pure function, checked directly.
    hop = Hop(
        "GET", "https://api.example.com/a", {"X-Api-Key": "k"}, None, frozenset({"x-api-key"})
    )
    with pytest.raises(NonRetriableError, match=r"from https to 'http://api\.example\.com/b'"):
        next_hop(hop, 302, "http://api.example.com/b", check_host=True)
    with pytest.raises(NonRetriableError, match="a downgrade"):
        next_hop(hop, 302, "http://hook.example.com/", check_host=False)
    same = next_hop(hop, 307, "/b", check_host=True)
    assert same.url == "https://api.example.com/b" and same.headers == {"X-Api-Key": "k"}
    upgraded = next_hop(
        Hop("POST", "http://a.example/x", {"Cookie": "c", "X-T": "1"}, b"{}", frozenset()),
        302,
        "https://a.example/y",
        check_host=True,
    )
    # http -> https changes the origin: credentials are dropped; 302 after POST becomes GET
    assert (
        upgraded.headers == {"X-T": "1"} and upgraded.method == "GET" and upgraded.content is None
    )
