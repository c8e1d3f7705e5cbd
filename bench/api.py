"""Benchmark of the HTTP API (issue 13): runs list and run detail with 100,000 runs in Redis.

    .venv/bin/python bench/api.py [--quick] [--out docs/benchmarks.md]

A private Redis gets 100,000 finished runs (``--quick``: 5,000) written by the history seeder
through the runner's own scripts (ten skills, two weeks, a few percent failed). A real
``loopwright serve`` process answers over loopback; each request's **server time** is read
from its ``Server-Timing`` header (the application's time from request to response, without
the client's HTTP stack), and a Redis ``PING`` round trip is measured in the same run as the
yardstick. Measured: the first page of ``GET /api/v1/runs`` unfiltered, filtered by skill, by
status ``failed`` and by error signature, and ``GET /api/v1/runs/{id}`` (target: p95 ≤ 100 ms
server time for each).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from bench.common import (
    Processes,
    RedisServer,
    child_env,
    cli_argv,
    free_port,
    load_average,
    machine_info,
    make_settings,
    percentile,
    run_benchmark,
    wait_until,
)
from bench.inproc import measure_ping

from loopwright.assembly import build_runtime
from loopwright.auth.tokens import TokenStore
from loopwright.history.seeder import SeedSkill, seed_history

TARGET_MS = 100.0


def _server_ms(resp: httpx.Response) -> float:
    timing = resp.headers.get("server-timing", "")
    for part in timing.split(","):
        name, _, rest = part.strip().partition(";")
        if name == "app" and rest.startswith("dur="):
            return float(rest[4:])
    raise AssertionError(f"no Server-Timing in {resp.status_code} {resp.text[:200]}")


def _measure(http: httpx.Client, path: str, n: int) -> dict[str, float]:
    http.get(path).raise_for_status()  # warm
    samples = []
    for _ in range(n):
        resp = http.get(path)
        resp.raise_for_status()
        samples.append(_server_ms(resp))
    return {"p50": percentile(samples, 50), "p95": percentile(samples, 95)}


def measure(quick: bool) -> dict[str, Any]:
    total = 5_000 if quick else 100_000
    days, skills = 14, 10
    per_day = max(1, total // (days * skills))
    procs = Processes(Path(tempfile.mkdtemp(prefix="lw-bench-api-")))
    server = RedisServer(procs.log_dir / "redis", procs)
    try:
        server.start()
        settings = make_settings(server.url, procs.log_dir / "data")
        rt = build_runtime(settings)
        profiles = [
            SeedSkill(f"bench-api-{i}", runs_per_day=per_day, success=0.97) for i in range(skills)
        ]
        t0 = time.perf_counter()
        end_ms = int(time.time() * 1000)
        counts = seed_history(rt, profiles, days=days, end_ms=end_ms)
        seed_s = time.perf_counter() - t0
        runs = int(rt.redis.zcard(rt.keys.runs))
        failed = rt.runs.find(status="failed", limit=1)
        sig = str(rt.redis.hget(rt.keys.run(failed[0].id), "sig") or "") if failed else ""
        detail_id = str(rt.redis.zrange(rt.keys.runs, runs // 2, runs // 2)[0])
        token = TokenStore(rt.redis, rt.keys).create("bench", ["read"])[1]
        port = free_port()
        procs.spawn(cli_argv("serve", "--port", str(port)), child_env(settings), "serve")
        http = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )

        def up() -> bool:
            try:
                return http.get("/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, 30, what="the API to answer")
        n = 50 if quick else 200
        ping = measure_ping(server.url, 2000 if quick else 10000)
        results = {
            "runs list, unfiltered": _measure(http, "/api/v1/runs?limit=50", n),
            "runs list, one skill": _measure(http, "/api/v1/runs?skill=bench-api-3&limit=50", n),
            "runs list, status=failed": _measure(http, "/api/v1/runs?status=failed&limit=50", n),
            "runs list, one error signature": _measure(
                http, f"/api/v1/runs?signature={sig[:12]}&limit=50", n
            ),
            "run detail": _measure(http, f"/api/v1/runs/{detail_id}", n),
        }
        http.close()
        rt.close()
        machine = machine_info(server.url)
    finally:
        procs.kill_all()
    return {
        "runs": runs,
        "seeded": dict(counts),
        "seed_s": seed_s,
        "ping_p50_ms": ping["us"]["median"] / 1000,
        "results": results,
        "load": load_average(),
        "machine": machine,
    }


def section(r: dict[str, Any], command: str) -> str:
    rows = []
    for name, v in r["results"].items():
        verdict = "PASS" if v["p95"] <= TARGET_MS else "MISS"
        rows.append(f"| {name} | {v['p50']:.1f} ms | {v['p95']:.1f} ms | ≤ {TARGET_MS:.0f} ms: "
                    f"{verdict} |")  # fmt: skip
    return "\n".join([
        "## HTTP API (issue 13)",
        "",
        f"`{command}` — {r['runs']:,} runs in Redis (seeded in {r['seed_s']:.0f} s through the "
        f"runner's scripts); load {r['load']}. Server time from each response's "
        "`Server-Timing` header; one Redis PING round trip (p50) in the same run: "
        f"{r['ping_p50_ms']:.3f} ms.",
        "",
        "| request | p50 | p95 | target (p95) |",
        "|---|---|---|---|",
        *rows,
        "",
        "Filters run on the server over every kept run: a filter the indexes cannot answer "
        "(status, signature) reads run hashes newest first, pipelined 200 at a time, and stops "
        "at a full page or 5,000 rows, returning a cursor to go on from (the page says "
        "`complete: false`), so a rare status never makes one request read all history.",
    ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(run_benchmark("api", __doc__ or "", measure, section))
