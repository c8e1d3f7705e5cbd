"""The embedded default Redis, exercised against real redis-server processes (no mocks)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from loopwright.errors import RedisUnavailableError
from loopwright.redis_server import ManagedRedis, redis_url_for
from loopwright.settings import Settings

REDIS_BIN = "/usr/bin/redis-server"

pytestmark = pytest.mark.skipif(not Path(REDIS_BIN).exists(), reason="needs redis-server")

MakeRedis = Callable[..., ManagedRedis]


@pytest.fixture
def make_redis() -> Iterator[MakeRedis]:
    """Build ManagedRedis instances whose servers are always stopped after the test."""
    created: list[ManagedRedis] = []

    def make(data_dir: Path, binary: str = REDIS_BIN) -> ManagedRedis:
        managed = ManagedRedis(data_dir, binary)
        created.append(managed)
        return managed

    yield make
    for managed in created:
        managed.stop()


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


def _server_pid(url: str) -> int:
    client = _client(url)
    try:
        info = client.info("server")
    finally:
        client.close()
    assert isinstance(info, dict)
    pid = info["process_id"]
    assert isinstance(pid, int)
    return pid


def _wait_dead(pid: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            return
        if state == "Z":
            return
        time.sleep(0.02)
    raise AssertionError(f"pid {pid} still alive")


def _ready_count(managed: ManagedRedis) -> int:
    return managed.log_path.read_text().count("Redis is starting")


def test_ensure_running_starts_server_and_reuses_it(tmp_path: Path, make_redis: MakeRedis) -> None:
    managed = make_redis(tmp_path)
    assert managed.socket_path == tmp_path.resolve() / "redis" / "redis.sock"
    assert managed.url == f"unix://{managed.socket_path}"
    assert not managed.is_running()

    url = managed.ensure_running()

    assert url == managed.url
    assert managed.is_running()
    first_pid = _server_pid(url)
    assert stat.S_IMODE(managed.socket_path.stat().st_mode) == 0o700
    client = _client(url)
    try:
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("port") == {"port": "0"}
    finally:
        client.close()

    assert managed.ensure_running() == url
    assert ManagedRedis(tmp_path, REDIS_BIN).ensure_running() == url
    assert _server_pid(url) == first_pid
    assert _ready_count(managed) == 1


def test_data_survives_stop_and_start(tmp_path: Path, make_redis: MakeRedis) -> None:
    managed = make_redis(tmp_path)
    url = managed.ensure_running()
    client = _client(url)
    try:
        client.set("greeting", "hello")
    finally:
        client.close()

    assert managed.stop() is True
    assert not managed.is_running()
    assert not managed.socket_path.exists()
    assert managed.stop() is False

    client = _client(managed.ensure_running())
    try:
        assert client.get("greeting") == b"hello"
    finally:
        client.close()


def test_concurrent_ensure_running_starts_one_server(tmp_path: Path, make_redis: MakeRedis) -> None:
    managed = make_redis(tmp_path)
    callers = 8
    barrier = threading.Barrier(callers)
    pids: list[int] = []
    errors: list[BaseException] = []

    def call() -> None:
        try:
            barrier.wait()
            url = ManagedRedis(tmp_path, REDIS_BIN).ensure_running(timeout=20)
            pids.append(_server_pid(url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert errors == []
    assert len(pids) == callers
    assert len(set(pids)) == 1
    assert _ready_count(managed) == 1


def test_concurrent_ensure_running_from_processes_starts_one_server(
    tmp_path: Path, make_redis: MakeRedis
) -> None:
    managed = make_redis(tmp_path)
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path

        import redis

        from loopwright.redis_server import ManagedRedis

        url = ManagedRedis(Path(sys.argv[1]), sys.argv[2]).ensure_running(timeout=20)
        print(redis.Redis.from_url(url).info("server")["process_id"])
        """
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), REDIS_BIN],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    pids = set()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        pids.add(int(out.strip()))

    assert len(pids) == 1
    assert pids == {_server_pid(managed.url)}
    assert _ready_count(managed) == 1


def test_stale_socket_and_pidfile_do_not_block_start(tmp_path: Path, make_redis: MakeRedis) -> None:
    managed = make_redis(tmp_path)
    old_pid = _server_pid(managed.ensure_running())
    os.kill(old_pid, signal.SIGKILL)
    _wait_dead(old_pid)
    pidfile = tmp_path / "redis" / "redis.pid"
    assert managed.socket_path.exists()
    assert pidfile.read_text().strip() == str(old_pid)
    assert not managed.is_running()

    url = managed.ensure_running()

    new_pid = _server_pid(url)
    assert new_pid != old_pid
    assert pidfile.read_text().strip() == str(new_pid)


def test_pidfile_naming_an_unrelated_live_process_does_not_block_start(
    tmp_path: Path, make_redis: MakeRedis
) -> None:
    managed = make_redis(tmp_path)
    (tmp_path / "redis").mkdir()
    # This test process is alive and certainly not our redis-server: a reused pid after a crash.
    (tmp_path / "redis" / "redis.pid").write_text(f"{os.getpid()}\n")

    url = managed.ensure_running(timeout=5)

    assert _server_pid(url) != os.getpid()


def test_unresponsive_server_is_not_replaced_and_times_out_with_log(
    tmp_path: Path, make_redis: MakeRedis
) -> None:
    managed = make_redis(tmp_path)
    pid = _server_pid(managed.ensure_running())
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(RedisUnavailableError) as caught:
            managed.ensure_running(timeout=1)
    finally:
        os.kill(pid, signal.SIGCONT)

    message = str(caught.value)
    assert f"pid {pid}" in message
    assert f"last lines of {managed.log_path}" in message
    assert _ready_count(managed) == 1
    assert _server_pid(managed.url) == pid


def test_missing_binary_gives_clear_error(tmp_path: Path, make_redis: MakeRedis) -> None:
    managed = make_redis(tmp_path, binary="loopwright-no-such-redis-server")

    with pytest.raises(RedisUnavailableError) as caught:
        managed.ensure_running()

    message = str(caught.value)
    assert "\n" not in message
    assert "redis-server not found (looked for 'loopwright-no-such-redis-server')" in message
    assert "apt-get install -y redis-server" in message
    assert "LOOPWRIGHT_REDIS_URL" in message
    assert not managed.is_running()


def test_server_dying_at_startup_reports_log_tail(tmp_path: Path, make_redis: MakeRedis) -> None:
    managed = make_redis(tmp_path)
    aof_dir = tmp_path / "redis" / "appendonlydir"
    aof_dir.mkdir(parents=True)
    (aof_dir / "appendonly.aof.manifest").write_text("this is not a manifest\n")

    with pytest.raises(RedisUnavailableError) as caught:
        managed.ensure_running(timeout=5)

    message = str(caught.value)
    assert f"last lines of {managed.log_path}" in message
    assert "manifest" in message.lower()
    assert not managed.is_running()


def test_long_data_dir_uses_short_socket_path(tmp_path: Path, make_redis: MakeRedis) -> None:
    data_dir = tmp_path / ("d" * 60) / ("e" * 60)
    managed = make_redis(data_dir)
    other = ManagedRedis(tmp_path / ("f" * 60) / ("g" * 60), REDIS_BIN)

    assert managed.socket_path.parent == Path("/tmp")
    assert managed.socket_path.name.startswith(f"loopwright-{os.getuid()}-")
    assert len(os.fsencode(str(managed.socket_path))) <= 103
    assert ManagedRedis(data_dir, REDIS_BIN).socket_path == managed.socket_path
    assert other.socket_path != managed.socket_path

    url = managed.ensure_running()

    assert url == f"unix://{managed.socket_path}"
    assert managed.is_running()
    assert (data_dir / "redis" / "redis.log").exists()
    assert managed.stop() is True
    assert not managed.socket_path.exists()


def test_status_reports_running_and_stopped_server(tmp_path: Path, make_redis: MakeRedis) -> None:
    managed = make_redis(tmp_path)
    stopped = managed.status()
    assert stopped["running"] is False
    assert stopped["pid"] is None
    assert stopped["version"] is None
    assert stopped["url"] == managed.url
    assert stopped["data_dir"] == str(tmp_path.resolve())
    assert stopped["binary"] == REDIS_BIN

    url = managed.ensure_running()
    running = managed.status()

    assert running["running"] is True
    assert running["pid"] == _server_pid(url)
    assert isinstance(running["version"], str)
    assert running["version"].startswith("7.")


def test_resolve_redis_url_prefers_configured_url(tmp_path: Path) -> None:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", data_dir=tmp_path)

    assert redis_url_for(settings) == "redis://127.0.0.1:1/0"
    assert not (tmp_path / "redis").exists()


def test_resolve_redis_url_starts_managed_server_when_unset(
    tmp_path: Path, make_redis: MakeRedis
) -> None:
    managed = make_redis(tmp_path)
    settings = Settings(redis_url=None, data_dir=tmp_path, redis_server_bin=REDIS_BIN)

    url = redis_url_for(settings)

    assert url == managed.url
    assert managed.is_running()
