"""``every("90m")``: an interval no single cron line can say, fired on a fixed grid (no drift),
each tick at most once across scheduler restarts. Real Redis, real catalog and admission; the
scheduler's clock is passed in, except in the last test, which runs a scheduler process."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import Cluster, wait_until
from loopwright.assembly import build_runtime
from loopwright.scheduler.catalog import Catalog
from loopwright.scheduler.cron import CronFirer, interval_ticks
from loopwright.sdk import SkillDefinitionError, every
from loopwright.sdk.manifest import ManifestInvalid, read_manifest

EVERY_90M = """
from loopwright.sdk import skill, every

@skill(name="ninety", trigger=every("90m"))
def main(ctx):
    return ctx.step.run("tick", lambda: ctx.event["data"]["tick_ms"])
"""
EVERY_10S = EVERY_90M.replace('"90m"', '"10s"').replace("ninety", "ten")
MIN = 60_000


def test_every_reads_durations_and_refuses_nonsense() -> None:
    assert every("90m").seconds == 5400 and every(45).seconds == 45
    assert every("90m").to_dict() == {
        "type": "every", "every": "90m", "seconds": 5400.0, "missed": "latest"
    }  # fmt: skip
    for bad in ("5s", "2y", "soon", "400d"):
        with pytest.raises(SkillDefinitionError):
            every(bad)
    manifest = read_manifest(EVERY_90M)[0]
    assert manifest.trigger is not None and manifest.trigger.model_dump()["seconds"] == 5400
    with pytest.raises(ManifestInvalid) as exc:
        read_manifest(EVERY_90M.replace('"90m"', '"1s"'))
    assert exc.value.findings[0].rule == "invalid-trigger"


def test_interval_ticks_lie_on_the_grid_from_the_cursor() -> None:
    trig = every("90m")
    assert interval_ticks(trig, 0, 90 * MIN - 1, 10) == []
    assert interval_ticks(trig, 0, 270 * MIN + 5, 10) == [90 * MIN, 180 * MIN, 270 * MIN]
    # a year-long outage is computed, not iterated, and only the latest ticks come back
    year = interval_ticks(trig, 0, 365 * 24 * 60 * MIN + 5, 2)
    assert year == [5839 * 90 * MIN, 5840 * 90 * MIN]


def test_each_interval_fires_once_on_the_grid_across_a_scheduler_restart(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(cron_catchup=3600.0)
    cluster.skill(EVERY_90M)
    t0 = 1_800_000_000_000
    first = CronFirer(cluster.rt, Catalog(cluster.rt))
    assert first.tick(t0) == 0  # first seen: the grid starts here, nothing is "missed"
    assert first.tick(t0 + 89 * MIN) == 0
    # late ticks of the scheduler loop do not move the grid (no drift)
    assert first.tick(t0 + 90 * MIN + 7_000) == 1
    assert first.tick(t0 + 180 * MIN + 59_000) == 1
    # A restarted scheduler (new process identity, the old lease expired) that finds the
    # cursor behind, as if the old one died between starting a run and advancing the cursor
    cluster.rt.redis.set(cluster.rt.keys.cron_last("ninety"), t0 + 90 * MIN)
    cluster.rt.redis.delete(cluster.rt.keys.scheduler_leader)
    second = CronFirer(build_runtime(cluster.settings), Catalog(cluster.rt))
    assert second.tick(t0 + 181 * MIN) == 0  # the 180-minute tick already has its run
    assert second.tick(t0 + 270 * MIN + 1) == 1
    ticks = sorted(int(r.trigger["tick_ms"]) for r in cluster.rt.runs.find(skill="ninety"))
    assert ticks == [t0 + 90 * MIN, t0 + 180 * MIN, t0 + 270 * MIN]
    assert {r.trigger["type"] for r in cluster.rt.runs.find(skill="ninety")} == {"every"}


def test_a_scheduler_process_fires_an_interval_skill_on_its_grid(cluster: Cluster) -> None:
    cluster.skill(EVERY_10S)
    cluster.scheduler()
    cluster.worker()
    wait_until(lambda: len(cluster.rt.runs.find(skill="ten")) >= 2, timeout=40)
    runs = sorted(cluster.rt.runs.find(skill="ten"), key=lambda r: int(r.trigger["tick_ms"]))
    a, b = (int(r.trigger["tick_ms"]) for r in runs[:2])
    assert b - a == 10_000
    done = cluster.wait(runs[0].id)
    assert done.status.value == "completed" and done.output == a
