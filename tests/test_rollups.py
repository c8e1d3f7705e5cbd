"""Per-version rollups: every terminal path folds the run in exactly once, in the same script;
platform failures are counted apart; a re-opened run moves between buckets; the rollups equal
a recount from the runs after real workers were SIGKILLed; the seeder and ``skills stats``."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from conftest import Cluster
from loopwright.history.rollups import Rollup, counted, read_rollups, recount, unroll
from loopwright.history.signature import signature
from loopwright.runner.lease import Acquired
from loopwright.runner.records import StepRecord, now_ms
from loopwright.runner.rollup import Ending, utc_day
from loopwright.runner.runtime import Runtime
from loopwright.sdk.steps import StepKind

SKILL = "s"


@pytest.fixture
def rt(make_cluster: Callable[..., Cluster]) -> Runtime:
    """A runtime on its own keyspace with short leases; nothing runs in the background."""
    return make_cluster(lease_ttl=0.3, max_run_reaps=1).rt


def create(rt: Runtime, **kw: object) -> str:
    return rt.runs.create_if_absent(skill=SKILL, version="v1", **kw).run_id  # type: ignore[arg-type]


def take(rt: Runtime, run_id: str) -> Acquired:
    acq = rt.leases.acquire(run_id, "test-owner")
    assert isinstance(acq, Acquired), acq
    return acq


def step(rt: Runtime, run_id: str, token: str, seq: int, status: str, attempts: int) -> None:
    rec = StepRecord(seq, f"s{seq}", StepKind.RUN, status, attempts, now_ms(), now_ms())
    rt.checkpoints.commit(run_id, token, rec, json.dumps(seq) if status == "done" else None)


def today(rt: Runtime) -> Rollup:
    found = read_rollups(rt.redis, rt.keys, SKILL, utc_day(now_ms()), utc_day(now_ms()))
    assert len(found) == 1, found
    return found[0]


def all_runs(rt: Runtime) -> list[str]:
    return [str(x) for x in rt.redis.zrange(rt.keys.runs, 0, -1)]


def assert_recount(rt: Runtime) -> None:
    rec = recount(rt.redis, rt.keys, all_runs(rt))
    got = {(r.skill, r.version, r.day): counted(r) for r in read_rollups(
        rt.redis, rt.keys, SKILL, "19700101", "99991231")}  # fmt: skip
    assert got == rec


def expire_lease(rt: Runtime, run_id: str) -> None:
    from conftest import wait_until

    until = int(rt.redis.hget(rt.keys.run(run_id), "lease_until") or 0)
    wait_until(lambda: rt.redis.time()[0] * 1000 + rt.redis.time()[1] // 1000 > until, 5)


def test_every_terminal_path_counts_the_run_once(rt: Runtime) -> None:
    # finish (completed, with a retried step), finish (failed by the skill), cancel, reaper
    # give-up, skipped creation
    done = create(rt)
    acq = take(rt, done)
    step(rt, done, acq.token, 1, "retrying", 1)
    step(rt, done, acq.token, 1, "done", 3)
    step(rt, done, acq.token, 2, "done", 1)
    assert rt.transitions.finish(done, acq.token, "completed", '"ok"', "", 40)
    failed = create(rt)
    acq = take(rt, failed)
    step(rt, failed, acq.token, 1, "failed", 2)
    err = "KeyError: 'p95' (skill line 7)"
    ending = Ending("skill", err, "s1")
    assert rt.transitions.finish(failed, acq.token, "failed", "", err, 5, None, ending)
    cancelled = create(rt)
    assert rt.transitions.cancel(cancelled, "stopped by ops")[0] == 1
    reaped = create(rt)
    for _ in range(2):
        take(rt, reaped)
        expire_lease(rt, reaped)
        res = rt.transitions.reap(reaped)
    assert res.failed
    skipped = create(rt, skipped="concurrency limit 1 reached")
    # And a second call of each terminal path changes nothing
    assert not rt.transitions.finish(done, acq.token, "completed", '"ok"', "", 40)
    assert rt.transitions.cancel(cancelled, "again")[0] == 0
    assert rt.transitions.reap(reaped).job_id is None
    assert not rt.runs.create_if_absent(skill=SKILL, version="v1", run_id=skipped).created

    r = today(rt)
    c = r.counts
    assert c["runs"] == 5
    assert (c["status:completed"], c["status:failed"], c["status:cancelled"]) == (1, 2, 1)
    assert c["status:skipped"] == 1
    assert (c["failed:skill"], c["failed:platform"]) == (1, 1)  # the reaper's is the platform's
    assert (c["steps"], c["attempts"], c["retries"]) == (3, 6, 3)
    assert c["active_ms"] >= 45
    assert sum(v for n, v in c.items() if n.startswith("dur:")) == 5
    sig = r.sigs[signature(err)]
    assert sig == {"n": "1", "msg": err, "step": "s1", "first": failed, "last": failed}
    lost = signature("the worker executing this run was lost 2 times; giving up")
    assert r.sigs[lost]["n"] == "1" and r.sigs[lost]["first"] == reaped
    assert r.sigs[signature("stopped by ops")]["n"] == "1"
    hashes = {rid: rt.redis.hgetall(rt.keys.run(rid)) for rid in all_runs(rt)}
    assert hashes[reaped]["origin"] == "platform" and hashes[failed]["origin"] == "skill"
    assert all(h["rolled"] == r.day for h in hashes.values())
    assert_recount(rt)


def test_a_reopened_run_moves_between_buckets(rt: Runtime) -> None:
    run = create(rt)
    acq = take(rt, run)
    step(rt, run, acq.token, 1, "failed", 1)
    assert rt.transitions.finish(run, acq.token, "failed", "", "ValueError: x 1", 5)
    assert today(rt).counts["status:failed"] == 1
    # When it is moved out (issue 15's retry re-opens it) and ends again, completed
    assert unroll(rt.redis, rt.keys, run)
    assert not unroll(rt.redis, rt.keys, run)  # once
    c = today(rt).counts
    assert (c["runs"], c["status:failed"], c["failed:skill"], c["steps"]) == (0, 0, 0, 0)
    rt.redis.hset(rt.keys.run(run), mapping={"status": "running", "fence": "9"})
    assert rt.transitions.finish(run, "9", "completed", '"ok"', "", 5)
    c = today(rt).counts
    assert (c["runs"], c["status:completed"], c["status:failed"]) == (1, 1, 0)
    assert today(rt).sigs[signature("ValueError: x 2")]["n"] == "0"


def test_a_run_created_before_rollups_ends_fine(rt: Runtime) -> None:
    # Given a running run written by the previous version: no counters, no origin
    run = create(rt)
    acq = take(rt, run)
    rt.redis.hdel(rt.keys.run(run), "c_steps", "c_attempts")
    # When it ends, it is counted with what it has
    assert rt.transitions.finish(run, acq.token, "completed", '"ok"', "", 5)
    c = today(rt).counts
    assert (c["runs"], c["status:completed"]) == (1, 1) and "steps" not in c


def test_the_seeders_explicit_end_time_picks_the_day(rt: Runtime) -> None:
    at = now_ms() - 10 * 86_400_000
    run = rt.runs.create_if_absent(skill=SKILL, version="v1", at_ms=at).run_id
    acq = take(rt, run)
    ending = Ending(now_ms=at + 1500)
    assert rt.transitions.finish(run, acq.token, "completed", "1", "", 5, None, ending)
    (r,) = read_rollups(rt.redis, rt.keys, SKILL, utc_day(at), utc_day(at))
    assert r.counts["dur_ms"] == 1500 and r.counts["dur:8"] == 1  # [1280, 2560) ms
    assert rt.redis.hget(rt.keys.run(run), "finished_at") == str(at + 1500)
    assert 0 < rt.redis.pttl(rt.keys.rollup(SKILL, "v1", utc_day(at))) <= 400 * 86_400_000
