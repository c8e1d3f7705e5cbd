"""Shared plumbing for the runner benchmarks: a private redis-server, child processes, stats.

Everything that starts a process registers it with a :class:`Processes` owner so the
benchmark can kill it on exit, including on errors and Ctrl-C.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from redis import Redis

from loopwright.settings import Settings

REPO = Path(__file__).resolve().parent.parent
T = TypeVar("T")

# The N-step workload. ``work`` is also called directly as the plain-Python baseline.
CHAIN_SKILL = """
from loopwright.sdk import skill


def work(i):
    return {"i": i, "ok": True}


@skill(name="bench-chain")
def main(ctx):
    n = ctx.event["data"]["n"]
    for i in range(n):
        ctx.step.run(f"s{i}", work, i)
    return n
"""

# One trivial step: the unit of the throughput and memory measurements.
ONE_STEP_SKILL = """
from loopwright.sdk import skill


def work(i):
    return {"i": i, "ok": True}


@skill(name="bench-one")
def main(ctx):
    return ctx.step.run("one", work, 1)
"""


def work(i: int) -> dict[str, Any]:
    """The plain-RQ job of the throughput comparison (same body as the skills' step)."""
    return {"i": i, "ok": True}


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], T], timeout: float, interval: float = 0.01, what: str = "") -> T:
    """Poll ``pred`` until it returns something truthy; ``TimeoutError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what or 'condition'} not met within {timeout:g}s")
        time.sleep(interval)


class Processes:
    """Owner of every child process the benchmark starts; ``kill_all`` ends them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._procs: list[subprocess.Popen[bytes]] = []

    def spawn(
        self, argv: Sequence[str], env: dict[str, str] | None = None, name: str = "proc"
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own process group with output to a log file."""
        log_path = self.log_dir / f"{name}-{len(self._procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                list(argv),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.log_dir,
                start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the process group of ``proc`` (a child we started) and reap it."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def kill_all(self) -> None:
        """SIGKILL every child still running."""
        for proc in self._procs:
            if proc.poll() is None:
                self.kill(proc)
        self._procs.clear()


@dataclass
class RedisServer:
    """A private redis-server on a free loopback port, AOF on with ``appendfsync everysec``."""

    dir: Path
    procs: Processes
    binary: str = "redis-server"
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """``redis://`` URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        binary = shutil.which(self.binary) or "/usr/bin/redis-server"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.args = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--protected-mode", "no",
            "--daemonize", "no",
        ]  # fmt: skip
        self.proc = self.procs.spawn(self.args, name="redis")
        client = Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            wait_until(lambda: _ping(client), timeout=10, what="redis-server PING")
        finally:
            client.close()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL if it lingers)."""
        if self.proc is not None:
            self.procs.kill(self.proc, signal.SIGTERM)
            self.proc = None


def _ping(client: Redis) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def make_settings(redis_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """Settings bound to the bench Redis with a fresh key prefix and queue."""
    tag = uuid.uuid4().hex[:8]
    base: dict[str, Any] = {
        "redis_url": redis_url,
        "data_dir": data_dir,
        "key_prefix": f"bench{tag}",
        "queue": f"bench{tag}",
    }
    base.update(overrides)
    return Settings(**base)


def child_env(settings: Settings) -> dict[str, str]:
    """Environment for a ``loopwright.cli`` child: ``LOOPWRIGHT_*`` from ``settings`` only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWRIGHT_")}
    for name, value in settings.model_dump().items():
        if value is not None:
            env[f"LOOPWRIGHT_{name.upper()}"] = str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli_argv(*args: str) -> list[str]:
    """``python -m loopwright.cli ARGS`` with this interpreter."""
    return [sys.executable, "-m", "loopwright.cli", *args]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of a non-empty sample."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    """Median, p95, min, max and count of a sample."""
    return {
        "median": percentile(values, 50),
        "p95": percentile(values, 95),
        "min": min(values),
        "max": max(values),
        "n": float(len(values)),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _command_output(argv: list[str]) -> str:
    try:
        return subprocess.run(
            argv, check=False, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unavailable"


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def load_average() -> str:
    """The 1/5/15-minute load averages (other work on the machine skews the numbers)."""
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unavailable"


def machine_info(redis_url: str) -> dict[str, Any]:
    """The facts about this machine and software that the report states."""
    client = Redis.from_url(redis_url, decode_responses=True)
    try:
        info: dict[str, Any] = client.info("server")
        persistence: dict[str, Any] = client.config_get("append*")  # type: ignore[assignment]
    finally:
        client.close()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": _command_output(["nproc"]),
        "cpu": _cpu_model(),
        "free_g": _command_output(["free", "-g"]),
        "kernel": platform.release(),
        "loadavg_start": load_average(),
        "python": platform.python_version(),
        "redis_server": str(info.get("redis_version", "?")),
        "redis_persistence": {k: str(v) for k, v in persistence.items()},
        "redis_py": _package_version("redis"),
        "rq": _package_version("rq"),
        "dbos": _package_version("dbos"),
        "hiredis": _package_version("hiredis") != "not installed",
    }


def write_doc_section(path: Path, name: str, section: str) -> None:
    """Replace the ``name`` section of a Markdown file (between its HTML-comment markers, e.g.
    ``<!-- bench:runner:start -->``) or append it, leaving every other section alone."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{section.rstrip()}\n{end}\n"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail.lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def bench_parser(name: str, doc: str, quick_help: str = "few repetitions (smoke test)") -> Any:
    """The command line every benchmark takes: ``--quick``, ``--out FILE.md``, ``--json``."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", type=Path, help="write the section into this Markdown file")
    parser.add_argument("--json", type=Path, default=Path(f".bench/{name}.json"))
    return parser


def report(
    name: str, results: dict[str, Any], section: Callable[[dict[str, Any], str], str], args: Any
) -> int:
    """Write the JSON results, print the Markdown section and put it into ``--out``."""
    import json

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str))
    command = f".venv/bin/python bench/{name}.py" + (" --quick" if args.quick else "")
    if args.out:
        command += f" --out {args.out}"
    text = section(results, command)
    print(text)
    if args.out:
        write_doc_section(args.out, name, text)
    return 0


def run_benchmark(
    name: str,
    doc: str,
    measure: Callable[[bool], dict[str, Any]],
    section: Callable[[dict[str, Any], str], str],
    quick_help: str = "few repetitions (smoke test)",
) -> int:
    """A benchmark's whole command line: parse, check redis-server, measure, report."""
    args = bench_parser(name, doc, quick_help).parse_args()
    if not shutil.which("redis-server"):
        print("bench: redis-server is required", file=sys.stderr)
        return 1
    return report(name, measure(args.quick), section, args)
