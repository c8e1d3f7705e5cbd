"""Host tools against real HTTP servers on 127.0.0.1: SSRF refusals after DNS resolution,
redirect re-checks, caps, timeouts, secrets resolved on the host, webhook notices."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conftest import Cluster


@dataclass
class Recorder:
    """What the test server saw, and how it should answer."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    routes: dict[str, Callable[[BaseHTTPRequestHandler], None]] = field(default_factory=dict)
    port: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _json(handler: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


@pytest.fixture
def server() -> Iterator[Recorder]:
    rec = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else ""
            rec.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
            route = rec.routes.get(self.path.split("?")[0])
            if route:
                route(self)
            else:
                _json(self, 200, {"ok": True, "path": self.path})

        do_GET = _serve  # noqa: N815 - the http.server handler API
        do_POST = _serve  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.port = httpd.server_address[1]
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield rec
    httpd.shutdown()


DEFAULT_CALL = 'ctx.tools.http.get_json(ctx.event["data"]["url"])'


def _fetcher(allow: str, extra: str = "", secrets: str = "[]", call: str = "") -> str:
    return f"""
from loopwright.sdk import skill

@skill(name="fetcher", tools=["http", "notify"], http_allow={allow}, secrets={secrets},
       retries=2, backoff=0.01{extra})
def main(ctx):
    return ctx.step.run("fetch", lambda: {call or DEFAULT_CALL})
"""


def _run(cluster: Cluster, source: str, data: dict[str, Any], trusted: bool = True) -> Any:
    cluster.worker()
    name = cluster.skill(source)
    return cluster.wait(cluster.start(name, data, trusted=trusted))


def test_loopback_is_refused_after_resolution_unless_the_operator_allows_it(
    make_cluster: Callable[..., Cluster], server: Recorder
) -> None:
    cluster = make_cluster(http_private_allow="")
    run = _run(cluster, _fetcher('["127.0.0.1"]'), {"url": server.base + "/x"})
    assert run.status.value == "failed"
    assert "127.0.0.1 is loopback (loopback, 127.0.0.0/8)" in (run.error or "")
    assert server.requests == []


def test_a_name_resolving_to_loopback_is_refused(
    make_cluster: Callable[..., Cluster], server: Recorder
) -> None:
    cluster = make_cluster(http_private_allow="")
    url = f"http://localhost:{server.port}/x"
    run = _run(cluster, _fetcher('["localhost"]'), {"url": url})
    assert run.status.value == "failed" and "'localhost' resolves to" in (run.error or "")
    assert server.requests == []


def test_metadata_address_is_refused(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(http_private_allow="")
    url = "http://169.254.169.254/latest/meta-data/"
    run = _run(cluster, _fetcher('["169.254.169.254"]'), {"url": url})
    assert run.status.value == "failed" and "169.254.169.254" in (run.error or "")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("file:///etc/passwd", "only http(s) URLs are allowed"),
        ("ftp://127.0.0.1/x", "only http(s) URLs are allowed"),
        ("http://user:pw@127.0.0.1/x", "credentials in URLs are refused"),
        ("http://example.org/x", "host 'example.org' is not in this skill's http_allow"),
    ],
)
def test_bad_urls_are_refused(
    make_cluster: Callable[..., Cluster], server: Recorder, url: str, expected: str
) -> None:
    cluster = make_cluster(http_private_allow="127.0.0.1")
    run = _run(cluster, _fetcher('["127.0.0.1"]'), {"url": url})
    assert run.status.value == "failed" and expected in (run.error or "")
    assert server.requests == []


def test_redirect_to_an_undeclared_host_is_refused(
    make_cluster: Callable[..., Cluster], server: Recorder
) -> None:
    def redirect(h: BaseHTTPRequestHandler) -> None:
        h.send_response(302)
        h.send_header("Location", f"http://127.0.0.2:{server.port}/secret")
        h.end_headers()

    server.routes["/start"] = redirect
    cluster = make_cluster(http_private_allow="127.0.0.1")
    run = _run(cluster, _fetcher('["127.0.0.1"]'), {"url": server.base + "/start"})
    assert run.status.value == "failed"
    assert "host '127.0.0.2' is not in this skill's http_allow" in (run.error or "")
    assert [r["path"] for r in server.requests] == ["/start"]


def test_redirect_within_declared_hosts_is_followed(
    make_cluster: Callable[..., Cluster], server: Recorder
) -> None:
    def redirect(h: BaseHTTPRequestHandler) -> None:
        h.send_response(307)
        h.send_header("Location", "/final")
        h.end_headers()

    server.routes["/start"] = redirect
    cluster = make_cluster(http_private_allow="127.0.0.1")
    run = _run(cluster, _fetcher('["127.0.0.1"]'), {"url": server.base + "/start"})
    assert run.status.value == "completed" and run.output == {"ok": True, "path": "/final"}


def test_oversized_response_is_refused(
    make_cluster: Callable[..., Cluster], server: Recorder
) -> None:
    server.routes["/big"] = lambda h: _json(h, 200, {"blob": "x" * 10_000})
    cluster = make_cluster(http_private_allow="127.0.0.1", http_max_response_bytes=2048)
    run = _run(cluster, _fetcher('["127.0.0.1"]'), {"url": server.base + "/big"})
    assert run.status.value == "failed" and "over 2048 bytes" in (run.error or "")


def test_slow_or_failing_upstream_is_retried_by_the_step_policy(
    make_cluster: Callable[..., Cluster], server: Recorder
) -> None:
    calls = {"n": 0}

    def flaky(h: BaseHTTPRequestHandler) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            time.sleep(1.0)  # longer than the tool's timeout; the client is gone by now
            return None
        if calls["n"] == 2:
            return _json(h, 503, {"error": "busy"})
        return _json(h, 200, {"value": 42})

    server.routes["/flaky"] = flaky
    cluster = make_cluster(http_private_allow="127.0.0.1", http_timeout=0.3)
    run = _run(cluster, _fetcher('["127.0.0.1"]'), {"url": server.base + "/flaky"})
    assert run.status.value == "completed" and run.output == {"value": 42}
    (step,) = cluster.rt.runs.steps(run.id)
    assert step.attempts == 3


def test_secret_is_resolved_on_the_host_and_never_reaches_the_sandboxed_guest(
    make_cluster: Callable[..., Cluster], server: Recorder
) -> None:
    secret = "s3cr3t-token-value"
    cluster = make_cluster(http_private_allow="127.0.0.1", secrets={"METRICS_TOKEN": secret})
    call = (
        'ctx.tools.http.get_json(ctx.event["data"]["url"], '
        'headers={"Authorization": "Bearer {{secret:METRICS_TOKEN}}"})'
    )
    source = _fetcher('["127.0.0.1"]', secrets='["METRICS_TOKEN"]', call=call)
    run = _run(cluster, source, {"url": server.base + "/m"}, trusted=False)
    assert run.status.value == "completed", run.error
    assert server.requests[0]["headers"]["Authorization"] == f"Bearer {secret}"
    recorded = json.dumps(
        [run.to_dict(), [s.to_dict() for s in cluster.rt.runs.steps(run.id)]], default=str
    )
    assert secret not in recorded


def test_undeclared_or_unknown_secrets_fail_clearly(
    make_cluster: Callable[..., Cluster], server: Recorder
) -> None:
    cluster = make_cluster(http_private_allow="127.0.0.1", secrets={"OTHER": "x"})
    call = (
        'ctx.tools.http.get_json(ctx.event["data"]["url"], headers={"X-Token": "{{secret:OTHER}}"})'
    )
    run = _run(cluster, _fetcher('["127.0.0.1"]', call=call), {"url": server.base + "/m"})
    assert run.status.value == "failed" and "secret 'OTHER' is not declared" in (run.error or "")
    assert server.requests == []


def test_notify_to_a_slack_webhook_named_by_secret_posts_once(
    make_cluster: Callable[..., Cluster], server: Recorder
) -> None:
    hook = server.base + "/hooks/ops"
    cluster = make_cluster(http_private_allow="127.0.0.1", secrets={"OPS_WEBHOOK": hook})
    call = 'ctx.tools.notify("p95 is 1450 ms", title="latency", channel="slack:OPS_WEBHOOK")'
    source = _fetcher("[]", secrets='["OPS_WEBHOOK"]', call=call)
    run = _run(cluster, source, {}, trusted=False)
    assert run.status.value == "completed", run.error
    (req,) = server.requests
    assert req["path"] == "/hooks/ops"
    assert json.loads(req["body"]) == {"text": "*latency*\np95 is 1450 ms"}
    assert req["headers"]["Idempotency-Key"] == f"{run.id}:1"
    assert not cluster.rt.redis.zcard(cluster.rt.keys.inbox_all)  # not in the inbox


def _text(status: int, body: bytes) -> Callable[[BaseHTTPRequestHandler], None]:
    """A route answering ``body`` as text/plain, as Slack's incoming webhooks do."""

    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return route


def test_notify_accepts_slacks_plain_text_ok_and_fails_on_its_error_text(
    make_cluster: Callable[..., Cluster], server: Recorder
) -> None:
    server.routes["/hooks/ok"] = _text(200, b"ok")
    server.routes["/hooks/bad"] = _text(400, b"invalid_payload")
    hooks = {"OK_HOOK": server.base + "/hooks/ok", "BAD_HOOK": server.base + "/hooks/bad"}
    cluster = make_cluster(http_private_allow="127.0.0.1", secrets=hooks)
    cluster.worker()
    runs = {}
    for secret in hooks:
        call = f'ctx.tools.notify("disk at 91%", channel="slack:{secret}")'
        name = cluster.skill(_fetcher("[]", secrets=f'["{secret}"]', call=call))
        runs[secret] = cluster.wait(cluster.start(name, {}, trusted=False))
    assert runs["OK_HOOK"].status.value == "completed", runs["OK_HOOK"].error
    assert runs["OK_HOOK"].output is None
    assert runs["BAD_HOOK"].status.value == "failed"
    assert "answered 400" in (runs["BAD_HOOK"].error or "")
    paths = [r["path"] for r in server.requests]
    assert paths == ["/hooks/ok", "/hooks/bad"]  # a 400 is not retried
    assert json.loads(server.requests[0]["body"]) == {"text": "disk at 91%"}
    assert server.requests[0]["headers"]["Content-Type"] == "application/json"
