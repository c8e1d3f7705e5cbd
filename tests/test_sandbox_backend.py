"""The process sandbox backend as an operator meets it: warm pool, one guest per run, and loud
degradation when bubblewrap is missing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from conftest import Cluster, wait_until
from loopwright.sandbox.host import run_session
from loopwright.sandbox.limits import GuestLimits
from loopwright.sandbox.process import ProcessBackend

SKILL = """
from loopwright.sdk import skill

@skill(name="plain")
def main(ctx):
    return ctx.step.run("double", lambda: ctx.event["data"]["n"] * 2)
"""


def _answer(msg: dict[str, object]) -> dict[str, object]:
    return {"ok": {"seq": 1}} if msg["op"] == "step.begin" else {"ok": {}}


def test_warm_pool_hands_out_a_prestarted_guest_and_starts_the_next(tmp_path: Path) -> None:
    backend = ProcessBackend(GuestLimits(), pool_size=1)
    try:
        backend.refill()
        prestarted = backend._pool[0].pid
        time.sleep(0.5)  # the pooled guest boots meanwhile
        began = time.monotonic()
        guest = backend.acquire()
        warm_latency = time.monotonic() - began
        assert guest.pid == prestarted
        wait_until(lambda: len(backend._pool) == 1, timeout=10)  # refilled in the background
        assert backend._pool[0].pid != prestarted
        start = {"source": SKILL, "run_id": "r", "event": {"data": {"n": 21}}, "params": {}}
        end = run_session(guest, start, _answer, time.monotonic() + 10)
        assert json.loads(str(end["output_json"])) == 42
        wait_until(lambda: not guest.alive(), timeout=10)  # a guest serves one run, then dies
        assert warm_latency < 5  # sanity only; the benchmark measures latency
    finally:
        backend.close()


def test_without_bubblewrap_sandboxed_runs_still_work_and_say_isolation_is_missing(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    # Given a machine where bwrap cannot be found (empty PATH for the worker and the CLI)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    cluster = make_cluster()
    cluster.worker(env={"PATH": str(empty)})
    name = cluster.skill(SKILL)
    # When a sandboxed run executes
    run = cluster.wait(cluster.start(name, {"n": 5}, trusted=False))
    # Then it completes under rlimits, and the worker log and doctor say what is missing
    assert run.status.value == "completed" and run.output == 10
    log = (cluster.tmp / "proc-0.log").read_text()
    assert "NETWORK AND FILESYSTEM ISOLATION ARE MISSING" in log
    env = {**cluster.env, "PATH": str(empty)}
    import subprocess
    import sys

    doctor = subprocess.run(
        [sys.executable, "-m", "loopwright.cli", "doctor", "--json"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    sandbox = json.loads(doctor.stdout)["sandbox"]
    assert "MISSING: bubblewrap, network_isolation, filesystem_isolation" in sandbox["detail"]


def test_sandboxed_run_with_isolation_required_fails_clearly_without_bubblewrap(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    cluster = make_cluster(sandbox_require_isolation=True, sandbox_pool_size=0)
    cluster.worker(env={"PATH": str(empty)})
    name = cluster.skill(SKILL)
    run = cluster.wait(cluster.start(name, {"n": 5}, trusted=False))
    assert run.status.value == "failed"
    assert "bubblewrap (bwrap) is required but not installed" in (run.error or "")
