"""Benchmarks of the durable runner (issue 2): one command, everything measured in one go.

    .venv/bin/python bench/run.py [--quick] [--out docs/benchmarks.md] [--json PATH]

Starts a private redis-server (AOF on, ``appendfsync everysec``) on a free loopback port in a
temp dir, measures every item against baselines taken in the same run, prints a table with
targets and PASS/MISS, writes the raw results as JSON and, with ``--out``, the report section.
Every process it starts is killed on exit, including on errors, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` and the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    REPO,
    Processes,
    RedisServer,
    load_average,
    machine_info,
    make_settings,
)
from bench.dbos_bench import measure_dbos
from bench.inproc import measure_fresh_fsync_always, measure_ping, measure_steps
from bench.procs import resume_trials, worker_memory
from bench.report import build_rows, markdown_section, text_table, write_section
from bench.throughput import measure_throughput

from loopwright.assembly import build_runtime


@dataclass(frozen=True, slots=True)
class Profile:
    """Sizes and repetitions of one benchmark mode."""

    name: str
    pings: int
    steps: int
    step_runs: int
    fsync_runs: int
    dbos_runs: int
    jobs: int
    rounds: int
    resume_trials: int
    memory_runs: int


FULL = Profile("full", 2000, 200, 30, 10, 30, 2000, 3, 5, 10_000)
QUICK = Profile("quick", 300, 200, 5, 3, 5, 200, 1, 1, 1_000)


def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def run_all(p: Profile, server: RedisServer, procs: Processes, tmp: Path) -> dict[str, Any]:
    """Every measurement, in order, against ``server``."""
    url = server.url
    results: dict[str, Any] = {"profile": asdict(p), "machine": machine_info(url)}
    results["redis_args"] = server.args[1:]
    _log(f"redis-server on {url} (appendonly yes, appendfsync everysec)")

    _log(f"1. PING round trip x{p.pings}")
    results["ping"] = measure_ping(url, p.pings)

    rt = build_runtime(make_settings(url, tmp / "data"))
    try:
        _log(f"2-3. fresh and replayed {p.steps}-step runs x{p.step_runs} (plus 0 and 2N)")
        results["steps"] = measure_steps(rt, p.steps, p.step_runs)
        _log(f"    fresh runs with appendfsync always x{p.fsync_runs}")
        results["fsync_always"] = measure_fresh_fsync_always(rt, p.steps, p.fsync_runs)
    finally:
        rt.close()

    _log(f"4. DBOS Transact, {p.steps}-step workflow x{p.dbos_runs} (child process)")
    results["dbos"] = measure_dbos(procs, tmp / "dbos", p.steps, p.dbos_runs)
    if not results["dbos"].get("ok"):
        _log(f"    DBOS failed: {results['dbos'].get('error')}")
    shm = Path("/dev/shm")
    if results["dbos"].get("ok") and shm.is_dir():
        _log(f"    DBOS again with the SQLite file on tmpfs (fsync is free) x{p.fsync_runs}")
        shm_dir = Path(tempfile.mkdtemp(prefix="loopwright-bench-dbos-", dir=shm))
        try:
            results["dbos_tmpfs"] = measure_dbos(procs, shm_dir, p.steps, p.fsync_runs)
        finally:
            shutil.rmtree(shm_dir, ignore_errors=True)

    _log(f"5. throughput: {p.jobs} jobs/runs x{p.rounds} alternating rounds")
    results["throughput"] = measure_throughput(url, tmp / "data", p.jobs, p.rounds)

    results["resume"] = []
    for ttl in (None, 1.0):
        _log(f"6. resume after SIGKILL, lease_ttl={ttl or 'default'}, {p.resume_trials} kills")
        work = tmp / f"resume-{ttl or 'default'}"
        work.mkdir()
        results["resume"].append(resume_trials(procs, url, work, ttl, p.resume_trials))

    _log(f"7. worker memory over {p.memory_runs} runs")
    (tmp / "memory").mkdir()
    results["memory"] = worker_memory(procs, url, tmp / "memory", p.memory_runs)
    results["machine"]["loadavg_end"] = load_average()
    return results


def main(argv: list[str] | None = None) -> int:
    """Parse options, run the benchmark with a private Redis, report; returns the exit code."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run (<60s)")
    parser.add_argument("--out", type=Path, help="write the report section to this Markdown file")
    parser.add_argument(
        "--json", type=Path, default=REPO / ".bench" / "results.json", help="raw results file"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, AOF)")
    args = parser.parse_args(argv)
    profile = QUICK if args.quick else FULL
    command = shlex.join([".venv/bin/python", "bench/run.py", *(argv or sys.argv[1:])])

    signal.signal(signal.SIGTERM, _on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="loopwright-bench-"))
    procs = Processes(tmp)
    server = RedisServer(tmp / "redis", procs)
    started = time.monotonic()
    try:
        server.start()
        results = run_all(profile, server, procs, tmp)
    finally:
        procs.kill_all()
        if args.keep:
            _log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    results["command"] = command
    results["elapsed_s"] = time.monotonic() - started

    rows = build_rows(results)
    print(text_table(rows))
    print(f"\n{profile.name} run in {results['elapsed_s']:.0f}s; raw results: {args.json}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.out is not None:
        write_section(args.out, markdown_section(results, rows))
        print(f"wrote the runner section of {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
