"""Screenshots of every web page for docs/ui.md, from a private Redis with seeded history.

    .venv/bin/python scripts/ui_screenshots.py [--out docs/ui]

Starts a private redis-server, writes four weeks of the review demo's history through the
runner's scripts (``history.seeder``), a few real runs and a pending version, serves the API
(``loopwright serve``), signs in with its one-time URL in Debian's Chromium and saves one PNG
per page. Only loopback traffic.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from bench.common import (
    Processes,
    RedisServer,
    child_env,
    cli_argv,
    free_port,
    make_settings,
    wait_until,
)

from loopwright.assembly import build_runtime
from loopwright.history.seeder import demo_profiles, seed_history
from loopwright.runner.runtime import Runtime
from loopwright.sdk.manifest import read_manifest
from loopwright.skills_registry.store import Registry

PAGES = {
    "home": "/",
    "chat": "/chat",
    "runs": "/runs",
    "runs-failed": "/runs?status=failed",
    "run": "{failed}",
    "why": "{failed}/why",
    "skills": "/skills",
    "skill": "/skills/health-check",
    "approvals": "/approvals",
    "events": "/events",
    "workers": "/workers",
    "schedules": "/schedules",
    "schedule": "/schedules/inventory-sync",
    "reports": "/reports",
    "report": "/reports/{review}",
    "chat-about": "{failed}/why#ask",
    "report-claims": "/reports/{review}#claims",
}

PENDING = """
from loopwright.sdk import skill


@skill(name="health-check", params={"threshold_ms": 300})
def main(ctx):
    return ctx.step.run("probe", lambda: {"p95_ms": 180, "alarm": False})
"""

TIMED = """
from loopwright.sdk import skill, every


@skill(name="inventory-sync", trigger=every("30m"))
def main(ctx):
    return ctx.step.run("sync", lambda: {"synced": 12})
"""


def _ledger(rt: Runtime) -> None:
    """A timed skill whose scheduler was down for a while: missed ticks, then one started."""
    from loopwright.review.loop import ensure_builtin
    from loopwright.scheduler.catalog import Catalog
    from loopwright.scheduler.cron import CronFirer

    ensure_builtin(rt)  # the weekly review: a cron skill
    Registry(rt.redis, rt.keys).register_direct(textwrap.dedent(TIMED), "inventory-sync")
    now = int(time.time() * 1000)
    firer = CronFirer(rt, Catalog(rt))
    rt.redis.set(rt.keys.cron_last("inventory-sync"), now - 4 * 3_600_000)
    firer.tick(now - 3 * 3_600_000 + 1000)
    firer.tick(now)


def _review(rt: Runtime) -> str:
    """A weekly review naming the seeded runs: a broken field-reader rolled back."""
    from loopwright.review.store import save_review
    from loopwright.review.types import (
        CandidateResult,
        Cluster,
        Decision,
        Diagnosis,
        GateResult,
        Metrics,
        Review,
        SkillReview,
        SkillScore,
        Verdict,
    )

    failed = [r.id for r in rt.runs.find(skill="field-reader", status="failed", limit=8)]
    done = [r.id for r in rt.runs.find(skill="field-reader", status="completed", limit=3)]
    now = int(time.time() * 1000)
    days = [time.strftime("%Y%m%d", time.gmtime(now / 1000 - 86400 * i)) for i in range(6, -1, -1)]
    rates = [1.0, 1.0, 0.55, 0.6, 0.58, 0.62, 0.6]
    window = Metrics(
        runs=120,
        successes=84,
        failures_skill=36,
        success_rate=0.7,
        wilson_low=0.61,
        wilson_high=0.78,
        p50_ms=420.0,
        p95_ms=1113.0,
        cost_per_run=0.0,
        daily_success=[(d, r, 17) for d, r in zip(days, rates, strict=True)],
    )
    score = SkillScore(
        "field-reader",
        "b" * 24,
        Verdict.UNDERPERFORMING,
        ["success fell from 99.2% to 70.0%"],
        window,
        Metrics(
            runs=480,
            successes=476,
            failures_skill=4,
            success_rate=0.992,
            wilson_low=0.98,
            wilson_high=0.997,
            p50_ms=410.0,
            p95_ms=1090.0,
            cost_per_run=0.0,
        ),
    )
    diagnosis = Diagnosis(
        "field-reader",
        "b" * 24,
        clusters=[
            Cluster("9f2c", "KeyError: 'p95_ms'", "parse", 36, failed[:4], "20260101", "b" * 24)
        ],
    )
    gate = GateResult(
        "passed",
        "fixed every failure, changed no output",
        held_out=24,
        runs_fixed=failed[:6],
        decided_by=failed[:3] + done[:2],
    )
    skill = SkillReview(
        score,
        diagnosis,
        [CandidateResult("rollback", "back to the last healthy version", "c" * 24, gate=gate)],
        decision=Decision.IMPROVED.value,
        decision_reason="the gate passed",
        promoted_version="c" * 24,
    )
    review = Review("r-demo", now - 90_000, "7d", now, [skill])
    review.summarise()
    save_review(rt.redis, rt.keys, review, keep=10)
    return review.id


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="docs/ui")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    procs = Processes(Path(tempfile.mkdtemp(prefix="lw-ui-shots-")))
    server = RedisServer(procs.log_dir / "redis", procs)
    try:
        server.start()
        settings = make_settings(server.url, procs.log_dir / "data")
        rt = build_runtime(settings)
        seed_history(rt, demo_profiles(), days=28, end_ms=int(time.time() * 1000))
        src = textwrap.dedent(PENDING)
        Registry(rt.redis, rt.keys).register(
            src, read_manifest(src)[0], None, author="review", mode="pending"
        )
        rt.bus.send("order.created", {"id": 42, "total": 99.5}, "order-42")
        _ledger(rt)
        failed = rt.runs.find(skill="field-reader", status="failed", limit=1)[0].id
        review = _review(rt)
        port = free_port()
        serve = procs.spawn(cli_argv("serve", "--port", str(port)), child_env(settings), "serve")
        log = next(procs.log_dir.glob("serve-*.log"))
        line = wait_until(
            lambda: (
                next((x for x in _read(log).splitlines() if "/login?code=" in x), None)
                or (serve.poll() is not None and sys.exit(_read(log)))
            ),
            30,
            what="the login URL",
        )
        login = line[line.index("http://") :].strip()
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: _up(base), 30, what="the API")
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(login)
            for name, path in PAGES.items():
                page.goto(base + path.format(failed=f"/runs/{failed}", review=review))
                page.wait_for_load_state("networkidle")
                if path.endswith("#ask"):  # the why page's button opens a chat with a draft
                    page.click("text=Ask the builder about this failure")
                    page.wait_for_url("**/chat/s-*")
                    page.wait_for_load_state("networkidle")
                page.screenshot(path=str(out / f"{name}.png"), full_page=False)
                print(f"{out / name}.png")
            browser.close()
        rt.close()
    finally:
        procs.kill_all()
    return 0


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz").status_code == 200
    except httpx.TransportError:
        return False


if __name__ == "__main__":
    sys.exit(main())
