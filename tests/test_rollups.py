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
    assert sig == {
        "n": "1",
        "msg": err,
        "step": "s1",
        "origin": "skill",
        "first": failed,
        "last": failed,
    }
    lost = signature("the worker executing this run was lost 2 times; giving up")
    assert r.sigs[lost]["n"] == "1" and r.sigs[lost]["first"] == reaped
    assert r.sigs[lost]["origin"] == "platform"
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


# The seeder and ``skills stats`` ----------------------------------------------------------


def test_seeded_history_reads_back_as_configured(make_cluster: Callable[..., Cluster]) -> None:
    from loopwright.history.seeder import SeedSkill, seed_history
    from loopwright.service.stats import skill_stats

    c = make_cluster()
    rt = c.rt
    end = now_ms()
    profiles = [
        SeedSkill("flaky", runs_per_day=40, success=0.8, platform_failures=0.1, steps=2),
        SeedSkill(
            "hc", runs_per_day=24, success=1.0, threshold_ms=250, slow_nights=1.0, labelled=1.0
        ),
        SeedSkill("broken", runs_per_day=10, success=1.0, bad_version_day=5, bad_rate=1.0),
    ]
    counts = seed_history(rt, profiles, days=10, end_ms=end, seed=7)
    # Deterministic: the same seed into another keyspace writes the same outcomes
    again = seed_history(make_cluster().rt, profiles, days=10, end_ms=end, seed=7)
    assert counts == again
    flaky = skill_stats(rt.redis, rt.keys, "flaky", "10d", now=end)
    t = flaky.total
    assert t.runs == counts["flaky:completed"] + counts["flaky:failed"]
    assert 0.05 < t.failed_platform / t.runs < 0.15
    assert t.success_rate is not None and 0.72 < t.success_rate < 0.88
    assert t.success_low is not None and t.success_high is not None
    assert t.success_low < t.success_rate < t.success_high
    assert t.p50_ms is not None and t.p95_ms is not None and 20 < t.p50_ms <= t.p95_ms < 2000
    assert t.retries_per_run is not None and 0 < t.retries_per_run < 0.3
    sigs = {s.step for s in t.signatures}
    assert "step-2" in sigs
    # The health check: every night is slow (false alarms), all labelled bad
    hc = skill_stats(rt.redis, rt.keys, "hc", "10d", now=end).total
    assert hc.fb_bad == counts["hc:bad"] > 0 and hc.fb_good == 0
    # The broken version: by version, the new one fails with its signature
    broken = skill_stats(rt.redis, rt.keys, "broken", "10d", by="version", now=end)
    (old, new) = sorted(broken.groups, key=lambda s: s.runs)
    assert {old.success_rate, new.success_rate} == {1.0, 0.0}
    assert broken.total.signatures[0].message == "KeyError: 'p95_ms'"
    by_day = skill_stats(rt.redis, rt.keys, "broken", "10d", by="day", now=end)
    assert len(by_day.groups) == 10
    # And the rollups equal a recount from the seeded runs
    ids = [str(x) for x in rt.redis.zrange(rt.keys.runs, 0, -1)]
    rec = recount(rt.redis, rt.keys, ids)
    for name in ("flaky", "hc", "broken"):
        for r in read_rollups(rt.redis, rt.keys, name, "19700101", "99991231"):
            assert counted(r) == rec[(r.skill, r.version, r.day)]


def test_skills_stats_command_and_bad_input(make_cluster: Callable[..., Cluster]) -> None:
    from loopwright.history.seeder import SeedSkill, seed_history

    c = make_cluster()
    bad = "KeyError: '\x1b[31mred'"
    seed_history(
        c.rt, [SeedSkill("svc", runs_per_day=30, success=0.7, errors=(bad,))], days=3,
        end_ms=now_ms(),
    )  # fmt: skip
    out = c.cli("skills", "stats", "svc", "--window", "3d")
    assert out.returncode == 0, out.stderr
    assert "svc" in out.stdout and "success" in out.stdout and "step-2" in out.stdout
    assert "\x1b" not in out.stdout  # a skill's error text cannot drive the terminal
    js = c.cli("skills", "stats", "svc", "--by", "day", "--json")
    data = json.loads(js.stdout)
    assert data["total"]["runs"] == sum(g["runs"] for g in data["groups"])
    assert data["total"]["signatures"][0]["example_run"]
    for args, words in [
        (("nope",), "unknown skill 'nope'"),
        (("svc", "--window", "soon"), "--window"),
        (("svc", "--window", "900d"), "between 1d and 400d"),
        (("svc", "--by", "week"), "--by must be one of: version, day"),
    ]:
        res = c.cli("skills", "stats", *args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert res.stderr.count("\n") == 1 and words in res.stderr, res.stderr


def test_dev_seed_history_command(make_cluster: Callable[..., Cluster]) -> None:
    c = make_cluster()
    out = c.cli("dev", "seed-history", "--days", "2", "--scale", "0.1", "--json")
    assert out.returncode == 0, out.stderr
    counts = json.loads(out.stdout)
    assert counts["steady:completed"] > 0
    again = c.cli("dev", "seed-history", "--days", "2")
    assert again.returncode == 2 and "already have runs" in again.stderr
    stats = c.cli("skills", "stats", "health-check", "--window", "2d", "--json")
    assert json.loads(stats.stdout)["total"]["runs"] == counts[
        "health-check:completed"
    ] + counts.get("health-check:failed", 0)


# Real workers ------------------------------------------------------------------------------

CHAOS = """
from loopwright.sdk import skill
import os, random, time

def work(fx, run_id, i, pause, fail):
    with open(fx, "a") as f:
        f.write(f"{run_id} {i} {os.getpid()}\\n")
    time.sleep(pause)
    if fail and random.random() < 0.5:
        raise ValueError(f"flaky step {i} of {run_id}")
    return i

@skill(name="rolled", retries=3, backoff=0.01)
def main(ctx):
    d = ctx.event["data"]
    out = [ctx.step.run(f"s{i}", work, d["fx"], ctx.run_id, i, d["pause"], d["flaky"])
           for i in range(1, 4)]
    if d["boom"]:
        raise KeyError(f"missing {ctx.run_id}")
    return out
"""


def test_rollups_equal_a_recount_after_workers_are_sigkilled(cluster: Cluster) -> None:
    import os
    import signal

    from conftest import effects, wait_until

    # Given 16 runs (some flaky steps, some failing skills) on two workers and a scheduler
    fx = cluster.tmp / "fx"
    name = cluster.skill(CHAOS)
    cluster.scheduler()
    workers = [cluster.worker(), cluster.worker()]
    runs = [
        cluster.start(name, {"fx": str(fx), "pause": 0.25, "flaky": i % 3 == 0, "boom": i % 5 == 0})
        for i in range(16)
    ]
    # When one worker is SIGKILLed mid-run and another replaces it
    victim = workers[0]
    wait_until(lambda: any(line[2] == str(victim.pid) for line in effects(fx)), timeout=20)
    os.killpg(victim.pid, signal.SIGKILL)
    cluster.worker()
    for run_id in runs:
        cluster.wait(run_id, timeout=60)
    rt = cluster.rt
    reaped = [r for r in runs if int(rt.redis.hget(rt.keys.run(r), "reaps") or 0)]
    assert reaped, "the killed worker held no run"
    # Then every rollup field equals a recount from the run hashes and step records
    got = {
        (r.skill, r.version, r.day): counted(r)
        for r in read_rollups(rt.redis, rt.keys, name, "19700101", "99991231")
    }
    assert got == recount(rt.redis, rt.keys, runs)
    total = sum(c["runs"] for c in got.values())
    assert total == 16
    assert sum(c["status:failed"] for c in got.values()) >= 4  # the booms at least


PLATFORM_SPLIT = """
from loopwright.sdk import skill

@skill(name="split")
def main(ctx):
    ctx.step.run("first", lambda: 1)
    if ctx.event["data"].get("boom"):
        raise ValueError("the skill's own bug")
    return "ok"
"""


def test_a_sandbox_infrastructure_failure_is_the_platforms_a_skill_exception_the_skills(
    make_cluster: Callable[..., Cluster],
) -> None:
    # Given workers whose Docker engine is down (the docker backend, a dead socket)
    c = make_cluster(sandbox_backend="docker", sandbox_docker_image="loopwright-guest:w2-none")
    name = c.skill(PLATFORM_SPLIT)
    c.worker(env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    # When a sandboxed run starts, and a trusted run raises its own exception
    platform = c.wait(c.start(name, {}, trusted=False))
    skill = c.wait(c.start(name, {"boom": True}))
    rt = c.rt
    # Then the first failed by the platform, the second by the skill
    assert platform.status.value == skill.status.value == "failed"
    assert "sandbox: no Docker engine is reachable" in (platform.error or "")
    origin = {r: rt.redis.hget(rt.keys.run(r), "origin") for r in (platform.id, skill.id)}
    assert origin == {platform.id: "platform", skill.id: "skill"}
    (r,) = read_rollups(rt.redis, rt.keys, name, "19700101", "99991231")
    assert (r.counts["failed:platform"], r.counts["failed:skill"]) == (1, 1)
    from loopwright.service.stats import skill_stats

    stats = skill_stats(rt.redis, rt.keys, name, "1d").total
    assert stats.success_rate == 0.0 and stats.failed_platform == 1  # 0 of 1, not 0 of 2
    assert {s.origin for s in stats.signatures} == {"platform", "skill"}
    sig = next(s for s in stats.signatures if s.origin == "skill")
    assert sig.step == "" and sig.example_run == skill.id


def test_model_usage_of_llm_steps_reaches_the_rollup(cluster: Cluster) -> None:
    from loopwright.testing.scripted import ScriptedServer

    skill = """
from loopwright.sdk import skill

@skill(name="asker", tools=["llm"], retries=2, backoff=0.05)
def main(ctx):
    first = ctx.step.llm("first", "classify", schema={"type": "object"})
    return ctx.step.llm("second", "summarise " + first["label"])
"""
    with ScriptedServer() as srv:
        srv.push({"text": "not json"}, {"text": '{"label": "ok"}'}, {"text": "fine"})
        cluster.worker(
            env={
                "LOOPWRIGHT_SKILL_MODEL": "anthropic:claude-haiku-4-5",
                "LOOPWRIGHT_ANTHROPIC_API_KEY": "k",
                "LOOPWRIGHT_ANTHROPIC_BASE_URL": srv.anthropic_base_url,
            }
        )
        name = cluster.skill(skill)
        run = cluster.wait(cluster.start(name, {}, trusted=False), timeout=60)
    assert run.status.value == "completed", run.error
    rt = cluster.rt
    h = rt.redis.hgetall(rt.keys.run(run.id))
    (r,) = read_rollups(rt.redis, rt.keys, name, "19700101", "99991231")
    # The three calls (the retried attempt included) are in the run's counters and its rollup
    assert int(h["c_tokens_in"]) > 0 and int(h["c_tokens_out"]) >= 3
    assert int(h["c_cost_micros"]) > 0
    for field, counter in (("tokens_in", "c_tokens_in"), ("tokens_out", "c_tokens_out")):
        assert r.counts[field] == int(h[counter])
    assert r.counts["cost_micros"] == int(h["c_cost_micros"])
    assert (r.counts["steps"], r.counts["attempts"], r.counts["retries"]) == (2, 3, 1)
