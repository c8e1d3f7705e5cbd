"""Benchmark of idle web pages (issue 13): what an open page costs while nobody touches it.

    .venv/bin/python bench/ui_idle.py [--quick] [--out docs/benchmarks.md]

A private Redis gets a week of the review demo's history (``history.seeder``), one failed
run and one review report; a real ``loopwright serve`` answers over loopback and Debian's
Chromium (headless, through Playwright) signs in with the printed one-time URL. Each main page
is opened, left to settle (network idle, one second), then left alone for the idle period
(30 s; ``--quick``: 3 s) while we count:

* the **server's CPU time** (user + system, ``/proc/<pid>/stat``) of the ``serve`` process;
* the **browser's CPU time**: its renderer processes, and all its processes together;
* **Redis commands** the idle page caused (``INFO stats``, less the reads of the count);
* **HTTP requests** the page made (Playwright's request events; an open SSE stream is one
  request made at load, so a page that reconnects or polls shows up here).

A first period with the browser on ``about:blank`` is the baseline of a server with no page.
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
    run_benchmark,
    wait_until,
)
from redis import Redis

from loopwright.assembly import build_runtime
from loopwright.history.seeder import demo_profiles, seed_history

CHROMIUM = "/usr/bin/chromium"
TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds) of a process from ``/proc/<pid>/stat``; None when gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                parents[int(entry.name)] = st[0]
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parents.items() if pp == p]
        out += kids
        todo += kids
    return out


def _browser_cpu() -> dict[str, float]:
    """CPU seconds of this process's Chromium processes: renderers and all of them."""
    total = renderers = 0.0
    count = 0
    for pid in _descendants(os.getpid()):
        cmd = _cmdline(pid)
        if "chrom" not in cmd:
            continue
        st = _stat(pid)
        if st is None:
            continue
        total += st[1]
        if "--type=renderer" in cmd:
            renderers += st[1]
            count += 1
    return {"renderer": renderers, "browser": total, "renderers": count}


def _commands(client: Redis) -> int:
    return int(client.info("stats")["total_commands_processed"])


def _seed(rt: Any) -> dict[str, str]:
    from loopwright.review.store import save_review
    from loopwright.review.types import Metrics, Review, SkillReview, SkillScore, Verdict

    now = int(time.time() * 1000)
    seed_history(rt, demo_profiles(), days=7, end_ms=now)
    failed = rt.runs.find(status="failed", limit=1)[0].id
    # no worker runs: this run stays queued, and its page holds a live stream
    queued = rt.runs.create(
        skill="health-check", version=rt.sources.resolve("health-check"), data={}, trusted=True
    )
    score = SkillScore("health-check", "v" * 24, Verdict.HEALTHY, [], Metrics(runs=10))
    review = Review("r-idle", now, "7d", now + 1000, [SkillReview(score)])
    review.summarise()
    save_review(rt.redis, rt.keys, review, keep=10)
    return {"failed": failed, "queued": queued}


def measure(quick: bool) -> dict[str, Any]:
    idle_s = 3.0 if quick else 30.0
    procs = Processes(Path(tempfile.mkdtemp(prefix="lw-bench-ui-idle-")))
    server = RedisServer(procs.log_dir / "redis", procs)
    try:
        server.start()
        settings = make_settings(server.url, procs.log_dir / "data")
        rt = build_runtime(settings)
        ids = _seed(rt)
        failed = ids["failed"]
        pages = {
            "needs attention `/`": "/",
            "runs `/runs`": "/runs",
            "run (finished) `/runs/{id}`": f"/runs/{failed}",
            "run (queued: live) `/runs/{id}`": f"/runs/{ids['queued']}",
            "why `/runs/{id}/why`": f"/runs/{failed}/why",
            "skills `/skills`": "/skills",
            "skill `/skills/{name}`": "/skills/health-check",
            "chat `/chat`": "/chat",
            "reports `/reports/{id}`": "/reports/r-idle",
            "schedules `/schedules`": "/schedules",
            "workers `/workers`": "/workers",
        }
        if quick:
            pages = dict(list(pages.items())[:4])
        port = free_port()
        serve = procs.spawn(cli_argv("serve", "--port", str(port)), child_env(settings), "serve")
        log = next(procs.log_dir.glob("serve-*.log"))
        line: str = wait_until(
            lambda: next((x for x in log.read_text().splitlines() if "/login?code=" in x), ""),
            30,
            what="the login URL",
        )
        login = line[line.index("http://") :].strip()
        base = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(base + "/healthz").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(up, 30, what="the API")
        client = Redis.from_url(server.url)
        from playwright.sync_api import sync_playwright

        results: dict[str, dict[str, float]] = {}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(login)

            def idle(name: str, path: str | None) -> None:
                if path is None:
                    page.goto("about:blank")
                else:
                    page.goto(base + path)
                    page.wait_for_load_state("networkidle")
                page.wait_for_timeout(1000)
                requests.clear()
                s0, b0, c0 = _stat(serve.pid), _browser_cpu(), _commands(client)
                t0 = time.monotonic()
                time.sleep(idle_s)
                s1, b1, c1 = _stat(serve.pid), _browser_cpu(), _commands(client)
                wall = time.monotonic() - t0
                assert s0 is not None and s1 is not None, "serve died"
                results[name] = {
                    "idle_s": wall,
                    "server_cpu_ms": 1000 * (s1[1] - s0[1]),
                    "renderer_cpu_ms": 1000 * (b1["renderer"] - b0["renderer"]),
                    "browser_cpu_ms": 1000 * (b1["browser"] - b0["browser"]),
                    "redis_commands": c1 - c0 - 1,  # the INFO that read c0
                    "requests": len(requests),
                    "renderer_processes": b1["renderers"],
                }
                print(name, results[name], file=sys.stderr)

            idle("no page (about:blank)", None)
            for name, path in pages.items():
                idle(name, path)
            browser.close()
        client.close()
        rt.close()
        machine = machine_info(server.url)
    finally:
        procs.kill_all()
    return {
        "idle_s": idle_s,
        "tick_ms": 1000 / TICK,
        "results": results,
        "load": load_average(),
        "machine": machine,
    }


def section(r: dict[str, Any], command: str) -> str:
    res = r["results"]
    floor = (
        res["no page (about:blank)"]["server_cpu_ms"] * 60 / res["no page (about:blank)"]["idle_s"]
    )
    live = {n: v for n, v in res.items() if v["redis_commands"] * 60 / v["idle_s"] > 30}
    extra = "no page held one"
    if live:
        cpu = [v["server_cpu_ms"] * 60 / v["idle_s"] - floor for v in live.values()]
        cmds = [v["redis_commands"] * 60 / v["idle_s"] for v in live.values()]
        extra = (
            f"{min(cpu):.0f} to {max(cpu):.0f} ms of server CPU a minute over the floor "
            f"({max(cpu) / 600:.2f}% of one core at most) and {min(cmds):.0f} to "
            f"{max(cmds):.0f} Redis commands a minute"
        )
    rows = []
    for name, v in r["results"].items():
        per_min = 60 / v["idle_s"]
        rows.append(
            f"| {name} | {v['server_cpu_ms'] * per_min:.0f} ms | "
            f"{v['renderer_cpu_ms'] * per_min:.0f} ms | {v['browser_cpu_ms'] * per_min:.0f} ms | "
            f"{v['redis_commands'] * per_min:.0f} | {v['requests']} |"
        )
    return "\n".join([
        "## Idle web pages (issue 13)",
        "",
        f"`{command}` — each page open in headless Chromium, signed in, left alone for "
        f"{r['idle_s']:.0f} s after it settled; figures per minute of idleness (CPU time from "
        f"`/proc`, in clock ticks of {r['tick_ms']:.0f} ms); load {r['load']} "
        f"({r['machine']['nproc']} cores).",
        "",
        "| page | server CPU / min | renderer CPU / min | all browser processes CPU / min | "
        "Redis commands / min | HTTP requests while idle |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "No page polls: no page made a request while idle. Pages without live parts cost the "
        "server nothing beyond its floor with no page open (uvicorn's event loop wakes ten "
        "times a second whether or not a page is open) and no Redis command. A page with live "
        "parts — the runs list's new-runs banner, a run still going (a chat turn in progress "
        "too) — holds one SSE stream opened at load, whose server side wakes on the runs' "
        "pub/sub channel and otherwise reads the durable indexes every 2 s (so a missed notice "
        f"is found within 2 s): {extra}. A finished run's page opens no stream (a run's page "
        "reloads once when the run ends); a few commands on a page without a stream are the "
        "previous page's stream ending (a stream stops at its next write after its page has "
        "gone, within 10 s). CPU time is counted in whole clock ticks and the machine is "
        "shared: differences of a few ticks are noise.",
    ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(run_benchmark("ui_idle", __doc__ or "", measure, section))
