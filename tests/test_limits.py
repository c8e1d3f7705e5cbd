"""Limits that hold against hostile skills (security issue, items 7-11 and 17): slow-drip
responses, the storage quota for sent events, event backpressure, hop and fan-out limits,
and bad text that must fail a run once, clearly."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from conftest import Cluster, wait_until


@dataclass
class Drip:
    """A server on 127.0.0.1 that answers headers, then one body byte per second."""

    port: int = 0
    requests: int = 0
    gone: threading.Event = field(default_factory=threading.Event)


@pytest.fixture
def drip() -> Iterator[Drip]:
    state = Drip()
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    state.port = srv.getsockname()[1]
    stop = threading.Event()

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            state.requests += 1
            head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
            try:
                conn.sendall(head)
                for _ in range(120):
                    if stop.wait(1.0):
                        return
                    conn.sendall(b" ")
            except OSError:
                state.gone.set()  # the client hung up

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    yield state
    stop.set()
    srv.close()


def _drip_skill(timeout: str) -> str:
    return f"""
from loopwright.sdk import skill

@skill(name="dripper", tools=["http"], http_allow=["127.0.0.1"], timeout="{timeout}", retries=0)
def main(ctx):
    return ctx.step.run("fetch", lambda: ctx.tools.http.get_json(ctx.event["data"]["url"]))
"""


def test_a_slow_drip_response_ends_at_the_run_deadline(
    make_cluster: Callable[..., Cluster], drip: Drip
) -> None:
    cluster = make_cluster(http_private_allow="127.0.0.1", http_timeout=30)
    cluster.worker()
    name = cluster.skill(_drip_skill("2s"))
    began = time.monotonic()
    run = cluster.wait(
        cluster.start(name, {"url": f"http://127.0.0.1:{drip.port}/"}, trusted=False)
    )
    took = time.monotonic() - began
    assert run.status.value == "failed" and "timeout" in (run.error or ""), run.error
    assert took < 8, took  # 2 s budget plus a guest start; before the fix: 100 s of drip


def test_the_per_call_cap_bounds_a_slow_drip_even_with_time_left(
    make_cluster: Callable[..., Cluster], drip: Drip
) -> None:
    cluster = make_cluster(
        http_private_allow="127.0.0.1", http_timeout=30, http_call_max_seconds=1.5
    )
    cluster.worker()
    name = cluster.skill(_drip_skill("60s"))
    run = cluster.wait(
        cluster.start(name, {"url": f"http://127.0.0.1:{drip.port}/"}, trusted=False)
    )
    assert run.status.value == "failed", run.error
    assert "ran out of its time budget" in (run.error or ""), run.error


def test_cancel_stops_a_slow_drip_call_promptly(
    make_cluster: Callable[..., Cluster], drip: Drip
) -> None:
    cluster = make_cluster(http_private_allow="127.0.0.1", http_timeout=30)
    cluster.worker()
    name = cluster.skill(_drip_skill("60s"))
    run_id = cluster.start(name, {"url": f"http://127.0.0.1:{drip.port}/"}, trusted=False)
    wait_until(lambda: drip.requests >= 1)
    cluster.rt.runs.cancel(run_id)
    assert cluster.wait(run_id).status.value == "cancelled"
    # The worker hangs up within a lease renewal or two, not after the 120 s drip.
    assert drip.gone.wait(10), "the worker kept reading the drip after the cancel"


# --- item 9: events a run sends count against its storage quota -----------------------------

FLOODER = """
from loopwright.sdk import skill

@skill(name="flooder", retries=0, tools=["events"], events={"send": ["flood.blob"]})
def main(ctx):
    for i in range(40):
        ctx.step.send_event(f"send-{i}", "flood.blob", {"blob": "x" * 8000})
    return "sent all"
"""


def test_events_a_run_sends_count_against_its_storage_quota(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(run_storage_max_bytes=64 * 1024)
    cluster.worker()
    run = cluster.wait(cluster.start(cluster.skill(FLOODER), trusted=False))
    assert run.status.value == "failed", run.output
    assert "storage quota of 65536 bytes" in (run.error or ""), run.error
    stored = int(cluster.rt.redis.hget(cluster.rt.keys.run(run.id), "stored") or 0)
    assert stored <= 64 * 1024
    assert cluster.rt.redis.xlen(cluster.rt.keys.events) <= 8  # before the fix: all 40


# --- item 10: backpressure instead of trimming unrouted events -----------------------------

AUDIT = """
from loopwright.sdk import skill, event

@skill(name="audit", trigger=event("order.created"))
def main(ctx):
    return ctx.event["id"]
"""

SENDER = """
from loopwright.sdk import skill

@skill(name="sender", retries=0, tools=["events"], events={"send": ["order.created"]})
def main(ctx):
    return ctx.step.send_event("announce", "order.created", {"n": 1})
"""


def test_a_full_backlog_refuses_new_events_and_loses_none_accepted(
    make_cluster: Callable[..., Cluster],
) -> None:
    from loopwright.runner.ports import EventBacklogFullError

    cluster = make_cluster(event_backlog_max=10)
    cluster.skill(AUDIT)
    bus = cluster.rt.bus
    accepted = [bus.send("order.created", {"n": i}, f"order-{i}").id for i in range(10)]
    # The bus API, the CLI and a step all refuse the next one, clearly.
    with pytest.raises(EventBacklogFullError, match="10 accepted events are waiting to be routed"):
        bus.send("order.created", {"n": 10}, "order-10")
    res = cluster.cli("events", "send", "order.created", "--id", "order-11")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "waiting to be routed" in res.stdout + res.stderr
    cluster.worker()
    run = cluster.wait(cluster.start(cluster.skill(SENDER, "sender.py")))
    assert run.status.value == "failed" and "waiting to be routed" in (run.error or "")
    # Every accepted event is routed once the router runs, and then trimmed.
    cluster.scheduler()

    def routed() -> list[str]:
        runs = cluster.rt.runs.find(skill="audit", limit=100)
        done = len(runs) == 10 and all(r.status.terminal for r in runs)
        return sorted(str(r.event["id"]) for r in runs) if done else []

    assert wait_until(routed, timeout=60) == sorted(accepted)
    wait_until(lambda: cluster.rt.redis.xlen(cluster.rt.keys.events) == 0)
    assert bus.send("order.created", {"n": 12}, "order-12").accepted


def test_the_router_trims_nothing_a_consumer_group_has_not_acknowledged(
    make_cluster: Callable[..., Cluster],
) -> None:
    from loopwright.scheduler.router import TRIM_LUA

    cluster = make_cluster()
    r, stream = cluster.rt.redis, cluster.rt.keys.events
    ids = [cluster.rt.bus.send("x.y", {"n": i}).stream_id for i in range(6)]
    r.xgroup_create(stream, "router", id="0")
    r.xgroup_create(stream, "audit", id="0")
    r.xreadgroup("router", "c", {stream: ">"}, count=6)
    r.xack(stream, "router", *ids)
    r.xreadgroup("audit", "c", {stream: ">"}, count=3)
    r.xack(stream, "audit", ids[0])  # audit: ids[1], ids[2] pending, ids[3:] undelivered
    trim = r.register_script(TRIM_LUA)
    assert trim(keys=[stream]) == 1
    assert [e[0] for e in r.xrange(stream) or []] == ids[1:]
    r.xack(stream, "audit", ids[1], ids[2])
    trim(keys=[stream])
    assert [e[0] for e in r.xrange(stream) or []] == ids[3:]


# --- item 11: hop limit and run budget per root ---------------------------------------------

PING = """
from loopwright.sdk import skill, event

@skill(name="ping", trigger=event("ping"), retries=0, tools=["events"],
       events={"send": ["pong"]})
def main(ctx):
    return ctx.step.send_event("pong", "pong", {})
"""

PONG = """
from loopwright.sdk import skill, event

@skill(name="pong", trigger=event("pong"), retries=0, tools=["events"],
       events={"send": ["ping"]})
def main(ctx):
    return ctx.step.send_event("ping", "ping", {})
"""


def _all_runs(cluster: Cluster) -> list:  # type: ignore[type-arg]
    return cluster.rt.runs.find(limit=1000)


def _inbox(cluster: Cluster) -> list[dict[str, object]]:
    from loopwright.inbox import Inbox

    rt = cluster.rt
    return [n.to_json() for n in Inbox(rt.redis, rt.keys, rt.settings).list(limit=1000)]


def test_a_self_triggering_pair_of_skills_stops_at_the_hop_limit(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(max_hops=3)
    cluster.skill(PING, "ping.py")
    cluster.skill(PONG, "pong.py")
    cluster.scheduler()
    cluster.worker()
    cluster.rt.bus.send("ping", {}, "seed")

    def stopped() -> list:  # type: ignore[type-arg]
        runs = _all_runs(cluster)
        return runs if any(r.status.value == "failed" for r in runs) else []

    runs = wait_until(stopped, timeout=60)
    (failed,) = [r for r in runs if r.status.value == "failed"]
    assert "hop limit of 3" in (failed.error or "") and "LOOPWRIGHT_MAX_HOPS" in (
        failed.error or ""
    )
    assert failed.event["hop"] == 3 and failed.event["root"] == "ev:seed"
    # hops 0..3: four runs, each chain step one hop further; nothing after the refusal
    assert sorted(r.event["hop"] for r in runs) == [0, 1, 2, 3]
    assert any("hop limit" in str(n["message"]) for n in _inbox(cluster))


SELFIE = """
from loopwright.sdk import skill

@skill(name="selfie", retries=0)
def main(ctx):
    return ctx.step.invoke("again", "selfie", {})
"""


def test_a_self_invoking_skill_stops_at_the_hop_limit(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(max_hops=3)
    cluster.worker()
    root = cluster.wait(cluster.start(cluster.skill(SELFIE), trusted=False), timeout=60)
    assert root.status.value == "failed" and "hop limit of 3" in (root.error or "")
    runs = cluster.rt.runs.find(skill="selfie", limit=100)
    assert len(runs) == 4 and all(r.status.value == "failed" for r in runs)
    assert sorted(r.event.get("hop", 0) for r in runs) == [0, 1, 2, 3]
    assert any("hop limit" in str(n["message"]) for n in _inbox(cluster))


FAN = """
from loopwright.sdk import skill, event

@skill(name="fan", trigger=event("boom"), retries=0, tools=["events"],
       events={"send": ["boom"]})
def main(ctx):
    ctx.step.send_event("left", "boom", {})
    ctx.step.send_event("right", "boom", {})
    return "fanned"
"""


def test_a_fan_out_stops_at_the_run_budget_of_its_root(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(run_budget_per_root=5)
    cluster.skill(FAN)
    cluster.scheduler()
    cluster.worker()
    cluster.rt.bus.send("boom", {}, "seed")
    r, stream = cluster.rt.redis, cluster.rt.keys.events

    def settled() -> bool:
        runs = _all_runs(cluster)
        groups = r.xinfo_groups(stream)
        drained = groups and all(g["lag"] == 0 and g["pending"] == 0 for g in groups)
        notice = any("budget of 5 runs" in str(n["message"]) for n in _inbox(cluster))
        return bool(drained and notice and runs and all(x.status.terminal for x in runs))

    wait_until(settled, timeout=60)
    runs = _all_runs(cluster)
    assert len(runs) == 5, [(x.status.value, x.error) for x in runs]
    failed = [x for x in runs if x.status.value == "failed"]
    assert failed and all("LOOPWRIGHT_RUN_BUDGET_PER_ROOT" in (x.error or "") for x in failed)


# --- item 8: a forged guest that stops reading; refusals never echo input ------------------

# A forged guest (what code that escaped the policy could run): says ready, takes ``start``,
# asks for something whose answer is large, and never reads again.
STALLING_GUEST = r"""
import json, sys, time
sys.stdout.write(json.dumps({"op": "ready", "pid": 1}) + "\n"); sys.stdout.flush()
sys.stdin.readline()
sys.stdout.write(json.dumps({"id": 1, "op": "step.begin", "name": "big"}) + "\n")
sys.stdout.flush()
time.sleep(120)
"""


def test_a_guest_that_stops_reading_cannot_hold_the_host_past_the_deadline() -> None:
    import sys

    from loopwright.sandbox.host import GuestTimeoutError, run_session
    from loopwright.sandbox.limits import GuestLimits
    from loopwright.sandbox.process import ProcessGuest

    guest = ProcessGuest([sys.executable, "-c", STALLING_GUEST], GuestLimits(), None)
    big = {"ok": {"output": "x" * (8 * 1024 * 1024)}}  # far more than a pipe buffer holds
    began = time.monotonic()
    with pytest.raises(GuestTimeoutError, match="stopped reading"):
        run_session(guest, {"source": ""}, lambda msg: big, time.monotonic() + 2)
    assert time.monotonic() - began < 5
    wait_until(lambda: not guest.alive())


def test_a_refusal_does_not_echo_a_huge_op_name_back() -> None:
    from typing import Any

    from loopwright.sandbox.host import RequestHandler

    class Refuses(RequestHandler):
        def _refuse(self, *_: Any) -> dict[str, Any]:
            raise ValueError("x" * 100_000)

        _begin = _done = _fail = _sleep = _other = _tool = _log = _refuse  # type: ignore[assignment]

    op = "o" * 5_000_000
    reply = Refuses().handle({"op": op})
    assert reply["error"]["type"] == "NonRetriableError"
    assert len(reply["error"]["message"]) < 200 and "5000002 chars" in reply["error"]["message"]
    reply = Refuses().handle({"op": "step.done"})  # an error text is capped too
    assert len(reply["error"]["message"]) < 2100


# --- item 17: bad text fails a run once, clearly --------------------------------------------

BAD_WAIT = """
from loopwright.sdk import skill

@skill(name="bad-wait", retries=3, backoff=0.01, events={"receive": ["order.*"]})
def main(ctx):
    return ctx.step.wait_for_event("w", "order" + chr(55296), timeout="1h")
"""


def test_a_lone_surrogate_in_a_wait_for_event_name_fails_the_run_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(sandbox_backend="process")
    cluster.worker()
    cluster.scheduler()  # it would reap and re-execute a run left running
    run = cluster.wait(cluster.start(cluster.skill(BAD_WAIT), trusted=False))
    assert run.status.value == "failed", run.error
    assert "event name 'order\\ud800' must be" in (run.error or ""), run.error
    assert run.reaps == 0
    # Refused by the host's declaration check before the step is recorded, or by the step
    # itself: either way once, never retried.
    steps = cluster.rt.runs.steps(run.id)
    assert all(s.status == "failed" and s.attempts == 1 for s in steps), steps


SURROGATE_OUTPUT = """
from loopwright.sdk import skill

@skill(name="bad-output", retries=3, backoff=0.01)
def main(ctx):
    return ctx.step.run("text", lambda: "x" + chr(55296))
"""


def test_a_lone_surrogate_in_a_trusted_step_output_fails_the_step_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster()
    cluster.worker()
    run = cluster.wait(cluster.start(cluster.skill(SURROGATE_OUTPUT), trusted=True))
    assert run.status.value == "failed" and "not valid Unicode" in (run.error or ""), run.error
    (step,) = cluster.rt.runs.steps(run.id)
    assert step.attempts == 1  # before: retried three times as a UnicodeEncodeError


BAD_SEND = """
from loopwright.sdk import skill

@skill(name="bad-send", retries=3, backoff=0.01, tools=["events"],
       events={"send": ["order.*"]})
def main(ctx):
    return ctx.step.send_event("s", "order" + chr(55296), {})
"""


def test_a_bad_event_name_sent_by_a_step_fails_it_once(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(sandbox_backend="process")
    cluster.worker()
    run = cluster.wait(cluster.start(cluster.skill(BAD_SEND), trusted=False))
    assert run.status.value == "failed" and "must be 1-128 of letters" in (run.error or "")
    assert run.reaps == 0
    steps = cluster.rt.runs.steps(run.id)
    assert all(s.status == "failed" and s.attempts == 1 for s in steps), steps


@pytest.mark.parametrize("command", [["events", "send", "x.y"], ["run", "anything"]])
def test_deeply_nested_data_is_refused_in_one_line(cluster: Cluster, command: list[str]) -> None:
    path = cluster.tmp / "deep.json"
    path.write_text("[" * 500_000 + "]" * 500_000)  # 1 MB, nested 500,000 deep
    res = cluster.cli(*command, "--data", f"@{path}")
    assert res.returncode != 0
    out = res.stdout + res.stderr
    assert "nested too deeply" in out and "Traceback" not in out, out


def test_a_deeply_nested_http_answer_fails_the_step_without_retries(
    make_cluster: Callable[..., Cluster],
) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = b"[" * 100_000 + b"]" * 100_000
    hits: list[str] = []

    class Deep(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Deep)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        cluster = make_cluster(http_private_allow="127.0.0.1")
        cluster.worker()
        source = _drip_skill("30s").replace("retries=0", "retries=3, backoff=0.01")
        url = f"http://127.0.0.1:{httpd.server_address[1]}/deep"
        run = cluster.wait(cluster.start(cluster.skill(source), {"url": url}, trusted=False))
    finally:
        httpd.shutdown()
    assert run.status.value == "failed" and "nested too deeply" in (run.error or ""), run.error
    assert len(hits) == 1  # not retried


def test_events_and_runs_stored_before_lineage_existed_still_route_and_chain(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(max_hops=1)
    cluster.skill(PING, "ping.py")
    cluster.skill(PONG, "pong.py")
    r, k = cluster.rt.redis, cluster.rt.keys
    # An entry as today's main wrote it: no hop, no root.
    r.xadd(k.events, {"name": "ping", "id": "old-1", "data": "{}", "ts": "1"})
    r.set(k.event_seen("old-1"), "0-1")
    cluster.scheduler()
    cluster.worker()
    (run,) = wait_until(lambda: cluster.rt.runs.find(skill="ping", limit=5))
    run = cluster.wait(run.id)
    assert run.event["hop"] == 0 and run.event["root"] == "ev:old-1"
    # The event it sent is one hop further, on the old event's root.
    (pong,) = wait_until(lambda: cluster.rt.runs.find(skill="pong", limit=5), 30)
    assert pong.event["hop"] == 1 and pong.event["root"] == "ev:old-1"


def test_a_container_guest_that_stops_reading_cannot_hold_the_host(
    docker_guest_image: str,
) -> None:
    import docker

    from conftest import require_docker_engine
    from loopwright.sandbox.docker import GUEST_LABEL, OWNER_LABEL, DockerGuest, owner_id
    from loopwright.sandbox.host import GuestTimeoutError, run_session
    from loopwright.sandbox.limits import GuestLimits

    require_docker_engine()
    client = docker.from_env(timeout=30)
    api = client.api
    created = api.create_container(
        docker_guest_image,
        command=["python3", "-c", STALLING_GUEST],
        stdin_open=True,
        tty=False,
        network_disabled=True,
        labels={GUEST_LABEL: "1", OWNER_LABEL: owner_id()},
    )
    cid = str(created["Id"])
    conn = api.attach_socket(cid, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
    guest = DockerGuest(client, cid, conn, GuestLimits())
    api.start(cid)
    big = {"ok": {"output": "x" * (32 * 1024 * 1024)}}  # more than every buffer on the way
    began = time.monotonic()
    try:
        with pytest.raises(GuestTimeoutError, match="stopped reading"):
            run_session(guest, {"source": ""}, lambda msg: big, time.monotonic() + 3)
        assert time.monotonic() - began < 8
    finally:
        guest.kill()
        client.close()
