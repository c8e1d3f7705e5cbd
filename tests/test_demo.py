"""The README's main command: the demo runs every example end to end, kill included."""

from __future__ import annotations

from conftest import REPO, Cluster


def test_demo_runs_every_example_and_resumes_the_killed_run(cluster: Cluster) -> None:
    proc = cluster.cli("demo", "--examples", str(REPO / "examples"), timeout=240)
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
