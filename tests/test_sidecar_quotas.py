"""What one submission may cost the sidecar (issue 9 item 5), sized to the limits: per-case and
per-submission quotas on what the harness records (step outputs, logs, notifications), the
response size, and one cap on running test guests shared by every submission."""

from __future__ import annotations

import json
import os
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import DOCKER_IMAGE, Cluster, free_port, wait_until
from loopwright.auth.tokens import TokenStore
from loopwright.sidecar.pipeline import Sidecar
from loopwright.sidecar.quotas import RECORD_OVERHEAD
from loopwright.sidecar.service import bounded_response

KIB = 1024
CASE_QUOTA = 256 * KIB

BIG_STEPS = """
from loopwright.sdk import skill


@skill(name="big-steps", description="many large step outputs", params={"n": 400})
def main(ctx):
    total = 0
    for i in range(ctx.params["n"]):
        total += len(ctx.step.run("chunk-" + str(i), lambda: "x" * 10000))
    return total
"""

LOG_FLOOD = """
from loopwright.sdk import NonRetriableError, StepFailedError, skill


def fail(line):
    raise NonRetriableError(line)


@skill(name="log-flood", description="logs a lot", tools=["notify"], params={"mode": "log"})
def main(ctx):
    line = "y" * 4000
    for i in range(2000):
        if ctx.params["mode"] == "log":
            ctx.log.info(line)
        elif ctx.params["mode"] == "notify":
            ctx.step.run("n" + str(i), lambda: ctx.tools.notify(line))
        else:
            try:
                ctx.step.run("e" + str(i), fail, line)
            except StepFailedError:
                pass
    return "done"
"""

SPIN = """
from loopwright.sdk import skill


@skill(name="{name}", description="spins until its timeout", timeout="{timeout}s")
def main(ctx):
    n = 0
    while True:
        n += 1
"""


def _cluster(make: Callable[..., Cluster], backend: str = "process", **kw: Any) -> Cluster:
    return make(
        sandbox_backend=backend,
        sandbox_docker_image=DOCKER_IMAGE,
        sidecar_case_max_bytes=CASE_QUOTA,
        sidecar_submission_max_bytes=kw.pop("submission", 1024 * KIB),
        **kw,
    )


def _recorded(case: Any) -> int:
    """What the harness kept for a case, measured the way it charges it."""
    steps = sum(len(json.dumps(s)) for s in case.steps)
    notices = sum(len(json.dumps(n)) for n in case.notifications)
    return steps + notices


def test_a_case_over_its_quota_fails_and_stops_growing_one_at_it_passes(
    make_cluster: Callable[..., Cluster], sandbox_backend: str
) -> None:
    cluster = _cluster(make_cluster, sandbox_backend)
    cases = [
        {"name": "huge", "expect": {"status": "completed"}},  # 400 x 10 KB = 4 MB
        {"name": "huge-expected-to-fail", "expect": {"status": "failed"}},
        {"name": "at-quota", "params": {"n": 20}},  # 200 KB: under 256 KiB
    ]
    verdict = Sidecar(cluster.rt).submit(textwrap.dedent(BIG_STEPS), cases)
    assert not verdict.accepted and verdict.stage == "tests"
    by_name = {c.name: c for c in verdict.cases}
    assert by_name["at-quota"].passed and by_name["at-quota"].output == 200_000
    failed = {f.message.split("'")[1]: f for f in verdict.findings}
    assert set(failed) == {"huge", "huge-expected-to-fail"}  # over quota fails whatever it expects
    for name, finding in failed.items():
        case = by_name[name]
        assert "LOOPWRIGHT_SIDECAR_CASE_MAX_BYTES" in finding.message
        assert case.error is not None and case.error.startswith("quota: ")
        assert 20 < len(case.steps) < 30  # stopped near the quota, not after 400 steps
        assert _recorded(case) <= CASE_QUOTA


@pytest.mark.parametrize("mode", ["log", "notify", "caught-errors"])
def test_logs_and_notifications_count_against_the_case_quota(
    make_cluster: Callable[..., Cluster], mode: str
) -> None:
    cluster = _cluster(make_cluster)
    verdict = Sidecar(cluster.rt).submit(
        textwrap.dedent(LOG_FLOOD), [{"name": "flood", "params": {"mode": mode}}]
    )
    assert not verdict.accepted
    (case,) = verdict.cases
    assert "LOOPWRIGHT_SIDECAR_CASE_MAX_BYTES" in (case.error or "")
    if mode == "notify":  # 2000 notices of 4 KB: at most the quota's worth kept
        assert 0 < len(case.notifications) <= CASE_QUOTA // (4000 + RECORD_OVERHEAD)
    if mode == "caught-errors":  # 2000 failed steps with 4 KB errors the skill swallows
        assert 0 < len(case.steps) <= CASE_QUOTA // 4000


def test_the_submission_quota_spans_its_cases(make_cluster: Callable[..., Cluster]) -> None:
    cluster = _cluster(make_cluster, submission=400 * KIB)
    cases = [{"name": f"c{i}", "params": {"n": 15}} for i in range(4)]  # 150 KB each
    verdict = Sidecar(cluster.rt).submit(textwrap.dedent(BIG_STEPS), cases)
    assert not verdict.accepted
    over = [c for c in verdict.cases if not c.passed]
    assert over and all("LOOPWRIGHT_SIDECAR_SUBMISSION_MAX_BYTES" in (c.error or "") for c in over)
    assert sum(_recorded(c) for c in verdict.cases) <= 400 * KIB


def test_a_verdict_over_the_response_cap_loses_its_outputs_not_its_answer() -> None:
    big = {"name": "s", "status": "done", "output": "z" * 50_000}
    data = {
        "accepted": True,
        "summary": "ok",
        "warnings": [],
        "cases": [
            {"name": f"c{i}", "output": "o" * 10_000, "steps": [dict(big)]} for i in range(4)
        ],
    }
    small = bounded_response(json.loads(json.dumps(data)), 1024 * KIB)
    assert json.loads(bytes(small.body)) == data  # under the cap: untouched
    resp = bounded_response(data, 64 * KIB)
    out = json.loads(bytes(resp.body))
    assert len(resp.body) <= 64 * KIB and out["accepted"] is True
    assert out["warnings"][0]["rule"] == "response-trimmed"
    assert all("output" not in s for c in out["cases"] for s in c["steps"])
    huge = {"accepted": False, "warnings": [], "cases": [{"steps": [{"n": "q" * 200}] * 2000}]}
    assert len(bounded_response(huge, 64 * KIB).body) <= 64 * KIB


# One cap on running guests across submissions, counted in the operating system -------------


def _guest_processes(root: int) -> int:
    """Live sandbox guest interpreters below process ``root`` (bwrap itself not counted)."""
    parents: dict[int, int] = {}
    cmdlines: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
        cmdlines[int(entry.name)] = [a.decode(errors="replace") for a in argv if a]

    def below(pid: int) -> bool:
        seen = 0
        while pid > 1 and seen < 64:
            pid, seen = parents.get(pid, 0), seen + 1
            if pid == root:
                return True
        return False

    return sum(
        1
        for pid, argv in cmdlines.items()
        if argv
        and "loopwright.sandbox.guest" in argv
        and not os.path.basename(argv[0]).startswith(("bwrap", "prlimit"))
        and below(pid)
    )


class Service:
    def __init__(self, cluster: Cluster) -> None:
        port = free_port()
        self.proc = cluster.spawn("sidecar", "--port", str(port))
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=180)
        token = TokenStore(cluster.rt.redis, cluster.rt.keys).create("q", ["operate"])[1]
        self.http.headers["Authorization"] = f"Bearer {token}"
        wait_until(self._up, timeout=60)

    def _up(self) -> bool:
        try:
            return self.http.get("/v1/health").status_code == 200
        except httpx.HTTPError:
            return False

    def guests(self) -> dict[str, int]:
        return dict(self.http.get("/v1/health").json()["guests"])

    def submit(self, name: str, timeout: float, cases: int) -> httpx.Response:
        body = {
            "source": textwrap.dedent(SPIN.format(name=name, timeout=timeout)),
            "tests": [{"name": f"spin-{i}"} for i in range(cases)],
        }
        return self.http.post("/v1/skills", json=body)


def test_parallel_submissions_share_one_cap_on_running_guests(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(sidecar_max_guests=2, sandbox_pool_size=0, sandbox_cpu_seconds=30)
    service = Service(cluster)
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _guest_processes(service.proc.pid))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    answers: dict[int, httpx.Response] = {}

    def post(i: int) -> None:
        answers[i] = service.submit(f"spin-{i}", 1, cases=2)

    posts = [threading.Thread(target=post, args=(i,)) for i in range(4)]  # 8 spinning cases
    for t in posts:
        t.start()
    for t in posts:
        t.join(300)
    done.set()
    watcher.join(10)
    assert sorted(answers) == [0, 1, 2, 3]
    for resp in answers.values():
        verdict = resp.json()
        assert resp.status_code == 200 and verdict["stage"] == "tests"
        assert all("did not finish within 1s" in c["error"] for c in verdict["cases"])
    stats = service.guests()
    assert peak == 2 and stats["peak"] == 2 and stats["running"] == 0 and stats["limit"] == 2


def test_a_submission_that_cannot_get_a_guest_in_time_gets_503(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(sidecar_max_guests=1, sidecar_guest_wait=0.5, sandbox_pool_size=0)
    service = Service(cluster)
    first: dict[str, httpx.Response] = {}
    holder = threading.Thread(
        target=lambda: first.setdefault("r", service.submit("holder", 4, cases=1))
    )
    holder.start()
    wait_until(lambda: service.guests()["running"] == 1, timeout=60)
    busy = service.submit("latecomer", 1, cases=1)
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
    assert "the sidecar is busy" in busy.json()["detail"]
    assert "LOOPWRIGHT_SIDECAR_MAX_GUESTS" in busy.json()["detail"]
    holder.join(120)
    assert first["r"].status_code == 200 and "latecomer" not in cluster.rt.sources.names()
