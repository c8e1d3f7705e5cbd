"""DBOS Transact running the same N-step workflow, with a SQLite system database.

Runs in a child process (``python -m bench.dbos_bench``) so DBOS's background threads and
global state cannot disturb the Loopwright measurements; the parent reads its JSON result.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.common import REPO, Processes, summary


def _body(i: int) -> dict[str, Any]:
    return {"i": i, "ok": True}


def run_dbos(n: int, runs: int, workdir: Path, warmup: int = 3) -> dict[str, Any]:
    """Time ``runs`` executions of an ``n``-step workflow (and of a 0-step one) under DBOS."""
    from dbos import DBOS

    db_path = workdir / "dbos_sys.sqlite"
    DBOS(
        config={
            "name": "loopwright-bench",
            "system_database_url": f"sqlite:///{db_path}",
            "log_level": "WARNING",
        }
    )

    @DBOS.step()
    def step(i: int) -> dict[str, Any]:
        return _body(i)

    @DBOS.workflow()
    def chain(k: int) -> int:
        for i in range(k):
            step(i)
        return k

    DBOS.launch()
    try:
        for _ in range(warmup):
            chain(n)
        wf: list[float] = []
        wf0: list[float] = []
        plain: list[float] = []
        for _ in range(runs):
            t0 = time.perf_counter()
            chain(0)
            wf0.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for i in range(n):
                _body(i)
            plain.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            if chain(n) != n:
                raise RuntimeError("DBOS workflow returned a wrong result")
            wf.append(time.perf_counter() - t0)
    finally:
        DBOS.destroy()
    base0 = summary(wf0)["median"]
    with sqlite3.connect(db_path) as conn:  # same sqlite3 library and defaults as DBOS's engine
        journal = str(conn.execute("PRAGMA journal_mode").fetchone()[0])
        sync_level = int(conn.execute("PRAGMA synchronous").fetchone()[0])
    synchronous = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(sync_level, str(sync_level))
    return {
        "ok": True,
        "n": n,
        "runs": runs,
        "per_step_ms": summary([(t - p) / n * 1e3 for t, p in zip(wf, plain, strict=True)]),
        "marginal_ms": summary([(t - base0) / n * 1e3 for t in wf]),
        "workflow_ms": summary([t * 1e3 for t in wf]),
        "empty_workflow_ms": summary([t * 1e3 for t in wf0]),
        "sqlite_journal_mode": journal,
        "sqlite_synchronous": synchronous,
        "db_dir": str(workdir),
    }


def measure_dbos(
    procs: Processes, workdir: Path, n: int, runs: int, timeout: float = 600
) -> dict[str, Any]:
    """Run :func:`run_dbos` in a child process; on failure, the reason instead of numbers."""
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "dbos_result.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    argv = [sys.executable, "-m", "bench.dbos_bench", str(n), str(runs), str(workdir), str(out)]
    proc = procs.spawn(argv, env=env, name="dbos")
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        procs.kill(proc)
        return {"ok": False, "error": f"DBOS benchmark did not finish within {timeout:g}s"}
    if out.exists():
        result: dict[str, Any] = json.loads(out.read_text())
        return result
    log = sorted(procs.log_dir.glob("dbos-*.log"))
    tail = log[-1].read_text(errors="replace")[-2000:] if log else ""
    return {"ok": False, "error": f"DBOS child exited {proc.returncode}: {tail.strip()}"}


def main() -> None:
    """Child entry point: ``python -m bench.dbos_bench N RUNS WORKDIR OUT_JSON``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int)
    parser.add_argument("runs", type=int)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    try:
        result = run_dbos(args.n, args.runs, args.workdir)
    except Exception as exc:
        result = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-3000:],
        }
    args.out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
