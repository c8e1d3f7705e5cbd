"""``loopwright redis status|stop`` and ``loopwright stop`` against a real managed redis-server
in a temporary data directory: status starts nothing, stop flushes the AOF (no acknowledged
write is lost), a Redis that Loopwright did not start is never stopped."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import redis

from conftest import RedisProc, wait_until
from loopwright.redis_server import ManagedRedis


def _env(data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWRIGHT_")}
    env.update({"LOOPWRIGHT_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1", **extra})
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loopwright.cli", *args],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _json(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert isinstance(out, dict)
    return out


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_status_and_stop_of_the_managed_redis_keep_every_write(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = _env(data)
    managed = ManagedRedis(data)
    try:
        # Status of a server never started says so, and starts nothing
        st = _json(_cli(env, "redis", "status", "--json"))
        assert st["managed"] is True and st["running"] is False and st["pid"] is None
        assert not managed.is_running()
        assert "not running" in _cli(env, "redis", "status").stdout
        # Any command that needs Redis starts it; status and doctor then show it with its pid
        assert _cli(env, "skills", "list", "--json").returncode == 0
        st = _json(_cli(env, "redis", "status", "--json"))
        assert st["running"] is True and isinstance(st["pid"], int)
        doctor = json.loads(_cli(env, "doctor", "--json").stdout)["managed redis"]
        assert doctor["running"] is True and doctor["pid"] == st["pid"]
        assert "loopwright redis stop" in doctor["detail"]
        # While another client is connected, stop refuses (a worker would lose its Redis)
        client = redis.Redis.from_url(managed.url)
        pipe = client.pipeline(transaction=False)
        for i in range(2000):
            pipe.set(f"k{i}", i)
        pipe.execute()
        refused = _cli(env, "stop")
        assert "other client(s) are connected" in _one_error_line(refused)
        assert "--force" in refused.stderr and managed.is_running()
        client.close()
        # Stopped, the server is gone; started again, every acknowledged write is there
        stopped = _json(_cli(env, "stop", "--json"))
        assert stopped["stopped"] is True and stopped["pid"] == st["pid"]
        assert not managed.is_running()
        assert _json(_cli(env, "redis", "status", "--json"))["running"] is False
        assert _json(_cli(env, "redis", "stop", "--json"))["stopped"] is False  # idempotent
        managed.ensure_running()
        again = redis.Redis.from_url(managed.url)
        assert [again.get(f"k{i}") for i in (0, 999, 1999)] == [b"0", b"999", b"1999"]
        assert again.dbsize() >= 2000
        again.close()
        # --force stops it with clients connected
        holder = redis.Redis.from_url(managed.url)
        holder.ping()
        assert _json(_cli(env, "redis", "stop", "--force", "--json"))["stopped"] is True
        wait_until(lambda: not managed.is_running(), timeout=10)
        holder.close()
    finally:
        managed.stop()


def test_a_redis_loopwright_did_not_start_is_never_stopped(
    tmp_path: Path, redis_server: RedisProc
) -> None:
    env = _env(tmp_path / "data", LOOPWRIGHT_REDIS_URL=redis_server.url)
    line = _one_error_line(_cli(env, "stop"))
    assert "did not start the Redis at LOOPWRIGHT_REDIS_URL" in line
    assert _one_error_line(_cli(env, "redis", "stop", "--force")) == line
    st = _json(_cli(env, "redis", "status", "--json"))
    assert st["managed"] is False and st["configured_url"] == redis_server.url
    assert redis.Redis.from_url(redis_server.url).ping()
    doctor = json.loads(_cli(env, "doctor", "--json").stdout)["managed redis"]
    assert "not used" in doctor["detail"]
