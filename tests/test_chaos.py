"""Chaos: 200+ multi-step runs while workers are SIGKILLed or paused past their lease at random
moments and the scheduler is killed too. Afterwards every run has completed, no step body ran
after its checkpoint was committed, and no fenced-out (zombie) write was accepted."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Callable

import pytest

from conftest import Cluster, effects

RUNS = 200
STEPS = 5
WORKERS = 3

CHAOS_SKILL = """
from loopwright.sdk import skill
import os, random, time

def body(fx, run_id, i):
    start = int(time.time() * 1000)
    with open(fx, "a") as f:
        f.write(f"{run_id} {i} {os.getpid()} {start}\\n")
    time.sleep(random.uniform(0.02, 0.08))
    return {"i": i, "pid": os.getpid()}

@skill(name="chaos", retries=10, backoff=0.01)
def main(ctx):
    fx = ctx.event["data"]["fx"]
    return [ctx.step.run(f"step-{i}", body, fx, ctx.run_id, i) for i in range(1, STEPS + 1)]
""".replace("STEPS", str(STEPS))


def _kill(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


@pytest.mark.chaos
def test_chaos_every_run_completes_and_no_finished_step_reruns(
    make_cluster: Callable[..., Cluster],
) -> None:
    rng = random.Random(20261124)
    cluster = make_cluster(lease_ttl=1.0, dispatch_grace=1.0)
    fx = cluster.tmp / "fx"
    name = cluster.skill(CHAOS_SKILL)
    scheduler = cluster.scheduler()
    workers = [cluster.worker() for _ in range(WORKERS)]
    run_ids = [cluster.start(name, {"fx": str(fx)}) for _ in range(RUNS)]
    disrupted: set[int] = set()
    paused: list[tuple[float, subprocess.Popen[bytes]]] = []
    actions = {"kill_worker": 0, "pause_worker": 0, "kill_scheduler": 0}

    def pending() -> int:
        pipe = cluster.rt.redis.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hget(cluster.rt.keys.run(rid), "status")
        return sum(1 for s in pipe.execute() if s not in ("completed", "failed", "cancelled"))

    deadline = time.monotonic() + 300
    while pending() and time.monotonic() < deadline:
        time.sleep(rng.uniform(0.15, 0.4))
        now = time.monotonic()
        for resume_at, proc in list(paused):
            if now >= resume_at:
                _kill(proc, signal.SIGCONT)
                paused.remove((resume_at, proc))
        if sum(actions.values()) >= 60:
            continue  # enough chaos: let the system finish
        roll = rng.random()
        live = [w for w in workers if w.poll() is None and all(w is not p for _, p in paused)]
        if roll < 0.55 and live:
            victim = rng.choice(live)
            _kill(victim, signal.SIGKILL)
            victim.wait()
            disrupted.add(victim.pid)
            workers.remove(victim)
            # Not waiting for the replacement to register keeps the chaos rate independent of
            # worker start-up time (seconds on a loaded machine); a replacement killed while it
            # starts is chaos too.
            workers.append(cluster.spawn("worker"))
            actions["kill_worker"] += 1
        elif roll < 0.8 and len(live) > 1:
            victim = rng.choice(live)
            _kill(victim, signal.SIGSTOP)
            disrupted.add(victim.pid)
            paused.append((now + rng.uniform(1.5, 2.5), victim))
            actions["pause_worker"] += 1
        elif roll >= 0.9:
            _kill(scheduler, signal.SIGKILL)
            scheduler.wait()
            scheduler = cluster.scheduler()
            actions["kill_scheduler"] += 1
    for _, proc in paused:
        _kill(proc, signal.SIGCONT)
    time.sleep(2.0)  # let resumed zombies attempt their late writes

    assert actions["kill_worker"] >= 10 and actions["pause_worker"] >= 5, actions
    runs = {rid: cluster.rt.runs.get(rid) for rid in run_ids}
    assert {r.status.value for r in runs.values()} == {"completed"}, [
        (r.id, r.status.value, r.error) for r in runs.values() if r.status.value != "completed"
    ]

    executions: dict[tuple[str, int], list[tuple[int, int]]] = defaultdict(list)
    for run_id, i, pid, start in effects(fx):
        executions[(run_id, int(i))].append((int(start), int(pid)))
    reran = 0
    for rid, run in runs.items():
        steps = cluster.rt.runs.steps(rid)
        assert [(s.seq, s.status) for s in steps] == [(i, "done") for i in range(1, STEPS + 1)]
        # The output the final executor saw equals what the checkpoints hold (no overwrite).
        assert run.output == [s.output for s in steps]
        for s in steps:
            bodies = sorted(executions[(rid, s.seq)])
            assert bodies, f"{rid} step {s.seq} has a checkpoint but its body never ran"
            # A completed step's body never starts again after its checkpoint was written.
            assert all(start <= s.ended_at for start, _ in bodies), (rid, s.seq, bodies, s.ended_at)
            # The checkpoint belongs to the last execution: no fenced-out writer overwrote it.
            assert s.output["pid"] == bodies[-1][1], (rid, s.seq, bodies, s.output)
            # Extra executions only happen when an earlier executor was killed or paused.
            for _, body_pid in bodies[:-1]:
                assert body_pid in disrupted, (rid, s.seq, bodies)
            reran += len(bodies) - 1
    print(f"chaos: {actions}, step bodies re-run after an interruption: {reran}")
