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
    cluster = make_cluster(http_allow_private=True, http_timeout=30)
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
    cluster = make_cluster(http_allow_private=True, http_timeout=30, http_call_max_seconds=1.5)
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
    cluster = make_cluster(http_allow_private=True, http_timeout=30)
    cluster.worker()
    name = cluster.skill(_drip_skill("60s"))
    run_id = cluster.start(name, {"url": f"http://127.0.0.1:{drip.port}/"}, trusted=False)
    wait_until(lambda: drip.requests >= 1)
    cluster.rt.runs.cancel(run_id)
    assert cluster.wait(run_id).status.value == "cancelled"
    # The worker hangs up within a lease renewal or two, not after the 120 s drip.
    assert drip.gone.wait(10), "the worker kept reading the drip after the cancel"
