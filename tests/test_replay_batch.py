"""Replays of one source run in batches: one warm guest serves run after run (issue 11).

Real sandbox (bubblewrap, and the docker backend), the sidecar's replay host; the recordings
are built here as the recorder stores them (``runner/recording.py``). A batch must give every
recording the result a replay in a fresh guest gives (``replay_one``), share nothing between
runs, and fail a hanging run alone.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import DOCKER_IMAGE, require_docker_engine
from loopwright.runner.recording import Recording
from loopwright.sandbox.backend import SandboxBackend
from loopwright.sandbox.host import Guest
from loopwright.sandbox.limits import GuestLimits
from loopwright.sandbox.pins import seed_of
from loopwright.sdk.manifest import read_manifest
from loopwright.sidecar.replay import OFF_SCRIPT, replay_many, replay_one

SOURCE = """
import datetime
import random
from loopwright.sdk import skill

SEEN = []

@skill(name="batchy", tools=["http", "notify"], http_allow=["metrics.example"])
def main(ctx):
    SEEN.append(ctx.run_id)
    data = ctx.event["data"]
    before = datetime.datetime.now().isoformat()
    if data.get("hang"):
        while True:
            pass
    url = "https://metrics.example/m?k=" + data["k"]
    m = ctx.step.run("fetch", lambda: ctx.tools.http.get_json(url))
    if m["p95"] > 100:
        ctx.step.run(
            "page",
            lambda: ctx.tools.http.post_json("https://metrics.example/alert", {"p95": m["p95"]}),
        )
        ctx.step.run("tell", lambda: ctx.tools.notify("p95 high: " + str(m["p95"])))
    return {
        "before": before,
        "after": datetime.datetime.now().isoformat(),
        "seen": len(SEEN),
        "r": random.random(),
        "p95": m["p95"],
    }
"""

BASE_MS = 1_780_000_000_000
TIMEOUT = 3.0


def _get(k: str, res: Any = None, error: str | None = None, retriable: bool = False,
         elapsed: float = 7.0) -> dict[str, Any]:  # fmt: skip
    req = {
        "method": "GET",
        "url": f"https://metrics.example/m?k={k}",
        "params": None,
        "headers": None,
        "body": None,
    }
    return {"tool": "http", "req": req, "res": res, "error": error, "retriable": retriable,
            "elapsed_ms": elapsed}  # fmt: skip


def _alert(p95: int) -> list[dict[str, Any]]:
    post = {
        "method": "POST",
        "url": "https://metrics.example/alert",
        "params": None,
        "headers": None,
        "body": {"p95": p95},
    }
    tell = {"message": f"p95 high: {p95}", "title": None, "level": "info", "channel": None}
    return [
        {"tool": "http", "req": post, "res": {"ok": True}, "elapsed_ms": 11.0},
        {"tool": "notify", "req": tell, "res": None, "elapsed_ms": 2.0},
    ]


def _recording(n: int, data: dict[str, Any], calls: list[dict[str, Any]]) -> Recording:
    return Recording(
        run_id=f"run-{n}",
        skill="batchy",
        version="v1",
        status="completed",
        output=None,
        error=None,
        event={"name": "manual", "data": data},
        params={},
        state="complete",
        calls=calls,
        clock={},
        started_at=BASE_MS + n * 3_600_000,  # each run started an hour after the one before
    )


def recordings() -> list[Recording]:
    """An alerting run, a quiet one, an off-script one, a recorded 404, a run that hangs,
    a retried 503, and an alerting one again."""
    return [
        _recording(1, {"k": "a"}, [_get("a", {"p95": 150}), *_alert(150)]),
        _recording(2, {"k": "b"}, [_get("b", {"p95": 50}, elapsed=20.0)]),
        _recording(3, {"k": "c"}, [_get("other", {"p95": 50})]),
        _recording(4, {"k": "d"}, [_get("d", error="http tool: GET metrics.example answered 404")]),
        _recording(5, {"k": "e", "hang": True}, []),
        _recording(
            6,
            {"k": "f"},
            [
                _get("f", error="http tool: GET metrics.example answered 503", retriable=True),
                _get("f", {"p95": 60}, elapsed=3.0),
            ],
        ),
        _recording(7, {"k": "g"}, [_get("g", {"p95": 170}), *_alert(170)]),
    ]


class Counting:
    """A backend that counts the guests it hands out."""

    def __init__(self, inner: SandboxBackend) -> None:
        self.inner = inner
        self.name = inner.name
        self.acquired = 0

    def acquire(self) -> Guest:
        self.acquired += 1
        return self.inner.acquire()

    def refill(self) -> None:
        self.inner.refill()

    def close(self) -> None:
        self.inner.close()

    def protections(self) -> dict[str, Any]:
        return self.inner.protections()


@pytest.fixture(params=["bwrap", "docker"])
def backend(request: pytest.FixtureRequest) -> Iterator[Counting]:
    limits = GuestLimits(cpu_seconds=20, start_timeout=30.0)
    inner: SandboxBackend
    if request.param == "docker":
        require_docker_engine()
        request.getfixturevalue("docker_guest_image")
        from loopwright.sandbox.docker import DockerBackend

        inner = DockerBackend(limits, image=DOCKER_IMAGE, pool_size=1)
    else:
        from loopwright.sandbox.process import ProcessBackend

        inner = ProcessBackend(limits, pool_size=1, use_bwrap=True)
    counting = Counting(inner)
    yield counting
    inner.close()


def test_a_batch_gives_each_recording_the_result_of_a_replay_in_a_fresh_guest(
    backend: Counting,
) -> None:
    # Given recordings of one source: alerts (side effects), a quiet run, an off-script call,
    # a recorded 404, a hanging run in the middle, a retried 503
    manifest, _ = read_manifest(SOURCE)
    recs = recordings()
    # When they are replayed as one batch
    batch = replay_many(backend, SOURCE, manifest, recs, TIMEOUT, 1 << 20)
    batch_guests = backend.acquired
    # Then the results are, in order, those of one-by-one replays in fresh guests
    alone = [replay_one(backend, SOURCE, manifest, r, TIMEOUT, 1 << 20) for r in recs]
    assert [r.model_dump() for r in batch] == [r.model_dump() for r in alone]
    assert [r.run_id for r in batch] == [r.run_id for r in recs]
    # And the batch used one guest up to the hanging run and one fresh guest after it
    assert batch_guests == 2
    by_id = {r.run_id: r for r in batch}
    # And side effects were captured, with the run's own answers
    alert = by_id["run-1"]
    assert alert.status == "completed", alert.error
    assert alert.output is not None and alert.output["p95"] == 150
    assert [e["tool"] for e in alert.side_effects] == ["http", "notify"]
    assert by_id["run-7"].output is not None and by_id["run-7"].output["p95"] == 170
    assert by_id["run-2"].side_effects == []
    # And an off-script call and a recorded error fail their own run
    assert by_id["run-3"].status == "failed" and by_id["run-3"].off_script
    assert OFF_SCRIPT in (by_id["run-3"].error or "")
    assert "answered 404" in (by_id["run-4"].error or "")
    # And the recorded retriable failure was retried as the run did
    assert by_id["run-6"].status == "completed", by_id["run-6"].error
    assert by_id["run-6"].answered == 2
    # And the hanging run failed alone with the timeout of a fresh guest
    hung = by_id["run-5"]
    assert hung.status == "failed"
    assert hung.error == f"the case did not finish within {TIMEOUT:g}s (infinite loop? slow step?)"
    assert [r.status for r in batch].count("completed") == 4


def test_runs_in_one_guest_share_no_globals_and_each_reads_its_own_clock(
    backend: Counting,
) -> None:
    # Given three recordings of runs that started an hour apart, replayed in one batch
    manifest, _ = read_manifest(SOURCE)
    recs = [r for r in recordings() if r.run_id in ("run-1", "run-2", "run-7")]
    results = replay_many(backend, SOURCE, manifest, recs, TIMEOUT, 1 << 20)
    # Then they ran in one guest
    assert backend.acquired == 1
    for rec, res in zip(recs, results, strict=True):
        assert res.status == "completed", res.error
        out = res.output
        assert out is not None
        # And the module global the run appended to held only its own entry
        assert out["seen"] == 1
        # And its clock started at its own recorded start and moved by its own answers
        start = datetime.fromtimestamp(rec.started_at / 1000, UTC).replace(tzinfo=None)
        assert out["before"] == start.isoformat()
        after = start + timedelta(milliseconds=round(res.duration_ms))
        assert out["after"] == after.isoformat()
        # And its random generator was seeded from its own run id
        assert out["r"] == random.Random(seed_of(rec.run_id)).random()


def test_a_run_that_exhausts_its_memory_fails_alone_and_the_batch_goes_on_in_a_fresh_guest(
    backend: Counting,
) -> None:
    # Given a version that allocates far over the guest's memory limit on one recording
    greedy = SOURCE.replace(
        '    data = ctx.event["data"]\n',
        '    data = ctx.event["data"]\n'
        '    if data["k"] == "b":\n'
        "        SEEN.append([0] * 10**9)\n",
    )
    manifest, _ = read_manifest(greedy)
    recs = [r for r in recordings() if r.run_id in ("run-1", "run-2", "run-7")]
    # When the three recordings are replayed as one batch
    batch = replay_many(backend, greedy, manifest, recs, TIMEOUT * 4, 1 << 20)
    batch_guests = backend.acquired
    # Then the greedy run failed with the error it gets in a fresh guest, the others completed
    alone = [replay_one(backend, greedy, manifest, r, TIMEOUT * 4, 1 << 20) for r in recs]
    assert [r.model_dump() for r in batch] == [r.model_dump() for r in alone]
    assert [r.status for r in batch] == ["completed", "failed", "completed"]
    # And the run after it was served by a fresh guest
    assert batch_guests == 2


def test_a_shared_function_marked_by_one_run_is_pristine_for_the_next_in_the_guest(
    backend: Counting,
) -> None:
    # Given a version whose run on one recording marks a stdlib function as a skill (the
    # decorator writes an attribute on whatever it decorates)
    marking = SOURCE.replace("from loopwright.sdk import skill", "import statistics\n"
        "from loopwright.sdk import skill, spec_of").replace(
        '    data = ctx.event["data"]\n',
        '    data = ctx.event["data"]\n'
        '    was = spec_of(statistics.mean) is not None\n'
        '    if data["k"] == "a":\n'
        '        skill(name="hijacked")(statistics.mean)\n'
    ).replace('"seen": len(SEEN),', '"seen": len(SEEN), "was": was,')  # fmt: skip
    manifest, _ = read_manifest(marking)
    recs = [r for r in recordings() if r.run_id in ("run-1", "run-2")]
    # When the marking run and another are replayed in one guest
    batch = replay_many(backend, marking, manifest, recs, TIMEOUT, 1 << 20)
    assert backend.acquired == 1
    # Then the second run saw the function unmarked, as in a fresh guest
    assert [r.status for r in batch] == ["completed", "completed"], [r.error for r in batch]
    assert [(r.output or {}).get("was") for r in batch] == [False, False]
    alone = [replay_one(backend, marking, manifest, r, TIMEOUT, 1 << 20) for r in recs]
    assert [r.model_dump() for r in batch] == [r.model_dump() for r in alone]
