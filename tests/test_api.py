"""The HTTP API (issue 13): a real `loopwright serve` process, a real worker, raw HTTP from
127.0.0.1. Auth by token and by one-time login + session cookie with CSRF, problem+json
errors, server-side filters with stable cursors, Idempotency-Key, the audit log, hostile
input."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from conftest import Cluster, free_port, wait_until
from loopwright.api.app import bind_warning
from loopwright.auth.audit import AuditLog
from loopwright.auth.tokens import TokenStore
from loopwright.auth.web import WebSessions

PROBLEM = "application/problem+json"
SMOKE = [{"name": "smoke", "event": {"data": {"n": 1}}, "expect": {"status": "completed"}}]

OK_SKILL = """
from loopwright.sdk import skill


@skill(name="api-ok")
def main(ctx):
    n = ctx.event["data"].get("n", 1)
    return ctx.step.run("double", lambda: n * 2)
"""

BAD_SKILL = """
from loopwright.sdk import skill, NonRetriableError


@skill(name="api-bad")
def main(ctx):
    def boom():
        raise NonRetriableError("upstream said 503 for order 12345")
    return ctx.step.run("fetch", boom)
"""


class Api:
    """A served API and tokens for it."""

    def __init__(self, cluster: Cluster, port: int) -> None:
        self.cluster = cluster
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=60)
        self.tokens = TokenStore(cluster.rt.redis, cluster.rt.keys)

    def token(self, *scopes: str, author: str = "person") -> str:
        return self.tokens.create(f"t-{len(self.tokens.list())}", list(scopes), author=author)[1]

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, path, headers=headers, **kw)


@pytest.fixture
def api(cluster: Cluster) -> Iterator[Api]:
    port = free_port()
    proc = cluster.spawn("serve", "--port", str(port))
    served = Api(cluster, port)

    def up() -> bool:
        assert proc.poll() is None, cluster.log_of(proc)
        try:
            return served.http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, timeout=30)
    yield served
    served.http.close()


def _problem(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = resp.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def test_serve_prints_a_one_time_login_url_and_healthz_needs_no_token(
    api: Api, cluster: Cluster
) -> None:
    proc = cluster.procs[-1]
    url_line = wait_until(
        lambda: next((x for x in cluster.log_of(proc).splitlines() if "/login?code=" in x), None)
    )
    code = url_line.rsplit("code=", 1)[1].strip()
    assert api.http.get("/healthz").json() == {"ok": True}
    first = api.http.get(f"/login?code={code}", follow_redirects=False)
    assert first.status_code == 303
    cookie = first.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    again = api.http.get(f"/login?code={code}", follow_redirects=False)  # one use only
    assert again.status_code == 401 and "already used" in again.text


def test_every_api_route_needs_a_token_with_the_right_scope(api: Api) -> None:
    body = _problem(api.call("GET", "/api/v1/runs"), 401)
    assert "bearer" in body["detail"].lower()
    _problem(api.call("GET", "/api/v1/runs", "lwt_000000000000_" + "x" * 43), 401)
    _problem(api.call("GET", "/api/v1/openapi.json"), 401)
    reader = api.token("read")
    assert api.call("GET", "/api/v1/runs", reader).status_code == 200
    spec = api.call("GET", "/api/v1/openapi.json", reader).json()
    assert "/api/v1/runs" in spec["paths"]
    denied = _problem(api.call("POST", "/api/v1/events", reader, json={"name": "x"}), 403)
    assert "operate" in denied["detail"]
    _problem(api.call("GET", "/api/v1/audit", reader), 403)
    revoked = api.token("read")
    api.tokens.revoke(revoked.split("_")[1])
    _problem(api.call("GET", "/api/v1/runs", revoked), 401)


def test_foreign_host_and_cross_site_origin_are_refused_before_any_route(api: Api) -> None:
    reader = api.token("read")
    resp = api.call("GET", "/api/v1/runs", reader, headers={"Host": "evil.example"})
    assert resp.status_code == 421
    resp = api.call(
        "POST", "/api/v1/events", api.token("operate"), json={"name": "x"},
        headers={"Origin": "https://evil.example"},
    )  # fmt: skip
    assert resp.status_code == 403


def test_runs_start_idempotently_run_and_show_steps_logs_and_detail(
    api: Api, cluster: Cluster
) -> None:
    cluster.skill(OK_SKILL)
    cluster.worker()
    op = api.token("operate")
    key = {"Idempotency-Key": "start-1"}
    first = api.call("POST", "/api/v1/runs", op, json={"skill": "api-ok", "data": {"n": 21}},
                     headers=key)  # fmt: skip
    assert first.status_code == 202, first.text
    again = api.call("POST", "/api/v1/runs", op, json={"skill": "api-ok", "data": {"n": 21}},
                     headers=key)  # fmt: skip
    assert again.status_code == 202 and again.json()["run_id"] == first.json()["run_id"]
    assert again.headers.get("idempotent-replayed") == "true"
    other = api.call("POST", "/api/v1/runs", op, json={"skill": "api-ok", "data": {"n": 1}},
                     headers=key)  # fmt: skip
    _problem(other, 422)
    run_id = first.json()["run_id"]
    run = cluster.wait(run_id)
    assert run.output == 42
    detail = api.call("GET", f"/api/v1/runs/{run_id}", op).json()
    assert detail["status"] == "completed" and detail["output"] == 42
    steps = api.call("GET", f"/api/v1/runs/{run_id}/steps", op).json()
    assert [s["name"] for s in steps] == ["double"]
    assert api.call("GET", f"/api/v1/runs/{run_id}/logs", op).status_code == 200
    assert api.call("GET", f"/api/v1/runs/{run_id}/calls", op).status_code == 200
    _problem(api.call("GET", "/api/v1/runs/nope", op), 404)
    # exactly one run was created for the two requests with the same key
    listed = api.call("GET", "/api/v1/runs?skill=api-ok", op).json()["items"]
    assert [r["id"] for r in listed] == [run_id]
    audit = AuditLog(cluster.rt.redis, cluster.rt.keys).recent()
    assert [(e.action, e.target) for e in audit] == [("runs.start", run_id)]
    assert audit[0].who.startswith("person:")


def test_cursor_pages_do_not_jump_while_runs_arrive_and_filters_cover_all_history(
    api: Api, cluster: Cluster
) -> None:
    cluster.skill(OK_SKILL)
    cluster.skill(BAD_SKILL, "bad.py")
    first = [cluster.start("api-ok", {"n": i}) for i in range(7)]
    reader = api.token("read")
    whole = [r["id"] for r in api.call("GET", "/api/v1/runs?skill=api-ok", reader).json()["items"]]
    assert sorted(whole) == sorted(first)
    seen: list[str] = []
    cursor = None
    while True:
        q = "/api/v1/runs?skill=api-ok&limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = api.call("GET", q, reader).json()
        seen += [r["id"] for r in page["items"]]
        cluster.start("api-ok", {"n": 100})  # a new run arrives between pages
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == whole  # the same order as one page, none twice, none missed
    # a failure far back in history is found by its error signature, server-side
    cluster.worker()
    bad = cluster.wait(cluster.start("api-bad"))
    assert bad.status.value == "failed"
    sig = cluster.rt.redis.hget(cluster.rt.keys.run(bad.id), "sig")
    assert sig
    for _ in range(30):
        cluster.start("api-ok", {"n": 0})
    found = api.call("GET", f"/api/v1/runs?signature={str(sig)[:8]}&limit=5", reader).json()
    assert [r["id"] for r in found["items"]] == [bad.id]
    failed = api.call("GET", "/api/v1/runs?status=failed", reader).json()["items"]
    assert [r["id"] for r in failed] == [bad.id]
    assert failed[0]["signature"] == sig and failed[0]["origin"] == "skill"


def test_bad_and_hostile_input_gets_a_problem_document_and_changes_nothing(
    api: Api, cluster: Cluster
) -> None:
    op = api.token("operate")
    _problem(api.call("GET", "/api/v1/runs?cursor=%%%", op), 400)
    _problem(api.call("GET", "/api/v1/runs?status=exploded", op), 400)
    _problem(api.call("GET", "/api/v1/runs?limit=100000", op), 422)
    _problem(api.call("GET", "/api/v1/runs?since=yesterdayish", op), 400)
    _problem(api.call("POST", "/api/v1/runs", op, content=b"{not json",
                      headers={"Content-Type": "application/json"}), 422)  # fmt: skip
    _problem(api.call("POST", "/api/v1/runs", op, json={"skill": "missing"}), 404)
    huge = {"name": "big", "data": "x" * (cluster.settings.run_input_max_bytes + 10)}
    resp = api.call("POST", "/api/v1/events", op, json=huge)
    assert resp.status_code in (400, 413)
    _problem(api.call("POST", "/api/v1/events", op, json={"name": ""}), 422)
    long_key = {"Idempotency-Key": "k" * 300}
    _problem(api.call("POST", "/api/v1/events", op, json={"name": "a"}, headers=long_key), 400)
    assert cluster.rt.redis.xlen(cluster.rt.keys.events) == 0
    assert cluster.rt.redis.zcard(cluster.rt.keys.runs) == 0


def test_events_are_sent_once_per_id_and_listed(api: Api, cluster: Cluster) -> None:
    op = api.token("operate")
    sent = api.call("POST", "/api/v1/events", op, json={"name": "order.created", "id": "e1",
                                                       "data": {"n": 1}})  # fmt: skip
    assert sent.status_code == 202 and sent.json()["accepted"] is True
    dup = api.call("POST", "/api/v1/events", op, json={"name": "order.created", "id": "e1"})
    assert dup.json()["accepted"] is False
    feed = api.call("GET", "/api/v1/events", op).json()
    assert [(e["name"], e["id"]) for e in feed] == [("order.created", "e1")]
    assert feed[0]["data"] == {"n": 1}


def test_a_browser_session_reads_with_its_cookie_and_writes_only_with_csrf(
    api: Api, cluster: Cluster
) -> None:
    op = api.token("operate")
    who = api.tokens.verify(op)
    sessions = WebSessions(cluster.rt.redis, cluster.rt.keys, api.tokens)
    browser = httpx.Client(base_url=api.url, timeout=30)
    login = browser.get(f"/login?code={sessions.login_code(who.token_id)}",
                        follow_redirects=False)  # fmt: skip
    assert login.status_code == 303
    me = browser.get("/api/v1/whoami").json()
    assert me["name"] == who.name and me["csrf"]
    _problem(browser.post("/api/v1/events", json={"name": "x"}), 403)
    ok = browser.post("/api/v1/events", json={"name": "x"}, headers={"X-CSRF-Token": me["csrf"]})
    assert ok.status_code == 202
    api.tokens.revoke(who.token_id)
    _problem(browser.get("/api/v1/runs"), 401)  # revoking the token signs the browser out
    browser.close()


def test_skills_routes_list_stats_and_lifecycle_with_scopes(api: Api, cluster: Cluster) -> None:
    op, approver = api.token("operate"), api.token("approve")
    src = textwrap.dedent(OK_SKILL)
    verdict = api.call("POST", "/api/v1/skills", op, json={"source": src, "tests": SMOKE}).json()
    assert verdict["author"] == "person" and verdict["accepted"], verdict
    names = [s["name"] for s in api.call("GET", "/api/v1/skills", op).json()]
    assert "api-ok" in names
    assert api.call("GET", "/api/v1/skills/api-ok/versions", op).status_code == 200
    assert api.call("GET", "/api/v1/skills/api-ok/stats?window=7d", op).status_code == 200
    _problem(api.call("POST", "/api/v1/skills/api-ok/pause", op), 403)
    assert api.call("POST", "/api/v1/skills/api-ok/pause", approver).json()["status"] == "paused"
    _problem(api.call("POST", "/api/v1/runs", op, json={"skill": "api-ok"}), 409)


def test_a_non_loopback_bind_without_tls_is_warned_about() -> None:
    assert bind_warning("127.0.0.1", tls=False) is None
    assert bind_warning("0.0.0.0", tls=True) is None
    warning = bind_warning("0.0.0.0", tls=False)
    assert warning is not None and "TLS" in warning


def _read_sse(
    resp: httpx.Response | Iterator[str], want: int, timeout: float = 20
) -> list[dict[str, Any]]:
    """Parse SSE messages from a streaming response (or its line iterator) until ``want`` data
    messages arrived."""
    import json
    import time

    out: list[dict[str, Any]] = []
    msg: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    lines = resp.iter_lines() if isinstance(resp, httpx.Response) else resp
    for line in lines:
        if time.monotonic() > deadline:
            break
        if line == "":
            if "data" in msg:
                out.append(msg)
                if len(out) >= want:
                    return out
            msg = {}
            continue
        field_name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field_name == "data":
            msg["data"] = json.loads(value)
        elif field_name in ("id", "event"):
            msg[field_name] = value
    raise AssertionError(f"only {len(out)} of {want} SSE messages arrived")


def test_the_stream_resumes_from_last_event_id_without_losing_or_repeating(
    api: Api, cluster: Cluster
) -> None:
    cluster.skill(OK_SKILL)
    reader = api.token("read")
    headers = {"Authorization": f"Bearer {reader}"}
    with api.http.stream("GET", "/api/v1/stream?topics=runs,events", headers=headers) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        a = cluster.start("api-ok", {"n": 1})
        cluster.rt.bus.send("tick", {}, "ev-1")
        got = _read_sse(resp, 2)
    assert {(m["event"], m["data"].get("run_id") or m["data"].get("id")) for m in got} == {
        ("runs", a),
        ("events", "ev-1"),
    }
    last = got[-1]["id"]
    # While the browser is away: two runs, one event.
    b = cluster.start("api-ok", {"n": 2})
    c = cluster.start("api-ok", {"n": 3})
    cluster.rt.bus.send("tock", {}, "ev-2")
    resumed = {**headers, "Last-Event-ID": last}
    with api.http.stream("GET", "/api/v1/stream?topics=runs,events", headers=resumed) as resp:
        again = _read_sse(resp, 3)
    keys = [(m["event"], m["data"].get("run_id") or m["data"].get("id")) for m in again]
    assert sorted(keys) == sorted([("runs", b), ("runs", c), ("events", "ev-2")])
    _problem(api.call("GET", "/api/v1/stream?topics=secrets", reader), 400)
    bad = {"Last-Event-ID": "garbage!"}
    _problem(api.call("GET", "/api/v1/stream?topics=runs", reader, headers=bad), 400)


def test_a_run_topic_follows_one_run_to_its_end(api: Api, cluster: Cluster) -> None:
    cluster.skill(OK_SKILL)
    run_id = cluster.start("api-ok", {"n": 5})
    headers = {"Authorization": f"Bearer {api.token('read')}"}
    with api.http.stream("GET", f"/api/v1/stream?topics=run:{run_id}", headers=headers) as resp:
        lines = resp.iter_lines()
        first = _read_sse(lines, 1)[0]["data"]
        assert first["status"] == "queued"
        cluster.worker()
        seen = [first]
        while seen[-1]["status"] != "completed":
            seen.append(_read_sse(lines, 1)[0]["data"])
    assert seen[-1]["steps"] == 1


def test_chat_turns_run_on_a_worker_and_come_back_as_cards(api: Api, cluster: Cluster) -> None:
    op = api.token("operate")
    made = api.call("POST", "/api/v1/chat/sessions", op, json={})
    assert made.status_code == 201, made.text
    sid = made.json()["id"]
    ask = {"message": "forward order.created events to https://hooks.acme-corp.io/orders"}
    first = api.call("POST", f"/api/v1/chat/sessions/{sid}/messages", op, json=ask)
    assert first.status_code == 202, first.text
    busy = api.call("POST", f"/api/v1/chat/sessions/{sid}/messages", op, json=ask)
    _problem(busy, 409)  # one turn at a time
    cluster.worker()
    run_id = first.json()["run_id"]
    cluster.wait(run_id, timeout=120)
    turn = api.call("GET", f"/api/v1/chat/sessions/{sid}/turns/{run_id}", op).json()
    assert turn["status"] == "completed" and turn["answer"]
    tools = [c for c in turn["cards"] if c["kind"] == "tool"]
    assert tools
    written = [c for c in tools if c["tool"] == "write_skill"]
    assert written and written[-1]["verdict"]["accepted"] is True, written
    _problem(api.call("GET", f"/api/v1/chat/sessions/{sid}/turns/nope", op), 404)
    _problem(api.call("GET", "/api/v1/chat/sessions/s-000000000000", op), 404)


FLAKY_ONCE = """
from loopwright.sdk import skill, NonRetriableError


@skill(name="api-flaky")
def main(ctx):
    first = ctx.step.run("first", lambda: ctx.event["data"].get("n", 1))

    def second():
        if ctx.event["data"].get("fail"):
            raise NonRetriableError("upstream said no")
        return first * 10

    return ctx.step.run("second", second)
"""


def test_retry_rerun_and_bulk_cancel_through_the_api(api: Api, cluster: Cluster) -> None:
    cluster.skill(FLAKY_ONCE)
    op = api.token("operate")
    cluster.worker()
    failed = cluster.wait(cluster.start("api-flaky", {"n": 2, "fail": True}))
    assert failed.status.value == "failed"
    # rerun with edited input: a new run linked to the old one
    rr = api.call("POST", f"/api/v1/runs/{failed.id}/rerun", op, json={"data": {"n": 3}})
    assert rr.status_code == 202, rr.text
    new = cluster.wait(rr.json()["run_id"])
    assert new.output == 30 and new.raw.get("rerun_of") == failed.id
    # retry the same run: refused while it is not failed or cancelled
    _problem(api.call("POST", f"/api/v1/runs/{new.id}/retry", op), 400)
    retried = api.call("POST", f"/api/v1/runs/{failed.id}/retry", op)
    assert retried.status_code == 202 and retried.json()["from_seq"] == 2
    again = cluster.wait(failed.id)
    assert again.status.value == "failed"  # same input, same failure: but from step 2 only
    # bulk cancel: a count first, then exactly the runs counted
    queued = [cluster.start("api-flaky", {"n": i}, dispatch=False) for i in range(3)]
    count = api.call("POST", "/api/v1/runs/cancel", op,
                     json={"skill": "api-flaky", "status": "queued"})  # fmt: skip
    assert count.json()["matched"] == 3 and count.json()["dry_run"] is True
    ids = count.json()["ids"]
    late = cluster.start("api-flaky", {"n": 9}, dispatch=False)
    done = api.call("POST", "/api/v1/runs/cancel", op, json={
        "skill": "api-flaky", "status": "queued", "dry_run": False, "only": ids})  # fmt: skip
    assert sorted(done.json()["cancelled"]) == sorted(queued)
    assert cluster.rt.runs.get(late).status.value == "queued"
    _problem(api.call("POST", "/api/v1/runs/cancel", api.token("read"), json={"skill": "x"}), 403)
