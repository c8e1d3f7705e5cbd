"""Events, cron, waits and child runs with real Redis, schedulers (routers) and workers."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable

from conftest import Cluster, wait_until

ALL_ORDERS = """
from loopwright.sdk import skill, event

@skill(name="order-audit", trigger=event("order.created"))
def main(ctx):
    return ctx.step.run("audit", lambda: ctx.event["data"]["n"])
"""

EU_ORDERS = """
from loopwright.sdk import skill, event

@skill(name="eu-orders", trigger=event("order.created", match={"region": "eu"}))
def main(ctx):
    return ctx.step.run("book", lambda: ctx.event["data"]["n"] * 10)
"""


def _runs(cluster: Cluster, skill: str) -> list:  # type: ignore[type-arg]
    return cluster.rt.runs.find(skill=skill, limit=1000)


def test_events_sent_while_nothing_runs_are_processed_once_each_after_restart(
    cluster: Cluster,
) -> None:
    # Given two event-triggered skills and no worker, router or scheduler running
    cluster.skill(ALL_ORDERS, "all.py")
    cluster.skill(EU_ORDERS, "eu.py")
    bus = cluster.rt.bus
    sent = [
        bus.send("order.created", {"n": i, "region": "eu" if i % 2 else "us"}, f"order-{i}")
        for i in range(20)
    ]
    resent = [bus.send("order.created", {"n": i, "region": "eu"}, f"order-{i}") for i in range(5)]
    bus.send("order.cancelled", {"n": 99})
    assert all(s.accepted for s in sent) and not any(s.accepted for s in resent)
    # When they come back
    cluster.scheduler()
    cluster.worker()

    def done() -> bool:
        runs = _runs(cluster, "order-audit") + _runs(cluster, "eu-orders")
        return len(runs) == 30 and all(r.status.value == "completed" for r in runs)

    wait_until(done, timeout=90)
    # Then each matching skill ran once per event id, with that event
    audit = Counter(r.event["id"] for r in _runs(cluster, "order-audit"))
    eu = Counter(r.event["id"] for r in _runs(cluster, "eu-orders"))
    assert audit == Counter({f"order-{i}": 1 for i in range(20)})
    assert eu == Counter({f"order-{i}": 1 for i in range(1, 20, 2)})
    assert sorted(r.output for r in _runs(cluster, "eu-orders")) == [
        i * 10 for i in range(1, 20, 2)
    ]


def test_send_event_cli_dedupes_by_id_and_rejects_bad_input(cluster: Cluster) -> None:
    first = cluster.cli(
        "events", "send", "deploy.done", "--data", '{"v": 1}', "--id", "d-1", "--json"
    )
    again = cluster.cli(
        "events", "send", "deploy.done", "--data", '{"v": 1}', "--id", "d-1", "--json"
    )
    assert '"accepted": true' in first.stdout and '"accepted": false' in again.stdout
    bad = cluster.cli("events", "send", "bad name!", "--data", "{}")
    assert bad.returncode == 1 and "event name" in bad.stderr
    assert cluster.cli("events", "send", "x", "--data", "{nope").returncode == 1
    assert cluster.rt.redis.xlen(cluster.rt.keys.events) == 1


CRON_EVERY_SECOND = """
from loopwright.sdk import skill, cron

@skill(name="heartbeat", trigger=cron("* * * * * *"))
def main(ctx):
    return ctx.step.run("beat", lambda: ctx.event["data"]["tick_ms"])
"""


def test_two_schedulers_fire_each_tick_exactly_once_across_a_leader_kill(
    make_cluster: Callable[..., Cluster],
) -> None:
    # Given a cron skill ticking every second and two scheduler processes
    cluster = make_cluster(scheduler_leader_ttl=1.0)
    cluster.skill(CRON_EVERY_SECOND)
    schedulers = [cluster.scheduler(), cluster.scheduler()]
    wait_until(lambda: len(_runs(cluster, "heartbeat")) >= 5, timeout=30)
    # When the leader is SIGKILLed
    owner = str(cluster.rt.redis.get(cluster.rt.keys.scheduler_leader))
    leader = next(p for p in schedulers if f":{p.pid}:" in owner)
    os.killpg(leader.pid, signal.SIGKILL)
    killed_at = time.time()

    def ticks_after_kill() -> bool:
        ticks = [int(r.trigger["tick_ms"]) for r in _runs(cluster, "heartbeat")]
        late = [t for t in ticks if t > killed_at * 1000 + 4000]
        return len(ticks) >= 12 and len(late) >= 2

    # (the new leader has fired ticks well after the kill: it took over and caught up)
    wait_until(ticks_after_kill, timeout=30)
    new_owner = str(cluster.rt.redis.get(cluster.rt.keys.scheduler_leader))
    assert new_owner not in (owner, "None")
    # Then every tick between the first and the last fired exactly once: no duplicate, no gap
    ticks = sorted(int(r.trigger["tick_ms"]) for r in _runs(cluster, "heartbeat"))
    assert len(ticks) >= 12
    assert len(ticks) == len(set(ticks)), "a tick fired twice"
    assert ticks == list(range(ticks[0], ticks[-1] + 1000, 1000)), "a tick was lost"
    assert any(t > killed_at * 1000 + 2000 for t in ticks), "the new leader fired after the kill"


APPROVAL = """
from loopwright.sdk import skill

@skill(name="needs-approval", events={"receive": ["ticket.approved"]})
def main(ctx):
    ticket = ctx.event["data"]["ticket"]
    ctx.step.run("request", lambda: ticket)
    got = ctx.step.wait_for_event(
        "approval", "ticket.approved", match={"ticket": ticket}, timeout=ctx.event["data"]["wait"]
    )
    return {"approved_by": got["data"]["by"]} if got else {"approved_by": None}
"""


def _waiting(cluster: Cluster, run_id: str) -> bool:
    return cluster.rt.runs.get(run_id).status.value == "waiting"


def _routed_everything(cluster: Cluster) -> bool:
    """The router group has read and acknowledged every event in the stream (it acks an entry
    after routing it): whatever an event would have done, it has done."""
    r, stream = cluster.rt.redis, cluster.rt.keys.events
    last = r.xinfo_stream(stream)["last-generated-id"]
    groups = {g["name"]: g for g in r.xinfo_groups(stream)}
    group = groups.get("router")
    return bool(group and group["last-delivered-id"] == last and group["pending"] == 0)


def test_wait_for_event_resumes_on_a_match_and_ignores_others(cluster: Cluster) -> None:
    cluster.scheduler()
    cluster.worker()
    name = cluster.skill(APPROVAL)
    run_id = cluster.start(name, {"ticket": "T-1", "wait": "60s"}, trusted=False)
    wait_until(lambda: _waiting(cluster, run_id), timeout=20)
    cluster.rt.bus.send("ticket.approved", {"ticket": "T-2", "by": "mallory"})
    wait_until(lambda: _routed_everything(cluster), timeout=20)
    assert _waiting(cluster, run_id), "a non-matching event must not resume the run"
    cluster.rt.bus.send("ticket.approved", {"ticket": "T-1", "by": "alice"})
    run = cluster.wait(run_id, timeout=20)
    assert run.status.value == "completed" and run.output == {"approved_by": "alice"}


def test_wait_for_event_returns_none_at_the_timeout(cluster: Cluster) -> None:
    cluster.scheduler()
    cluster.worker()
    name = cluster.skill(APPROVAL)
    started = time.monotonic()
    run = cluster.wait(cluster.start(name, {"ticket": "T-9", "wait": "2s"}, trusted=False), 30)
    assert run.status.value == "completed" and run.output == {"approved_by": None}
    assert time.monotonic() - started >= 2


def test_a_worker_killed_while_a_run_waits_changes_nothing(cluster: Cluster) -> None:
    cluster.scheduler()
    first = cluster.worker()
    name = cluster.skill(APPROVAL)
    run_id = cluster.start(name, {"ticket": "T-3", "wait": "60s"}, trusted=False)
    wait_until(lambda: _waiting(cluster, run_id), timeout=20)
    os.killpg(first.pid, signal.SIGKILL)
    cluster.rt.bus.send("ticket.approved", {"ticket": "T-3", "by": "bob"})
    # The router resolves the waiter with no worker up: the run is queued again
    wait_until(lambda: cluster.rt.runs.get(run_id).status.value == "queued", timeout=20)
    cluster.worker()
    run = cluster.wait(run_id, timeout=30)
    assert run.status.value == "completed" and run.output == {"approved_by": "bob"}
    assert run.reaps == 0


ADDER = """
from loopwright.sdk import skill, NonRetriableError

@skill(name="adder", retries=0)
def main(ctx):
    d = ctx.event["data"]
    if d.get("fail"):
        ctx.step.run("explode", lambda: (_ for _ in ()).throw(NonRetriableError("bad input")))
    if d.get("linger"):
        ctx.step.sleep("linger", "60s")
    return ctx.step.run("add", lambda: d["a"] + d["b"])
"""

PARENT = """
from loopwright.sdk import skill, StepFailedError

@skill(name="parent", retries=0)
def main(ctx):
    d = ctx.event["data"]
    try:
        total = ctx.step.invoke("sum", "adder", d)
    except StepFailedError as exc:
        return {"child_failed": str(exc)}
    return {"total": total}
"""


def test_invoke_returns_the_child_output_and_links_the_runs(cluster: Cluster) -> None:
    cluster.scheduler()
    cluster.worker()
    cluster.skill(ADDER, "adder.py")
    name = cluster.skill(PARENT, "parent.py")
    run = cluster.wait(cluster.start(name, {"a": 2, "b": 3}, trusted=False), 40)
    assert run.status.value == "completed" and run.output == {"total": 5}
    (step,) = cluster.rt.runs.steps(run.id)
    child = cluster.rt.runs.get(str(step.child))
    assert child.parent == run.id and child.status.value == "completed"


def test_child_failure_fails_the_parent_step_with_the_child_error(cluster: Cluster) -> None:
    cluster.scheduler()
    cluster.worker()
    cluster.skill(ADDER, "adder.py")
    name = cluster.skill(PARENT, "parent.py")
    run = cluster.wait(cluster.start(name, {"a": 1, "b": 1, "fail": True}, trusted=False), 40)
    assert run.status.value == "completed"
    assert "step 'sum' failed" in run.output["child_failed"]
    assert "bad input" in run.output["child_failed"]


def test_cancelling_the_parent_cancels_its_running_child(cluster: Cluster) -> None:
    cluster.scheduler()
    cluster.worker()
    cluster.skill(ADDER, "adder.py")
    name = cluster.skill(PARENT, "parent.py")
    run_id = cluster.start(name, {"a": 1, "b": 1, "linger": True}, trusted=False)
    wait_until(lambda: _waiting(cluster, run_id), timeout=20)
    (step,) = cluster.rt.runs.steps(run_id)
    child_id = str(step.child)
    wait_until(lambda: cluster.rt.runs.get(child_id).status.value == "sleeping", timeout=20)
    cancelled = cluster.rt.runs.cancel(run_id)
    assert cancelled == [run_id, child_id]
    assert cluster.rt.runs.get(child_id).status.value == "cancelled"


def test_cancelling_a_child_resumes_its_waiting_parent_without_a_scheduler(
    cluster: Cluster,
) -> None:
    # Given a parent waiting on a child that sleeps (no scheduler runs: no sweep can help)
    cluster.worker()
    cluster.skill(ADDER, "adder.py")
    name = cluster.skill(PARENT, "parent.py")
    run_id = cluster.start(name, {"a": 1, "b": 1, "linger": True}, trusted=False)
    wait_until(lambda: _waiting(cluster, run_id), timeout=20)
    (step,) = cluster.rt.runs.steps(run_id)
    child_id = str(step.child)
    wait_until(lambda: cluster.rt.runs.get(child_id).status.value == "sleeping", timeout=20)
    # When the child alone is cancelled
    assert cluster.rt.runs.cancel(child_id, "no longer needed") == [child_id]
    # Then the cancel itself resumed the parent, whose invoke step failed with the reason
    run = cluster.wait(run_id, 30)
    assert run.status.value == "completed"
    assert "cancelled: no longer needed" in run.output["child_failed"]
