"""A replay reads the ``ctx.state`` the recorded run read (recorded with its tool calls).

Real worker, Redis and sandbox (process backend), the replay path ``runs replay`` and the
review gate use. Recordings from before state reads were recorded replay with an empty store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from conftest import DOCKER_IMAGE, Cluster
from loopwright.history.replay import candidate_from_version, replay_run, replay_runs
from loopwright.runner.recording import load_recording

COUNTER = """
from loopwright.sdk import skill


def count(ctx):
    n = ctx.state.get("n", 0)
    ctx.state.set("n", n + 1)
    return {"seen": n, "again": ctx.state.get("n"), "other": ctx.state.get("unset", "dflt")}


@skill(name="counter")
def main(ctx):
    return ctx.step.run("count", count, ctx)
"""


def test_a_replay_reads_the_state_the_run_read_and_old_recordings_read_none(
    make_cluster: Callable[..., Cluster],
) -> None:
    # Given a skill that counts its runs in ctx.state, run twice in the sandbox
    cluster = make_cluster(
        sandbox_backend="process",
        sandbox_docker_image=DOCKER_IMAGE,
        sandbox_cpu_seconds=5,
        sidecar_case_timeout=20,
    )
    cluster.worker()
    name = cluster.skill(COUNTER)
    first = cluster.wait(cluster.start(name, {}, trusted=False), timeout=60)
    second = cluster.wait(cluster.start(name, {}, trusted=False), timeout=60)
    assert first.status.value == second.status.value == "completed", (first.error, second.error)
    assert second.output == {"seen": 1, "again": 2, "other": "dflt"}
    # Then the second run's recording holds the state it read (the key it found, and the
    # unset one), not the value it wrote
    rec = load_recording(cluster.rt.redis, cluster.rt.keys, second.id)
    assert rec is not None
    reads = [(c["req"]["key"], c["res"]) for c in rec.calls if c["tool"] == "state"]
    assert reads == [("n", {"value": 1}), ("unset", None)]
    # When it is replayed (the store now holds 2: the replay must not read it)
    _, diff = replay_run(cluster.rt, second.id)
    # Then it reads what the run read, its own write first, and nothing differs
    assert diff.kind == "same", diff
    assert diff.replayed.output == {"seen": 1, "again": 2, "other": "dflt"}
    assert diff.replayed.answered == 0  # state reads are no tool calls answered
    # And a recording without state reads (recorded before them) replays on an empty store
    old = dataclasses.replace(rec, calls=[c for c in rec.calls if c["tool"] != "state"])
    cand = candidate_from_version(cluster.rt, rec.skill, rec.version)
    (diff_old,) = replay_runs(cluster.rt, cand, [old])
    assert diff_old.replayed.status == "completed", diff_old.replayed.error
    assert diff_old.replayed.output == {"seen": 0, "again": 1, "other": "dflt"}
