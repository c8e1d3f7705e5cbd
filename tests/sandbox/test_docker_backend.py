"""The docker sandbox backend against a real engine: lockdown, lifecycle, limits, end to end.

Engine tests are skipped when no Docker engine answers, except under CI=true, where they fail
(CI starts one with scripts/start-dockerd.sh). The attach-stream demultiplexer is also tested
on its own, with a socket pair, wherever the tests run.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker
import pytest
from docker.errors import NotFound

from conftest import Cluster, docker_engine_reachable, wait_until
from loopwright.inbox import Inbox
from loopwright.sandbox.docker import (
    GUEST_LABEL,
    OWNER_LABEL,
    DockerBackend,
    DockerGuest,
    owner_id,
    sweep_leftovers,
)
from loopwright.sandbox.host import GuestTimeoutError, SandboxError, run_session
from loopwright.sandbox.limits import GuestLimits
from loopwright.sandbox.protocol import ProtocolError

MiB = 1024 * 1024
LIMITS = GuestLimits(memory_bytes=128 * MiB, cpu_seconds=20, start_timeout=30.0)


# ---------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.DockerClient]:
    """A client of the local engine; skip without one (fail under CI=true)."""
    if not docker_engine_reachable():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true requires a reachable Docker engine (scripts/start-dockerd.sh)")
        pytest.skip("no Docker engine reachable (the docker backend runs in CI)")
    client = docker.from_env(timeout=60)
    yield client
    client.close()


@pytest.fixture(scope="module")
def image(engine: docker.DockerClient, request: pytest.FixtureRequest) -> str:
    """The guest image, built locally by conftest's session fixture (once an engine answers:
    a session fixture named in the signature would be set up before ``engine`` skips)."""
    return str(request.getfixturevalue("docker_guest_image"))


@pytest.fixture
def new_backend(engine: docker.DockerClient, image: str) -> Iterator[Callable[..., DockerBackend]]:
    """Backends on the test image; closed after the test, which must leave no containers."""
    made: list[DockerBackend] = []

    def factory(limits: GuestLimits = LIMITS, pool_size: int = 0) -> DockerBackend:
        backend = DockerBackend(limits, image=image, pool_size=pool_size)
        made.append(backend)
        return backend

    yield factory
    for backend in made:
        backend.close()
    owners = {b.owner for b in made}
    assert not [c for c in _guests(engine) if c["Labels"].get(OWNER_LABEL) in owners]


def _guests(engine: docker.DockerClient) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = engine.api.containers(all=True, filters={"label": GUEST_LABEL})
    return found


def _gone(engine: docker.DockerClient, container_id: str) -> bool:
    try:
        engine.api.inspect_container(container_id)
    except NotFound:
        return True
    return False


def _running(engine: docker.DockerClient, container_id: str) -> bool:
    """Whether the container runs (False once it exited or was removed meanwhile)."""
    try:
        return bool(engine.api.inspect_container(container_id)["State"]["Running"])
    except NotFound:
        return False


def skill_source(body: str, name: str = "probe") -> str:
    """A one-function skill whose body is ``body``."""
    head = f"from loopwright.sdk import skill\n\n\n@skill(name={name!r})\ndef main(ctx):\n"
    return head + textwrap.indent(textwrap.dedent(body).strip() + "\n", "    ")


class FakeHost:
    """The host's side of the protocol, in memory: checkpoints, tool calls, logs."""

    def __init__(self) -> None:
        self.ops: list[str] = []
        self.outputs: dict[int, Any] = {}
        self.tools: list[dict[str, Any]] = []
        self._seq = 0

    def handle(self, msg: dict[str, Any]) -> dict[str, Any]:
        op = str(msg.get("op"))
        self.ops.append(op)
        if op == "step.begin":
            self._seq += 1
            return {"ok": {"seq": self._seq}}
        if op == "step.done":
            self.outputs[int(msg["seq"])] = json.loads(msg["output_json"])
            return {"ok": {}}
        if op == "step.fail":
            return {"error": {"type": "StepFailedError", "step": "?", "reason": msg["error"]}}
        if op == "tool":
            self.tools.append(msg)
            return {"ok": {"result": None}}
        return {"ok": {}}


def run(guest: DockerGuest, source: str, host: FakeHost, timeout: float = 30.0) -> dict[str, Any]:
    """One session of ``source`` in ``guest``; returns the guest's ``end`` message."""
    start = {"source": source, "run_id": "r-test", "event": {"data": {"n": 4}}, "params": {}}
    return run_session(guest, start, host.handle, time.monotonic() + timeout)


TWO_STEPS = """
    a = ctx.step.run("double", lambda: ctx.event["data"]["n"] * 2)
    b = ctx.step.run("inc", lambda: a + 1)
    return {"a": a, "b": b}
"""


# ---------------------------------------------------------------------------------------
# Through the backend


def test_guest_runs_a_skill_in_a_locked_down_container(
    engine: docker.DockerClient, new_backend: Callable[..., DockerBackend], image: str
) -> None:
    backend = new_backend()
    guest = backend.acquire()
    attrs = engine.api.inspect_container(guest.id)
    host_config, config = attrs["HostConfig"], attrs["Config"]
    assert host_config["NetworkMode"] == "none"
    assert attrs["NetworkSettings"]["Networks"].keys() <= {"none"}
    assert host_config["ReadonlyRootfs"] is True
    assert config["User"] == "65534:65534"
    assert host_config["CapDrop"] == ["ALL"]
    assert "no-new-privileges" in host_config["SecurityOpt"]
    assert host_config["Privileged"] is False
    assert host_config["PidsLimit"] == LIMITS.max_processes
    assert host_config["Memory"] == LIMITS.memory_bytes
    assert host_config["MemorySwap"] == LIMITS.memory_bytes
    assert host_config["NanoCpus"] == 1_000_000_000
    assert host_config["LogConfig"]["Type"] == "none"
    assert "/tmp" in host_config["Tmpfs"] and "noexec" in host_config["Tmpfs"]["/tmp"]
    ulimits = {u["Name"]: u["Hard"] for u in host_config["Ulimits"]}
    assert ulimits["nofile"] == LIMITS.open_files
    assert ulimits["fsize"] == LIMITS.file_size_bytes
    assert ulimits["cpu"] == LIMITS.cpu_seconds
    assert config["StdinOnce"] is True and config["Tty"] is False
    assert config["Image"] == image
    assert attrs["State"]["Running"] is True

    host = FakeHost()
    end = run(guest, skill_source(TWO_STEPS), host)
    assert json.loads(end["output_json"]) == {"a": 8, "b": 9}
    assert host.outputs == {1: 8, 2: 9}
    assert host.ops == ["step.begin", "step.done", "step.begin", "step.done"]
    assert _gone(engine, guest.id)  # run_session kills the guest: one container per run

    protections = backend.protections()
    assert protections["backend"] == "docker" and protections["network_isolation"] is True
    assert protections["read_only_root"] and protections["non_root"]
    assert protections["cap_drop"] == "ALL" and protections["image"] == image


def test_kill_removes_the_container_and_never_raises(
    engine: docker.DockerClient, new_backend: Callable[..., DockerBackend]
) -> None:
    guest = new_backend().acquire()
    assert not _gone(engine, guest.id)
    guest.kill()
    assert _gone(engine, guest.id)
    guest.kill()  # again: already gone, no error
    assert "gone" in guest.describe_exit()
    with pytest.raises(BrokenPipeError):
        guest.send(b"{}\n")
    assert guest.read_line(time.monotonic() + 1) is None

    other = new_backend().acquire()
    engine.api.remove_container(other.id, force=True)  # removed behind the host's back
    other.kill()


def test_no_leftover_containers_after_runs_and_close(
    engine: docker.DockerClient, new_backend: Callable[..., DockerBackend]
) -> None:
    backend = new_backend(pool_size=2)
    ids = []
    for _ in range(3):
        guest = backend.acquire()
        ids.append(guest.id)
        assert json.loads(run(guest, skill_source("return 'ok'"), FakeHost())["output_json"]) == (
            "ok"
        )
    assert all(_gone(engine, i) for i in ids)
    wait_until(lambda: len(backend._pool) == 2, timeout=30)  # the pool refills behind
    pooled = [g.id for g in backend._pool]
    backend.close()
    assert all(_gone(engine, i) for i in pooled)
    assert not [c for c in _guests(engine) if c["Labels"].get(OWNER_LABEL) == backend.owner]
    with pytest.raises(SandboxError, match="closed"):
        backend.acquire()


def test_memory_hog_ends_with_a_clear_error_and_the_next_guest_works(
    new_backend: Callable[..., DockerBackend],
) -> None:
    backend = new_backend()
    try:
        end = run(backend.acquire(), skill_source("x = [0] * (10**9)\nreturn len(x)"), FakeHost())
        message = str(end.get("error"))
        assert "MemoryError" in message, end
    except SandboxError as exc:  # the cgroup's OOM killer got there first
        message = str(exc)
        assert "out-of-memory" in message and "128 MiB" in message, message
    print(f"\nmemory hog: {message}")
    end = run(backend.acquire(), skill_source(TWO_STEPS), FakeHost())
    assert json.loads(end["output_json"]) == {"a": 8, "b": 9}


def test_gradual_memory_growth_is_an_oom_kill_reported_by_the_engine(
    new_backend: Callable[..., DockerBackend],
) -> None:
    backend = new_backend()
    hog = """
        chunks = []
        for i in range(10**6):
            chunks.append("x" * 65536 + str(i))
        return len(chunks)
    """
    with pytest.raises(SandboxError) as info:
        run(backend.acquire(), skill_source(hog), FakeHost())
    assert "out-of-memory killer" in str(info.value) and "exit code 137" in str(info.value)


def test_run_deadline_kills_the_guest(
    engine: docker.DockerClient, new_backend: Callable[..., DockerBackend]
) -> None:
    guest = new_backend().acquire()
    started = time.monotonic()
    with pytest.raises(GuestTimeoutError):
        run(guest, skill_source("while True:\n    pass"), FakeHost(), timeout=1.0)
    assert time.monotonic() - started < 10
    assert _gone(engine, guest.id)


def test_cpu_time_limit_kills_the_guest(new_backend: Callable[..., DockerBackend]) -> None:
    backend = new_backend(GuestLimits(memory_bytes=128 * MiB, cpu_seconds=1))
    with pytest.raises(SandboxError, match="SIGKILL") as info:
        run(backend.acquire(), skill_source("while True:\n    pass"), FakeHost())
    assert "CPU time limit" in str(info.value)


def test_orphaned_guest_exits_and_is_swept(
    engine: docker.DockerClient, new_backend: Callable[..., DockerBackend]
) -> None:
    """A worker that dies leaves no running guest: stdin closes, the guest exits, and the
    next backend on the host removes containers whose owner process is gone."""
    backend = new_backend()
    # The guest belongs to a stand-in worker that is alive while the guest starts (a sweep
    # by any other backend on this host must not take it yet) and then dies.
    stand_in = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                                stdin=subprocess.PIPE)  # fmt: skip
    try:
        backend.owner = owner_id(stand_in.pid)
        guest = backend.spawn()
    finally:
        stand_in.kill()
        stand_in.wait()
    guest._sock.shutdown(socket.SHUT_RDWR)  # the worker "dies": its attach connection goes
    # The guest exits; it may even be swept already by another backend's watchdog (any sweep
    # on this host removes containers whose owner is gone), so only its end is awaited here.
    wait_until(lambda: not _running(engine, guest.id), 20)
    # Any backend starting on this host sweeps with the same function (another test process
    # may get there first), so what matters is that the orphan is gone afterwards.
    sweep_leftovers(engine)
    assert _gone(engine, guest.id)
    guest.kill()


def test_acquire_replaces_a_pooled_guest_that_died(
    engine: docker.DockerClient, new_backend: Callable[..., DockerBackend]
) -> None:
    backend = new_backend(pool_size=1)
    backend.refill()
    dead = backend._pool[0]
    time.sleep(0.5)  # it said ready: the line waits in the connection, ahead of its end
    engine.api.remove_container(dead.id, force=True)
    guest = backend.acquire()
    assert guest.id != dead.id
    assert json.loads(run(guest, skill_source("return 7"), FakeHost())["output_json"]) == 7


# ---------------------------------------------------------------------------------------
# End to end through the runner


def test_sandboxed_run_end_to_end(
    engine: docker.DockerClient, make_cluster: Callable[..., Cluster], image: str
) -> None:
    cluster = make_cluster(sandbox_backend="docker", sandbox_docker_image=image)
    worker = cluster.worker()
    name = cluster.skill("""
        from loopwright.sdk import skill

        def alert(ctx, total):
            ctx.tools.notify(f"total is {total}", title="docker sandbox")
            return "sent"

        @skill(name="docker-e2e", tools=["notify"])
        def main(ctx):
            total = ctx.step.run("sum", lambda: sum(ctx.event["data"]["xs"]))
            sent = ctx.step.run("alert", alert, ctx, total)
            return {"total": total, "sent": sent}
    """)
    run_ = cluster.wait(cluster.start(name, {"xs": [1, 2, 3]}, trusted=False), timeout=60)
    assert run_.status.value == "completed", run_.error
    assert run_.output == {"total": 6, "sent": "sent"}
    rt = cluster.rt
    notices = Inbox(rt.redis, rt.keys, rt.settings).list()
    assert [(n.body, n.title) for n in notices] == [("total is 6", "docker sandbox")]

    # The worker dies hard: its warm guest must not keep running, and is swept afterwards.
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    prefix = f"{socket.gethostname()}:{worker.pid}:"

    def its_guests() -> list[dict[str, Any]]:
        return [c for c in _guests(engine) if c["Labels"][OWNER_LABEL].startswith(prefix)]

    wait_until(lambda: bool(its_guests()), timeout=10)  # the warm guest the pool refilled
    wait_until(lambda: all(c["State"] != "running" for c in its_guests()), timeout=20)
    sweep_leftovers(engine)
    assert its_guests() == []


# ---------------------------------------------------------------------------------------
# The attach-stream demultiplexer (no engine needed)


def _frame(stream: int, payload: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(payload).to_bytes(4, "big") + payload


@pytest.fixture
def pipe() -> Iterator[tuple[DockerGuest, socket.socket]]:
    """A guest whose attach connection is one end of a socket pair; the test writes frames."""
    ours, theirs = socket.socketpair()
    limits = GuestLimits(message_max_bytes=64, stderr_max_bytes=32)
    guest = DockerGuest(None, "not-a-container", ours, limits)  # type: ignore[arg-type]
    yield guest, theirs
    ours.close()
    theirs.close()


def test_demux_splits_frames_and_streams(pipe: tuple[DockerGuest, socket.socket]) -> None:
    guest, peer = pipe
    data = _frame(1, b'{"op":"ready"}\n{"a"') + _frame(2, b"warn") + _frame(1, b":1}\n")
    for i in range(len(data)):  # one byte at a time: every header and payload is split
        peer.sendall(data[i : i + 1])
    assert guest.read_line(time.monotonic() + 2) == b'{"op":"ready"}'
    assert guest.read_line(time.monotonic() + 2) == b'{"a":1}'
    assert bytes(guest._err) == b"warn"
    guest.send(b"hello\n")
    assert peer.recv(16) == b"hello\n"


def test_demux_caps_lines_and_stderr(pipe: tuple[DockerGuest, socket.socket]) -> None:
    guest, peer = pipe
    peer.sendall(_frame(2, b"e" * 100 + b"TAIL"))
    peer.sendall(_frame(1, b"x" * 100))
    with pytest.raises(ProtocolError, match="cap"):
        guest.read_line(time.monotonic() + 2)
    assert len(guest._err) == 32 and guest._err.endswith(b"TAIL")  # the tail is kept


def test_demux_deadline_and_eof(pipe: tuple[DockerGuest, socket.socket]) -> None:
    guest, peer = pipe
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        guest.read_line(time.monotonic() + 0.2)
    assert time.monotonic() - started < 2
    peer.sendall(_frame(1, b"last\n"))
    peer.shutdown(socket.SHUT_WR)
    assert guest.read_line(None) == b"last"
    assert guest.read_line(None) is None
