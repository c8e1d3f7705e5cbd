"""The README's main command: the demo runs every example end to end, kill included."""

from __future__ import annotations

from conftest import REPO, Cluster
from loopwright.inbox import Inbox
from loopwright.skills_registry.store import Registry


def test_demo_runs_every_example_and_resumes_the_killed_run(cluster: Cluster) -> None:
    proc = cluster.cli("demo", "--runner", "--examples", str(REPO / "examples"), timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert out.count("completed") >= 4
    assert "SIGKILL worker pid" in out and "resumed in the new worker" in out
    assert "[warning] service-health: latency watch: service is degraded" in out
    runs = cluster.rt.runs.find()
    assert sorted(r.skill for r in runs) == [
        "hello-pipeline",
        "nightly-digest",
        "service-health",
        "slow-report",
    ]
    assert all(r.status.value == "completed" for r in runs)
    trusted = {r.skill: r.trusted for r in runs}
    assert trusted == {
        "hello-pipeline": False,
        "nightly-digest": False,
        "service-health": False,
        "slow-report": True,
    }


def test_demo_runs_the_seed_scenario_with_the_offline_model(cluster: Cluster) -> None:
    proc = cluster.cli("demo", "--workdir", str(cluster.tmp / "demo"), timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "→ write_skill" in out and "accepted health-check@" in out
    assert "accepted incident-triage@" in out
    registry = Registry(cluster.rt.redis, cluster.rt.keys)
    for name in ("health-check", "incident-triage"):
        ver = registry.version(name)
        assert ver.author == "agent" and ver.validated and len(ver.tests or []) >= 3
    (health,) = cluster.rt.runs.find(skill="health-check")
    (triage,) = cluster.rt.runs.find(skill="incident-triage")
    assert health.status.value == triage.status.value == "completed"
    assert health.output["verdict"] == "degraded" and not health.trusted
    assert triage.trigger["type"] == "event" and not triage.trusted
    rt = cluster.rt
    inbox = [n for n in Inbox(rt.redis, rt.keys, rt.settings).list() if n.source == "skill"]
    assert [n.skill for n in inbox] == ["incident-triage"]
    assert "checkout" in inbox[0].body and "/api/cart" in inbox[0].body
    assert "metrics service calls: /breakdown x1, /deploys x1, /summary x1" in out
    assert "Run history" in out and "Continue the conversation: loopwright chat" in out
