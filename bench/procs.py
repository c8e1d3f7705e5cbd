"""Measurements with real worker and scheduler processes started through the CLI.

* resume after SIGKILL: a worker is killed inside a long step; how long until the step body
  starts again in a freshly started worker.
* worker memory: RSS of one worker process before and after thousands of runs.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench.common import (
    ONE_STEP_SKILL,
    Processes,
    child_env,
    cli_argv,
    make_settings,
    summary,
    wait_until,
)
from rq import Worker

from loopwright.assembly import build_runtime
from loopwright.runner.runtime import Runtime

# Step 2 appends "<pid> <unix time>" to the marker file as its first action, then sleeps long
# on the first attempt only, so the resumed attempt finishes the run quickly.
RESUME_SKILL = """
import os
import time
from loopwright.sdk import skill


def mark(path, pause):
    first = not os.path.exists(path)
    with open(path, "a") as f:
        f.write(f"{os.getpid()} {time.time():.6f}\\n")
    if first:
        time.sleep(pause)
    return {"pid": os.getpid()}


@skill(name="bench-resume")
def main(ctx):
    d = ctx.event["data"]
    ctx.step.run("first", lambda: {"ok": True})
    return ctx.step.run("long", mark, d["marker"], d["pause"])
"""


def _marks(path: Path) -> list[tuple[int, float]]:
    if not path.exists():
        return []
    out: list[tuple[int, float]] = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            out.append((int(parts[0]), float(parts[1])))
    return out


def _mark_of(path: Path, pid: int) -> float | None:
    for p, ts in _marks(path):
        if p == pid:
            return ts
    return None


def _start_worker(procs: Processes, rt: Runtime, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """Start a worker process and wait until RQ lists it on the queue."""
    queue = rt.dispatcher.queue
    before = Worker.count(queue=queue)
    proc = procs.spawn(cli_argv("worker"), env, name="worker")
    wait_until(
        lambda: Worker.count(queue=queue) > before or proc.poll() is not None,
        timeout=30,
        what="worker registration",
    )
    if proc.poll() is not None:
        raise RuntimeError(f"worker exited at start-up with code {proc.returncode}")
    return proc


def resume_trials(
    procs: Processes, redis_url: str, workdir: Path, lease_ttl: float | None, trials: int
) -> dict[str, Any]:
    """SIGKILL a worker inside step 2 ``trials`` times; time until step 2 restarts elsewhere.

    The kill moment is spread evenly over one lease-renewal period (renewals happen every
    TTL/2), from right after step 2 starts - the worst case, when the lease was just taken or
    renewed - to just before the next renewal, because a real crash lands anywhere in it.
    """
    overrides: dict[str, Any] = {} if lease_ttl is None else {"lease_ttl": lease_ttl}
    settings = make_settings(redis_url, workdir / "data", **overrides)
    env = child_env(settings)
    rt = build_runtime(settings)
    ttl = settings.lease_ttl
    rows: list[dict[str, Any]] = []
    try:
        version = rt.sources.put(RESUME_SKILL, "bench-resume")
        scheduler = procs.spawn(cli_argv("scheduler"), env, name="scheduler")
        for k in range(trials):
            marker = workdir / f"marker-{ttl:g}-{k}"
            first = _start_worker(procs, rt, env)
            run_id = rt.runs.create(
                skill="bench-resume",
                version=version,
                data={"marker": str(marker), "pause": 300},
                trusted=True,
            )
            seen = functools.partial(_mark_of, marker, first.pid)
            wait_until(seen, timeout=30, what="step 2 marker")
            time.sleep(k / trials * ttl / 2)
            lease_until = int(rt.redis.hget(rt.keys.run(run_id), "lease_until") or 0)
            os.killpg(first.pid, signal.SIGKILL)
            killed = time.time()
            queue = rt.dispatcher.queue
            before = Worker.count(queue=queue)
            second = procs.spawn(cli_argv("worker"), env, name="worker")
            ready: float | None = None
            resumed: float | None = None
            deadline = time.monotonic() + 60
            while resumed is None and time.monotonic() < deadline:
                if ready is None and Worker.count(queue=queue) > before:
                    ready = time.time()
                resumed = _mark_of(marker, second.pid)
                time.sleep(0.005)
            if resumed is None:
                raise RuntimeError(f"run {run_id}: step 2 did not resume within 60s of the kill")
            run = rt.runs.wait(run_id, timeout=30)
            rows.append(
                {
                    "resume_s": resumed - killed,
                    "lease_left_s": lease_until / 1000.0 - killed,
                    "worker_ready_s": (ready - killed) if ready is not None else None,
                    "kill_delay_s": k / trials * ttl / 2,
                    "status": run.status.value,
                    "reaps": run.reaps,
                }
            )
            procs.kill(first)
            procs.kill(second)
            if run.status.value != "completed" or run.reaps != 1:
                raise RuntimeError(
                    f"run {run_id} ended {run.status.value} with {run.reaps} reaps after resume"
                )
        procs.kill(scheduler)
    finally:
        rt.close()
    return {
        "lease_ttl": ttl,
        "reaper_interval": settings.reaper_interval,
        "trials": rows,
        "resume_s": summary([r["resume_s"] for r in rows]),
        "lease_left_s": summary([r["lease_left_s"] for r in rows]),
        "worker_ready_s": summary([r["worker_ready_s"] for r in rows if r["worker_ready_s"]]),
        "after_expiry_s": summary([r["resume_s"] - r["lease_left_s"] for r in rows]),
    }


def rss_kb(pid: int) -> int:
    """Resident set size (VmRSS) of ``pid`` in kB, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def worker_memory(
    procs: Processes, redis_url: str, workdir: Path, total: int, first: int = 100
) -> dict[str, Any]:
    """RSS of one worker after ``first`` 1-step runs and again after ``total`` runs."""
    settings = make_settings(redis_url, workdir / "data")
    env = child_env(settings)
    rt = build_runtime(settings)
    try:
        version = rt.sources.put(ONE_STEP_SKILL, "bench-one")
        worker = _start_worker(procs, rt, env)
        idle = rss_kb(worker.pid)
        done = 0
        series: list[tuple[int, int]] = []
        checkpoints = sorted({first, *range(1000, total, 1000), total})
        for upto in checkpoints:
            ids = [
                rt.runs.create(skill="bench-one", version=version, trusted=True)
                for _ in range(upto - done)
            ]
            last = rt.runs.wait(ids[-1], timeout=300)
            if not last.status.terminal:
                raise RuntimeError(f"memory bench: run {ids[-1]} still {last.status.value}")
            pipe = rt.redis.pipeline(transaction=False)
            for rid in ids:
                pipe.hget(rt.keys.run(rid), "status")
            bad = sum(1 for s in pipe.execute() if s != "completed")
            if bad:
                raise RuntimeError(f"memory bench: {bad} runs did not complete")
            done = upto
            time.sleep(0.3)
            series.append((done, rss_kb(worker.pid)))
        procs.kill(worker)
    finally:
        rt.close()
    after_first = series[0][1]
    after_all = series[-1][1]
    return {
        "idle_kb": idle,
        "after_first": {"runs": series[0][0], "rss_kb": after_first},
        "after_all": {"runs": series[-1][0], "rss_kb": after_all},
        "growth_mb": (after_all - after_first) / 1024.0,
        "series": series,
    }
