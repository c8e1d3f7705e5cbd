"""Benchmarks of the sandbox (issue 3): guest start-up, step RPC cost, what a warm guest adds.

    .venv/bin/python bench/sandbox.py [--quick] [--out docs/benchmarks.md]

Measured in one run, against baselines taken in the same run:
- guest start to ``ready``: cold with bubblewrap, cold without it (plain ``python -I``), taken
  from a warm pool, and the Docker backend's cold and warm starts when an engine is reachable;
- one step RPC round trip (guest -> host -> guest) over the JSON-lines pipe;
- what a warm sandboxed guest adds to a 1-step run, against the same run executed trusted
  (in the worker process), both through ``Executor.execute`` on a private Redis.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import itertools

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
from loopwright.runner.execute import Executor
from loopwright.runner.runtime import Runtime
from loopwright.sandbox.host import Guest, run_session, wait_ready
from loopwright.sandbox.limits import GuestLimits
from loopwright.sandbox.process import ProcessBackend

STEPS_SKILL = """
from loopwright.sdk import skill

@skill(name="rpc-steps")
def main(ctx):
    n = ctx.event["data"]["n"]
    for i in range(n):
        ctx.step.run("s", lambda: i)
    return n
"""

ONE_STEP = """
from loopwright.sdk import skill

@skill(name="one-step")
def main(ctx):
    return ctx.step.run("only", lambda: 1)
"""


def _ms(values: list[float]) -> dict[str, float]:
    return {k: (v * 1000 if k != "n" else v) for k, v in summary(values).items()}


def cold_starts(backend: ProcessBackend, n: int) -> list[float]:
    """Spawn-to-ready times of fresh guests."""
    out = []
    for _ in range(n):
        began = time.perf_counter()
        guest = backend.spawn()
        wait_ready(guest, 30)
        out.append(time.perf_counter() - began)
        guest.kill()
    return out


def warm_acquires(backend: Any, n: int, boot: float) -> list[float]:
    """Time to get a ready guest from a pool that had ``boot`` seconds to pre-start it."""
    out = []
    backend.refill()
    for _ in range(n):
        time.sleep(boot)
        began = time.perf_counter()
        guest = backend.acquire()
        out.append(time.perf_counter() - began)
        guest.kill()
    return out


def rpc_round_trips(backend: ProcessBackend, steps: int) -> list[float]:
    """Per round trip: a step is two round trips (begin, done) answered at once."""
    guest: Guest = backend.acquire()
    stamps: list[float] = []

    def handler(msg: dict[str, Any]) -> dict[str, Any]:
        if msg["op"] == "step.done":
            stamps.append(time.perf_counter())
        return {"ok": {"seq": 1}} if msg["op"] == "step.begin" else {"ok": {}}

    start = {"source": STEPS_SKILL, "run_id": "b", "event": {"data": {"n": steps}}, "params": {}}
    run_session(guest, start, handler, time.monotonic() + 120)
    per_step = [b - a for a, b in itertools.pairwise(stamps)]
    return [d / 2 for d in per_step]


def added_by_sandbox(rt: Runtime, rounds: int) -> dict[str, list[float]]:
    """1-step run executed trusted vs sandboxed (warm pool), alternating, via the executor."""
    version = rt.sources.put(ONE_STEP, "one-step")
    times: dict[str, list[float]] = {"trusted": [], "sandboxed": []}
    rt.sandbox.refill()
    ex = Executor(rt)
    for _ in range(rounds):
        for mode in ("trusted", "sandboxed"):
            run_id = rt.runs.create(skill="one-step", version=version, trusted=mode == "trusted")
            time.sleep(0.15)  # let the pool's next guest boot, as between runs on a worker
            began = time.perf_counter()
            outcome = ex.execute(run_id)
            times[mode].append(time.perf_counter() - began)
            if outcome != "completed":
                raise RuntimeError(f"{mode} run ended {outcome}: {rt.runs.get(run_id).error}")
    return times


def docker_numbers(n: int) -> dict[str, Any]:
    """Docker backend cold start-to-ready and warm-pool acquire, or why they were not measured
    (a measurement, not a test: it used to be a test that asserted nothing). The image tag
    can be set per checkout with ``LOOPWRIGHT_BENCH_DOCKER_IMAGE``."""
    try:
        from loopwright.sandbox.docker import DockerBackend
        from loopwright.sandbox.docker_image import ensure_image
    except ImportError as exc:
        return {"skipped": f"docker backend not importable: {exc}"}
    try:
        image = ensure_image(
            os.environ.get("LOOPWRIGHT_BENCH_DOCKER_IMAGE", "loopwright-guest:bench")
        )
        backend = DockerBackend(GuestLimits(), image=image, pool_size=0)
    except Exception as exc:
        return {"skipped": f"no Docker engine/image: {type(exc).__name__}: {exc}"[:300]}
    try:
        cold = []
        for _ in range(n):
            began = time.perf_counter()
            guest = backend.acquire()
            cold.append(time.perf_counter() - began)
            guest.kill()
        warm_backend = DockerBackend(GuestLimits(), image=image, pool_size=1)
        try:
            warm = warm_acquires(warm_backend, n, boot=1.5)
        finally:
            warm_backend.close()
        return {"cold": _ms(cold), "warm": _ms(warm)}
    finally:
        backend.close()


def measure(quick: bool) -> dict[str, Any]:
    """Every sandbox measurement in one go."""
    n = 5 if quick else 20
    limits = GuestLimits()
    results: dict[str, Any] = {"load_start": load_average()}
    bwrap = ProcessBackend(limits, pool_size=0)
    plain = ProcessBackend(limits, pool_size=0, use_bwrap=False, use_cgroup=False)
    results["protections"] = bwrap.protections()
    results["cold_bwrap"] = _ms(cold_starts(bwrap, n))
    results["cold_plain"] = _ms(cold_starts(plain, n))
    pooled = ProcessBackend(limits, pool_size=1)
    try:
        results["warm_pool"] = _ms(warm_acquires(pooled, n, boot=0.4))
        results["rpc"] = _ms(rpc_round_trips(pooled, 200 if quick else 1000))
    finally:
        pooled.close()
    results["docker"] = docker_numbers(3 if quick else 10)
    with tempfile.TemporaryDirectory(prefix="lw-bench-sbx-") as tmp:
        (Path(tmp) / "logs").mkdir()
        procs = Processes(Path(tmp) / "logs")
        redis = RedisServer(Path(tmp) / "redis", procs)
        try:
            redis.start()
            results["machine"] = machine_info(redis.url)
            rt = build_runtime(make_settings(redis.url, Path(tmp) / "data", sandbox_pool_size=1))
            try:
                times = added_by_sandbox(rt, 5 if quick else 30)
            finally:
                rt.close()
            results["run_trusted"] = _ms(times["trusted"])
            results["run_sandboxed"] = _ms(times["sandboxed"])
        finally:
            procs.kill_all()
    results["load_end"] = load_average()
    return results


def _row(name: str, value: str, target: str, ok: bool | None) -> str:
    verdict = "-" if ok is None else ("PASS" if ok else "MISS")
    return f"| {name} | {value} | {target} | {verdict} |"


def section(r: dict[str, Any], command: str) -> str:
    """The Markdown section for docs/benchmarks.md."""
    added = r["run_sandboxed"]["median"] - r["run_trusted"]["median"]
    rows = [
        _row(
            "Guest start, cold, bubblewrap",
            f"median {r['cold_bwrap']['median']:.1f} ms, p95 {r['cold_bwrap']['p95']:.1f} ms",
            "info",
            None,
        ),
        _row(
            "Guest start, cold, plain `python -I` (baseline)",
            f"median {r['cold_plain']['median']:.1f} ms, p95 {r['cold_plain']['p95']:.1f} ms",
            "info",
            None,
        ),
        _row(
            "Guest from the warm pool",
            f"median {r['warm_pool']['median']:.2f} ms, p95 {r['warm_pool']['p95']:.2f} ms",
            "info",
            None,
        ),
        _row(
            "What a warm guest adds to a 1-step run",
            f"{added:.2f} ms (sandboxed {r['run_sandboxed']['median']:.2f} ms vs trusted "
            f"{r['run_trusted']['median']:.2f} ms, medians)",
            "< 10 ms",
            added < 10,
        ),
        _row(
            "Step RPC round trip (guest -> host -> guest)",
            f"median {r['rpc']['median'] * 1000:.0f} µs, p95 {r['rpc']['p95'] * 1000:.0f} µs",
            "< 0.5 ms",
            r["rpc"]["median"] < 0.5,
        ),
    ]
    docker = r["docker"]
    if "skipped" in docker:
        rows.append(_row("Docker backend", f"not measured: {docker['skipped']}", "info", None))
    else:
        rows.append(
            _row(
                "Guest start, cold, Docker container",
                f"median {docker['cold']['median']:.0f} ms, p95 {docker['cold']['p95']:.0f} ms",
                "info",
                None,
            )
        )
        rows.append(
            _row(
                "Guest from the Docker warm pool",
                f"median {docker['warm']['median']:.1f} ms, p95 {docker['warm']['p95']:.1f} ms",
                "info",
                None,
            )
        )
    m = r["machine"]
    prot = ", ".join(k for k, v in r["protections"].items() if v is True)
    return "\n".join(
        [
            "## Sandbox (issue 3)",
            "",
            f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} with `{command}`. "
            f"Machine: {m.get('nproc')} CPUs ({m.get('cpu')}), Python {m.get('python')}, "
            f"Linux {m.get('kernel')}; load average {r['load_start']} at start, "
            f"{r['load_end']} at end. Process backend protections: {prot}.",
            "",
            "| Measurement | Result | Target | Verdict |",
            "| --- | --- | --- | --- |",
            *rows,
            "",
            "- A cold guest pays for bubblewrap's namespaces and mounts on top of the Python "
            "start-up and the imports of the policy and RestrictedPython (compare the plain "
            "row). The worker keeps one guest pre-started, so a run takes a guest that is "
            "already `ready` and starts the next one while it runs.",
            "- What the sandbox adds to a run: the `start` message, compiling the skill with "
            "the restricted policy inside the guest, the per-step round trips, and reaping the "
            "guest process afterwards.",
            "- A step costs two round trips (begin, done); the checkpoint write to Redis comes "
            "on top, as for trusted runs.",
        ]
    )


def main() -> int:
    """Command line entry point."""
    return run_benchmark("sandbox", __doc__ or "", measure, section)


if __name__ == "__main__":
    sys.exit(main())
