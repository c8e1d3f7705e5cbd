"""Failure alerts end to end (real Redis, worker and scheduler processes): one notice per error
signature, one summary per interval with the count, one recovery; platform failures blamed on
the platform; delivery to a Slack-compatible webhook on 127.0.0.1 that may fail first; the
worker's run log lines (``test_alerts_chaos.py``: a scheduler SIGKILLed while consuming)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import Cluster, wait_until
from loopwright.inbox import Inbox, Notice

FLAKY = """
from loopwright.sdk import skill

@skill(name="flaky", retries=0)
def main(ctx):
    ctx.step.run("first", lambda: 1)
    data = ctx.event["data"]
    if data.get("error") == "db":
        raise RuntimeError("database unreachable")
    if data.get("error") == "config":
        raise ValueError("bad config")
    if data.get("word"):
        raise RuntimeError(data["word"])
    if data.get("nap"):
        ctx.step.sleep("nap", "1h")
    return "ok"
"""


def _notices(c: Cluster, skill: str | None = None) -> list[Notice]:
    """The cluster's notices, oldest first."""
    box = Inbox(c.rt.redis, c.rt.keys, c.settings)
    return list(reversed(box.list(skill=skill, limit=1000)))


def _alerting(make_cluster: Callable[..., Cluster], **overrides: object) -> Cluster:
    """A cluster with a verbose worker and a scheduler whose alert cursor is in place."""
    c = make_cluster(**overrides)
    c.worker(verbose=True)
    c.scheduler()
    wait_until(lambda: c.rt.redis.exists(c.rt.keys.alerts_cursor))
    return c


def _fail(c: Cluster, name: str, data: dict[str, object]) -> str:
    run = c.wait(c.start(name, data))
    assert run.status.value == "failed", run.status
    return run.id


def test_three_failures_then_a_success_give_one_notice_one_summary_one_recovery(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = _alerting(make_cluster, alert_interval="2s")
    name = c.skill(FLAKY)
    first = _fail(c, name, {"error": "db"})
    _fail(c, name, {"error": "db"})
    last = _fail(c, name, {"error": "db"})
    summary = wait_until(lambda: len(_notices(c, name)) >= 2 and _notices(c, name))
    ok = c.wait(c.start(name, {}))
    assert ok.status.value == "completed"
    wait_until(lambda: len(_notices(c, name)) >= 3)
    notices = _notices(c, name)
    assert [(n.level, n.source) for n in notices] == [
        ("error", "alert"), ("error", "alert"), ("info", "alert"),
    ]  # fmt: skip
    assert notices[0].title == "flaky failed" and notices[0].run_id == first
    assert "RuntimeError: database unreachable" in notices[0].body
    assert notices[1].title == "flaky kept failing: 2 more failed run(s) with the same error"
    assert notices[1].run_id == last and "since it began: 3" in notices[1].body
    assert summary[1].id == notices[1].id
    assert notices[2].title == "flaky recovered" and notices[2].run_id == ok.id
    assert "after 3 failed run(s) with 1 different error(s)" in notices[2].body
    # the state is cleared: nothing more is due, and the next failure is a first failure again
    assert not c.rt.redis.exists(c.rt.keys.alert_state(name), c.rt.keys.alerts_due)
    # and the verbose worker logged one line per run start, finish and failure
    log = c.log_of(c.procs[0])
    assert f"run {ok.id} (flaky): started" in log and f"run {ok.id} (flaky): completed" in log
    assert f"run {first}" + " (flaky): started" in log
    assert f"run {first} (flaky): failed (skill): 'RuntimeError: database unreachable" in log


def test_two_signatures_give_two_notices_and_cancel_is_no_failure(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = _alerting(make_cluster)
    name = c.skill(FLAKY)
    a = _fail(c, name, {"error": "db"})
    b = _fail(c, name, {"error": "config"})
    _fail(c, name, {"error": "db"})
    parked = c.start(name, {"nap": True})
    wait_until(lambda: c.rt.runs.get(parked).status.value == "sleeping")
    assert c.rt.runs.cancel(parked) == [parked]
    wait_until(lambda: len(_notices(c, name)) >= 2)
    # the third run (db again) is consumed once the cursor passes it: only counted
    cursor = c.rt.redis.get(c.rt.keys.alerts_cursor)
    wait_until(lambda: c.rt.redis.get(c.rt.keys.alerts_cursor) != cursor)
    notices = _notices(c, name)
    assert [n.run_id for n in notices] == [a, b]
    assert "database unreachable" in notices[0].body and "bad config" in notices[1].body


def test_a_platform_failure_is_the_platforms_notice_not_the_skills(
    make_cluster: Callable[..., Cluster],
) -> None:
    # Workers whose Docker engine is down: a sandboxed run fails for the platform's reason
    c = make_cluster(sandbox_backend="docker", sandbox_docker_image="loopwright-guest:none")
    c.worker(env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    c.scheduler()
    wait_until(lambda: c.rt.redis.exists(c.rt.keys.alerts_cursor))
    name = c.skill(FLAKY)
    run = c.wait(c.start(name, {}, trusted=False))
    assert run.status.value == "failed"
    (n,) = wait_until(lambda: _notices(c, name))
    assert (n.source, n.level, n.run_id) == ("platform", "error", run.id)
    assert n.title == "flaky: a platform failure stopped a run"
    assert "no Docker engine is reachable" in n.body


@dataclass
class Hook:
    """A Slack-compatible webhook on 127.0.0.1 that answers ``statuses`` in turn, then 200."""

    bodies: list[dict[str, object]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            status = h.statuses.pop(0) if h.statuses else 200
            if status == 200:
                h.bodies.append(json.loads(body))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")  # Slack answers plain text

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    h.url = f"http://127.0.0.1:{httpd.server_address[1]}/services/T0/B0/x"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield h
    httpd.shutdown()


def test_alerts_go_to_the_webhook_and_a_failed_delivery_is_retried_not_lost(
    make_cluster: Callable[..., Cluster], hook: Hook
) -> None:
    hook.statuses = [500]  # the first delivery fails
    c = _alerting(
        make_cluster,
        http_private_allow="127.0.0.1",
        secrets={"ALERT_HOOK": hook.url},
        alert_webhook_secret="ALERT_HOOK",
    )
    name = c.skill(FLAKY)
    run_id = _fail(c, name, {"word": "<!channel> spoofed"})
    (n,) = wait_until(lambda: _notices(c, name))  # in the inbox whatever the webhook does
    wait_until(lambda: hook.bodies, timeout=30)
    (body,) = hook.bodies
    text = str(body["text"])
    assert list(body) == ["text"]
    assert text.startswith("[error] flaky failed\nError: RuntimeError: &lt;!channel&gt; spoofed")
    assert text.endswith(f"skill flaky run {run_id}")
    wait_until(lambda: not c.rt.redis.zcard(c.rt.keys.inbox_outbox))  # delivered: dequeued
    # skills' own notices are not sent to the platform's webhook
    Inbox(c.rt.redis, c.rt.keys, c.settings).post(level="info", title="mine", source="skill")
    assert not c.rt.redis.zcard(c.rt.keys.inbox_outbox)
    assert (n.title, hook.statuses) == ("flaky failed", [])
