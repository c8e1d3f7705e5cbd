"""``ctx.state``: a skill's durable JSON store, committed with the step's checkpoint.

Real Redis, real worker processes (and real sandbox guests): a streak counted across runs, a
SIGKILL between ``set`` and the commit, concurrent runs racing on one key, a zombie's commit,
the caps, old step records, and the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conftest import Cluster, effects, wait_until
from loopwright.runner.checkpoint import LeaseLostError
from loopwright.runner.lease import Acquired
from loopwright.runner.records import StepRecord, now_ms
from loopwright.runner.runtime import Runtime
from loopwright.runner.state import (
    StateBuffer,
    StateConflictError,
    StateLimitError,
    read_state,
)
from loopwright.sdk.steps import StepKind

STREAK = """
from loopwright.sdk import skill

def count(ctx, ok):
    streak = 0 if ok else ctx.state.get("failures", 0) + 1
    ctx.state.set("failures", streak)
    return streak

@skill(name="streak", retries=0, tools=["notify"])
def main(ctx):
    streak = ctx.step.run("count", count, ctx, ctx.event["data"]["ok"])
    if streak == 3:
        ctx.step.run("alert", lambda: ctx.tools.notify(f"{streak} failures in a row"))
    return streak
"""


def state_of(cluster: Cluster, skill: str) -> dict[str, Any]:
    return {e.key: e.value for e in read_state(cluster.rt.redis, cluster.rt.keys, skill)}


def inbox(cluster: Cluster) -> list[str]:
    from loopwright.inbox import Inbox

    rt = cluster.rt
    return [n.body for n in Inbox(rt.redis, rt.keys, rt.settings).list(limit=500)]


def test_a_streak_is_counted_across_runs_and_alerts_on_the_third_failure(
    cluster: Cluster,
) -> None:
    # Given a skill that counts failed checks in a row in its state
    cluster.worker()
    name = cluster.skill(STREAK)
    # When checks fail, pass, then fail three times
    outcomes = [False, False, True, False, False, False]
    streaks = [cluster.wait(cluster.start(name, {"ok": ok})).output for ok in outcomes]
    # Then every run saw the previous run's state, and only the third failure in a row alerted
    assert streaks == [1, 2, 0, 1, 2, 3]
    assert state_of(cluster, name) == {"failures": 3}
    assert [m for m in inbox(cluster) if "in a row" in m] == ["3 failures in a row"]
    # And the CLI shows the key, its value and version
    shown = cluster.cli("skills", "state", name, "--json")
    assert shown.returncode == 0, shown.stderr
    (entry,) = json.loads(shown.stdout)["keys"]
    assert entry["key"] == "failures" and entry["value"] == 3 and entry["version"] == 6
    assert entry["run_id"] and entry["updated_at"] > 0
    table = cluster.cli("skills", "state", name)
    assert "failures" in table.stdout and "3" in table.stdout
    # And --reset asks first (refused without a terminal unless --yes), then clears it
    refused = cluster.cli("skills", "state", name, "--reset")
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert state_of(cluster, name) == {"failures": 3}
    done = cluster.cli("skills", "state", name, "--reset", "--yes")
    assert done.returncode == 0 and "removed 1 key" in done.stdout
    assert state_of(cluster, name) == {}
    # And the version clock survives the reset: a later write never reuses a version
    assert cluster.wait(cluster.start(name, {"ok": False})).output == 1
    (entry,) = read_state(cluster.rt.redis, cluster.rt.keys, name)
    assert entry.version == 7
    unknown = cluster.cli("skills", "state", "no-such-skill")
    assert unknown.returncode != 0 and "no skill named 'no-such-skill'" in unknown.stderr


KILLABLE = """
from loopwright.sdk import skill
import os, time

def bump(ctx, fx, pause):
    n = ctx.state.get("n", 0)
    ctx.state.set("n", n + 1)
    ctx.state.set("by", os.getpid())  # a blind write: only the fence can refuse it
    with open(fx, "a") as f:
        f.write(f"bump {os.getpid()}\\n")
    time.sleep(pause)  # the first worker is killed here: after the set, before the commit
    return n + 1

@skill(name="killable", retries=3, backoff=0.05)
def main(ctx):
    d = ctx.event["data"]
    return ctx.step.run("bump", bump, ctx, d["fx"], d["pause"])
"""


def test_a_worker_killed_after_set_and_before_the_commit_applies_the_update_once(
    cluster: Cluster,
) -> None:
    # Given a worker inside a step that has set the state but not committed the step
    cluster.scheduler()
    first = cluster.worker()
    fx = cluster.tmp / "fx"
    name = cluster.skill(KILLABLE)
    run_id = cluster.start(name, {"fx": str(fx), "pause": 1.0})
    wait_until(lambda: effects(fx), timeout=15)
    # When it is killed and another worker takes the run over
    os.killpg(first.pid, signal.SIGKILL)
    second = cluster.worker()
    run = cluster.wait(run_id)
    # Then the step ran twice, and its update was applied exactly once
    assert run.status.value == "completed" and run.reaps == 1
    assert [line[1] for line in effects(fx)] == [str(first.pid), str(second.pid)]
    assert run.output == 1
    assert state_of(cluster, name) == {"n": 1, "by": second.pid}
    # And the next run builds on it
    again = cluster.wait(cluster.start(name, {"fx": str(fx), "pause": 0}))
    assert again.output == 2 and state_of(cluster, name)["n"] == 2


def test_a_paused_worker_fenced_out_writes_no_state(cluster: Cluster) -> None:
    # Given worker A inside a step that has set the state, paused (SIGSTOP) past its lease
    cluster.scheduler()
    a = cluster.worker(verbose=True)
    fx = cluster.tmp / "fx"
    name = cluster.skill(KILLABLE)
    run_id = cluster.start(name, {"fx": str(fx), "pause": 1.5})
    wait_until(lambda: effects(fx), timeout=15)
    os.killpg(a.pid, signal.SIGSTOP)
    try:
        # When worker B takes the run over and finishes it
        b = cluster.worker()
        run = cluster.wait(run_id, timeout=30)
        assert run.status.value == "completed"
        after_b = state_of(cluster, name)
        versions = {e.key: e.version for e in read_state(cluster.rt.redis, cluster.rt.keys, name)}
    finally:
        os.killpg(a.pid, signal.SIGCONT)
    # Then A, resumed, finishes its step body but its commit (and its writes) are refused
    wait_until(lambda: f"run {run_id}: lease lost" in cluster.log_of(a), timeout=15)
    assert after_b == {"n": 1, "by": b.pid}
    assert state_of(cluster, name) == after_b
    assert {e.key: e.version for e in read_state(cluster.rt.redis, cluster.rt.keys, name)} == (
        versions
    )


RACER = """
from loopwright.sdk import skill
import time

def add(ctx, pause):
    seen = ctx.state.get("n", 0)
    time.sleep(pause)
    ctx.state.set("n", seen + 1)
    ctx.state.set(f"run:{ctx.run_id}", seen)  # a blind write: last writer wins
    return seen + 1

@skill(name="racer", retries=0)
def main(ctx):
    return ctx.step.run("add", add, ctx, ctx.event["data"]["pause"])
"""


def test_concurrent_runs_lose_no_update(make_cluster: Callable[..., Cluster]) -> None:
    # Given two workers running twelve runs that read, wait and write one key
    cluster = make_cluster()
    cluster.worker()
    cluster.worker()
    name = cluster.skill(RACER)
    runs = [cluster.start(name, {"pause": 0.05}) for _ in range(12)]
    ended = [cluster.wait(r, timeout=60) for r in runs]
    assert [r.error for r in ended if r.status.value != "completed"] == []
    outputs = sorted(r.output for r in ended)
    # Then each run's write was compare-and-set on the value it read: no update was lost
    assert outputs == list(range(1, 13))
    state = state_of(cluster, name)
    assert state["n"] == 12
    assert len([k for k in state if k.startswith("run:")]) == 12


# Scripts without workers: the commit's fence and compare-and-set -------------------------


@pytest.fixture
def rt(make_cluster: Callable[..., Cluster]) -> Runtime:
    """A runtime on its own keyspace with short leases; nothing runs in the background."""
    return make_cluster(lease_ttl=0.3, state_max_keys=3).rt


def buffer(rt: Runtime, seq: int = 1, skill: str = "s") -> StateBuffer:
    st = rt.settings
    return StateBuffer(
        rt.redis,
        rt.keys.skill_state(skill),
        skill,
        seq,
        st.state_value_max_bytes,
        st.state_max_keys,
    )


def commit(rt: Runtime, run_id: str, token: str, buf: StateBuffer, seq: int = 1) -> None:
    rec = StepRecord(seq, f"s{seq}", StepKind.RUN, "done", 1, now_ms(), now_ms())
    rt.checkpoints.commit(run_id, token, rec, "null", state=buf.take(run_id))


def take(rt: Runtime, run_id: str) -> Acquired:
    acq = rt.leases.acquire(run_id, "test-owner")
    assert isinstance(acq, Acquired), acq
    return acq


def new_run(rt: Runtime) -> str:
    return rt.runs.create_if_absent(skill="s", version="v1").run_id


def test_a_zombie_commit_writes_no_state(rt: Runtime) -> None:
    # Given a run whose first executor buffered a write, then lost its lease to a second
    run_id = new_run(rt)
    first = take(rt, run_id)
    zombie = buffer(rt)
    zombie.set("owner", "zombie")
    until = int(rt.redis.hget(rt.keys.run(run_id), "lease_until") or 0)
    wait_until(lambda: now_ms() > until + 50, 5)
    assert rt.transitions.reap(run_id).job_id
    second = take(rt, run_id)
    # When the zombie commits its step with the write
    with pytest.raises(LeaseLostError):
        commit(rt, run_id, first.token, zombie)
    # Then nothing of it is stored; the new owner's write is
    assert read_state(rt.redis, rt.keys, "s") == []
    owner = buffer(rt)
    owner.set("owner", "second")
    commit(rt, run_id, second.token, owner)
    assert [(e.key, e.value) for e in read_state(rt.redis, rt.keys, "s")] == [("owner", "second")]


def test_a_changed_read_refuses_the_whole_commit_and_a_blind_write_wins(rt: Runtime) -> None:
    one, two = new_run(rt), new_run(rt)
    a, b = take(rt, one), take(rt, two)
    # Given two attempts that read the same key
    mine, theirs = buffer(rt), buffer(rt)
    assert mine.get("n", 0) == 0 and theirs.get("n", 0) == 0
    theirs.set("n", 1)
    commit(rt, two, b.token, theirs)
    # When the other one writes it after the first commit
    mine.set("n", 1)
    mine.set("other", "x")
    with pytest.raises(StateConflictError) as lost:
        commit(rt, one, a.token, mine)
    # Then nothing of its commit is applied: neither state nor the step record
    assert "'n'" in str(lost.value)
    assert {e.key: e.value for e in read_state(rt.redis, rt.keys, "s")} == {"n": 1}
    assert not rt.redis.hexists(rt.keys.steps(one), "1")
    # And a fresh attempt on the new value commits; a write without a read is last-writer-wins
    again = buffer(rt)
    again.set("n", again.get("n") + 1)
    commit(rt, one, a.token, again)
    blind = buffer(rt, seq=2)
    blind.set("n", 100)
    commit(rt, two, b.token, blind, seq=2)
    assert {e.key: e.value for e in read_state(rt.redis, rt.keys, "s")} == {"n": 100}


def test_the_key_cap_refuses_the_commit_that_would_pass_it(rt: Runtime) -> None:
    run_id = new_run(rt)
    acq = take(rt, run_id)
    full = buffer(rt)
    for key in ("a", "b", "c"):
        full.set(key, key)
    commit(rt, run_id, acq.token, full)
    more = buffer(rt, seq=2)
    more.set("a", "rewritten")  # an existing key does not count
    more.set("d", "d")
    with pytest.raises(StateLimitError, match="more than 3 keys"):
        commit(rt, run_id, acq.token, more, seq=2)
    assert {e.key: e.value for e in read_state(rt.redis, rt.keys, "s")} == {
        "a": "a",
        "b": "b",
        "c": "c",
    }
    fits = buffer(rt, seq=2)
    fits.delete("a")
    fits.set("d", "d")
    commit(rt, run_id, acq.token, fits, seq=2)
    assert [e.key for e in read_state(rt.redis, rt.keys, "s")] == ["b", "c", "d"]


# Refusals seen by a skill ----------------------------------------------------------------

MISUSE = """
from loopwright.sdk import skill

def write(ctx, how):
    if how == "big":
        ctx.state.set("k", "x" * 2000)
    elif how == "many":
        for i in range(5):
            ctx.state.set(f"k{i}", i)
    elif how == "scan":
        for i in range(500):
            ctx.state.get(f"k{i}")
    elif how == "key":
        ctx.state.set("", 1)
    elif how == "json":
        ctx.state.set("k", {1, 2})
    return "wrote"

@skill(name="misuse", retries=3, backoff=0.05)
def main(ctx):
    how = ctx.event["data"]["how"]
    if how == "outside":
        return ctx.state.get("k")
    return ctx.step.run("write", write, ctx, how)
"""


MISUSES = {
    "big": "is 2002 bytes, over the 1024-byte cap (LOOPWRIGHT_STATE_VALUE_MAX_BYTES)",
    "many": "one step wrote more than 3 keys (LOOPWRIGHT_STATE_MAX_KEYS)",
    "scan": "one step used more than 112 different keys; a skill holds at most 3",
    "key": "ctx.state key must be a non-empty string",
    "json": "ctx.state value for 'k' is not JSON",
    "outside": "ctx.state can only be used inside a step",
}


def test_state_misuse_fails_at_once_with_a_clear_error(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(state_value_max_bytes=1024, state_max_keys=3)
    cluster.worker()
    name = cluster.skill(MISUSE)
    runs = {how: cluster.start(name, {"how": how}) for how in MISUSES}
    for how, error in MISUSES.items():
        run = cluster.wait(runs[how])
        assert run.status.value == "failed", how
        assert error in (run.error or ""), how
        steps = cluster.rt.checkpoints.read_all(run.id)
        assert all(s.attempts == 1 for s in steps), how  # never retried
    assert state_of(cluster, name) == {}


# Sandboxed skills -------------------------------------------------------------------------

SANDBOXED = """
from loopwright.sdk import skill

def add(ctx, url):
    seen = ctx.state.get("n", 0)
    ctx.log.info("read " + str(seen))
    if url:
        ctx.tools.http.get_json(url)  # held by the test until the other run has committed
    return ctx.state.update("n", lambda n: n + 1, 0)

@skill(name="sandboxed-counter", retries=0, tools=["http"], http_allow=["127.0.0.1"])
def main(ctx):
    return ctx.step.run("add", add, ctx, ctx.event["data"]["url"])
"""


@pytest.fixture
def gate() -> Iterator[tuple[str, threading.Event]]:
    """A loopback JSON endpoint that answers once the test opens the gate."""
    opened = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            opened.wait(30)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            del format, args

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/hold", opened
    opened.set()
    httpd.shutdown()
    httpd.server_close()


def test_a_sandboxed_skill_uses_state_and_reruns_a_step_that_lost_a_race(
    sandbox_cluster: Cluster, gate: tuple[str, threading.Event]
) -> None:
    # Given two workers and a sandboxed run that read the counter and is still in its step
    cluster = sandbox_cluster
    url, opened = gate
    cluster.worker()
    cluster.worker()
    name = cluster.skill(SANDBOXED)
    slow = cluster.start(name, {"url": url}, trusted=False)
    wait_until(lambda: cluster.rt.runs.logs(slow), timeout=30)
    # When a second run increments the counter meanwhile
    fast = cluster.wait(cluster.start(name, {"url": ""}, trusted=False), timeout=60)
    opened.set()
    # Then the slow run's commit lost the race: its step ran again on the new value
    done = cluster.wait(slow, timeout=60)
    assert (fast.status.value, done.status.value) == ("completed", "completed"), done.error
    assert (fast.output, done.output) == (1, 2)
    assert state_of(cluster, name) == {"n": 2}
    reads = [str(line.get("message")) for line in cluster.rt.runs.logs(slow)]
    assert reads == ["read 0", "read 1"]
    (step,) = cluster.rt.checkpoints.read_all(slow)
    assert step.attempts == 1  # a lost race is not a failed attempt


# Old records ------------------------------------------------------------------------------

RESUMED = """
from loopwright.sdk import skill

@skill(name="resumed", retries=0)
def main(ctx):
    first = ctx.step.run("first", lambda: 1)
    ctx.step.sleep("nap", "1s")
    return ctx.step.run("count", lambda: ctx.state.update("total", lambda t: t + first, 0))
"""


def test_a_run_parked_with_old_format_records_resumes_and_uses_state(cluster: Cluster) -> None:
    # Given a run parked after its first step
    cluster.scheduler()
    cluster.worker()
    name = cluster.skill(RESUMED)
    run_id = cluster.start(name)
    rt = cluster.rt
    wait_until(lambda: rt.redis.hexists(rt.keys.steps(run_id), "2"), timeout=15)
    # When its first record is the one a release without kinds or state wrote
    legacy = {"seq": 1, "name": "first", "status": "done", "attempts": 1, "started_at": 1,
              "ended_at": 2, "output": 41}  # fmt: skip
    rt.redis.hset(rt.keys.steps(run_id), "1", json.dumps(legacy))
    # Then it resumes from it, and its new step writes state
    run = cluster.wait(run_id)
    assert run.status.value == "completed" and run.output == 41
    assert state_of(cluster, name) == {"total": 41}


COUNTER = """
from loopwright.sdk import skill

def bump(ctx):
    first = ctx.state.update("n", lambda n: n + 1, 0)
    again = ctx.state.update("n", lambda n: n + 1, 0)  # the attempt reads its own writes
    return [first, again, ctx.state.get("missing", "default")]

@skill(name="case-counter", retries=0)
def main(ctx):
    return ctx.step.run("bump", bump, ctx)
"""


def test_the_sidecar_cases_use_a_scratch_state_that_starts_empty(cluster: Cluster) -> None:
    from loopwright.sidecar.pipeline import Sidecar

    # Given two test cases of a skill that counts in its state
    case = {"event": {}, "expect": {"output": [1, 2, "default"]}}
    tests = [{"name": "first", **case}, {"name": "second", **case}]
    # When the sidecar runs them in the sandbox
    verdict = Sidecar(cluster.rt).submit(COUNTER, tests)
    # Then both pass: each case starts empty, and nothing reaches the skill's durable state
    assert verdict.accepted, verdict.findings
    assert [c.passed for c in verdict.cases] == [True, True]
    assert state_of(cluster, "case-counter") == {}
