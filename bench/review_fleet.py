"""A replayable fleet for the weekly review's end-to-end figures (``bench/review.py``).

Health checks (``GET`` a metrics URL, alarm through ``notify`` above a ``threshold`` param),
each registered through the sidecar with its test cases, and a week of ended runs written
through the runner's own scripts with their recorded calls — the shape the gate replays.
Kinds: ``false_alarms`` (readings just above the threshold, all labelled bad, and incidents
labelled good: the offline parameter search can fix it; an unlabelled false alarm would count
as a wanted alarm, see docs/review.md), ``renamed`` (the service renamed the field: only a
model can fix it), ``healthy`` (quiet readings only: must be left alone).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from loopwright.history.seeder import SeededRun, direct_feedback
from loopwright.runner.lease import Acquired
from loopwright.runner.records import StepRecord
from loopwright.runner.rollup import Ending
from loopwright.runner.runtime import Runtime
from loopwright.runner.transitions import Declared
from loopwright.sdk.steps import StepKind
from loopwright.sidecar.pipeline import Sidecar

URL = "http://127.0.0.1:9/metrics"  # never contacted: replays answer from the recording
THRESHOLD = 250
NORMAL = (150, 230)
FALSE_ALARM = (255, 320)
INCIDENT = (2000, 4000)

SOURCE = """\
from loopwright.sdk import skill


@skill(name="{name}", tools=["http", "notify"], http_allow=["127.0.0.1"],
       params={{"threshold": {threshold}}})
def main(ctx):
    m = ctx.step.run("fetch", lambda: ctx.tools.http.get_json("{url}"))
    if m["p95_ms"] > ctx.params["threshold"]:
        ctx.step.run("alert", lambda: ctx.tools.notify("p95 is " + str(m["p95_ms"]) + " ms"))
        return {{"alarm": True}}
    return {{"alarm": False}}
"""


def source(name: str, threshold: int = THRESHOLD) -> str:
    """The health check ``name`` with its threshold."""
    return SOURCE.format(name=name, threshold=threshold, url=URL)


def tests() -> list[dict[str, Any]]:
    """Its sidecar cases: a quiet reading, an incident."""

    def case(label: str, p95: int, alarm: bool) -> dict[str, Any]:
        expect: dict[str, Any] = {"status": "completed", "output": {"alarm": alarm}}
        if alarm:
            expect["notify_count"] = 1
        return {"name": label, "event": {},
                "mocks": {"http": [{"method": "GET", "url": URL, "response": {"p95_ms": p95}}]},
                "expect": expect}  # fmt: skip

    return [case("quiet", 100, False), case("incident", 5000, True)]


@dataclass(frozen=True, slots=True)
class Planned:
    """One run: the value its fetch answered (under ``field``) and a person's label."""

    value: int
    label: str | None = None
    field: str = "p95_ms"


def week(kind: str, rng: random.Random, runs: int) -> list[Planned]:
    """``runs`` readings of one skill's week."""
    out: list[Planned] = []
    for i in range(runs):
        if kind == "renamed":
            out.append(Planned(rng.randint(*NORMAL), field="latency_p95_ms"))
        elif kind == "false_alarms" and i % 4 == 1:
            out.append(Planned(rng.randint(*FALSE_ALARM), "bad"))
        elif kind == "false_alarms" and i % 5 == 3:
            out.append(Planned(rng.randint(*INCIDENT), "good"))
        else:
            out.append(Planned(rng.randint(*NORMAL)))
    return out


def _call(seq: int, tool: str, req: dict[str, Any], res: Any, at: int, ms: float) -> str:
    return json.dumps({
        "v": 1, "seq": seq, "attempt": 1, "i": 0, "tool": tool, "at": at, "req": req,
        "res": res, "error": None, "retriable": False, "status": 200 if tool == "http" else None,
        "elapsed_ms": ms, "replayable": True,
    })  # fmt: skip


def write_run(rt: Runtime, skill: str, version: str, run_id: str, at: int, p: Planned) -> None:
    """One ended run of the health check, as a worker would have left it (with recordings)."""
    created = rt.runs.create_if_absent(
        skill=skill, version=version, run_id=run_id, at_ms=at, dispatch=False, data={}
    )
    if not created.created:
        raise ValueError(f"run {run_id} exists already")
    acq = rt.leases.acquire(run_id, "bench-review")
    if not isinstance(acq, Acquired):
        raise RuntimeError(f"run {run_id} could not be taken")
    t = at + 10
    get = {"method": "GET", "url": URL, "params": None, "headers": None, "body": None}
    answer: dict[str, Any] = {p.field: p.value, "service": "checkout"}
    rec = StepRecord(1, "fetch", StepKind.RUN, "done", 1, t, t + 40)
    rt.checkpoints.commit(
        run_id, acq.token, rec, json.dumps(answer), [_call(1, "http", get, answer, t, 40.0)]
    )
    value = answer.get("p95_ms")
    status, output, error = "completed", None, ""
    if value is None:
        status, error = "failed", "KeyError: 'p95_ms'"
    elif value > THRESHOLD:
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
    if p.label:
        direct_feedback(
            rt, SeededRun(run_id, skill, version, status, "skill", at, end, output, error, p.label),
            p.label,
        )  # fmt: skip


def register(rt: Runtime, name: str) -> str:
    """Register the health check ``name`` through the sidecar (author ``agent``: a review's
    rewrite of it may be activated in approval mode ``auto``)."""
    verdict = Sidecar(rt).submit(source(name), tests(), author="agent", approval="auto")
    if not verdict.accepted:
        raise RuntimeError(f"{name}: {verdict.first_line()}")
    return str(verdict.version)


def seed(rt: Runtime, name: str, kind: str, runs: int, start: int, seed_: int) -> list[Planned]:
    """Register ``name`` and write its week; the readings written."""
    version = register(rt, name)
    rng = random.Random(f"{seed_}:{name}")
    plans = week(kind, rng, runs)
    step = (6 * 86_400_000 - 3_600_000) // max(1, runs)  # inside the 7 UTC days of the window
    for i, p in enumerate(plans):
        run_id = f"{rng.getrandbits(80):020x}"
        write_run(rt, name, version, run_id, start + i * step, p)
    return plans
