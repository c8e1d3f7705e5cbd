"""Crash semantics with real processes: killed and paused workers, Redis restarts, lost
dispatches, runs that keep killing their workers."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from conftest import Cluster, RedisProc, effects, free_port, wait_until

SLOW_STEPS = """
from loopwright.sdk import skill
import os, time

def work(fx, name, pause):
    with open(fx, "a") as f:
        f.write(f"{name} {os.getpid()} {int(time.time() * 1000)}\\n")
    time.sleep(pause)
    return {"step": name, "pid": os.getpid()}

@skill(name="slow-steps", retries=5, backoff=0.05)
def main(ctx):
    d = ctx.event["data"]
    return [ctx.step.run(f"s{i}", work, d["fx"], f"s{i}", d["pause"]) for i in range(1, d["n"] + 1)]
"""


def test_killed_worker_run_resumes_at_the_step_it_was_on(cluster: Cluster) -> None:
    # Given a worker running a 5-step skill, killed with SIGKILL inside step 3
    cluster.scheduler()
    first = cluster.worker()
    fx = cluster.tmp / "fx"
    name = cluster.skill(SLOW_STEPS)
    run_id = cluster.start(name, {"fx": str(fx), "n": 5, "pause": 0.4})
    wait_until(lambda: any(line[0] == "s3" for line in effects(fx)), timeout=15)
    os.killpg(first.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    # When a new worker comes up
    second = cluster.worker()
    resumed = wait_until(
        lambda: [line for line in effects(fx) if line[1] == str(second.pid)], timeout=15
    )
    # Then the run resumes at step 3 within a few seconds, finished steps are not repeated
    assert time.monotonic() - killed_at < 5
    assert resumed[0][0] == "s3"
    run = cluster.wait(run_id)
    assert run.status.value == "completed" and run.reaps == 1
    counts = {f"s{i}": sum(1 for line in effects(fx) if line[0] == f"s{i}") for i in range(1, 6)}
    assert counts == {"s1": 1, "s2": 1, "s3": 2, "s4": 1, "s5": 1}
    assert [s["pid"] for s in run.output] == [first.pid] * 2 + [second.pid] * 3


def test_paused_worker_cannot_write_into_a_run_another_worker_took_over(cluster: Cluster) -> None:
    # Given worker A inside a long step, then paused (SIGSTOP) past its lease
    cluster.scheduler()
    a = cluster.worker(verbose=True)
    fx = cluster.tmp / "fx"
    name = cluster.skill(SLOW_STEPS)
    run_id = cluster.start(name, {"fx": str(fx), "n": 3, "pause": 1.5})
    wait_until(lambda: any(line[0] == "s2" for line in effects(fx)), timeout=15)
    os.killpg(a.pid, signal.SIGSTOP)
    try:
        # When worker B takes the run over and finishes it
        b = cluster.worker()
        run = cluster.wait(run_id, timeout=30)
        assert run.status.value == "completed"
        steps_before = {s.seq: s.to_dict() for s in cluster.rt.runs.steps(run_id)}
        fence_before = cluster.rt.runs.get(run_id).fence
    finally:
        os.killpg(a.pid, signal.SIGCONT)
    # Then A, resumed, finishes its step body but its checkpoint and finish are refused
    wait_until(lambda: f"run {run_id}: lease lost" in cluster.log_of(a), timeout=15)
    assert {s.seq: s.to_dict() for s in cluster.rt.runs.steps(run_id)} == steps_before
    final = cluster.rt.runs.get(run_id)
    assert final.status.value == "completed" and final.fence == fence_before
    assert [s["pid"] for s in final.output] == [a.pid, b.pid, b.pid]
    assert [s.output["pid"] for s in cluster.rt.runs.steps(run_id)] == [a.pid, b.pid, b.pid]
    assert a.poll() is None, "the paused worker must survive being fenced out"


STOPS_BETWEEN_STEPS = """
from loopwright.sdk import skill
import os, signal, time

def work(fx, name):
    with open(fx, "a") as f:
        f.write(f"{name} {os.getpid()} {int(time.time() * 1000)}\\n")
    return os.getpid()

@skill(name="stops-between-steps")
def main(ctx):
    d = ctx.event["data"]
    first = ctx.step.run("s1", work, d["fx"], "s1")
    if not os.path.exists(d["marker"]):  # the first executor stops itself between two steps
        open(d["marker"], "w").close()
        os.kill(os.getpid(), signal.SIGSTOP)
    return [first, ctx.step.run("s2", work, d["fx"], "s2")]
"""


def test_worker_paused_between_steps_does_not_start_a_step_finished_meanwhile(
    cluster: Cluster,
) -> None:
    # Given worker A that stops (SIGSTOP) right after step 1's checkpoint, before step 2
    cluster.scheduler()
    a = cluster.worker(verbose=True)
    fx, marker = cluster.tmp / "fx", cluster.tmp / "marker"
    name = cluster.skill(STOPS_BETWEEN_STEPS)
    run_id = cluster.start(name, {"fx": str(fx), "marker": str(marker)})
    wait_until(marker.exists, timeout=15)
    try:
        # When worker B takes the run over after A's lease expired and finishes step 2
        b = cluster.worker()
        run = cluster.wait(run_id, timeout=30)
        assert run.status.value == "completed" and run.output == [a.pid, b.pid]
    finally:
        os.kill(a.pid, signal.SIGCONT)
    # Then A, resumed, finds its lease gone before starting step 2's body: it never runs it
    wait_until(lambda: f"run {run_id}: lease lost" in cluster.log_of(a), timeout=15)
    assert [(line[0], line[1]) for line in effects(fx)] == [("s1", str(a.pid)), ("s2", str(b.pid))]
    assert cluster.rt.runs.get(run_id).output == [a.pid, b.pid]
    assert a.poll() is None


def test_run_completes_when_redis_restarts_mid_run(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    # Given a Redis with AOF on and a run in flight
    server = RedisProc(free_port(), tmp_path / "aof", appendonly=True)
    server.dir.mkdir()
    server.start()
    try:
        cluster = make_cluster(redis_url=server.url)
        cluster.worker()
        cluster.scheduler()
        fx = cluster.tmp / "fx"
        name = cluster.skill(SLOW_STEPS)
        run_id = cluster.start(name, {"fx": str(fx), "n": 6, "pause": 0.3})
        wait_until(lambda: any(line[0] == "s2" for line in effects(fx)), timeout=15)
        # When Redis is stopped for three seconds (longer than redis-py's own retries ride out)
        # and started again on the same data
        server.stop()
        time.sleep(3.0)
        server.start()
        # Then the worker reconnects and the run completes with every step once or twice at most
        run = cluster.wait(run_id, timeout=60)
        assert run.status.value == "completed"
        assert [s["step"] for s in run.output] == [f"s{i}" for i in range(1, 7)]
        for i in range(1, 7):
            assert 1 <= sum(1 for line in effects(fx) if line[0] == f"s{i}") <= 2
    finally:
        server.stop()


def test_run_survives_redis_sigkill_with_aof(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    server = RedisProc(free_port(), tmp_path / "aof", appendonly=True)
    server.dir.mkdir()
    server.start()
    try:
        cluster = make_cluster(redis_url=server.url)
        cluster.worker()
        cluster.scheduler()
        fx = cluster.tmp / "fx"
        name = cluster.skill(SLOW_STEPS)
        run_id = cluster.start(name, {"fx": str(fx), "n": 5, "pause": 0.3})
        wait_until(lambda: any(line[0] == "s3" for line in effects(fx)), timeout=15)
        server.stop(signal.SIGKILL)
        time.sleep(0.5)
        server.start()
        run = cluster.wait(run_id, timeout=60)
        assert run.status.value == "completed"
        done_before = [line[0] for line in effects(fx)]
        assert done_before.count("s1") == 1 and done_before.count("s2") == 1
    finally:
        server.stop()


def test_run_whose_rq_job_vanished_is_redispatched(cluster: Cluster) -> None:
    # Given a queued run whose RQ job is lost (as when a worker dies between dequeue and lease)
    name = cluster.skill("""
        from loopwright.sdk import skill

        @skill(name="orphan")
        def main(ctx):
            return ctx.step.run("s", lambda: "ran")
    """)
    run_id = cluster.start(name)
    queue = cluster.rt.dispatcher.queue
    assert queue.count == 1
    queue.empty()  # type: ignore[no-untyped-call]
    # When the scheduler and a worker run
    cluster.scheduler()
    cluster.worker()
    # Then the run is dispatched again after the grace period and completes
    run = cluster.wait(run_id, timeout=15)
    assert run.status.value == "completed" and run.output == "ran"
    assert cluster.rt.redis.hget(cluster.rt.keys.run(run_id), "dispatches") == "2"


def test_worker_started_before_a_skill_existed_runs_it(cluster: Cluster) -> None:
    cluster.worker()  # returns once the worker is registered with RQ: it is up
    name = cluster.skill("""
        from loopwright.sdk import skill

        @skill(name="brand-new")
        def main(ctx):
            return ctx.step.run("s", lambda: "hot")
    """)
    run = cluster.wait(cluster.start(name))
    assert run.status.value == "completed" and run.output == "hot"


def test_run_that_keeps_killing_its_worker_fails_after_the_reap_limit(
    make_cluster: Callable[..., Cluster],
) -> None:
    # Given a skill whose step kills the process executing it, under a supervised worker pool
    cluster = make_cluster(max_run_reaps=2)
    cluster.scheduler()
    cluster.spawn("worker", "-n", "2")
    name = cluster.skill("""
        from loopwright.sdk import skill
        import os, signal

        @skill(name="poison")
        def main(ctx):
            ctx.step.run("die", os.kill, os.getpid(), signal.SIGKILL)
    """)
    # Then after the limit it fails with a clear error instead of looping forever
    run = cluster.wait(cluster.start(name), timeout=60)
    assert run.status.value == "failed"
    assert "lost 3 times; giving up" in (run.error or "")
    # And the supervised pool is still serving other runs
    ok = cluster.skill(
        """
        from loopwright.sdk import skill

        @skill(name="healthy")
        def main(ctx):
            return ctx.step.run("s", lambda: "fine")
    """,
        "ok.py",
    )
    assert cluster.wait(cluster.start(ok), timeout=30).status.value == "completed"


def _server_ms(cluster: Cluster) -> int:
    sec, usec = cluster.rt.redis.time()
    return int(sec) * 1000 + int(usec) // 1000


def test_killed_scheduler_is_replaced_without_losing_sleeping_runs(cluster: Cluster) -> None:
    sched = cluster.scheduler()
    cluster.worker()
    name = cluster.skill("""
        from loopwright.sdk import skill

        @skill(name="napper")
        def main(ctx):
            ctx.step.sleep("nap", 1)
            return ctx.step.run("after", lambda: "woke")
    """)
    run_id = cluster.start(name)
    wait_until(lambda: cluster.rt.runs.get(run_id).status.value == "sleeping", timeout=10)
    os.killpg(sched.pid, signal.SIGKILL)
    # With no scheduler, the run stays asleep past its wake time (on the server's clock)
    wake_at = cluster.rt.runs.get(run_id).wake_at or 0
    wait_until(lambda: _server_ms(cluster) > wake_at + 300, timeout=10)
    assert cluster.rt.runs.get(run_id).status.value == "sleeping"
    cluster.scheduler()
    run = cluster.wait(run_id, timeout=15)
    assert run.status.value == "completed" and run.output == "woke"


def test_killed_worker_pool_supervisor_takes_its_workers_with_it(cluster: Cluster) -> None:
    # Given a supervised pool of two workers
    from rq import Worker

    pool = cluster.spawn("worker", "-n", "2")
    queue = cluster.rt.dispatcher.queue
    wait_until(lambda: len(Worker.all(queue=queue)) == 2, timeout=20)
    children = [w.pid for w in Worker.all(queue=queue) if w.pid]
    # When the supervisor is SIGKILLed (it cannot clean up)
    os.kill(pool.pid, signal.SIGKILL)
    pool.wait()

    # Then its workers notice and exit instead of living on as orphans
    def gone(pid: int) -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return open(f"/proc/{pid}/stat").read().split()[2] == "Z"

    wait_until(lambda: all(gone(pid) for pid in children), timeout=20)


def test_run_whose_job_was_popped_by_a_dead_worker_is_redispatched(cluster: Cluster) -> None:
    # Given a queued run whose job id was popped from the queue list by a worker that died
    # before marking it started: RQ's job hash still says "queued"
    name = cluster.skill("""
        from loopwright.sdk import skill

        @skill(name="popped")
        def main(ctx):
            return ctx.step.run("s", lambda: "ran")
    """)
    run_id = cluster.start(name)
    queue = cluster.rt.dispatcher.queue
    jid = str(cluster.rt.redis.hget(cluster.rt.keys.run(run_id), "dispatch"))
    assert cluster.rt.rq_redis.lrem(queue.key, 0, jid) == 1
    assert cluster.rt.dispatcher.job_status(jid) == "queued"
    # When the scheduler and a worker run
    cluster.scheduler()
    cluster.worker()
    # Then the run is dispatched again after the grace period and completes
    run = cluster.wait(run_id, timeout=15)
    assert run.status.value == "completed"
    assert cluster.rt.redis.hget(cluster.rt.keys.run(run_id), "dispatches") == "2"
