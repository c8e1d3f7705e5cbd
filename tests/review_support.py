"""Recorded history for the review tests: runs written through the runner's own scripts
(create, acquire, checkpoint commits carrying each step's recorded tool calls, finish), with
explicit times and labels, so the gate and the search replay real recordings in the sandbox.

The health check alarms (notify) when the measured p95 is above its ``threshold`` param; its
nights sit just above 250 ms (false alarms, labelled bad), its incident far above (labelled good).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from loopwright.history.seeder import SeededRun, direct_feedback
from loopwright.review.split import side_of
from loopwright.runner.lease import Acquired
from loopwright.runner.records import StepRecord, now_ms
from loopwright.runner.rollup import Ending
from loopwright.runner.runtime import Runtime
from loopwright.runner.transitions import Declared
from loopwright.sdk.steps import StepKind

URL = "http://127.0.0.1:9/metrics"  # never contacted: replays answer from the recording

HEALTH = """\
from loopwright.sdk import skill


@skill(name="health-check", tools=["http", "notify"], http_allow=["127.0.0.1"],
       params={{"threshold": {threshold}}})
def main(ctx):
    m = ctx.step.run("fetch", lambda: ctx.tools.http.get_json("{url}"))
    if m["{field}"] > ctx.params["threshold"]:
        ctx.step.run("alert", lambda: ctx.tools.notify("p95 is " + str(m["{field}"]) + " ms"))
        return {{"alarm": True}}
    return {{"alarm": False}}
"""


def health(threshold: int = 250, field: str = "p95_ms") -> str:
    """The health check's source."""
    return HEALTH.format(threshold=threshold, url=URL, field=field)


@dataclass(frozen=True)
class Planned:
    """One run to write: the p95 its fetch answered, and a person's label."""

    p95: int
    label: str | None = None
    field: str = "p95_ms"


def ids_on(side: str, n: int, tag: str) -> list[str]:
    """``n`` run ids (20 hex chars) that fall on ``side`` of the review split."""
    out: list[str] = []
    i = 0
    while len(out) < n:
        rid = f"{tag}{i:04x}".ljust(20, "0")[:20]
        if side_of(rid) == side:
            out.append(rid)
        i += 1
    return out


def _call(seq: int, tool: str, req: dict[str, Any], res: Any, at: int, ms: float) -> str:
    return json.dumps({
        "v": 1, "seq": seq, "attempt": 1, "i": 0, "tool": tool, "at": at, "req": req,
        "res": res, "error": None, "retriable": False, "status": 200 if tool == "http" else None,
        "elapsed_ms": ms, "replayable": True,
    })  # fmt: skip


def write_run(
    rt: Runtime, skill: str, version: str, run_id: str, at: int, plan: Planned, threshold: int,
    read_field: str = "p95_ms",
) -> None:  # fmt: skip
    """Write one ended run of the health check as a worker would have (with its recording)."""
    created = rt.runs.create_if_absent(
        skill=skill, version=version, run_id=run_id, at_ms=at, dispatch=False,
        data={"service": "checkout"},
    )  # fmt: skip
    assert created.created, run_id
    acq = rt.leases.acquire(run_id, "review-test")
    assert isinstance(acq, Acquired)
    t = at + 10
    get = {"method": "GET", "url": URL, "params": None, "headers": None, "body": None}
    answer: dict[str, Any] = {plan.field: plan.p95, "service": "checkout"}
    rec = StepRecord(1, "fetch", StepKind.RUN, "done", 1, t, t + 40)
    rt.checkpoints.commit(
        run_id, acq.token, rec, json.dumps(answer), [_call(1, "http", get, answer, t, 40.0)]
    )
    value = answer.get(read_field)
    status, output, error = "completed", None, ""
    if value is None:
        status, error = "failed", f"KeyError: '{read_field}'"
    elif value > threshold:
        msg = {"message": f"p95 is {value} ms", "title": None, "level": "info", "channel": None}
        rec = StepRecord(2, "alert", StepKind.RUN, "done", 1, t + 40, t + 45)
        rt.checkpoints.commit(
            run_id, acq.token, rec, "null", [_call(2, "notify", msg, None, t + 40, 5.0)]
        )
        output = {"alarm": True}
    else:
        output = {"alarm": False}
    end = t + 50
    rt.transitions.finish(
        run_id, acq.token, status, json.dumps(output) if output else "", error, end - at,
        Declared.of(acq.run), Ending("skill", error, "main" if error else "", end),
    )  # fmt: skip
    if plan.label:
        seeded = SeededRun(
            run_id, skill, version, status, "skill", at, end, output, error, plan.label
        )
        direct_feedback(rt, seeded, plan.label)


def seed_health(
    rt: Runtime, version: str, search: list[Planned], held_out: list[Planned], threshold: int = 250,
    tag: str = "a", read_field: str = "p95_ms", start: int | None = None,
) -> dict[str, list[str]]:  # fmt: skip
    """Write the planned runs (each on its side of the split); their ids by side."""
    at = start if start is not None else now_ms() - 3 * 86_400_000
    out: dict[str, list[str]] = {}
    for side, plans in (("search", search), ("held-out", held_out)):
        ids = ids_on(side, len(plans), tag + side[0])
        for rid, plan in zip(ids, plans, strict=True):
            at += 60_000
            write_run(rt, "health-check", version, rid, at, plan, threshold, read_field)
        out[side] = ids
    return out


def false_alarm_week() -> tuple[list[Planned], list[Planned]]:
    """Search and held-out runs: normal days, slow nights labelled bad, an incident labelled
    good."""
    search = [Planned(180), Planned(210), Planned(270, "bad"), Planned(290, "bad"),
              Planned(3100, "good"), Planned(160)]  # fmt: skip
    held = [Planned(200), Planned(230), Planned(265, "bad"), Planned(300, "bad"),
            Planned(2800, "good"), Planned(170)]  # fmt: skip
    return search, held


def case(name: str, field: str, p95: int, alarm: bool) -> dict[str, Any]:
    """A sidecar test case of the health check."""
    expect: dict[str, Any] = {"status": "completed", "output": {"alarm": alarm}}
    if alarm:
        expect["notify_count"] = 1
    return {
        "name": name,
        "event": {},
        "mocks": {"http": [{"method": "GET", "url": URL, "response": {field: p95}}]},
        "expect": expect,
    }


def health_tests(field: str = "p95_ms") -> list[dict[str, Any]]:
    """The health check's cases: a quiet reading and an incident."""
    return [case("quiet", field, 100, False), case("incident", field, 5000, True)]


def review_week() -> tuple[list[Planned], list[Planned]]:
    """16 runs: normal readings, false alarms labelled bad, an incident labelled good, on
    each side of the split."""
    search = [
        Planned(150),
        Planned(170),
        Planned(190),
        Planned(210),
        Planned(270, "bad"),
        Planned(280, "bad"),
        Planned(290, "bad"),
        Planned(3100, "good"),
    ]
    held = [
        Planned(155),
        Planned(175),
        Planned(195),
        Planned(215),
        Planned(265, "bad"),
        Planned(285, "bad"),
        Planned(300, "bad"),
        Planned(2800, "good"),
    ]
    return search, held  # fmt: skip


def renamed_week() -> tuple[list[Planned], list[Planned]]:
    """12 runs after the service renamed ``p95_ms`` to ``latency_p95_ms``: every run failed."""
    values = [150, 170, 190, 210, 230, 180]
    search = [Planned(v, field="latency_p95_ms") for v in values]
    held = [Planned(v + 3, field="latency_p95_ms") for v in values]
    return search, held


def answer(source: str, tests: list[dict[str, Any]]) -> dict[str, Any]:
    """A scripted model reply: the new module and its test cases."""
    text = f"Fixed.\n\n```python\n{source}```\n\n```json\n{json.dumps(tests)}\n```\n"
    return {"text": text}
