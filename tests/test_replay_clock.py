"""A replay pins the clock and the randomness a skill reads, so it is deterministic.

Real worker and sandbox (process backend), a real HTTP server on 127.0.0.1, the replay
harness as the review gate and ``runs replay`` use it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from conftest import DOCKER_IMAGE, Cluster
from loopwright.history.replay import replay_run
from loopwright.runner.recording import load_recording
from loopwright.sandbox.pins import seed_of
from replay_support import Metrics, metrics

__all__ = ["metrics"]

STAMPER = """
import datetime
import random
from loopwright.sdk import skill

@skill(name="stamper", tools=["http"], http_allow=["127.0.0.1"])
def main(ctx):
    before = datetime.datetime.now().isoformat()
    m = ctx.step.run("fetch", lambda: ctx.tools.http.get_json(ctx.event["data"]["base"] + "/m"))
    return {
        "before": before,
        "after": datetime.datetime.utcnow().isoformat(),
        "aware": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "today": datetime.date.today().isoformat(),
        "r": random.random(),
        "p95": m["p95"],
    }
"""


def test_a_replay_reads_the_recorded_clock_and_a_seeded_random(
    make_cluster: Callable[..., Cluster], metrics: Metrics
) -> None:
    # Given a recorded run of a skill that reads the clock and random around a tool call
    cluster = make_cluster(
        sandbox_backend="process",
        sandbox_docker_image=DOCKER_IMAGE,
        sandbox_cpu_seconds=5,
        http_private_allow="127.0.0.1",
        sidecar_case_timeout=20,
    )
    cluster.worker()
    name = cluster.skill(STAMPER)
    run = cluster.wait(cluster.start(name, {"base": metrics.base}, trusted=False), timeout=60)
    assert run.status.value == "completed", run.error
    rec = load_recording(cluster.rt.redis, cluster.rt.keys, run.id)
    assert rec is not None and rec.started_at > 0 and len(rec.calls) == 1
    # When it is replayed twice
    _, first = replay_run(cluster.rt, run.id)
    _, second = replay_run(cluster.rt, run.id)
    # Then both replays give the same output
    assert first.replayed.status == second.replayed.status == "completed", first.replayed.error
    out = first.replayed.output
    assert out == second.replayed.output
    # And the clock is the recorded start, moved by the recorded time of the answered call
    start = datetime.fromtimestamp(rec.started_at / 1000, UTC)
    after = start + timedelta(milliseconds=round(float(rec.calls[0]["elapsed_ms"])))
    assert out["before"] == start.replace(tzinfo=None).isoformat()
    assert out["after"] == after.replace(tzinfo=None).isoformat()
    assert out["aware"] == after.isoformat()
    assert out["today"] == after.date().isoformat()
    # And random is the generator seeded from the run id
    assert out["r"] == random.Random(seed_of(run.id)).random()
    assert out["p95"] == metrics.p95
