"""Retention, pins and feedback against real Redis, schedulers and workers (issue 10).

Runs are written through the runner's own scripts (create, wake, acquire, checkpoint commits,
finish), so the keys they leave are the keys real runs leave. Retention is 1 s through
settings; tests wait on positive signals (the deleted-runs counter, a later run), never on a
sleep.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from redis import Redis

from conftest import Cluster, wait_until
from loopwright.errors import UserError
from loopwright.history.retention import Retention
from loopwright.runner.lease import Acquired
from loopwright.runner.records import StepRecord, encode_json, now_ms
from loopwright.runner.runtime import Runtime
from loopwright.sdk.steps import StepKind
from loopwright.service.runs import RunService, creation_day

SKILL = "ret-skill"
VERSION = "f" * 64


def held_run(rt: Runtime, skill: str = SKILL, **kw: Any) -> tuple[str, str]:
    """A run created and acquired through the runner's scripts (no RQ job): (id, token)."""
    run_id = rt.runs.create(skill=skill, version=VERSION, data={"x": 1}, wake_at=now_ms(), **kw)
    rt.transitions.wake(run_id)
    got = rt.leases.acquire(run_id, "test")
    assert isinstance(got, Acquired), got
    return run_id, got.token


def finished_run(rt: Runtime, *, big: bool = False, **kw: Any) -> str:
    """A completed 3-step run with logs, a notice count and recorded calls; ``big`` puts one
    output in its own ``out:{seq}`` key."""
    run_id, token = held_run(rt, **kw)
    for seq in range(3):
        value: Any = "x" * (40_000 if big and seq == 1 else 20)
        rec = StepRecord(seq, f"s{seq}", StepKind.RUN, "done", started_at=1, ended_at=2)
        rt.checkpoints.commit(run_id, token, rec, encode_json(value, what="o", max_bytes=1 << 20))
    k = rt.keys
    rt.redis.rpush(k.logs(run_id), json.dumps({"ts": 1, "level": "info", "message": "m"}))
    rt.redis.incr(k.notices(run_id))
    rt.redis.rpush(k.run_calls(run_id), "{}")
    assert rt.transitions.finish(run_id, token, "completed", '"ok"', "", 5)
    return run_id


def keyspace(redis: Redis, prefix: str) -> set[str]:
    return {str(key) for key in redis.scan_iter(f"{prefix}:*", count=1000)}


def deleted(rt: Runtime) -> int:
    return int(rt.redis.get(rt.keys.retention_deleted) or 0)


def purge_until(rt: Runtime, count: int) -> Retention:
    """Run retention passes (as the scheduler does each tick) until ``count`` runs are gone."""
    ret = Retention(rt.redis, rt.keys, rt.settings.run_retention, rt.settings.event_retention)
    wait_until(lambda: ret.tick().deleted >= 0 and deleted(rt) >= count, timeout=20)
    return ret


def test_retention_deletes_exactly_the_expired_unpinned_finished_runs_and_their_keys(
    make_cluster: Any,
) -> None:
    # Given runs that must stay: queued, running, sleeping, waiting, and a pinned finished one
    c: Cluster = make_cluster(run_retention="1s")
    rt, k = c.rt, c.rt.keys
    queued = rt.runs.create(skill=SKILL, version=VERSION, wake_at=now_ms())
    rt.transitions.wake(queued)
    running, _ = held_run(rt)
    sleeping = rt.runs.create(skill=SKILL, version=VERSION, wake_at=now_ms() + 3_600_000)
    waiting, token = held_run(rt)
    assert rt.transitions.park_waiting(waiting, token, None, 1, waiter=("ev.x", "f", "{}"))
    pinned = finished_run(rt, big=True)
    RunService(rt.redis, k).pin(pinned)
    before = keyspace(rt.redis, k.prefix)
    # And finished runs, one with a large output in its own key
    gone = [finished_run(rt, big=True), finished_run(rt), finished_run(rt)]
    assert any(":out:" in key for key in keyspace(rt.redis, k.prefix) - before)
    # When retention passes after their retention of 1 s
    purge_until(rt, 3)
    # Then exactly those runs are gone, every key of theirs with them (no tombstone: runs
    # started by hand have no trigger claim), and everything else is untouched (the tick
    # also records how far its status/signature index backfill walked)
    assert keyspace(rt.redis, k.prefix) == before | {k.retention_deleted, k.runs_indexed}
    assert deleted(rt) == 3 and not any(rt.runs.exists(r) for r in gone)
    for run_id in (queued, running, sleeping, waiting, pinned):
        assert rt.runs.exists(run_id)
    assert {str(x) for x in rt.redis.zrange(k.runs, 0, -1)} == {
        queued, running, sleeping, waiting, pinned
    }  # fmt: skip


def test_a_child_is_kept_while_its_parent_has_not_ended(make_cluster: Any) -> None:
    # Given a parent still running and its finished child, past retention
    c: Cluster = make_cluster(run_retention="1s")
    rt = c.rt
    parent, token = held_run(rt)
    child = finished_run(rt, parent=parent, parent_seq=0)
    other = finished_run(rt)
    # When retention passes: the unrelated run goes, the child stays
    ret = purge_until(rt, 1)
    assert not rt.runs.exists(other) and rt.runs.exists(child)
    # And once the parent ends, both go (with the parent's children set)
    assert rt.transitions.finish(parent, token, "completed", "", "", 1)
    wait_until(lambda: ret.tick().deleted >= 0 and deleted(rt) >= 3, timeout=20)
    assert not rt.runs.exists(child) and not rt.runs.exists(parent)
    assert not rt.redis.exists(rt.keys.children(parent))


def test_backfill_bounds_runs_that_ended_before_the_upgrade(make_cluster: Any) -> None:
    # Given a run written in the old format: hash, steps, logs, indexes, but no `ended` entry
    c: Cluster = make_cluster(run_retention="1s")
    rt, k = c.rt, c.rt.keys
    before = keyspace(rt.redis, k.prefix)
    old, ts = "0000000000aa00000001", now_ms() - 2 * 86_400_000
    rt.redis.hset(k.run(old), mapping={
        "id": old, "skill": SKILL, "version": VERSION, "status": "completed",
        "created_at": ts, "finished_at": ts + 5, "updated_at": ts + 5, "fence": 1,
    })  # fmt: skip
    rt.redis.hset(k.steps(old), "0", json.dumps({"seq": 0, "name": "a", "status": "done"}))
    rt.redis.rpush(k.logs(old), "{}")
    rt.redis.zadd(k.runs, {old: ts})
    rt.redis.zadd(k.runs_by_skill(SKILL), {old: ts})
    assert rt.redis.zscore(k.ended, old) is None
    # When retention ticks: the backfill indexes it by its end time, then it is deleted
    purge_until(rt, 1)
    # Then nothing of it is left (it is older than the dedupe window: no tombstone either)
    assert keyspace(rt.redis, k.prefix) == before | {k.retention_deleted, k.runs_indexed}


LOOPING = """
from loopwright.sdk import skill

@skill(name="ret-busy")
def main(ctx):
    a = ctx.step.run("one", lambda: ctx.event["data"]["n"])
    return ctx.step.run("two", lambda: a * 2)
"""


def test_retention_under_concurrent_runs_never_touches_an_unfinished_one(
    make_cluster: Any,
) -> None:
    # Given a scheduler with a 1 s retention and a worker executing runs as they come
    c: Cluster = make_cluster(run_retention="1s")
    rt = c.rt
    c.skill(LOOPING)
    pubsub = rt.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
    pubsub.subscribe(rt.keys.run_changes_channel)
    c.scheduler()
    c.worker()
    # When runs keep starting in waves until retention has deleted earlier ones while later
    # ones execute (at least 40 runs, two waves after the first deletion)
    started: list[str] = []
    completed: set[str] = set()

    def drain() -> bool:
        while msg := pubsub.get_message(timeout=0.01):
            run_id, _, status = str(msg["data"]).partition(" ")
            if status in ("completed", "failed", "cancelled"):
                assert status == "completed", (run_id, status)
                completed.add(run_id)
        return False

    after_first_delete = 0
    while len(started) < 40 or after_first_delete < 2:
        wave = [c.start("ret-busy", {"n": len(started) + i}) for i in range(5)]
        started += wave
        after_first_delete += 1 if deleted(rt) > 0 else 0
        wait_until(lambda wave=wave: drain() or set(wave) <= completed, timeout=60)  # type: ignore[misc]
    # Then every run completed (none was deleted under its executor) and all are deleted
    wait_until(lambda: deleted(rt) == len(started), timeout=60)
    assert set(started) == completed
    assert not any(rt.runs.exists(r) for r in started)
    assert rt.redis.zcard(rt.keys.runs) == 0 and rt.redis.zcard(rt.keys.ended) == 0
    pubsub.close()


ON_ORDER = """
from loopwright.sdk import skill, event

@skill(name="ret-orders", trigger=event("order.placed"))
def main(ctx):
    return ctx.step.run("book", lambda: ctx.event["data"]["n"])
"""


def test_an_event_redelivered_after_its_run_was_deleted_starts_nothing(
    make_cluster: Any,
) -> None:
    # Given an event-triggered skill whose run of event e-1 ran and was deleted by retention
    c: Cluster = make_cluster(run_retention="1s")
    rt, k = c.rt, c.rt.keys
    c.skill(ON_ORDER)
    c.scheduler()
    c.worker()
    rt.bus.send("order.placed", {"n": 1}, "e-1")
    wait_until(lambda: deleted(rt) == 1, timeout=30)
    (first,) = [str(x) for x in rt.redis.scan_iter(f"{k.prefix}:gone:*")]  # its tombstone
    # (the router trims routed entries: the same entry is written again, as SEND_LUA wrote it)
    entry: dict[Any, Any] = {"name": "order.placed", "id": "e-1", "data": '{"n":1}',
                             "ts": now_ms(), "hop": 0, "root": "ev:e-1"}  # fmt: skip
    # When the stream delivers e-1 again (a router that died before acking; the send-side
    # dedupe marker cannot stop that), followed by a new event e-2
    rt.redis.xadd(k.events, entry)
    rt.bus.send("order.placed", {"n": 2}, "e-2")
    # Then e-2 starts its run, and e-1 started nothing new: its claim meets the tombstone
    wait_until(lambda: rt.redis.zcard(k.runs_by_skill("ret-orders")) >= 1, timeout=30)
    runs = rt.runs.find(skill="ret-orders")
    assert [r.event["id"] for r in runs] == ["e-2"]
    assert rt.redis.ttl(first) > 0  # it expires with the dedupe window


def test_feedback_pins_counts_once_per_run_and_unpin_releases(make_cluster: Any) -> None:
    # Given a finished run past retention and an unrelated one
    c: Cluster = make_cluster(run_retention="1s")
    rt, k = c.rt, c.rt.keys
    labelled, other = finished_run(rt), finished_run(rt)
    # When a person labels it bad, then relabels it good, with a note
    bad = c.cli("runs", "feedback", labelled, "--bad", "--note", "false alarm", "--json")
    assert bad.returncode == 0, bad.stderr
    good = c.cli("runs", "feedback", labelled, "--good", "--json")
    assert json.loads(good.stdout)["previous"] == "bad"
    # Then it is stored, pinned and counted once in its rollup bucket
    h: dict[str, str] = rt.redis.hgetall(k.run(labelled))  # type: ignore[assignment]
    assert h["feedback"] == "good" and h["pinned"] == "1" and "feedback_note" not in h
    assert h["feedback_by"].startswith("cli:") and int(h["feedback_at"]) > 0
    # (the bucket the run was rolled up in when it ended, which also holds its other counts)
    bucket = k.rollup(SKILL, VERSION, h.get("rolled") or creation_day(int(h["created_at"])))
    assert h["feedback_day"] == (h.get("rolled") or creation_day(int(h["created_at"])))
    fb = rt.redis.hmget(bucket, ["fb_good", "fb_bad"])
    assert fb == ["1", "0"]
    # And retention keeps it while deleting the other
    ret = purge_until(rt, 1)
    assert rt.runs.exists(labelled) and not rt.runs.exists(other)
    # When it is unpinned, the next pass deletes it
    assert c.cli("runs", "unpin", labelled).returncode == 0
    wait_until(lambda: ret.tick().deleted >= 0 and deleted(rt) == 2, timeout=20)
    assert not rt.runs.exists(labelled) and not rt.redis.sismember(k.pins, labelled)


def test_a_note_is_stored_literally_and_pin_cli_pins(make_cluster: Any) -> None:
    c: Cluster = make_cluster()
    rt, k = c.rt, c.rt.keys
    run_id = finished_run(rt)
    note = "[bold]not[/] a $(shell) 'quote' — ünïcode"
    assert c.cli("runs", "feedback", run_id, "--bad", "--note", note).returncode == 0
    assert rt.redis.hget(k.run(run_id), "feedback_note") == note
    shown = json.loads(c.cli("runs", "show", run_id, "--json").stdout)
    assert (shown["feedback"], shown["feedback_note"], shown["pinned"]) == ("bad", note, True)
    other = finished_run(rt)
    pin = c.cli("runs", "pin", other, "--json")
    assert pin.returncode == 0 and json.loads(pin.stdout) == {"run_id": other, "pinned": True}
    assert rt.redis.smembers(k.pins) == {run_id, other}


def test_bad_input_to_the_new_commands_is_one_line_and_stores_nothing(
    make_cluster: Any,
) -> None:
    c: Cluster = make_cluster()
    rt, k = c.rt, c.rt.keys
    run_id = finished_run(rt)
    cases = [
        (("runs", "feedback", "nope", "--good"), "unknown run id"),
        (("runs", "pin", "nope"), "unknown run id"),
        (("runs", "unpin", "nope"), "unknown run id"),
        (("runs", "feedback", run_id), "exactly one of --good or --bad"),
        (("runs", "feedback", run_id, "--good", "--bad"), "exactly one of --good or --bad"),
        (("runs", "feedback", run_id, "--bad", "--note", "n" * 100_000), "over the 2000"),
        (("runs", "feedback", run_id, "--bad", "--note", "a\x1b[2Jb"), "control character"),
        (("runs", "feedback", run_id, "--bad", "--note", "two\nlines"), "control character"),
    ]
    for args, message in cases:
        proc = c.cli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and message in lines[0], (args, proc)
    # A 1 MB note through the service layer (the shared logic) is refused the same way
    svc = RunService(rt.redis, k)
    with pytest.raises(UserError, match="over the 2000"):
        svc.feedback(run_id, False, "n" * (1 << 20), "test")
    with pytest.raises(UserError, match="control character"):  # a text direction override
        svc.feedback(run_id, False, "ok \u202egnp.exe", "test")
    h = rt.redis.hgetall(k.run(run_id))
    assert not {"feedback", "feedback_note", "pinned"} & set(h)
    assert not rt.redis.exists(k.pins)
    for bucket in rt.redis.keys(f"{k.prefix}:rollup:*"):  # the run's own end was rolled up
        assert not {"fb_good", "fb_bad"} & set(rt.redis.hkeys(bucket)), bucket


def test_doctor_shows_memory_runs_kept_and_the_oldest(make_cluster: Any) -> None:
    c: Cluster = make_cluster()
    finished_run(c.rt)
    proc = c.cli("doctor", "--json", timeout=120)
    history = json.loads(proc.stdout)["history"]
    assert history["runs"] == 1 and history["memory_bytes"] > 0 and history["oldest_ms"] > 0
    assert "runs kept" in history["detail"] and "oldest" in history["detail"]
