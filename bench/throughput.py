"""Throughput of 1-step runs through a worker, against plain RQ jobs on the same Redis.

Both sides use an in-process RQ ``SimpleWorker`` in burst mode with the JSON serializer and the
same enqueue options (``timeout=-1``, ``result_ttl=0``), so the difference is what Loopwright
adds per run: the run record, the lease acquire, one checkpoint and the finish transition.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import ONE_STEP_SKILL, make_settings, summary
from redis import Redis
from rq import Queue, SimpleWorker
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from loopwright.assembly import build_runtime
from loopwright.runner.worker import run_worker

JOB = "bench.common.work"


@contextlib.contextmanager
def _keep_signal_handlers() -> Iterator[None]:
    """RQ's worker installs SIGINT/SIGTERM handlers; put ours back when it returns."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)


def _commands(conn: Redis) -> int:
    """Redis's count of commands executed so far (commands inside Lua scripts included)."""
    stats: dict[str, Any] = conn.info("stats")
    return int(stats["total_commands_processed"])


def plain_rq_round(redis_url: str, m: int) -> dict[str, float]:
    """Enqueue ``m`` trivial jobs one by one, then drain them with a burst ``SimpleWorker``."""
    conn = Redis.from_url(redis_url)
    try:
        queue = Queue(f"rqbench-{uuid.uuid4().hex[:8]}", connection=conn, serializer=JSONSerializer)
        t0 = time.perf_counter()
        for _ in range(m):
            queue.enqueue_call(JOB, args=(1,), timeout=-1, result_ttl=0, failure_ttl=24 * 3600)
        enqueue_s = time.perf_counter() - t0
        worker = SimpleWorker(
            [queue], connection=conn, serializer=JSONSerializer, log_job_description=False
        )
        with _keep_signal_handlers():
            c0 = _commands(conn)
            t0 = time.perf_counter()
            worker.work(burst=True, logging_level="WARNING")
            drain_s = time.perf_counter() - t0
            commands = (_commands(conn) - c0 - 1) / m
        failed = FailedJobRegistry(queue=queue).count
        if queue.count or failed:
            raise RuntimeError(f"plain RQ: {queue.count} jobs left, {failed} failed")
    finally:
        conn.close()
    return {"enqueue_s": enqueue_s, "drain_s": drain_s, "commands_per_job": commands}


def loopwright_round(redis_url: str, data_dir: Path, m: int) -> dict[str, float]:
    """Create ``m`` runs of a 1-step skill, then drain them with ``run_worker(burst=True)``."""
    rt = build_runtime(make_settings(redis_url, data_dir))
    try:
        version = rt.sources.put(ONE_STEP_SKILL, "bench-one")
        t0 = time.perf_counter()
        ids = [rt.runs.create(skill="bench-one", version=version, trusted=True) for _ in range(m)]
        enqueue_s = time.perf_counter() - t0
        with _keep_signal_handlers():
            c0 = _commands(rt.redis)
            t0 = time.perf_counter()
            run_worker(rt, burst=True)
            drain_s = time.perf_counter() - t0
            commands = (_commands(rt.redis) - c0 - 1) / m
        pipe = rt.redis.pipeline(transaction=False)
        for rid in ids:
            pipe.hget(rt.keys.run(rid), "status")
        statuses = pipe.execute()
        bad = sum(1 for s in statuses if s != "completed")
        if bad:
            raise RuntimeError(f"loopwright: {bad} of {m} runs did not complete")
    finally:
        rt.close()
    return {"enqueue_s": enqueue_s, "drain_s": drain_s, "commands_per_job": commands}


def measure_throughput(redis_url: str, data_dir: Path, m: int, rounds: int) -> dict[str, Any]:
    """Alternate plain-RQ and Loopwright rounds; medians of jobs/s and their ratio."""
    plain_rq_round(redis_url, min(m, 100))  # warm-up: imports, Lua script loading, pools
    loopwright_round(redis_url, data_dir, min(m, 100))
    rq_rounds: list[dict[str, float]] = []
    lw_rounds: list[dict[str, float]] = []
    for _ in range(rounds):
        rq_rounds.append(plain_rq_round(redis_url, m))
        lw_rounds.append(loopwright_round(redis_url, data_dir, m))

    def rates(rs: list[dict[str, float]]) -> dict[str, Any]:
        drain = [m / r["drain_s"] for r in rs]
        enqueue = [m / r["enqueue_s"] for r in rs]
        e2e = [m / (r["drain_s"] + r["enqueue_s"]) for r in rs]
        return {
            "drain_per_s": summary(drain),
            "enqueue_per_s": summary(enqueue),
            "end_to_end_per_s": summary(e2e),
            "commands_per_job": summary([r["commands_per_job"] for r in rs]),
            "rounds": rs,
        }

    rq, lw = rates(rq_rounds), rates(lw_rounds)
    return {
        "m": m,
        "rounds": rounds,
        "rq": rq,
        "loopwright": lw,
        "drain_ratio": lw["drain_per_s"]["median"] / rq["drain_per_s"]["median"],
        "enqueue_ratio": lw["enqueue_per_s"]["median"] / rq["enqueue_per_s"]["median"],
        "end_to_end_ratio": lw["end_to_end_per_s"]["median"] / rq["end_to_end_per_s"]["median"],
    }
