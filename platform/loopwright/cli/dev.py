"""``loopwright dev ...``: tools for developers and demos (not for production data)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from loopwright.cli.common import JsonFlag, console, emit_json, open_runtime

dev_app = typer.Typer(
    help="Developer tools: seed history for demos and benchmarks.", no_args_is_help=True
)


@dev_app.command("seed-history")
def seed_history(
    days: Annotated[int, typer.Option("--days", min=1, max=400, help="Days of history.")] = 28,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same history.")] = 1,
    scale: Annotated[
        float, typer.Option("--scale", min=0.01, max=1000, help="Multiply runs per day.")
    ] = 1.0,
    as_json: JsonFlag = False,
) -> None:
    """Write weeks of realistic run history (the review demo's fleet: a health check with
    nightly false alarms, a skill broken by a new version, a steady skill with platform
    failures) through the runner's own scripts, ending now."""
    import dataclasses

    from loopwright.history.seeder import demo_profiles
    from loopwright.history.seeder import seed_history as seed_runs
    from loopwright.runner.records import now_ms

    rt = open_runtime()
    profiles = [
        dataclasses.replace(p, runs_per_day=max(1, round(p.runs_per_day * scale)))
        for p in demo_profiles()
    ]
    taken = [p.name for p in profiles if rt.redis.exists(rt.keys.runs_by_skill(p.name))]
    if taken:
        sys.stderr.write(
            f"loopwright: error: skills {', '.join(taken)} already have runs here; seed into an "
            "empty keyspace (LOOPWRIGHT_KEY_PREFIX)\n"
        )
        raise typer.Exit(2)
    counts = seed_runs(rt, profiles, days=days, end_ms=now_ms(), seed=seed)
    if as_json:
        emit_json(dict(sorted(counts.items())))
        return
    total = sum(v for k, v in counts.items() if k.rsplit(":", 1)[1] not in ("good", "bad"))
    console.print(f"seeded {total} runs over {days} days for {len(profiles)} skills")
    for key, value in sorted(counts.items()):
        console.print(f"  {key}: {value}", highlight=False)
