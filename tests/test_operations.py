"""Retry, rerun and bulk cancel (issue 15), run-id prefixes and the CLI in pipes, against real
Redis and real worker processes: a retry continues from the failed step without executing the
finished ones again and counts the run once in its rollups; a zombie of the old attempt stays
refused; a rerun runs edited input on another version, or reuses the checkpoints before a step.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import Cluster, effects, wait_until
from loopwright.cli.runs import lineage
from loopwright.errors import NotFoundError, UserError
from loopwright.history.rollups import counted, read_rollups, recount
from loopwright.runner.checkpoint import LeaseLostError
from loopwright.runner.lease import Acquired
from loopwright.runner.records import StepRecord, now_ms
from loopwright.runner.store import new_run_id
from loopwright.sdk.steps import StepKind
from loopwright.service.operations import cancel_many, rerun, retry
from loopwright.skills_registry.store import Registry

STEPS = """
from loopwright.sdk import skill, NonRetriableError
import os

def work(fx, name):
    with open(fx, "a") as f:
        f.write(f"{name} {os.getpid()}\\n")
    if name == "s2" and not os.path.exists(fx + ".ok"):
        raise NonRetriableError("s2 is not ready yet")
    return {"step": name, "pid": os.getpid()}

@skill(name="three-steps")
def main(ctx):
    fx = ctx.event["data"]["fx"]
    return [ctx.step.run(f"s{i}", work, fx, f"s{i}") for i in (1, 2, 3)]
"""

ECHO = """
from loopwright.sdk import skill

@skill(name="echo")
def main(ctx):
    got = ctx.step.run("read", lambda: ctx.event["data"])
    return {"version": VERSION, "got": got}
"""


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert "Traceback" not in proc.stderr
    return lines[-1]


def count(fx: Path, name: str) -> int:
    return sum(1 for line in effects(fx) if line[0] == name)


def test_retry_continues_from_the_failed_step_and_counts_the_run_once(cluster: Cluster) -> None:
    # Given a run whose second step failed for good after the first one finished
    cluster.worker()
    fx = cluster.tmp / "fx"
    name = cluster.skill(STEPS)
    run_id = cluster.start(name, {"fx": str(fx)})
    assert cluster.wait(run_id).status.value == "failed"
    rt = cluster.rt
    (day,) = {r.day for r in read_rollups(rt.redis, rt.keys, name, "19700101", "99991231")}
    # When the cause is fixed and the run is retried from the CLI with a prefix of its id
    (fx.parent / (fx.name + ".ok")).write_text("")
    proc = cluster.cli("runs", "retry", run_id[:16], "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["from_seq"] == 2
    run = cluster.wait(run_id)
    # Then it completes as the same run; the finished step was not executed again
    assert run.status.value == "completed"
    assert (count(fx, "s1"), count(fx, "s2"), count(fx, "s3")) == (1, 2, 1)
    assert [s.attempts for s in rt.runs.steps(run_id)] == [1, 1, 1]
    # And its rollup counts it once, in the completed bucket, equal to a recount from the run
    (rollup,) = read_rollups(rt.redis, rt.keys, name, "19700101", "99991231")
    assert rollup.day == day  # the same day's bucket (a retry across midnight moves it)
    c = rollup.counts
    assert (c["runs"], c.get("status:failed", 0), c["status:completed"]) == (1, 0, 1)
    assert c["steps"] == 3 and c["attempts"] == 3
    assert {(r.skill, r.version, r.day): counted(r) for r in [rollup]} == recount(
        rt.redis, rt.keys, [run_id]
    )
    # And runs show tells the story
    shown = json.loads(cluster.cli("runs", "show", run_id, "--json").stdout)
    assert shown["retried"] == 1 and "s2 is not ready yet" in shown["previous_error"]
    text = cluster.cli("runs", "show", run_id[:10]).stdout
    assert "retried 1 time(s)" in text and "trigger manual" in text and run_id in text


def test_retry_refuses_runs_that_have_not_failed(cluster: Cluster) -> None:
    name = cluster.skill(STEPS)
    run_id = cluster.start(name, {"fx": str(cluster.tmp / "fx")})
    # queued
    with pytest.raises(UserError, match="is queued: only a failed or cancelled run"):
        retry(cluster.rt, run_id)
    # running
    assert isinstance(cluster.rt.leases.acquire(run_id, "someone"), Acquired)
    line = error_line(cluster.cli("runs", "retry", run_id))
    assert "is running: only a failed or cancelled run can be retried (cancel it first)" in line
    with pytest.raises(NotFoundError):
        retry(cluster.rt, "f" * 20)
    # a paused skill's run is not retried (nor rerun)
    cluster.rt.runs.cancel(run_id)
    Registry(cluster.rt.redis, cluster.rt.keys).pause(name)
    with pytest.raises(UserError, match="is paused"):
        retry(cluster.rt, run_id)
    with pytest.raises(UserError, match="is paused"):
        rerun(cluster.rt, run_id)


def test_a_zombie_of_the_old_attempt_is_refused_after_a_retry(cluster: Cluster) -> None:
    # Given an executor holding a run (token t1) that a cancel ended under it
    rt = cluster.rt
    name = cluster.skill(STEPS)
    run_id = cluster.start(name, {"fx": str(cluster.tmp / "fx")})
    acq = rt.leases.acquire(run_id, "zombie")
    assert isinstance(acq, Acquired)
    done = StepRecord(1, "s1", StepKind.RUN, "done", 1, now_ms(), now_ms())
    rt.checkpoints.commit(run_id, acq.token, done, '"one"')
    rt.runs.cancel(run_id)
    # When the run is retried and a new executor takes it
    assert retry(rt, run_id).from_seq is None  # every checkpoint was finished: none dropped
    fresh = rt.leases.acquire(run_id, "fresh")
    assert isinstance(fresh, Acquired) and fresh.token != acq.token
    # Then the zombie's checkpoint and finish are refused, the new executor's are not
    late = StepRecord(2, "s2", StepKind.RUN, "done", 1, now_ms(), now_ms())
    with pytest.raises(LeaseLostError):
        rt.checkpoints.commit(run_id, acq.token, late, '"zombie"')
    assert not rt.transitions.finish(run_id, acq.token, "completed", '"z"', "", 1)
    rt.checkpoints.commit(run_id, fresh.token, late, '"two"')
    assert rt.transitions.finish(run_id, fresh.token, "completed", '"ok"', "", 1)
    assert [s.output for s in rt.runs.steps(run_id)] == ["one", "two"]
    assert rt.runs.get(run_id).attempts == 2


def test_a_child_whose_parent_saw_it_fail_is_not_retried(cluster: Cluster) -> None:
    rt = cluster.rt
    name = cluster.skill(STEPS)
    parent = cluster.start(name, {"fx": "x"})
    child = rt.runs.create(
        skill=name, version=rt.sources.resolve(name), parent=parent, parent_seq=1, trusted=True
    )
    rt.runs.cancel(child)  # the parent's step was never pending: it is not waiting for it
    with pytest.raises(
        UserError, match=f"retry the parent instead: loopwright runs retry {parent}"
    ):
        retry(rt, child)


def test_rerun_with_edited_data_on_another_version(cluster: Cluster) -> None:
    cluster.worker()
    v1 = cluster.rt.sources.put(textwrap.dedent(ECHO).replace("VERSION", "1"), "echo")
    v2 = cluster.rt.sources.put(textwrap.dedent(ECHO).replace("VERSION", "2"), "echo")
    old = cluster.rt.runs.create(skill="echo", version=v1, data={"x": 1}, trusted=True)
    assert cluster.wait(old).output == {"version": 1, "got": {"x": 1}}
    # When it is rerun on v2 with new input, from the CLI, waiting for it
    proc = cluster.cli(
        "runs", "rerun", old, "--data", '{"x": 2}', "--version", v2[:8], "--wait", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    new = json.loads(proc.stdout)
    # Then the new run is linked to the old one and ran v2 on the new input
    assert new["id"] != old and new["version"] == v2
    assert new["output"] == {"version": 2, "got": {"x": 2}}
    assert new["trigger"] == {"type": "manual", "rerun_of": old}
    assert new["trusted"] is False  # the old run's trust does not pass to another version
    assert f"rerun of run {old}" in cluster.cli("runs", "show", new["id"]).stdout
    # And the old input by default; input over the cap is refused, nothing is created
    same = rerun(cluster.rt, old)
    assert cluster.wait(same.run_id).output == {"version": 1, "got": {"x": 1}}
    before = len(cluster.rt.runs.find(limit=100))
    big = json.dumps({"x": "y" * cluster.rt.settings.run_input_max_bytes})
    with pytest.raises(UserError, match="run input"):
        rerun(cluster.rt, old, json.loads(big))
    assert len(cluster.rt.runs.find(limit=100)) == before
    with pytest.raises(NotFoundError, match="zzzzzz"):
        rerun(cluster.rt, old, version="zzzzzz")


def test_rerun_from_a_step_reuses_the_checkpoints_before_it(cluster: Cluster) -> None:
    worker = cluster.worker()
    fx = cluster.tmp / "fx"
    (fx.parent / (fx.name + ".ok")).write_text("")
    name = cluster.skill(STEPS)
    old = cluster.start(name, {"fx": str(fx)})
    assert cluster.wait(old).status.value == "completed"
    # When it is rerun from s3
    made = rerun(cluster.rt, old, from_step="s3")
    run = cluster.wait(made.run_id)
    # Then s1 and s2 were not executed again: their outputs are the old run's checkpoints
    assert run.status.value == "completed" and made.reused == 2
    assert (count(fx, "s1"), count(fx, "s2"), count(fx, "s3")) == (1, 1, 2)
    assert [s["step"] for s in run.output] == ["s1", "s2", "s3"]
    assert all(s["pid"] == worker.pid for s in run.output)
    assert run.raw["rerun_of"] == old and run.raw["from_step"] == "s3"
    # And a step the old run never reached, or a version whose earlier steps differ, is refused
    with pytest.raises(UserError, match="never reached a step named 'nope'"):
        rerun(cluster.rt, old, from_step="nope")
    renamed = cluster.rt.sources.put(
        textwrap.dedent(STEPS)
        .replace('f"s{i}", work', 'f"t{i}", work')
        .replace('ctx.step.run(f"t{i}"', 'ctx.step.run("t"'),
        name,
    )
    with pytest.raises(UserError, match="has no step named 's1'"):
        rerun(cluster.rt, old, version=renamed, from_step="s3")


def test_bulk_cancel_counts_first_and_needs_yes_without_a_terminal(cluster: Cluster) -> None:
    name = cluster.skill(STEPS)
    other = cluster.skill(ECHO.replace("VERSION", "1"), "echo.py")
    queued = [cluster.start(name, {"fx": "x"}) for _ in range(3)]
    keep = cluster.start(other, {})
    dry = cluster.cli("runs", "cancel", "--skill", name, "--status", "queued", "--dry-run")
    assert dry.returncode == 0 and "3 queued run(s)" in dry.stdout
    refused = cluster.cli("runs", "cancel", "--skill", name, "--status", "queued")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    both = cluster.cli("runs", "cancel", queued[0], "--skill", name)
    assert both.returncode == 2 and "not both" in both.stderr
    assert cancel_many(cluster.rt, name, "queued", dry_run=True).matched == 3
    proc = cluster.cli("runs", "cancel", "--skill", name, "--status", "queued", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["matched"] == 3
    assert {cluster.rt.runs.get(r).status.value for r in queued} == {"cancelled"}
    assert cluster.rt.runs.get(keep).status.value == "queued"
    with pytest.raises(UserError, match="cannot be cancelled"):
        cancel_many(cluster.rt, name, "completed")
    # A run that arrives between the count and the confirmation is not cancelled
    counted = cancel_many(cluster.rt, name, None, dry_run=True)
    late = cluster.start(name, {"fx": "x"})
    assert cancel_many(cluster.rt, name, None, only=counted.ids).matched == 0
    assert cluster.rt.runs.get(late).status.value == "queued"


def test_run_id_prefixes_resolve_like_git(cluster: Cluster) -> None:
    rt = cluster.rt
    name = cluster.skill(STEPS)
    version = rt.sources.resolve(name)
    head = new_run_id()[:12]
    a, b, c = head + "00000001", head + "00000002", head + "ff000000"
    odd = "seeded-run-0001"  # an id that is not time-ordered: found by the scan
    for rid in (a, b, c, odd):
        rt.runs.create(skill=name, version=version, run_id=rid)
    assert rt.runs.resolve_prefix(a) == a
    assert rt.runs.resolve_prefix(head + "ff") == c
    assert rt.runs.resolve_prefix("seeded") == odd
    with pytest.raises(UserError, match="ambiguous") as amb:
        rt.runs.resolve_prefix(head + "0000000")
    assert a in str(amb.value) and b in str(amb.value)
    with pytest.raises(NotFoundError, match="unknown run id"):
        rt.runs.resolve_prefix("deadbeef")
    rt.redis.set(rt.keys.tombstone("0123456789abcdef0123"), "1")
    with pytest.raises(NotFoundError, match="deleted by retention"):
        rt.runs.resolve_prefix("0123456789abcdef0123")
    with pytest.raises(UserError, match="too short"):
        rt.runs.resolve_prefix("ab")
    shown = json.loads(cluster.cli("runs", "show", head + "ff", "--json").stdout)
    assert shown["id"] == c
    assert "ambiguous" in error_line(cluster.cli("runs", "cancel", head + "0000000"))


def test_piped_list_keeps_full_ids_and_text(cluster: Cluster) -> None:
    rt = cluster.rt
    name = cluster.skill(STEPS)
    run_id = cluster.start(name, {"fx": "x"})
    acq = rt.leases.acquire(run_id, "t")
    assert isinstance(acq, Acquired)
    long_error = "E" * 150 + " the end of a long error"
    assert rt.transitions.finish(run_id, acq.token, "failed", "", long_error, 1)
    proc = cluster.cli("runs", "list")  # stdout is a pipe here
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("\t") for line in proc.stdout.splitlines()]
    assert rows[0][0] == "run" and rows[1][0] == run_id
    assert rows[1][2] == "failed" and rows[1][-1] == long_error
    shown = cluster.cli("runs", "show", run_id).stdout
    assert long_error in shown and run_id in shown


def test_ctrl_c_while_waiting_says_the_run_continues(cluster: Cluster) -> None:
    name = cluster.skill(STEPS)
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopwright.cli", "run", name, "--data", '{"fx": "x"}', "--wait"],
        env=cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cluster.tmp,
    )
    try:
        # With no worker, it says so at once; then Ctrl-C
        wait_until(lambda: cluster.rt.runs.find(status="queued"), timeout=20)
        run_id = cluster.rt.runs.find()[0].id
        wait_until(
            lambda: cluster.rt.redis.pubsub_numsub(cluster.rt.keys.run_changes_channel)[0][1]
        )
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "no worker is consuming queue" in err and "loopwright up" in err
    assert "continues in the background" in err and f"loopwright runs wait {run_id}" in err
    assert cluster.rt.runs.get(run_id).status.value == "queued"


def test_show_tells_when_a_parked_step_retries_and_which_event_started_the_run(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rt = cluster.rt
    name = cluster.skill(STEPS)
    run_id = cluster.start(name, {"fx": "x"})
    acq = rt.leases.acquire(run_id, "t")
    assert isinstance(acq, Acquired)
    until = now_ms() + 3_600_000
    rec = StepRecord(1, "s1", StepKind.RUN, "retrying", 1, now_ms(), now_ms(), error="boom")
    rec.until = until
    rt.checkpoints.commit(run_id, acq.token, rec, None)
    assert rt.transitions.park(run_id, acq.token, "sleeping", until, 1)
    shown = lineage(rt.runs.get(run_id), rt.runs.steps(run_id))  # what --json adds
    assert shown["next_retry_at"] == until and shown["event_id"] == run_id
    text = cluster.cli("runs", "show", run_id).stdout
    assert "next retry " in text and f"event id {run_id}" in text
    # The terminal view shows the same facts
    import loopwright.cli.runs as runs_cli

    monkeypatch.setattr(runs_cli, "piped", lambda: False)
    runs_cli.render_run(rt, run_id)
    shown_on_tty = capsys.readouterr().out
    assert "next retry " in shown_on_tty and "boom" in shown_on_tty
