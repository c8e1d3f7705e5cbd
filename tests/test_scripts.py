"""The runner's and the registry's Lua scripts, called through their Python wrappers against a
real Redis, without workers: fencing, compare-and-set, limits, create-if-absent and the
terminal bookkeeping every ended run shares."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from redis.exceptions import ResponseError

from conftest import Cluster, wait_until
from loopwright.runner.checkpoint import Checkpoints, LeaseLostError, StorageQuotaError
from loopwright.runner.lease import Acquired, AcquireRefused
from loopwright.runner.lua import StaleDeclarationError
from loopwright.runner.records import StepRecord, now_ms
from loopwright.runner.runtime import Runtime
from loopwright.scheduler.loop import Scheduler
from loopwright.sdk.steps import StepKind
from loopwright.skills_registry.store import Registry

SKILL = "s"


@pytest.fixture
def rt(make_cluster: Callable[..., Cluster]) -> Runtime:
    """A runtime on its own keyspace with short leases; nothing runs in the background."""
    return make_cluster(lease_ttl=0.3, max_run_reaps=2).rt


def create(rt: Runtime, run_id: str | None = None, **kw: object) -> str:
    return rt.runs.create_if_absent(skill=SKILL, version="v1", run_id=run_id, **kw).run_id  # type: ignore[arg-type]


def take(rt: Runtime, run_id: str) -> Acquired:
    acq = rt.leases.acquire(run_id, "test-owner")
    assert isinstance(acq, Acquired), acq
    return acq


def run_hash(rt: Runtime, run_id: str) -> dict[str, str]:
    return rt.redis.hgetall(rt.keys.run(run_id))  # type: ignore[return-value]


def step(rt: Runtime, run_id: str, token: str, seq: int = 1, value: object = "x") -> None:
    rec = StepRecord(seq, f"s{seq}", StepKind.RUN, "done", 1, now_ms(), now_ms())
    rt.checkpoints.commit(run_id, token, rec, json.dumps(value))


def expire_lease(rt: Runtime, run_id: str) -> None:
    """Wait (on the server's clock) until the run's lease has expired."""
    until = int(run_hash(rt, run_id)["lease_until"])
    wait_until(lambda: rt.redis.time()[0] * 1000 + rt.redis.time()[1] // 1000 > until, 5)


# Create-if-absent -------------------------------------------------------------------------


def test_second_create_of_an_executing_run_changes_nothing_and_its_token_stays_unique(
    rt: Runtime,
) -> None:
    # Given a run that a worker took (token 1)
    run_id = create(rt)
    first = take(rt, run_id)
    before = run_hash(rt, run_id)
    # When the same run is created again (two routers, a racing caller)
    again = rt.runs.create_if_absent(skill=SKILL, version="v2", run_id=run_id, data={"x": 1})
    # Then the first executor still commits and nobody else gets its token
    step(rt, run_id, first.token)
    assert isinstance(rt.leases.acquire(run_id, "other"), AcquireRefused)
    # And nothing was written or dispatched
    assert again.created is False
    after = run_hash(rt, run_id)
    # what the commit itself writes: storage, counters, the recording mark
    before.update({k: after[k] for k in ("stored", "c_steps", "c_attempts", "recording")})
    assert after == before
    assert rt.dispatcher.queue.count == 1
    assert rt.redis.zscore(rt.keys.queued, run_id) is None
    # And after a takeover the new token differs and the zombie's commit is refused
    expire_lease(rt, run_id)
    assert rt.transitions.reap(run_id).job_id
    second = take(rt, run_id)
    assert second.token != first.token
    with pytest.raises(LeaseLostError):
        step(rt, run_id, first.token, seq=2)
    step(rt, run_id, second.token, seq=2)


def test_create_strict_refuses_an_existing_id(rt: Runtime) -> None:
    from loopwright.errors import UserError

    run_id = create(rt)
    with pytest.raises(UserError, match="already exists"):
        rt.runs.create(skill=SKILL, version="v1", run_id=run_id)


def test_create_places_the_run_by_kind(rt: Runtime) -> None:
    queued = create(rt)
    parked = create(rt, wake_at=now_ms() + 60_000)
    skipped = create(rt, skipped="rate limited")
    k = rt.keys
    assert rt.redis.zscore(k.queued, queued) is not None
    assert rt.redis.zscore(k.timers, parked) is not None
    assert rt.redis.zscore(k.ended, skipped) is not None
    assert run_hash(rt, skipped)["status"] == "skipped"
    assert rt.dispatcher.queue.count == 1  # only the queued one is dispatched
    assert set(rt.redis.zrange(k.runs, 0, -1)) == {queued, parked, skipped}


# Acquire and renew --------------------------------------------------------------------------


def test_acquire_refuses_missing_busy_parked_and_terminal_runs(rt: Runtime) -> None:
    assert rt.leases.acquire("nope", "w") == AcquireRefused("missing")
    run_id = create(rt)
    acq = take(rt, run_id)
    assert acq.token == "1" and acq.run["status"] == "running"
    assert rt.leases.acquire(run_id, "w") == AcquireRefused("busy")
    parked = create(rt, wake_at=now_ms() + 60_000)
    assert rt.leases.acquire(parked, "w") == AcquireRefused("parked", "sleeping")
    assert rt.transitions.finish(run_id, acq.token, "completed", "1", "", 0).ok
    assert rt.leases.acquire(run_id, "w") == AcquireRefused("terminal", "completed")


def concurrency_run(rt: Runtime, limit: int = 1) -> tuple[str, str]:
    run_id = create(rt)
    slot = rt.keys.concurrency_slots(SKILL, "-")
    rt.redis.hset(rt.keys.run(run_id), mapping={"conc_slot": slot, "conc_limit": limit})
    return run_id, slot


def test_acquire_declares_the_slot_and_throttles_at_the_limit(rt: Runtime) -> None:
    # Given two runs sharing one slot (written like today's records: the caller declares none)
    a, slot = concurrency_run(rt)
    b, _ = concurrency_run(rt)
    # When both are taken
    acq = take(rt, a)
    # Then the first holds the slot and the second is parked briefly
    assert acq.slot == slot and rt.redis.zscore(slot, a) is not None
    assert rt.leases.acquire(b, "w", slot) == AcquireRefused("throttled")
    assert run_hash(rt, b)["status"] == "sleeping"


def test_a_wrongly_declared_slot_is_refused_before_any_write(rt: Runtime) -> None:
    run_id, slot = concurrency_run(rt)
    raw = rt.redis.register_script(__import__("loopwright.runner.lease").runner.lease.ACQUIRE_LUA)
    k = rt.keys
    keys = [k.run(run_id), k.steps(run_id), k.leases, k.queued, k.timers]
    with pytest.raises(ResponseError, match="LW-STALE"):
        raw(keys=keys, args=[run_id, "w", 1000])  # slot not declared
    with pytest.raises(ResponseError, match="LW-STALE"):
        raw(keys=[*keys, slot + "x"], args=[run_id, "w", 1000])
    assert run_hash(rt, run_id)["fence"] == "0"
    assert rt.redis.zcard(slot) == 0


def test_renew_extends_lease_and_slot_only_for_the_holder(rt: Runtime) -> None:
    run_id, slot = concurrency_run(rt)
    acq = take(rt, run_id)
    before = float(rt.redis.zscore(slot, run_id) or 0)
    wait_until(lambda: rt.leases.renew(run_id, acq.token, slot) and (
        float(rt.redis.zscore(slot, run_id) or 0) > before
    ))  # fmt: skip
    assert int(run_hash(rt, run_id)["lease_until"]) == int(rt.redis.zscore(slot, run_id) or 0)
    assert rt.leases.renew(run_id, "999", slot) is False
    with pytest.raises(StaleDeclarationError):
        rt.leases.renew(run_id, acq.token)  # the slot must be declared


# Commit -----------------------------------------------------------------------------------------


def test_commit_refuses_a_stale_token_and_enforces_the_quota(rt: Runtime) -> None:
    run_id = create(rt)
    acq = take(rt, run_id)
    with pytest.raises(LeaseLostError):
        step(rt, run_id, "7")
    small = Checkpoints(rt.redis, rt.keys, inline_bytes=1024, quota_bytes=200)
    rec = StepRecord(1, "s1", StepKind.RUN, "done", 1, 1, 2)
    small.commit(run_id, acq.token, rec, json.dumps("a" * 50))
    stored = int(run_hash(rt, run_id)["stored"])
    small.commit(run_id, acq.token, rec, json.dumps("b" * 50))  # a rewrite replaces its size
    assert int(run_hash(rt, run_id)["stored"]) == stored
    with pytest.raises(StorageQuotaError):
        small.commit(
            run_id, acq.token, StepRecord(2, "s2", StepKind.RUN, "done"), json.dumps("c" * 200)
        )
    assert rt.redis.hexists(rt.keys.steps(run_id), "2") is False


# Parents waiting on children ------------------------------------------------------------------


def waiting_parent(rt: Runtime) -> tuple[str, str]:
    """A parent parked waiting on its child's end (created, pending invoke step #1)."""
    parent = create(rt)
    acq = take(rt, parent)
    child = f"{parent}c"
    rec = StepRecord(1, "call", StepKind.INVOKE, "pending", 1, now_ms(), 0, child=child)
    rt.checkpoints.commit(parent, acq.token, rec, None)
    create(rt, child, parent=parent, parent_seq=1)
    parked = rt.transitions.park_waiting(parent, acq.token, None, 5, child=(child, 1))
    assert parked.ok and parked.job_id is None
    return parent, child


def assert_resumed(rt: Runtime, parent: str, job_id: str | None, status: str) -> dict[str, Any]:
    h = run_hash(rt, parent)
    assert h["status"] == "queued" and job_id == h["dispatch"]
    assert rt.redis.zscore(rt.keys.waiting, parent) is None
    assert rt.redis.zscore(rt.keys.queued, parent) is not None
    rec = json.loads(rt.redis.hget(rt.keys.steps(parent), "1") or "{}")
    assert rec["status"] == status
    return dict(rec)


def test_finish_of_a_child_resumes_its_waiting_parent(rt: Runtime) -> None:
    parent, child = waiting_parent(rt)
    acq = take(rt, child)
    res = rt.transitions.finish(child, acq.token, "completed", '{"n":1}', "", 3)
    rec = assert_resumed(rt, parent, res.job_id, "done")
    assert rec["output"] == {"n": 1}
    assert rt.redis.zscore(rt.keys.ended, child) is not None


def test_finish_with_a_stale_token_changes_nothing(rt: Runtime) -> None:
    parent, child = waiting_parent(rt)
    take(rt, child)
    assert not rt.transitions.finish(child, "42", "completed", "1", "", 3)
    assert run_hash(rt, child)["status"] == "running"
    assert run_hash(rt, parent)["status"] == "waiting"


def test_cancel_of_a_child_resumes_its_waiting_parent_with_the_failure(rt: Runtime) -> None:
    parent, child = waiting_parent(rt)
    code, job = rt.transitions.cancel(child, "stop")
    rec = assert_resumed(rt, parent, job, "failed")
    assert code == 1
    assert rec["error"] == f"child run {child} ({SKILL}) cancelled: stop"
    assert rt.transitions.cancel(child, "again") == (0, None)
    assert rt.transitions.cancel("nope", "x") == (-1, None)


def test_reaper_giving_up_on_a_child_resumes_its_waiting_parent(rt: Runtime) -> None:
    # max_run_reaps=2: the third lost executor fails the run
    parent, child = waiting_parent(rt)
    for _ in range(2):
        take(rt, child)
        expire_lease(rt, child)
        assert rt.transitions.reap(child).job_id
    take(rt, child)
    expire_lease(rt, child)
    res = rt.transitions.reap(child)
    assert res.failed and res.job_id is None
    rec = assert_resumed(rt, parent, res.parent_job, "failed")
    assert "lost 3 times" in rec["error"]
    assert rt.redis.zscore(rt.keys.ended, child) is not None


def test_skipped_child_resumes_its_waiting_parent(rt: Runtime) -> None:
    parent = create(rt)
    acq = take(rt, parent)
    child = f"{parent}c"
    rec = StepRecord(1, "call", StepKind.INVOKE, "pending", 1, now_ms(), 0, child=child)
    rt.checkpoints.commit(parent, acq.token, rec, None)
    assert rt.transitions.park_waiting(parent, acq.token, None, 5).ok
    made = rt.runs.create_if_absent(
        skill=SKILL, version="v1", run_id=child, parent=parent, parent_seq=1, skipped="limit"
    )
    assert made.created
    assert_resumed(rt, parent, run_hash(rt, parent)["dispatch"], "failed")
    assert rt.dispatcher.queue.count == 2  # the parent's first dispatch and its resumption


def test_a_parent_parking_after_its_child_ended_resolves_itself(rt: Runtime) -> None:
    parent = create(rt)
    acq = take(rt, parent)
    child = f"{parent}c"
    rec = StepRecord(1, "call", StepKind.INVOKE, "pending", 1, now_ms(), 0, child=child)
    rt.checkpoints.commit(parent, acq.token, rec, None)
    create(rt, child, parent=parent, parent_seq=1)
    cacq = take(rt, child)
    assert rt.transitions.finish(child, cacq.token, "completed", '"ok"', "", 1).job_id is None
    parked = rt.transitions.park_waiting(parent, acq.token, None, 5, child=(child, 1))
    assert assert_resumed(rt, parent, parked.job_id, "done")["output"] == "ok"


def test_resolve_is_a_compare_and_set(rt: Runtime) -> None:
    parent, child = waiting_parent(rt)
    assert rt.transitions.resolve(parent, 1, status="done", check=("child", "other")) is None
    jid = rt.transitions.resolve(parent, 1, status="done", output_json="2", check=("child", child))
    assert jid and assert_resumed(rt, parent, jid, "done")["output"] == 2
    assert rt.transitions.resolve(parent, 1, status="done", check=("child", child)) is None


def test_child_parent_is_resolved_behind_more_than_500_waiting_runs(rt: Runtime) -> None:
    # Given 600 event waiters parked before a parent (written directly: cheap)
    k = rt.keys
    rt.redis.zadd(k.waiting, {f"ev{i:04d}": i for i in range(600)})
    parent, child = waiting_parent(rt)
    # When the child ends
    acq = take(rt, child)
    res = rt.transitions.finish(child, acq.token, "failed", "", "boom", 1)
    # Then the parent is resolved at once, whatever the size of the waiting set
    assert "boom" in assert_resumed(rt, parent, res.job_id, "failed")["error"]


def old_format_family(rt: Runtime, child_status: str) -> tuple[str, str]:
    """A parent and its child exactly as the previous version stored them: the parent parked
    in ``waiting`` on its pending invoke step #1, the child in ``child_status``."""
    k, ts = rt.keys, now_ms()
    parent, child = f"{ts:012x}0000aaaa", f"{ts:012x}0000bbbb"

    def record(run_id: str, status: str, **extra: object) -> dict[str, object]:
        event = {"name": "loopwright/manual", "data": {}, "id": run_id, "ts": ts}
        return {
            "id": run_id, "skill": SKILL, "version": "v1", "status": status,
            "trigger": '{"type": "manual"}', "event": json.dumps(event), "params": "{}",
            "attempts": 1, "created_at": ts, "updated_at": ts, "fence": 1, "dispatches": 1,
            "dispatch": f"{k.prefix}-{run_id}-1", **extra,
        }  # fmt: skip

    rt.redis.hset(k.run(parent), mapping=record(parent, "waiting", active_ms=5))  # type: ignore[arg-type]
    pending = {"seq": 1, "name": "call", "kind": "invoke", "status": "pending", "attempts": 1,
               "started_at": ts, "ended_at": 0, "child": child}  # fmt: skip
    rt.redis.hset(k.steps(parent), "1", json.dumps(pending, separators=(",", ":")))
    rt.redis.zadd(k.waiting, {parent: ts})
    child_fields = record(child, child_status, parent=parent, parent_seq=1, fence=0)
    if child_status == "cancelled":
        child_fields.update(error="by hand", finished_at=ts)
    rt.redis.hset(k.run(child), mapping=child_fields)  # type: ignore[arg-type]
    rt.redis.sadd(k.children(parent), child)
    return parent, child


def test_scheduler_resumes_a_parent_parked_by_the_previous_version_behind_600_waiters(
    rt: Runtime,
) -> None:
    # Given a parent parked by the previous version whose child ended without telling it
    # (cancelled: that version's cancel did not resolve parents), behind 600 event waiters
    rt.redis.zadd(rt.keys.waiting, {f"ev{i:04d}": i for i in range(600)})
    parent, child = old_format_family(rt, "cancelled")
    # When the scheduler makes its pass
    sched = Scheduler(rt)
    wait_until(lambda: sched.adopt_parked_parents() or run_hash(rt, parent)["status"] != "waiting")
    # Then the parent was resumed with the child's failure
    rec = assert_resumed(rt, parent, run_hash(rt, parent)["dispatch"], "failed")
    assert rec["error"] == f"child run {child} ({SKILL}) cancelled: by hand"


def test_a_child_of_the_previous_version_resolves_its_old_parent_when_it_ends(
    rt: Runtime,
) -> None:
    # Given a parent and a queued child both written by the previous version
    parent, child = old_format_family(rt, "queued")
    # When this version's worker takes the child and finishes it
    acq = take(rt, child)
    res = rt.transitions.finish(child, acq.token, "completed", '"done"', "", 1)
    # Then the old parent is resumed with the output
    assert assert_resumed(rt, parent, res.job_id, "done")["output"] == "done"


def test_ended_runs_release_their_concurrency_slot(rt: Runtime) -> None:
    run_id, slot = concurrency_run(rt)
    acq = take(rt, run_id)
    assert rt.redis.zscore(slot, run_id) is not None
    assert rt.transitions.finish(run_id, acq.token, "completed", "1", "", 1).ok
    assert rt.redis.zscore(slot, run_id) is None
    other, _ = concurrency_run(rt)
    take(rt, other)
    assert rt.transitions.cancel(other, "x")[0] == 1
    assert rt.redis.zcard(slot) == 0


# Registry --------------------------------------------------------------------------------------

SRC_A = "from loopwright.sdk import skill\n\n@skill(name='r')\ndef main(ctx):\n    return 1\n"
SRC_B = SRC_A.replace("return 1", "return 2")


def test_registry_register_activate_approve_rollback_pause(rt: Runtime) -> None:
    reg = Registry(rt.redis, rt.keys)
    a = reg.register(SRC_A, None, None, name="r", author="person")
    assert (a.outcome, a.status, a.previous) == ("activated", "active", None)
    assert reg.register(SRC_A, None, None, name="r", author="person").outcome == "unchanged"
    assert reg.register(SRC_B, None, None, name="r", author="agent").outcome == "denied"
    b = reg.register(SRC_B, None, None, name="r", author="review")
    assert b.outcome == "pending" and rt.redis.hget(rt.keys.skills, "r") == a.version
    assert reg.approve("r", b.version).action == "approve"
    assert rt.redis.hget(rt.keys.skills, "r") == b.version
    assert reg.rollback("r", a.version).version == a.version
    assert reg.pause("r").status == "paused" and rt.redis.hget(rt.keys.skills, "r") is None
    assert reg.resume("r").status == "active"
    assert reg.seq == 7  # every call but the denied one counted a change


def test_a_crash_before_enqueueing_a_resumed_parent_is_repaired_by_the_scheduler(
    rt: Runtime,
) -> None:
    # Given a child whose end resumed its parent, and a process that died before the enqueue
    parent, child = waiting_parent(rt)
    acq = take(rt, child)
    job = rt.transitions.finish(child, acq.token, "completed", "1", "", 1).job_id
    assert job and rt.dispatcher.job_status(job) is None
    # When the scheduler's lost-dispatch check runs past the grace period
    sched = Scheduler(rt)
    wait_until(lambda: sched.tick().redispatched, timeout=10)
    # Then the parent has a new dispatch whose job waits in the queue
    new = run_hash(rt, parent)["dispatch"]
    assert new != job and rt.dispatcher.waiting_in_queue(new)


def test_a_run_with_a_parent_but_no_parent_step_ends_without_resolving_anything(
    rt: Runtime,
) -> None:
    parent = create(rt)
    child = create(rt, parent=parent)
    acq = take(rt, child)
    res = rt.transitions.finish(child, acq.token, "completed", "1", "", 1)
    assert res.ok and res.job_id is None
    other = create(rt, parent=parent)
    assert rt.transitions.cancel(other, "x") == (1, None)
