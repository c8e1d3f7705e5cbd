"""Benchmark of run history in Redis (issue 10): memory per run, retention's cost, capacity.

    .venv/bin/python bench/history.py [--quick] [--out docs/benchmarks.md]

Against a private Redis (no workers: runs are written through the runner's own scripts,
create -> wake -> acquire -> five checkpoint commits -> finish, with typical outputs and log lines):
- Redis memory per finished 5-step run (``used_memory`` before and after N runs / N);
- memory after N runs without retention, and with retention deleting behind the writer
  (``run_retention`` 1 s, the scheduler's retention pass in a thread);
- the retention pass's cost: server time per deleted run (``INFO commandstats``), the longest
  single script call seen by the client, and a PING round trip measured in the same run.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Processes,
    RedisServer,
    load_average,
    machine_info,
    make_settings,
    run_benchmark,
    summary,
)

from loopwright.assembly import build_runtime
from loopwright.history.retention import TICK_BUDGET_S, Retention
from loopwright.runner.lease import Acquired
from loopwright.runner.records import StepRecord, encode_json, now_ms
from loopwright.runner.runtime import Runtime
from loopwright.runner.store import new_run_id
from loopwright.sdk.steps import StepKind
from loopwright.service.runs import RunService

SKILL = "bench-history"
VERSION = "v" * 64


def typical_output(i: int, seq: int) -> dict[str, Any]:
    """A step output of a few hundred bytes, as a metrics fetch or a classification returns."""
    return {
        "service": f"svc-{i % 40}",
        "step": seq,
        "p95_ms": 480 + (i * 7 + seq) % 500,
        "errors": (i + seq) % 3,
        "samples": [round(0.5 + ((i + k) % 17) / 10, 2) for k in range(12)],
        "verdict": "normal" if (i + seq) % 5 else "degraded",
        "checked": "2026-01-01T00:00:00Z",
    }


def write_finished_run(rt: Runtime, i: int = 0, steps: int = 5, logs: int = 3) -> str:
    """One completed run written through the runner's scripts: create, acquire, a checkpoint
    commit per step, log lines, finish. Returns its id."""
    # Created parked and woken without enqueueing: no RQ job (a worker deletes it after the
    # run anyway, and this benchmark measures what a finished run leaves behind).
    run_id = rt.runs.create(
        skill=SKILL, version=VERSION, data={"n": i, "source": "bench"}, wake_at=now_ms()
    )
    rt.transitions.wake(run_id)
    got = rt.leases.acquire(run_id, "bench")
    assert isinstance(got, Acquired), got
    t = now_ms()
    for seq in range(steps):
        out = encode_json(typical_output(i, seq), what="output", max_bytes=1 << 20)
        rec = StepRecord(seq, f"step-{seq}", StepKind.RUN, "done", started_at=t, ended_at=t + 3)
        rt.checkpoints.commit(run_id, got.token, rec, out)
    pipe = rt.redis.pipeline(transaction=False)
    for n in range(logs):
        line = {"ts": t, "level": "info", "step": n, "message": f"checked svc-{i % 40} ({n})"}
        pipe.rpush(rt.keys.logs(run_id), json.dumps(line))
    pipe.execute()
    final = json.dumps({"verdict": "normal", "services": 40})
    ok = rt.transitions.finish(run_id, got.token, "completed", final, "", 25)
    assert ok, run_id
    return run_id


# Bench only: copy finished template runs (written through the runner's scripts) under new
# ids, with their index entries, so 100,000 runs take seconds instead of an hour on a busy
# machine; every copy has the structure, encodings and sizes of a real run.
# KEYS: runs, runs_by_skill, ended, then per copy: template run, new run, template steps, new
#   steps, template logs, new logs
# ARGV: end time ms, then the new ids
CLONE_LUA = """
for i = 2, #ARGV do
  local b = 3 + (i - 2) * 6
  redis.call('COPY', KEYS[b + 1], KEYS[b + 2])
  redis.call('HSET', KEYS[b + 2], 'id', ARGV[i])
  redis.call('HDEL', KEYS[b + 2], 'pinned')  -- a copy of a pinned template is not pinned
  redis.call('COPY', KEYS[b + 3], KEYS[b + 4])
  redis.call('COPY', KEYS[b + 5], KEYS[b + 6])
  redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
  redis.call('ZADD', KEYS[2], ARGV[1], ARGV[i])
  redis.call('ZADD', KEYS[3], ARGV[1], ARGV[i])
end
return #ARGV - 1
"""


def clone_runs(rt: Runtime, templates: list[str], n: int, batch: int = 200) -> None:
    """``n`` copies of the template runs (round robin), ``batch`` per script call."""
    k, clone = rt.keys, rt.redis.register_script(CLONE_LUA)
    done = 0
    while done < n:
        ids = [new_run_id() for _ in range(min(batch, n - done))]
        keys = [k.runs, k.runs_by_skill(SKILL), k.ended]
        for j, rid in enumerate(ids):
            src = templates[(done + j) % len(templates)]
            keys += [k.run(src), k.run(rid), k.steps(src), k.steps(rid), k.logs(src), k.logs(rid)]
        clone(keys=keys, args=[now_ms(), *ids])
        done += len(ids)


def used_memory(rt: Runtime) -> int:
    """Redis ``used_memory`` in bytes."""
    return int(rt.redis.info("memory")["used_memory"])


def ping_us(rt: Runtime, n: int) -> dict[str, float]:
    """PING round trips (µs)."""
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        rt.redis.ping()
        times.append((time.perf_counter() - t0) * 1e6)
    return summary(times)


def memory_without_retention(rt: Runtime, n: int, templates: int) -> dict[str, Any]:
    """Memory per run over ``templates`` runs written through the scripts, then after ``n``
    runs in all (the rest copies of those) with nothing deleted."""
    before = used_memory(rt)
    t0 = time.perf_counter()
    ids = [write_finished_run(rt, i) for i in range(templates)]
    took = time.perf_counter() - t0
    written = used_memory(rt) - before
    clone_runs(rt, ids, n - templates)
    after = used_memory(rt)
    return {
        "runs": n,
        "templates": templates,
        "bytes_per_run": written / templates,
        "bytes_per_run_all": (after - before) / n,
        "bytes_total": after - before,
        "write_s_per_run": took / templates,
        "kept": int(rt.redis.zcard(rt.keys.runs)),
    }


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def retention_pass(rt: Runtime) -> dict[str, Any]:
    """Delete every run written so far (retention 0 s) and measure the scripts' cost."""
    ret = Retention(
        rt.redis, rt.keys, 0, rt.settings.event_retention, rt.settings.retention_batch_runs
    )
    rt.redis.config_resetstat()
    rt.redis.config_set("slowlog-max-len", 1_000_000)
    rt.redis.config_set("slowlog-log-slower-than", 0)  # every call, to find the longest
    rt.redis.slowlog_reset()
    deleted, calls, longest = 0, 0, 0.0
    t0 = time.perf_counter()
    while True:
        stats = ret.tick(budget_s=1.0)
        deleted += stats.deleted
        calls += stats.calls
        longest = max(longest, stats.longest_call_s)
        if stats.deleted == 0:
            break
    wall = time.perf_counter() - t0
    scripts = [
        int(e["duration"])
        for e in rt.redis.slowlog_get(1_000_000)
        if _text(e.get("command", "")).upper().startswith("EVALSHA")
    ]
    rt.redis.config_set("slowlog-log-slower-than", 10_000)
    rt.redis.slowlog_reset()
    cmd = rt.redis.info("commandstats").get("cmdstat_evalsha", {})
    server_us = float(cmd.get("usec", 0))
    return {
        "deleted": deleted,
        "calls": calls,
        "runs_per_call": deleted / max(1, calls),
        "server_us_per_run": server_us / max(1, deleted),
        "server_us_per_call": float(cmd.get("usec_per_call", 0)),
        "longest_call_ms": longest * 1000,
        "longest_server_us": max(scripts, default=0),
        "server_us_p99": sorted(scripts)[int(len(scripts) * 0.99)] if scripts else 0,
        "server_us_median": sorted(scripts)[len(scripts) // 2] if scripts else 0,
        "wall_us_per_run": wall * 1e6 / max(1, deleted),
        "left": int(rt.redis.zcard(rt.keys.runs)),
    }


def memory_with_retention(rt: Runtime, n: int, templates: int, rate: float) -> dict[str, Any]:
    """``n`` runs arriving at ``rate`` per second while the retention pass (1 s retention, in a
    thread as on the scheduler) deletes behind them: memory stays at arrival rate x (retention
    + the pass's lag) x run size."""
    before = used_memory(rt)
    ids = [write_finished_run(rt, i) for i in range(templates)]
    pins = RunService(rt.redis, rt.keys)
    for run_id in ids:  # the templates must outlive the retention to be copied
        pins.pin(run_id)
    ret = Retention(
        rt.redis, rt.keys, 1.0, rt.settings.event_retention, rt.settings.retention_batch_runs
    )
    stop = threading.Event()
    peak = [0]

    def purge() -> None:
        while not stop.is_set():
            ret.tick(budget_s=0.2)
            peak[0] = max(peak[0], used_memory(rt) - before)
            stop.wait(0.05)

    th = threading.Thread(target=purge, daemon=True)
    th.start()
    t0, done, step = time.perf_counter(), 0, 100
    while done < n - templates:
        clone_runs(rt, ids, min(step, n - templates - done))
        done += step
        ahead = t0 + done / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)  # pace the arrivals
    rate = (n - templates) / (time.perf_counter() - t0)
    stop.set()
    th.join()
    return {
        "runs": n,
        "arrival_per_s": rate,
        "bytes_total": used_memory(rt) - before,
        "peak_bytes": peak[0],
        "kept": int(rt.redis.zcard(rt.keys.runs)) - templates,
        "pinned": templates,
        "deleted": int(rt.redis.get(rt.keys.retention_deleted) or 0),
    }


def _on_fresh_redis(tmp: Path, name: str, work: Any) -> Any:
    """Run ``work(rt)`` against a private Redis of its own (memory figures start clean)."""
    procs = Processes(tmp / name)
    server = RedisServer(tmp / name / "redis", procs)
    server.start()
    try:
        rt = build_runtime(make_settings(server.url, tmp / name / "data"))
        rt.redis.config_set("appendonly", "no")  # memory, not disk, is measured here
        try:
            return work(rt, server.url)
        finally:
            rt.close()
    finally:
        server.stop()
        procs.kill_all()


def measure(quick: bool) -> dict[str, Any]:
    """Every measurement; the run without and the run with retention each on a fresh Redis."""
    n, templates, rate = (3000, 200, 1000.0) if quick else (100_000, 1000, 500.0)
    results: dict[str, Any] = {"quick": quick}

    def without(rt: Runtime, url: str) -> None:
        results["machine"] = machine_info(url)
        results["ping_us"] = ping_us(rt, 2000)
        results["without_retention"] = memory_without_retention(rt, n, templates)
        results["retention_pass"] = retention_pass(rt)

    def with_retention(rt: Runtime, url: str) -> None:
        results["with_retention"] = memory_with_retention(rt, n, templates // 4, rate)

    with tempfile.TemporaryDirectory() as tmp:
        _on_fresh_redis(Path(tmp), "without", without)
        _on_fresh_redis(Path(tmp), "with", with_retention)
    results["load"] = load_average()
    per_run = results["without_retention"]["bytes_per_run_all"]
    results["runs_per_gb"] = int(1024**3 / per_run) if per_run > 0 else 0
    # One scheduler spends up to TICK_BUDGET_S per tick (every reaper_interval, 0.25 s).
    wall = results["retention_pass"]["wall_us_per_run"] / 1e6
    results["deletes_per_s_one_scheduler"] = TICK_BUDGET_S / wall / 0.25 if wall else 0
    return results


def section(r: dict[str, Any], command: str) -> str:
    """The Markdown section for docs/benchmarks.md."""
    wo, rp, wr = r["without_retention"], r["retention_pass"], r["with_retention"]
    ping = r["ping_us"]
    return "\n".join(
        [
            "## Run history: memory and retention",
            "",
            f"`{command}` — {r['machine'].get('cpu', '?')}, redis "
            f"{r['machine'].get('redis_server', '?')}, load {r['load']}.",
            "",
            "| measurement | value |",
            "| --- | --- |",
            f"| Redis memory per finished 5-step run (typical outputs, 3 log lines; "
            f"{wo['templates']:,} runs written through the scripts) "
            f"| {wo['bytes_per_run']:,.0f} bytes |",
            f"| memory after {wo['runs']:,} runs, no retention | "
            f"{wo['bytes_total'] / 2**20:,.1f} MiB ({wo['kept']:,} runs kept; "
            f"{wo['bytes_per_run_all']:,.0f} bytes per run) |",
            f"| memory after {wr['runs']:,} runs arriving at {wr['arrival_per_s']:,.0f}/s, "
            f"retention 1 s | {wr['bytes_total'] / 2**20:,.1f} MiB ({wr['kept']:,} runs kept "
            f"and {wr['pinned']:,} pinned, peak {wr['peak_bytes'] / 2**20:,.1f} MiB) |",
            f"| implied capacity | {r['runs_per_gb']:,} finished runs per GB |",
            f"| deletion throughput of one scheduler (20 ms of each 250 ms tick) | "
            f"{r['deletes_per_s_one_scheduler']:,.0f} runs/s "
            f"({r['deletes_per_s_one_scheduler'] * 86400 / 1e6:,.1f} M runs/day) |",
            f"| retention: server time per deleted run | {rp['server_us_per_run']:.1f} µs |",
            f"| retention: server time per script call ({rp['runs_per_call']:.0f} runs) | "
            f"{rp['server_us_per_call']:.0f} µs |",
            f"| retention: one script call in Redis (SLOWLOG), median / p99 / longest | "
            f"{rp['server_us_median']:,} / {rp['server_us_p99']:,} / "
            f"{rp['longest_server_us']:,} µs |",
            f"| retention: longest single script call seen by the client (with round trip) | "
            f"{rp['longest_call_ms']:.2f} ms |",
            f"| retention: wall time per deleted run (reads + script) | "
            f"{rp['wall_us_per_run']:.1f} µs |",
            f"| PING round trip, same run (median / p95) | {ping['median']:.0f} / "
            f"{ping['p95']:.0f} µs |",
            f"| writing one run through the scripts (9 round trips) | "
            f"{wo['write_s_per_run'] * 1000:.2f} ms |",
            "",
            "- Memory per run is `used_memory` growth over the runs divided by their number: the "
            "run hash, the steps hash, the log list and the index entries (`runs`, "
            "`runs:skill:*`, `ended`). The first runs are written through the runner's scripts "
            "(create, wake, acquire, five checkpoint commits, finish); the rest up to the total "
            "are copies of them (`COPY` in one script per 200, same structure and sizes) so "
            "that 100,000 runs take seconds. With retention, memory stays at arrival rate x "
            "retention x bytes per run, whatever the number of runs written.",
            "- The retention pass row deletes every run of the no-retention row: its cost per "
            "run is what a steady 14-day retention pays per run it deletes.",
            "- Retention deletes in script calls of at most 10 runs (`LOOPWRIGHT_RETENTION_"
            "BATCH_RUNS`) and ~300 keys; the median call holds Redis about half a millisecond. "
            "The p99 and longest calls are those of a shared machine (compare the PING "
            "percentiles of the same run, and the load above): a smaller batch shortens every "
            "call in proportion. Large values are freed by `UNLINK` off the main thread.",
            "- With retention shorter than `LOOPWRIGHT_EVENT_RETENTION`, runs a trigger "
            "started leave a tombstone (~100 bytes) for the event retention; these runs were "
            "started by hand, so none is written here.",
        ]
    )


if __name__ == "__main__":
    sys.exit(run_benchmark("history", __doc__ or "", measure, section))
