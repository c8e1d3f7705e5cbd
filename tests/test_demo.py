"""The README's main command: the demo runs every example end to end, kill included, in its
own keyspace: the person's registry is left as it was, and running it twice gives the same
result."""

from __future__ import annotations

import textwrap
from typing import Any

from conftest import REPO, Cluster
from loopwright.assembly import build_runtime
from loopwright.cli.demo import demo_settings
from loopwright.inbox import Inbox
from loopwright.runner.runtime import Runtime
from loopwright.skills_registry.store import Registry

OLD_DEMO = """
from loopwright.sdk import skill, cron

@skill(name="health-check", trigger=cron("*/30 * * * *"), tools=["http"],
       http_allow=["127.0.0.1"])
def main(ctx):
    return ctx.step.run("fetch", ctx.tools.http.get_json, "http://127.0.0.1:9/summary")
"""

MINE = """
from loopwright.sdk import skill, cron

@skill(name="mine", trigger=cron("0 3 * * *"))
def main(ctx):
    return ctx.step.run("noop", lambda: 1)
"""


def _demo_rt(cluster: Cluster) -> Runtime:
    """The demo's own keyspace (prefix and queue with -demo) on the cluster's Redis."""
    return build_runtime(demo_settings(cluster.settings))


def _registry_state(rt: Runtime) -> list[dict[str, Any]]:
    reg = Registry(rt.redis, rt.keys)
    return [
        {**s.model_dump(), "v": [v.version for v in reg.versions(s.name)]} for s in reg.skills()
    ]


def _person_keys(rt: Runtime) -> dict[str, str]:
    return {str(k): str(rt.redis.type(k)) for k in rt.redis.scan_iter(match=f"{rt.keys.prefix}:*")}


def test_demo_runs_every_example_and_resumes_the_killed_run(cluster: Cluster) -> None:
    proc = cluster.cli("demo", "--runner", "--examples", str(REPO / "examples"), timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert out.count("completed") >= 4
    assert "SIGKILL worker pid" in out and "resumed in the new worker" in out
    assert "[warning] service-health: latency watch: service is degraded" in out
    assert cluster.rt.runs.find() == []  # the person's keyspace saw none of it
    demo = _demo_rt(cluster)
    runs = demo.runs.find()
    assert sorted(r.skill for r in runs) == [
        "hello-pipeline",
        "nightly-digest",
        "service-health",
        "slow-report",
    ]
    assert all(r.status.value == "completed" for r in runs)
    # Every example ran as a draft: nothing of the tour stays runnable or triggerable
    assert demo.sources.names() == {}
    assert "LOOPWRIGHT_KEY_PREFIX=" in out
    trusted = {r.skill: r.trusted for r in runs}
    assert trusted == {
        "hello-pipeline": False,
        "nightly-digest": False,
        "service-health": False,
        "slow-report": True,
    }


def test_demo_runs_the_seed_scenario_twice_and_leaves_the_persons_registry_alone(
    cluster: Cluster,
) -> None:
    # Given a person's own cron skill in their installation, and a health check an older demo
    # left there (before the demo had its own keyspace)
    cluster.rt.sources.put(textwrap.dedent(MINE), "mine")
    cluster.rt.sources.put(textwrap.dedent(OLD_DEMO), "health-check")
    before, keys_before = _registry_state(cluster.rt), _person_keys(cluster.rt)
    demo = _demo_rt(cluster)
    results = []
    for attempt in range(2):
        proc = cluster.cli("demo", "--workdir", str(cluster.tmp / f"demo{attempt}"), timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        out = proc.stdout
        assert "→ write_skill" in out and "accepted health-check@" in out
        assert "accepted incident-triage@" in out
        registry = Registry(demo.redis, demo.keys)
        for name in ("health-check", "incident-triage"):
            ver = registry.version(name)
            assert ver.author == "agent" and ver.validated and len(ver.tests or []) >= 3
            # paused on the way out: the cron never fires against the stopped fake service
            assert registry.skill(name).status == "paused"
        assert not {"health-check", "incident-triage"} & set(demo.sources.names())
        (health,) = demo.runs.find(skill="health-check")
        (triage,) = demo.runs.find(skill="incident-triage")
        assert health.status.value == triage.status.value == "completed"
        assert health.output["verdict"] == "degraded" and not health.trusted
        assert triage.trigger["type"] == "event" and not triage.trusted
        notices = Inbox(demo.redis, demo.keys, demo.settings).list()
        inbox = [n for n in notices if n.source == "skill"]
        assert [n.skill for n in inbox] == ["incident-triage"]
        assert "checkout" in inbox[0].body and "/api/cart" in inbox[0].body
        assert "metrics service calls: /breakdown x1, /deploys x1, /summary x1" in out
        assert "Run history" in out and "loopwright chat --session" in out
        prefix = demo.settings.key_prefix
        assert f"LOOPWRIGHT_KEY_PREFIX={prefix}" in out and "are paused" in out
        assert "An earlier demo left health-check in your own installation" in out
        assert "loopwright skills delete health-check --yes" in out
        # The person's registry and keyspace are exactly as they were
        assert _registry_state(cluster.rt) == before
        assert _person_keys(cluster.rt) == keys_before
        skills = registry.skills()  # each run writes its metrics URL (a new port) into them
        results.append([(s.name, s.status, s.versions, s.owner) for s in skills])
    # Twice, the same result: the same skills, one version and one run each (above)
    assert results[0] == results[1]
    demo.close()


def test_ctrl_c_during_the_demo_pauses_what_it_registered(cluster: Cluster) -> None:
    import signal

    from conftest import wait_until

    demo = _demo_rt(cluster)
    before = _person_keys(cluster.rt)
    proc = cluster.spawn("demo", "--workdir", str(cluster.tmp / "demo"))
    registry = Registry(demo.redis, demo.keys)
    # Interrupted once the builder registered the cron health check (its 30-minute trigger)
    wait_until(lambda: "health-check" in demo.sources.names(), timeout=240, interval=0.1)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) != 0
    assert registry.skill("health-check").status == "paused"
    assert not set(demo.sources.names()) - {"builder-session", "weekly-review"}
    assert _person_keys(cluster.rt) == before
    demo.close()
