"""Benchmarks of triggers (issue 5): event-to-run-start latency and cron firing precision.

    .venv/bin/python bench/triggers.py [--quick] [--out docs/benchmarks.md]

Real processes against a private Redis: one ``loopwright scheduler`` (event router + cron) and
one ``loopwright worker`` with a warm sandbox guest. Event latency: from ``send`` returning to
the run's start (``started_at``, taken by the worker's lease acquire from the Redis clock),
one event at a time so the worker is warm and idle. Cron precision: for a skill ticking every
second, how late each tick's run was created after the tick time.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Processes,
    RedisServer,
    child_env,
    cli_argv,
    load_average,
    machine_info,
    make_settings,
    run_benchmark,
    summary,
    wait_until,
)

from loopwright.assembly import build_runtime
from loopwright.runner.runtime import Runtime

ON_EVENT = """
from loopwright.sdk import skill, event

@skill(name="on-ping", trigger=event("bench.ping"))
def main(ctx):
    return ctx.step.run("pong", lambda: ctx.event["data"]["i"])
"""

EVERY_SECOND = """
from loopwright.sdk import skill, cron

@skill(name="every-second", trigger=cron("* * * * * *"))
def main(ctx):
    return ctx.step.run("tick", lambda: ctx.event["data"]["tick_ms"])
"""


def _server_ms(rt: Runtime) -> int:
    sec, usec = rt.redis.time()
    return int(sec) * 1000 + int(usec) // 1000


def event_latencies(rt: Runtime, n: int) -> list[float]:
    """Seconds from an event's acceptance to its run's start, one event at a time."""
    rt.sources.put(ON_EVENT, "on-ping")
    time.sleep(0.5)  # the router sees the skill on its next catalog read
    out: list[float] = []
    for i in range(n + 5):
        sent_ms = _server_ms(rt)
        sent = rt.bus.send("bench.ping", {"i": i})
        claim = rt.keys.trigger_done(f"ev:{sent.id}", "on-ping")

        def created(key: str = claim) -> str | None:
            value = rt.redis.get(key)
            return str(value) if value else None

        run_id = wait_until(created, timeout=30, what="run created")
        assert run_id is not None

        def started(rid: str = run_id) -> int | None:
            # The claim is written just before the run (claim-then-create): it may not exist yet.
            return rt.runs.get(rid).started_at if rt.runs.exists(rid) else None

        started_at = wait_until(started, timeout=30, what="run started")
        assert started_at is not None
        if i >= 5:  # the first few warm up the router's and the worker's caches
            out.append((started_at - sent_ms) / 1000.0)
        rt.runs.wait(run_id, timeout=30)
        time.sleep(0.12)  # let the worker's pool start the next guest, as between real events
    return out


def cron_lateness(rt: Runtime, seconds: int) -> list[float]:
    """Seconds between each tick and the creation of its run."""
    rt.sources.put(EVERY_SECOND, "every-second")
    time.sleep(seconds + 1.5)
    runs = rt.runs.find(skill="every-second", limit=10_000)
    return [(r.created_at - int(r.trigger["tick_ms"])) / 1000.0 for r in runs]


def measure(quick: bool) -> dict[str, Any]:
    """Both measurements in one go."""
    results: dict[str, Any] = {"load_start": load_average()}
    with tempfile.TemporaryDirectory(prefix="lw-bench-trig-") as tmp:
        (Path(tmp) / "logs").mkdir()
        procs = Processes(Path(tmp) / "logs")
        redis = RedisServer(Path(tmp) / "redis", procs)
        try:
            redis.start()
            results["machine"] = machine_info(redis.url)
            settings = make_settings(redis.url, Path(tmp) / "data")
            env = child_env(settings)
            procs.spawn(cli_argv("scheduler"), env=env, name="scheduler")
            procs.spawn(cli_argv("worker"), env=env, name="worker")
            rt = build_runtime(settings)
            try:
                wait_until(
                    lambda: rt.redis.exists(rt.keys.scheduler_heartbeat), 30, what="scheduler"
                )
                results["event"] = summary(event_latencies(rt, 30 if quick else 200))
                results["cron"] = summary(cron_lateness(rt, 10 if quick else 60))
            finally:
                rt.close()
        finally:
            procs.kill_all()
    results["load_end"] = load_average()
    return results


def section(r: dict[str, Any], command: str) -> str:
    """The Markdown section for docs/benchmarks.md."""
    ev, cr, m = r["event"], r["cron"], r["machine"]
    return "\n".join(
        [
            "## Triggers (issue 5)",
            "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `{command}`: "
            f"one `loopwright scheduler` (router + cron) and one `loopwright worker` (warm "
            f"sandbox guest) on a private Redis. Machine: {m.get('nproc')} CPUs "
            f"({m.get('cpu')}), Python {m.get('python')}, Redis {m.get('redis_server')}; load "
            f"average {r['load_start']} at start, {r['load_end']} at end.",
            "",
            "| Measurement | Result | Target | Verdict |",
            "| --- | --- | --- | --- |",
            f"| Event accepted -> run started ({int(ev['n'])} events, one at a time) | "
            f"p50 {ev['median'] * 1000:.1f} ms, p95 {ev['p95'] * 1000:.1f} ms | p50 < 25 ms | "
            f"{'PASS' if ev['median'] < 0.025 else 'MISS'} |",
            f"| Cron tick -> run created ({int(cr['n'])} ticks, every second) | "
            f"p50 {cr['median'] * 1000:.0f} ms, p95 {cr['p95'] * 1000:.0f} ms late | "
            f"p95 < 1 s | {'PASS' if cr['p95'] < 1.0 else 'MISS'} |",
            "",
            "- Event path: the send script appends to the stream; the router's blocking "
            "XREADGROUP wakes, matches the trigger, claims the (event id, skill) start and "
            "creates the run with its RQ job in one transaction; the worker's BLPOP wakes and "
            "the acquire script starts the run (`started_at` is the Redis clock).",
            "- Cron: the leader checks due ticks every scheduler tick (`reaper_interval`, "
            "0.25 s), so a tick is late by up to one interval plus the start itself.",
        ]
    )


def main() -> int:
    """Command line entry point."""
    return run_benchmark("triggers", __doc__ or "", measure, section)


if __name__ == "__main__":
    sys.exit(main())
