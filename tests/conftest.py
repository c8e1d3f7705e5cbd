"""Fixtures: a real redis-server, real worker and scheduler processes, one keyspace per test."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from loopwright.assembly import build_runtime
from loopwright.runner.records import Run
from loopwright.runner.runtime import Runtime
from loopwright.sdk.manifest import read_declaration
from loopwright.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout: float = 20.0, interval: float = 0.02) -> Any:
    """Poll ``pred`` until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s")


@dataclass
class RedisProc:
    """A redis-server started by the tests."""

    port: int
    dir: Path
    appendonly: bool
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is required for the tests: apt-get install -y redis-server")
        args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--appendfsync",
            "always",
            "--protected-mode",
            "no",
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = Redis(port=self.port, socket_connect_timeout=0.2)
        wait_until(lambda: _ping(client), timeout=10)
        client.close()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=20)
        self.proc = None


def _ping(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProc]:
    """One shared redis-server for the session (tests isolate by key prefix and queue)."""
    server = RedisProc(free_port(), tmp_path_factory.mktemp("redis"), appendonly=False)
    server.start()
    yield server
    server.stop()


@dataclass
class Cluster:
    """A test's view of Loopwright: settings, runtime, and its worker/scheduler processes."""

    settings: Settings
    tmp: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _rt: Runtime | None = None

    @property
    def rt(self) -> Runtime:
        if self._rt is None:
            self._rt = build_runtime(self.settings)
        return self._rt

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWRIGHT_")}
        for name, value in self.settings.model_dump().items():
            if name == "secrets":
                plain = {k: v.get_secret_value() for k, v in self.settings.secrets.items()}
                env["LOOPWRIGHT_SECRETS"] = json.dumps(plain)
            elif isinstance(value, (dict, list)):
                env[f"LOOPWRIGHT_{name.upper()}"] = json.dumps(value)  # how settings parse them
            elif value is not None:
                env[f"LOOPWRIGHT_{name.upper()}"] = str(value)
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def cli(
        self, *args: str, timeout: float = 60, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the ``loopwright`` CLI as a subprocess against this cluster."""
        return subprocess.run(
            [sys.executable, "-m", "loopwright.cli", *args],
            env=self.env,
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.tmp,
            input=input,
        )

    def spawn(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a long-running CLI process (worker, scheduler) owned by the test."""
        log = open(self.tmp / f"proc-{len(self.procs)}.log", "wb")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(
            [sys.executable, "-m", "loopwright.cli", *args],
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.tmp,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def worker(
        self, env: dict[str, str] | None = None, *, verbose: bool = False
    ) -> subprocess.Popen[bytes]:
        """Start one worker process and wait until it is registered with RQ (``verbose``: it
        logs at INFO, so a test can wait on its log lines with :meth:`log_of`)."""
        from rq import Worker

        before = len(Worker.all(queue=self.rt.dispatcher.queue))
        proc = self.spawn("worker", *(["--verbose"] if verbose else []), env=env)
        wait_until(
            lambda: (
                len(Worker.all(queue=self.rt.dispatcher.queue)) > before or proc.poll() is not None
            )
        )
        assert proc.poll() is None, "worker exited at start-up"
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> str:
        """What a process started by :meth:`spawn` has logged so far."""
        path = self.tmp / f"proc-{self.procs.index(proc)}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def scheduler(self) -> subprocess.Popen[bytes]:
        """Start one scheduler process."""
        return self.spawn("scheduler")

    def skill(self, source: str, filename: str = "skill.py") -> str:
        """Store a skill source (dedented) and return its name, read from the syntax tree:
        hostile test skills are never executed in the test process."""
        source = textwrap.dedent(source)
        path = self.tmp / filename
        path.write_text(source)
        name = read_declaration(source).spec.name
        self.rt.sources.put(source, name)
        return name

    def start(self, skill: str, data: Any = None, *, trusted: bool = True, **kw: Any) -> str:
        """Create a run of ``skill``; runner tests run trusted, sandbox tests pass False."""
        version = self.rt.sources.resolve(skill)
        return self.rt.runs.create(skill=skill, version=version, data=data, trusted=trusted, **kw)

    def wait(self, run_id: str, timeout: float = 30.0) -> Run:
        """Wait for a run to end; fail the test if it does not."""
        run = self.rt.runs.wait(run_id, timeout=timeout)
        assert run.status.terminal, f"run {run_id} still {run.status.value} after {timeout}s"
        return run

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        if self._rt is not None:
            self._rt.close()


def make_settings(redis_url: str, tmp: Path, **overrides: Any) -> Settings:
    """Settings for one test: its own key prefix and queue, short leases."""
    tag = uuid.uuid4().hex[:10]
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "data_dir": tmp / "data",
        "key_prefix": f"t{tag}",
        "queue": f"q{tag}",
        "lease_ttl": 1.0,
        "reaper_interval": 0.05,
        "dispatch_grace": 1.0,
        "sidecar_replay_runs": 3,  # the sidecar's advisory replay stays fast in tests
        "review_cron": "",  # no weekly-review built-in installed by test schedulers
    }
    base.update(overrides)
    return Settings(**base)


@pytest.fixture
def make_cluster(redis_server: RedisProc, tmp_path: Path) -> Iterator[Callable[..., Cluster]]:
    """Factory for clusters with settings overrides; everything it started is killed after."""
    made: list[Cluster] = []

    def factory(redis_url: str | None = None, **overrides: Any) -> Cluster:
        c = Cluster(make_settings(redis_url or redis_server.url, tmp_path, **overrides), tmp_path)
        made.append(c)
        return c

    yield factory
    for c in made:
        c.close()


@pytest.fixture
def cluster(make_cluster: Callable[..., Cluster]) -> Cluster:
    """A cluster with default test settings."""
    return make_cluster()


# Overridable so that several checkouts on one machine do not rebuild one shared tag.
DOCKER_IMAGE = os.environ.get("LOOPWRIGHT_TEST_DOCKER_IMAGE", "loopwright-guest:test")


def docker_engine_reachable() -> bool:
    """True when a Docker engine answers (through the Python SDK)."""
    try:
        import docker

        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def require_docker_engine() -> None:
    """Skip without a Docker engine, except in CI (CI=true), where its absence fails the test:
    the docker backend's tests must run there, never pass as skipped."""
    if not docker_engine_reachable():
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true requires a reachable Docker engine for the docker backend")
        pytest.skip("no Docker engine reachable (the docker backend runs in CI)")


@pytest.fixture(scope="session")
def docker_guest_image() -> str:
    """The guest image, built locally once per session (no registry is reachable)."""
    from loopwright.sandbox.docker_image import ensure_image

    return ensure_image(DOCKER_IMAGE)


@pytest.fixture(params=["process", "docker"])
def sandbox_backend(request: pytest.FixtureRequest) -> str:
    """Each sandbox test runs on both backends; Docker is required when CI=true."""
    name = str(request.param)
    if name == "docker":
        require_docker_engine()
        request.getfixturevalue("docker_guest_image")
    return name


@pytest.fixture
def sandbox_cluster(make_cluster: Callable[..., Cluster], sandbox_backend: str) -> Cluster:
    """A cluster whose untrusted runs use ``sandbox_backend`` (short CPU limit for attacks)."""
    return make_cluster(
        sandbox_backend=sandbox_backend,
        sandbox_docker_image=DOCKER_IMAGE,
        sandbox_cpu_seconds=5,
        http_private_allow="127.0.0.1",
    )


def effects(path: Path) -> list[list[str]]:
    """Side-effect lines a skill appended to ``path`` (one list of fields per line)."""
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]
