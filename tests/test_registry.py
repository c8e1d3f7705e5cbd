"""The registry: content-hashed immutable versions, the atomic active pointer, hot swap with
in-flight runs kept on their version, rollback, pause/resume of triggers, concurrency, export
and import."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Cluster, wait_until
from loopwright.cli.runs import start_run
from loopwright.errors import NotFoundError
from loopwright.sidecar.pipeline import Sidecar
from loopwright.sidecar.verdict import Verdict
from loopwright.skills_registry.diff import diff_refs
from loopwright.skills_registry.files import export_dir, read_dir
from loopwright.skills_registry.manifest import read_manifest
from loopwright.skills_registry.store import Registry, SkillStateError

SMOKE = [{"name": "smoke", "event": {}, "expect": {"status": "completed"}}]

SWAPPER = """
from loopwright.sdk import skill

@skill(name="swapper", retries=0)
def main(ctx):
    if ctx.event["data"].get("hold"):
        ctx.step.sleep("hold", ctx.event["data"]["hold"])
    return ctx.step.run("answer", lambda: "{label}")
"""

TICKER = """
from loopwright.sdk import skill, cron

@skill(name="ticker", trigger=cron("* * * * * *"))
def main(ctx):
    return ctx.step.run("tick", lambda: ctx.event["data"]["tick_ms"])
"""


TICKER_TESTS = [{"name": "tick", "event": {"data": {"tick_ms": 5}}, "expect": {"output": 5}}]


def registry(cluster: Cluster) -> Registry:
    return Registry(cluster.rt.redis, cluster.rt.keys)


def submit(cluster: Cluster, source: str, tests: Any = SMOKE, **kw: Any) -> Verdict:
    verdict = Sidecar(cluster.rt).submit(textwrap.dedent(source), tests, **kw)
    assert verdict.accepted, verdict.findings
    return verdict


def register(reg: Registry, source: str, tests: Any = SMOKE, **kw: Any) -> Any:
    manifest, _ = read_manifest(source)
    return reg.register(source, manifest, tests, **kw)


def test_a_version_is_addressed_by_its_content(cluster: Cluster) -> None:
    reg = registry(cluster)
    a = register(reg, SWAPPER.format(label="v1"))
    again = register(reg, SWAPPER.format(label="v1"))
    other_tests = register(reg, SWAPPER.format(label="v1"), [*SMOKE, {"name": "more"}])
    assert a.outcome == "activated" and again.outcome == "unchanged"
    assert again.version == a.version and other_tests.version != a.version
    assert reg.skill("swapper").versions == 2
    assert reg.source(a.version) == SWAPPER.format(label="v1")
    assert cluster.rt.redis.get(cluster.rt.keys.source(a.version)) == reg.source(a.version)
    v = reg.version("swapper", a.version[:6])
    assert v.author == "agent" and v.parent is None and v.validated and v.tests == SMOKE
    assert reg.version("swapper", other_tests.version).parent == a.version


def test_hot_swap_keeps_in_flight_runs_on_their_version_and_rollback_goes_back(
    cluster: Cluster,
) -> None:
    cluster.scheduler()
    cluster.worker()
    v1 = submit(cluster, SWAPPER.format(label="v1"))
    # Given a run of v1 in flight (parked in a durable sleep: its next execution loads the
    # source again, by version)
    held = cluster.start("swapper", {"hold": "3s"}, trusted=False)
    wait_until(lambda: cluster.rt.runs.get(held).status.value == "sleeping", timeout=20)
    # When v2 is registered while it sleeps
    v2 = submit(cluster, SWAPPER.format(label="v2"))
    assert v2.previous == v1.version and v2.changes and v2.changes["lines_added"] == 1
    # Then the next run uses v2 and the in-flight run finishes on v1
    nxt = cluster.wait(cluster.start("swapper", {}, trusted=False))
    assert nxt.output == "v2" and nxt.version == v2.version
    first = cluster.wait(held, timeout=30)
    assert first.output == "v1" and first.version == v1.version
    # And a rollback makes the next run use v1 again
    assert v1.version is not None
    change = registry(cluster).rollback("swapper", v1.version)
    assert change.action == "rollback" and change.previous == v2.version
    again = cluster.wait(cluster.start("swapper", {}, trusted=False))
    assert again.output == "v1" and again.version == v1.version


def _tick_runs(cluster: Cluster) -> int:
    return len(cluster.rt.runs.find(skill="ticker", limit=1000))


def test_pausing_a_cron_skill_stops_new_runs_and_resuming_restarts_them(
    cluster: Cluster,
) -> None:
    submit(cluster, TICKER, TICKER_TESTS)
    cluster.scheduler()
    wait_until(lambda: _tick_runs(cluster) >= 2, timeout=20)
    reg = registry(cluster)
    assert reg.pause("ticker").status == "paused"
    time.sleep(0.6)  # a tick being fired as the pause lands may still start
    paused_count = _tick_runs(cluster)
    time.sleep(2.5)
    assert _tick_runs(cluster) == paused_count, "a paused cron skill started a run"
    with pytest.raises(SkillStateError, match="paused"):
        start_run(cluster.rt, "ticker", {})
    resumed_at = time.time()
    assert reg.resume("ticker").status == "active"
    wait_until(lambda: _tick_runs(cluster) >= paused_count + 2, timeout=20)
    # Ticks missed while paused are not caught up in a burst: resumed runs are recent ticks
    late = [
        r
        for r in cluster.rt.runs.find(skill="ticker", limit=1000)
        if r.trigger and int(r.trigger["tick_ms"]) < resumed_at * 1000 - 1000
    ]
    assert len(late) <= paused_count


def test_run_name_of_a_paused_or_retired_skill_is_a_clear_error(cluster: Cluster) -> None:
    submit(cluster, SWAPPER.format(label="v1"))
    reg = registry(cluster)
    reg.pause("swapper")
    proc = cluster.cli("run", "swapper")
    assert proc.returncode == 1
    assert "skill 'swapper' is paused: resume it with 'loopwright skills resume swapper'" in (
        proc.stderr
    )
    reg.retire("swapper")
    assert "is retired" in cluster.cli("run", "swapper").stderr
    with pytest.raises(SkillStateError, match="cannot pause"):
        reg.pause("swapper")
    reg.resume("swapper")
    assert cluster.rt.sources.resolve("swapper") == reg.skill("swapper").active
    with pytest.raises(NotFoundError, match="unknown skill 'ghost'"):
        reg.pause("ghost")


def test_ten_concurrent_submissions_of_different_skills_all_register(cluster: Cluster) -> None:
    sidecar = Sidecar(cluster.rt)
    verdicts: dict[int, Verdict] = {}
    barrier = threading.Barrier(10)

    def one(i: int) -> None:
        source = SWAPPER.format(label=str(i)).replace('"swapper"', f'"skill-{i}"')
        barrier.wait()
        verdicts[i] = sidecar.submit(source, SMOKE)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(verdicts) == list(range(10))
    assert all(v.accepted and v.registration == "activated" for v in verdicts.values())
    reg = registry(cluster)
    assert {s.name: s.active for s in reg.skills()} == {
        f"skill-{i}": v.version for i, v in verdicts.items()
    }
    assert cluster.rt.sources.names() == {f"skill-{i}": v.version for i, v in verdicts.items()}
    assert reg.seq == 10


def test_concurrent_submissions_of_one_skill_never_leave_the_pointer_inconsistent(
    cluster: Cluster,
) -> None:
    reg = registry(cluster)
    keys = cluster.rt.keys
    for round_ in range(25):
        barrier = threading.Barrier(2)
        out: dict[str, Any] = {}

        def one(
            label: str,
            round_: int = round_,
            barrier: threading.Barrier = barrier,
            out: dict[str, Any] = out,
        ) -> None:
            barrier.wait()
            out[label] = register(reg, SWAPPER.format(label=f"{label}{round_}"))

        threads = [threading.Thread(target=one, args=(x,)) for x in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        a, b = out["a"], out["b"]
        skill = reg.skill("swapper")
        # The pointer, the runnable index and the later registration agree
        later, earlier = (a, b) if a.previous == b.version else (b, a)
        assert later.previous == earlier.version, (a, b)
        assert skill.active == later.version
        assert cluster.rt.redis.hget(keys.skills, "swapper") == later.version
        assert {a.version, b.version} <= set(reg.version_ids("swapper"))
        assert reg.version("swapper", later.version).parent == earlier.version
    assert reg.skill("swapper").versions == 50
    # And through the whole pipeline, twice at once
    sidecar = Sidecar(cluster.rt)
    results: list[Verdict] = []
    threads = [
        threading.Thread(
            target=lambda x=x: results.append(sidecar.submit(SWAPPER.format(label=x), SMOKE))
        )
        for x in ("p", "q")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(v.accepted for v in results)
    active = reg.skill("swapper").active
    assert active in {v.version for v in results}
    assert cluster.rt.sources.resolve("swapper") == active


def test_author_policy(cluster: Cluster) -> None:
    reg = registry(cluster)
    person = register(reg, SWAPPER.format(label="p"), author="person")
    agent = register(reg, SWAPPER.format(label="a"), author="agent")
    assert agent.outcome == "denied" and agent.owner == "person"
    review = register(reg, SWAPPER.format(label="r"), author="review")
    assert review.outcome == "pending" and reg.skill("swapper").active == person.version
    assert reg.approve("swapper", review.version).version == review.version
    # an agent-owned skill can be changed by a person and by the review loop
    other = SWAPPER.replace('"swapper"', '"agent-made"')
    register(reg, other.format(label="1"), author="agent")
    assert register(reg, other.format(label="2"), author="person").outcome == "activated"
    assert register(reg, other.format(label="3"), author="review").outcome == "activated"
    assert reg.skill("agent-made").owner == "agent"


def test_rollback_refuses_unapproved_versions_and_foreign_ones(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(approval_mode="review")
    reg = registry(cluster)
    pending = submit(cluster, SWAPPER.format(label="v1"))
    assert pending.registration == "pending" and pending.version
    with pytest.raises(SkillStateError, match="never approved"):
        reg.rollback("swapper", pending.version)
    with pytest.raises(SkillStateError, match="cannot resume"):
        reg.resume("swapper")
    reg.approve("swapper", pending.version)
    other = register(reg, SWAPPER.replace('"swapper"', '"other"').format(label="o"))
    with pytest.raises(NotFoundError, match="has no version"):
        reg.rollback("swapper", other.version)


def test_run_file_never_replaces_a_validated_active_version(cluster: Cluster) -> None:
    cluster.worker()
    tested = submit(cluster, SWAPPER.format(label="tested"))
    path = cluster.tmp / "local.py"
    path.write_text(SWAPPER.format(label="local"))
    run = cluster.wait(start_run(cluster.rt, str(path), {}))
    assert run.output == "local" and run.version != tested.version
    assert cluster.rt.sources.resolve("swapper") == tested.version
    versions = registry(cluster).versions("swapper")
    assert [(v.author, v.validated) for v in versions] == [("agent", True), ("person", False)]


def test_diff_names_source_manifest_and_test_changes(cluster: Cluster) -> None:
    reg = registry(cluster)
    a = register(reg, SWAPPER.format(label="v1"))
    changed = SWAPPER.format(label="v2").replace("retries=0", "retries=2")
    b = register(reg, changed, [*SMOKE, {"name": "extra"}])
    d = diff_refs(reg, "swapper", a.version[:8], b.version[:8])
    assert d.lines_added == 2 and d.lines_removed == 2
    assert d.manifest == {"retries": {"from": 0, "to": 2}}
    assert d.tests_added == ["extra"] and d.tests_removed == [] and d.tests_changed == []
    assert "retries" in d.summary() and "tests added extra" in d.summary()
    assert '-    return ctx.step.run("answer", lambda: "v1")' in d.source_diff


def test_export_and_import_round_trip(
    cluster: Cluster, make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    a = submit(cluster, SWAPPER.format(label="v1"))
    b = submit(cluster, TICKER, TICKER_TESTS)
    reg = registry(cluster)
    reg.pause("ticker")
    retired = submit(cluster, SWAPPER.replace('"swapper"', '"old"').format(label="x"))
    reg.retire("old")
    out = tmp_path / "exported"
    result = export_dir(reg, out)
    assert sorted(result["skills"]) == ["swapper", "ticker"] and retired.name == "old"
    assert sorted(p.name for p in out.iterdir()) == [
        "registry.json",
        "swapper.py",
        "swapper.tests.json",
        "ticker.py",
        "ticker.tests.json",
    ]
    index = json.loads((out / "registry.json").read_text())["skills"]
    assert index["ticker"]["status"] == "paused" and index["swapper"]["version"] == a.version
    assert export_dir(reg, out)["written"] == []  # deterministic: nothing to rewrite
    # Import into an empty registry: same content -> same version ids; pause restored
    fresh = make_cluster()
    for item in read_dir(out, 1 << 20):
        assert not isinstance(item, tuple)
        verdict = Sidecar(fresh.rt).submit(item.source, item.tests, author="person")
        assert verdict.accepted
        if item.status == "paused" and verdict.name:
            registry(fresh).pause(verdict.name)
    freg = registry(fresh)
    assert freg.skill("swapper").active == a.version
    assert freg.skill("ticker").active == b.version
    assert freg.skill("ticker").status == "paused"
    # A skill retired since the last export has its exported files removed
    reg.retire("swapper")
    assert sorted(export_dir(reg, out)["removed"]) == ["swapper.py", "swapper.tests.json"]
