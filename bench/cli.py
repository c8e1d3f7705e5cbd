"""CLI start-up benchmark (issue 14): whole-process wall time of common commands vs ``rq info``.

    .venv/bin/python bench/cli.py [--quick] [--out docs/benchmarks.md]

Against a private Redis, each round runs every command once as a new process (interleaved, so
load on the machine hits them alike) and the report gives the median and p95 per command and
the ratio to ``rq info`` measured in the same rounds. The target: ``loopwright --help``,
``runs list``, ``runs show RUN_ID`` and ``events send`` each at most as slow as ``rq info``.

It also measures the PING round trip with redis-py's pure-Python parser and with hiredis (the
C parser of ``redis[hiredis]``), by choosing the parser class of the connection pool.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REPO,
    Processes,
    RedisServer,
    child_env,
    cli_argv,
    load_average,
    machine_info,
    make_settings,
    run_benchmark,
    summary,
)
from redis import ConnectionPool, Redis

HELLO = str(REPO / "examples" / "hello_pipeline.py")
TARGETS = ("loopwright --help", "runs list", "runs show", "events send")
FLOOR = "import typer.main, pydantic_core, redis, rich.console, rich.table"


def _lw(*args: str) -> list[str]:
    """The ``loopwright`` console script, as a person runs it (and as ``rq`` is run); ``python
    -m loopwright.cli`` when it is not installed (runpy's package lookup adds ~10%)."""
    script = Path(sys.executable).with_name("loopwright")
    return [str(script), *args] if script.exists() else cli_argv(*args)


def _commands(url: str, run_id: str) -> dict[str, list[str]]:
    rq = str(Path(sys.executable).with_name("rq"))
    return {
        "rq info": [rq, "info", "--url", url],
        "loopwright --help": _lw("--help"),
        "runs list": _lw("runs", "list"),
        "runs show": _lw("runs", "show", run_id),
        "events send": _lw("events", "send", "bench.cli", "--data", '{"n": 1}'),
        # Baselines that explain the numbers: an empty interpreter, and the imports any
        # command reading the settings cannot avoid (typer; pydantic-core, which validates
        # the settings; Redis; rich for the output).
        "python -c pass": [sys.executable, "-c", "pass"],
        "import floor": [sys.executable, "-c", FLOOR],
    }


def _cpu_children() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``argv``, in seconds."""
    cpu, began = _cpu_children(), time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, check=False, timeout=120)
    took = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} failed: {proc.stderr.decode()[-500:]}")
    return took, _cpu_children() - cpu


def startup(
    url: str, env: dict[str, str], rounds: int
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Wall time and CPU time per command, interleaved rounds, in ms."""
    # As installed: Python may cache bytecode (pip compiles site-packages at install; our
    # modules are compiled on the warm-up run). With PYTHONDONTWRITEBYTECODE set, as in some
    # CI shells, every Loopwright module would be compiled from source on every run while
    # rq's came precompiled from the wheel, and the comparison would measure the compiler.
    env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for _ in range(3):  # a few runs to list and show (no worker: they stay queued)
        out = subprocess.run(
            cli_argv("run", HELLO, "--json"), env=env, capture_output=True, check=True
        )
    run_id = json.loads(out.stdout)["run_id"]
    commands = _commands(url, run_id)
    times: dict[str, list[float]] = {name: [] for name in commands}
    cpus: dict[str, list[float]] = {name: [] for name in commands}
    for argv in commands.values():  # warm the page cache and .pyc files
        _timed(argv, env)
    for _ in range(rounds):
        for name, argv in commands.items():
            wall, cpu = _timed(argv, env)
            times[name].append(wall * 1000)
            cpus[name].append(cpu * 1000)
    return (
        {name: summary(values) for name, values in times.items()},
        {name: summary(values) for name, values in cpus.items()},
    )


def _ping_us(url: str, parser: Any, n: int) -> float:
    pool = ConnectionPool.from_url(url, parser_class=parser)
    client = Redis(connection_pool=pool)
    try:
        client.ping()
        samples = []
        for _ in range(n):
            began = time.perf_counter()
            client.ping()
            samples.append((time.perf_counter() - began) * 1e6)
        return statistics.median(samples)
    finally:
        client.close()
        pool.disconnect()


def ping(url: str, n: int) -> dict[str, Any]:
    """Median PING round trip (µs) with each parser, alternating blocks of ``n``."""
    from redis._parsers import _HiredisParser, _RESP2Parser

    try:
        import hiredis  # noqa: F401
    except ImportError:
        return {"python_us": _ping_us(url, _RESP2Parser, n), "hiredis_us": None}
    py: list[float] = []
    hi: list[float] = []
    for _ in range(5):
        py.append(_ping_us(url, _RESP2Parser, n))
        hi.append(_ping_us(url, _HiredisParser, n))
    return {"python_us": statistics.median(py), "hiredis_us": statistics.median(hi)}


def measure(quick: bool) -> dict[str, Any]:
    """Start a private Redis, run every measurement, stop it."""
    with tempfile.TemporaryDirectory(prefix="lw-bench-cli-") as tmp:
        procs = Processes(Path(tmp))
        try:
            redis = RedisServer(Path(tmp) / "redis", procs)
            redis.start()
            settings = make_settings(redis.url, Path(tmp) / "data")
            results: dict[str, Any] = {"machine": machine_info(redis.url)}
            wall, cpu = startup(redis.url, child_env(settings), 3 if quick else 15)
            results["startup_ms"], results["startup_cpu_ms"] = wall, cpu
            results["ping"] = ping(redis.url, 200 if quick else 2000)
            results["loadavg_end"] = load_average()
            return results
        finally:
            procs.kill_all()


def _verdict(ms: dict[str, dict[str, float]]) -> str:
    """What the numbers say about the target."""
    base, floor = ms["rq info"]["median"], ms["import floor"]["median"]
    missed = [n for n in TARGETS if ms[n]["median"] > base]
    if not missed:
        return "Every target command is at most as slow as `rq info`."
    worst = max(ms[n]["median"] for n in missed)
    return (
        f"Not met by {', '.join(f'`{n}`' for n in missed)}. The import floor is "
        f"{floor / base:.2f}x `rq info`; the slowest target command is {worst / floor:.2f}x "
        f"the floor (Loopwright's own modules, the settings and the Redis calls)."
    )


def section(r: dict[str, Any], command: str) -> str:
    """The Markdown section of docs/benchmarks.md."""
    m = r["machine"]
    base = r["startup_ms"]["rq info"]["median"]
    lines = [
        "## CLI start-up",
        "",
        f"`{command}` — {m['date']}, {m['nproc']} CPU ({m['cpu']}), Python {m['python']}, "
        f"redis-py {m['redis_py']}, rq {m['rq']}, hiredis installed: {m['hiredis']}; "
        f"load average {m['loadavg_start']} at the start, {r['loadavg_end']} at the end.",
        "",
        "Whole-process wall time (a new interpreter per run, interleaved rounds, after a warm-up "
        "run of each; both CLIs through their console scripts, `loopwright` and `rq`); the "
        "target is each listed command at most as slow as `rq info` in the same run.",
        "",
        "| command | median ms | p95 ms | vs `rq info` | target | CPU ms | CPU vs `rq info` |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    cpu = r.get("startup_cpu_ms", {})
    cpu_base = cpu.get("rq info", {}).get("median") or float("nan")
    for name, s in r["startup_ms"].items():
        ratio = s["median"] / base
        target = ("met" if ratio <= 1.0 else "NOT met") if name in TARGETS else "reference"
        c = cpu.get(name, {}).get("median", float("nan"))
        lines.append(
            f"| `{name}` | {s['median']:.0f} | {s['p95']:.0f} | {ratio:.2f}x | {target} "
            f"| {c:.0f} | {c / cpu_base:.2f}x |"
        )
    p = r["ping"]
    lines.append("")
    if p["hiredis_us"] is None:
        lines.append(f"PING round trip: {p['python_us']:.0f} µs (hiredis not installed).")
    else:
        gain = (1 - p["hiredis_us"] / p["python_us"]) * 100
        lines.append(
            f"PING round trip (median): {p['python_us']:.0f} µs with redis-py's Python parser, "
            f"{p['hiredis_us']:.0f} µs with hiredis ({gain:.0f}% less)."
        )
    lines += [
        "",
        "CPU ms is the median user + system time of the command's process: on a machine "
        "shared with other work the wall times swing by tens of percent between runs, the "
        "CPU time much less, so the two ratios together say more than either.",
        "",
        f"`import floor` is `python -c '{FLOOR}'`: the libraries a command that prints a table "
        "could load before any Loopwright code runs (`rq info` loads click and rq instead). "
        "A hot command loads pydantic-core only when a setting is invalid "
        "(`loopwright.envmodel`), so it can run below this floor.",
        "",
        _verdict(r["startup_ms"]),
        "",
        "What keeps start-up low: a command's module is imported and its function converted "
        "by typer only when that command runs (`cli/lazy.py`, the `COMMANDS` table in "
        "`cli/main.py`); command modules import only typer and `cli.common` at the top; the "
        "settings are declared as pydantic models are but validated by `loopwright.envmodel` "
        "(plain Python for valid values, pydantic-core only for a bad one) instead of "
        "pydantic-settings (~0.3 s); typer is pinned below 0.27, which coerces every "
        "parameter through pydantic; redis-py's client identity is given, not looked up in "
        "the installed packages' metadata. Children keep their bytecode cache "
        "(`PYTHONDONTWRITEBYTECODE` is dropped for them), as an installed CLI has. "
        "`tests/test_cli_startup.py` fails when a hot command imports pydantic, the agent, "
        "the providers, the sidecar or the sandbox.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(run_benchmark("cli", __doc__ or "", measure, section))
