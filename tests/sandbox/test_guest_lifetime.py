"""Nothing a worker starts outlives it: guests die with a SIGKILLed worker (durability issue,
item 7). Guests are found by the owner marker every guest process carries in its environment
(``loopwright.sandbox.watchdog``), whose token begins with the worker's pid."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from conftest import Cluster, wait_until
from loopwright.sandbox.watchdog import OWNER_ENV


def guests_of(worker_pid: int) -> list[int]:
    """Live processes carrying the owner marker of the backend in process ``worker_pid``."""
    prefix = f"{OWNER_ENV}={worker_pid}-".encode()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if any(item.startswith(prefix) for item in env):
            found.append(int(pid))
    return found


def test_a_sigkilled_worker_leaves_no_guest_of_its_warm_pool(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(sandbox_backend="process", sandbox_pool_size=16)
    worker = cluster.spawn("worker")
    # Kill it while its pool is still starting: the race that orphaned bubblewrap's inits.
    started = wait_until(lambda: guests_of(worker.pid), timeout=30, interval=0.005)
    assert started
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    wait_until(lambda: not guests_of(worker.pid), timeout=20)


BUSY = """
from loopwright.sdk import skill

@skill(name="busy", timeout="60s")
def main(ctx):
    def spin():
        n = 0
        while True:
            n += 1
    return ctx.step.run("spin", spin)
"""


def test_a_sigkilled_worker_leaves_no_guest_of_a_running_run(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(sandbox_backend="process", sandbox_pool_size=1)
    worker = cluster.worker()
    run_id = cluster.start(cluster.skill(BUSY), trusted=False)
    wait_until(lambda: cluster.rt.runs.get(run_id).status.value == "running")
    wait_until(lambda: len(guests_of(worker.pid)) >= 2)  # the run's guest and a pooled one
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    wait_until(lambda: not guests_of(worker.pid), timeout=20)


def test_a_sigkilled_worker_leaves_no_container_of_a_running_run(
    make_cluster: Callable[..., Cluster], docker_guest_image: str
) -> None:
    import docker

    from conftest import DOCKER_IMAGE, require_docker_engine
    from loopwright.sandbox.docker import OWNER_LABEL

    require_docker_engine()
    client = docker.from_env(timeout=10)

    def containers_of(pid: int) -> list[str]:
        found = client.api.containers(all=True, filters={"label": OWNER_LABEL})
        return [
            c["Id"]
            for c in found
            if str((c.get("Labels") or {}).get(OWNER_LABEL, "")).split(":")[1:2] == [str(pid)]
        ]

    cluster = make_cluster(
        sandbox_backend="docker", sandbox_docker_image=DOCKER_IMAGE, sandbox_pool_size=1
    )
    worker = cluster.worker()
    run_id = cluster.start(cluster.skill(BUSY), trusted=False)
    wait_until(lambda: cluster.rt.runs.get(run_id).status.value == "running", timeout=60)
    wait_until(lambda: len(containers_of(worker.pid)) >= 2, timeout=60)  # busy + pooled
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(timeout=10)
    # Before: the busy guest ran on until its CPU limit and stopped ones stayed until the
    # next backend started.
    wait_until(lambda: not containers_of(worker.pid), timeout=30)
    client.close()
