"""Replay checks a step's kind as well as its name, and records every kind as itself.

Records written before kinds were checked (``wait`` for wait_for_event; ``llm`` and
``send_event`` recorded as ``run``) stay readable: runs parked by the old code resume.
"""

from __future__ import annotations

import json
from string import Template

import pytest

from conftest import Cluster, wait_until
from loopwright.runner.lease import Acquired
from loopwright.runner.records import StepRecord, now_ms
from loopwright.sdk.errors import NonDeterminismError
from loopwright.sdk.steps import StepKind, kind_matches, read_kind
from loopwright.testing.scripted import ScriptedServer

# The first execution takes the first branch, records FIRST as step #2 and parks in "nap"; the
# replay after the nap reads the clock outside a step (the defect being tested for), takes the
# other branch and asks for SECOND at the same position under the same name.
SHIFTY = """
from datetime import datetime, timezone
from loopwright.sdk import skill

def now():
    return datetime.now(timezone.utc).timestamp()

@skill(name="shifty", tools=["llm", "events"], retries=0,
       events={"send": ["kinds.sent"], "receive": ["kinds.sent"]})
def main(ctx):
    t0 = ctx.step.run("t0", now)
    if now() - t0 < 0.5:
        {first}
        ctx.step.sleep("nap", 1.0)
    else:
        {second}
    return "replayed without noticing"
"""

MISMATCHES = {
    ("sleep", "run"): ('ctx.step.sleep("x", 0.01)', 'ctx.step.run("x", lambda: "ran")'),
    ("run", "llm"): ('ctx.step.run("x", lambda: "ran")', 'ctx.step.llm("x", "a prompt")'),
    ("send_event", "wait_for_event"): (
        'ctx.step.send_event("x", "kinds.sent", {"n": 1})',
        'ctx.step.wait_for_event("x", "kinds.sent", timeout="5s")',
    ),
}


def _mismatches(cluster: Cluster, trusted: bool) -> None:
    # Given one skill per pair whose replay asks for another kind of step at position #2
    started = {}
    for i, (pair, (first, second)) in enumerate(MISMATCHES.items()):
        source = SHIFTY.replace("{first}", first).replace("{second}", second)
        name = cluster.skill(source.replace('name="shifty"', f'name="shifty-{i}"'), f"s{i}.py")
        started[pair] = cluster.start(name, trusted=trusted)
    # When each run parks and replays over its recorded step
    for pair, run_id in started.items():
        run = cluster.wait(run_id, timeout=60)
        # Then it fails with the non-determinism error naming both kinds and both names
        assert run.status.value == "failed", (pair, run.output)
        assert (
            f"non-determinism at step #2: the run recorded {pair[0]} step 'x' here but the code "
            f"now asks for {pair[1]} step 'x'"
        ) in (run.error or ""), run.error
        recorded = cluster.rt.runs.steps(run.id)[1]
        assert (recorded.name, recorded.kind) == ("x", pair[0])


def test_replaying_another_kind_in_process_fails_the_run(cluster: Cluster) -> None:
    cluster.worker()
    cluster.scheduler()
    _mismatches(cluster, trusted=True)


def test_replaying_another_kind_in_the_sandbox_fails_the_run(sandbox_cluster: Cluster) -> None:
    sandbox_cluster.worker()
    sandbox_cluster.scheduler()
    _mismatches(sandbox_cluster, trusted=False)


def test_the_error_names_both_kinds_and_both_names() -> None:
    err = NonDeterminismError(3, "fetch", "nap", "run", "sleep")
    assert "recorded run step 'fetch' here but the code now asks for sleep step 'nap'" in str(err)
    assert (err.recorded_kind, err.requested_kind) == ("run", "sleep")
    assert "recorded step 'a' here but the code now asks for step 'b'" in str(
        NonDeterminismError(1, "a", "b")
    )


LLM_SKILL = """
from loopwright.sdk import skill

@skill(name="asks", tools=["llm"])
def main(ctx):
    return ctx.step.llm("label", "classify this")
"""


@pytest.mark.parametrize("trusted", [True, False], ids=["in-process", "sandboxed"])
def test_an_llm_step_is_recorded_with_kind_llm(cluster: Cluster, trusted: bool) -> None:
    with ScriptedServer() as srv:
        srv.push({"text": "degraded"})
        cluster.worker(
            env={
                "LOOPWRIGHT_SKILL_MODEL": "anthropic:claude-haiku-4-5",
                "LOOPWRIGHT_ANTHROPIC_API_KEY": "k",
                "LOOPWRIGHT_ANTHROPIC_BASE_URL": srv.anthropic_base_url,
            }
        )
        name = cluster.skill(LLM_SKILL)
        run = cluster.wait(cluster.start(name, trusted=trusted), timeout=60)
    assert run.status.value == "completed" and run.output == "degraded", run.error
    (step,) = cluster.rt.runs.steps(run.id)
    assert (step.name, step.kind, step.status) == ("label", StepKind.LLM, "done")


def test_old_kind_names_are_read_as_today_s_kinds() -> None:
    assert read_kind("wait") is StepKind.WAIT_FOR_EVENT
    assert read_kind(None) is StepKind.RUN
    with pytest.raises(ValueError, match="unknown step kind 'teleport'"):
        read_kind("teleport")
    # An old "run" record may be any step the old code recorded as run, nothing else
    for kind in (StepKind.RUN, StepKind.LLM, StepKind.SEND_EVENT, StepKind.INVOKE):
        assert kind_matches(StepKind.RUN, kind, legacy=True)
        assert kind is StepKind.RUN or not kind_matches(StepKind.RUN, kind, legacy=False)
    for kind in (StepKind.SLEEP, StepKind.WAIT_FOR_EVENT):
        assert not kind_matches(StepKind.RUN, kind, legacy=True)
    new = StepRecord.from_json(StepRecord(1, "a", StepKind.LLM, "done").header_json() + "}")
    assert (new.kind, new.legacy) == (StepKind.LLM, False)


# --------------------------------------------------------------- records written by the old code

LEGACY = """
from loopwright.sdk import skill

@skill(name="legacy-resume", tools=["llm", "events"],
       events={"send": ["legacy.sent"], "receive": ["legacy.approved"]})
def main(ctx):
    a = ctx.step.run("fetch", lambda: 1)
    verdict = ctx.step.llm("classify", "is it fine?")
    sent = ctx.step.send_event("announce", "legacy.sent", {"a": a})
    ctx.step.sleep("nap", 0.2)
    got = ctx.step.wait_for_event("approval", "legacy.approved", timeout="60s")
    child = ctx.step.invoke("child", "legacy-child", {"x": 2})
    return {"a": a, "verdict": verdict, "sent": sent, "approved": got["data"], "child": child}
"""

LEGACY_CHILD = """
from loopwright.sdk import skill

@skill(name="legacy-child")
def main(ctx):
    return ctx.step.run("double", lambda: ctx.event["data"]["x"] * 2)
"""


def _old_records(run_id: str, upto: int, t: int) -> dict[int, str]:
    """Step records exactly as the code before step kinds wrote them (no "v"; llm and
    send_event as "run"; wait_for_event as "wait", here already resolved by the router)."""
    head = '"attempts":1,"started_at":$t,"ended_at":$t1'
    records = {
        1: '{"seq":1,"name":"fetch","kind":"run","status":"done",HEAD,"output":1}',
        2: '{"seq":2,"name":"classify","kind":"run","status":"done",HEAD,"output":"fine"}',
        3: '{"seq":3,"name":"announce","kind":"run","status":"done",HEAD,"output":"$run:3"}',
        4: '{"seq":4,"name":"nap","kind":"sleep","status":"done",HEAD,"until":$t1}',
        5: '{"seq":5,"name":"approval","kind":"wait","status":"done",HEAD,"until":$deadline,'
        '"event":"legacy.approved","match":{},'
        '"output":{"name":"legacy.approved","data":{"by":"old-router"},"id":"e-1","ts":$t}}',
    }
    return {
        seq: _raw(raw.replace("HEAD", head), run=run_id, t=t, t1=t + 1, deadline=t + 60_000)
        for seq, raw in records.items()
        if seq <= upto
    }


def _raw(template: str, **values: object) -> str:
    return Template(template).substitute(values)


def _park_old_run(cluster: Cluster, upto: int, t: int, extra: dict[int, str]) -> tuple[str, str]:
    """A run created and taken by today's scripts, with old-format step records written
    straight into its steps hash; returns (run id, fencing token) for parking it."""
    rt = cluster.rt
    run_id = cluster.start("legacy-resume")
    acq = rt.leases.acquire(run_id, "old-executor")
    assert isinstance(acq, Acquired)
    records = {**_old_records(run_id, upto, t), **extra}
    rt.redis.hset(rt.keys.steps(run_id), mapping={str(s): r for s, r in records.items()})
    return run_id, acq.token


def test_runs_parked_by_the_old_code_resume_to_completion(cluster: Cluster) -> None:
    # Given three runs parked by the old code: sleeping in "nap", waiting for an event in
    # "approval" (an old "wait" record), and waiting on a child in "child"; each with an llm
    # and a send_event step recorded as "run"
    cluster.skill(LEGACY_CHILD, "child.py")
    cluster.skill(LEGACY)
    rt, t = cluster.rt, now_ms() - 1000
    sleeping, token = _park_old_run(cluster, 4, t, {})
    assert rt.transitions.park(sleeping, token, "sleeping", t + 50, 5)

    pending_wait = _raw(
        '{"seq":5,"name":"approval","kind":"wait","status":"pending","attempts":1,'
        '"started_at":$t,"ended_at":0,"until":$deadline,"event":"legacy.approved",'
        '"match":{"n":7}}',
        t=t,
        deadline=t + 60_000,
    )
    waiting, token = _park_old_run(cluster, 4, t, {5: pending_wait})
    waiter = ("legacy.approved", f"{waiting}:5", json.dumps({"n": 7}, separators=(",", ":")))
    assert rt.transitions.park_waiting(waiting, token, t + 60_000, 5, waiter)

    child_id = "legacy-child-run-0001"
    pending_invoke = _raw(
        '{"seq":6,"name":"child","kind":"invoke","status":"pending","attempts":1,'
        '"started_at":$t,"ended_at":0,"child":"$child"}',
        t=t,
        child=child_id,
    )
    parent, token = _park_old_run(cluster, 5, t, {6: pending_invoke})
    assert rt.transitions.park_waiting(parent, token, None, 5, None)
    rt.runs.create(
        skill="legacy-child",
        version=rt.sources.resolve("legacy-child"),
        data={"x": 2},
        run_id=child_id,
        parent=parent,
        parent_seq=6,
        trusted=True,
        trigger={"type": "invoke", "parent": parent},
    )

    # When today's worker and scheduler take over, and (once the woken sleeper waits too) the
    # awaited event arrives
    cluster.worker()
    cluster.scheduler()
    wait_until(
        lambda: (
            rt.runs.get(sleeping).status.value == "waiting" and len(rt.runs.steps(sleeping)) == 5
        )
    )
    rt.bus.send("legacy.approved", {"n": 7, "by": "new-router"})

    # Then each run resumes from its old records to completion, without re-running them
    runs = {r: cluster.wait(r, timeout=60) for r in (sleeping, waiting, parent)}
    for run_id, run in runs.items():
        assert run.status.value == "completed", (run_id, run.error)
        assert run.output["a"] == 1 and run.output["verdict"] == "fine"
        assert run.output["sent"] == f"{run_id}:3"
        assert run.output["child"] == 4
    assert runs[parent].output["approved"] == {"by": "old-router"}
    assert runs[waiting].output["approved"] == {"n": 7, "by": "new-router"}
    assert runs[sleeping].output["approved"] == {"n": 7, "by": "new-router"}
    kinds = [(s.name, s.kind) for s in rt.runs.steps(waiting)]
    assert kinds == [
        ("fetch", StepKind.RUN),
        ("classify", StepKind.RUN),  # an old record keeps its old kind
        ("announce", StepKind.RUN),
        ("nap", StepKind.SLEEP),
        ("approval", StepKind.WAIT_FOR_EVENT),
        ("child", StepKind.INVOKE),  # written by today's code
    ]
