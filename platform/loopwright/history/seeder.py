"""The history seeder: weeks of realistic run history written through the runner's own scripts.

Every seeded run goes through the scripts a worker uses — create (``at_ms``: the explicit
creation time), acquire, one checkpoint commit per step (with the step's recorded times), and
finish with an explicit end time (``Ending.now_ms``, the scripts' ``A.now``) — so its record,
steps, ``ended`` index entry, per-run counters and per-version daily rollups are exactly what a
real run leaves. Only ``started_at`` (set by the acquire from the server clock) is overwritten
with the seeded time afterwards. Nothing is executed and nothing is dispatched.

It is deterministic: the same seed and profiles write the same run ids, times, outputs and
outcomes. A profile (:class:`SeedSkill`) describes one skill: runs per day, its own success
rate and errors, platform failures, a version change that breaks it, and the health-check
pattern of the review's demo (a measured p95 against a threshold, slow nights that raise false
alarms people label bad, and an incident whose alarms they label good).

Hooks: ``feedback`` records a label (default: :func:`direct_feedback`, the same fields as the
feedback operation; pass the service's function once it exists), ``on_run`` is called after
each run is written (where recordings of tool calls will be added).
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loopwright.keys import Keys
from loopwright.runner.lease import Acquired
from loopwright.runner.records import StepRecord
from loopwright.runner.rollup import Ending, utc_day
from loopwright.runner.runtime import Runtime
from loopwright.runner.transitions import Declared
from loopwright.sdk.steps import StepKind

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class SeedSkill:
    """How one skill behaved over the seeded weeks."""

    name: str
    runs_per_day: int = 24
    success: float = 0.98  # the skill's own success rate on an ordinary run
    platform_failures: float = 0.0  # share of runs lost to the platform (sandbox, workers)
    steps: int = 3
    step_ms: tuple[int, int] = (40, 400)
    errors: tuple[str, ...] = ("TimeoutError: no answer from https://svc.local/api after 30s",)
    failing_step: int = 2  # which step (1-based) the skill's failures happen in
    retry_rate: float = 0.05  # share of steps that needed a second (or third) attempt
    # A new version from this day on (0-based), failing with ``bad_error`` at ``bad_rate``.
    bad_version_day: int | None = None
    bad_error: str = "KeyError: 'p95_ms'"
    bad_rate: float = 0.9
    # The health-check pattern: output ``p95_ms`` and ``alarm`` (p95 above ``threshold_ms``).
    threshold_ms: int | None = None
    normal_p95: tuple[int, int] = (150, 230)
    slow_nights: float = 0.0  # share of nights (00-06 UTC) with p95 just above the threshold
    slow_p95: tuple[int, int] = (255, 320)
    incident_day: int | None = None  # a real incident that day (p95 far above the threshold)
    labelled: float = 0.0  # share of alarms a person labelled (bad if false, good if real)
    versions: tuple[str, ...] = field(default=())  # filled by :func:`register_versions`
    # The service renames the measured field from this day on (no version change): every run
    # fails reading it in ``failing_step`` with ``KeyError: '<field>'``.
    renamed_field_day: int | None = None
    field_name: str = "p95_ms"
    renamed_to: str = "p95"
    # Write each run's first step's tool call (a GET of ``url`` answering the measured value)
    # as a recording, as the runner does, so diagnosis and replay can read what runs saw.
    record: bool = False
    url: str = "http://127.0.0.1:9/metrics"
    # Transient timeouts of that recorded GET from ``timeouts_from_day`` on (0-based; None:
    # every day): each attempt times out at ``timeout_rate`` after ``timeout_ms``, and the
    # skill retries it ``call_retries`` times (its declared ``retries``); a run whose every
    # attempt timed out fails in step 1. Each attempt's call is recorded as the runner records
    # it: the failed ones with their error, ``retriable``, no status, with the attempt number.
    timeout_rate: float = 0.0
    timeouts_from_day: int | None = None
    call_retries: int = 1
    timeout_ms: float = 2000.0


@dataclass(frozen=True, slots=True)
class SeededRun:
    """What :func:`seed_history` wrote for one run (given to the ``on_run`` hook)."""

    run_id: str
    skill: str
    version: str
    status: str
    origin: str
    created_at: int
    finished_at: int
    output: Any
    error: str
    label: str | None
    note: str = ""


Feedback = Callable[[Runtime, SeededRun, str], None]


def direct_feedback(rt: Runtime, run: SeededRun, label: str) -> None:
    """Record a person's label on a seeded run: the run's ``feedback`` fields, ``pinned``, and
    the ``fb_good``/``fb_bad`` count of its day's rollup (the feedback operation's fields)."""
    keys: Keys = rt.keys
    day = utc_day(run.finished_at)
    pipe = rt.redis.pipeline(transaction=True)
    pipe.hset(
        keys.run(run.run_id),
        mapping={
            "feedback": label,
            "feedback_at": run.finished_at,
            "feedback_by": "seeder",
            **({"feedback_note": run.note} if run.note else {}),
            "feedback_day": day,
            "pinned": "1",
        },
    )
    pipe.sadd(keys.pins, run.run_id)
    pipe.hincrby(keys.rollup(run.skill, run.version, day), f"fb_{label}", 1)
    pipe.execute()


def skill_source(name: str, variant: int) -> str:
    """A small runnable skill text for a seeded version (its content makes the version)."""
    return (
        "from loopwright.sdk import skill\n\n\n"
        f'@skill(name="{name}")\n'
        "def main(ctx):\n"
        f'    """Seeded history skill, variant {variant}."""\n'
        f'    return ctx.step.run("measure", lambda: {{"variant": {variant}}})\n'
    )


def register_versions(rt: Runtime, profile: SeedSkill) -> SeedSkill:
    """Register the profile's versions (one, or two with a bad version change) in the registry
    and return the profile with them; the last one is active."""
    count = 2 if profile.bad_version_day is not None else 1
    versions = tuple(
        rt.sources.put(skill_source(profile.name, i), profile.name) for i in range(count)
    )
    return dataclasses.replace(profile, versions=versions)


@dataclass(slots=True)
class _Plan:
    """One run's outcome, drawn before it is written."""

    version: str
    status: str = "completed"
    origin: str = "skill"
    error: str = ""
    failing: int = 0
    output: Any = None
    label: str | None = None
    note: str = ""
    answer: dict[str, Any] = field(default_factory=dict)  # what the recorded GET answered
    step_ms: list[int] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    timeouts: int = 0  # timed-out attempts of the recorded GET (step 1) before its last


def _plan(p: SeedSkill, rng: random.Random, day: int, t0: int) -> _Plan:
    bad = p.bad_version_day is not None and day >= p.bad_version_day
    plan = _Plan(version=p.versions[-1] if bad else p.versions[0])
    plan.step_ms = [rng.randint(*p.step_ms) for _ in range(p.steps)]
    plan.attempts = [1 + (rng.random() < p.retry_rate) * rng.randint(1, 2) for _ in range(p.steps)]
    if rng.random() < p.platform_failures:
        plan.status, plan.origin = "failed", "platform"
        plan.error = "sandbox: the guest did not start within 10s (docker engine unavailable)"
        plan.failing = rng.randint(1, p.steps)
        return plan
    renamed = p.renamed_field_day is not None and day >= p.renamed_field_day
    name = p.renamed_to if renamed else p.field_name
    plan.answer = {name: rng.randint(*p.normal_p95), "service": "checkout"}
    if renamed:
        plan.status, plan.failing = "failed", min(p.failing_step, p.steps)
        plan.error = f"KeyError: '{p.field_name}'"
        return plan
    if p.timeout_rate > 0 and (p.timeouts_from_day is None or day >= p.timeouts_from_day):
        tries = 1
        while rng.random() < p.timeout_rate and tries <= p.call_retries + 1:
            tries += 1
        plan.timeouts = tries - 1  # attempts that timed out
        plan.attempts[0] = min(tries, p.call_retries + 1)
        if plan.timeouts > p.call_retries:  # every attempt timed out: the step fails
            plan.status, plan.failing = "failed", 1
            plan.error = timeout_error(p)
            return plan
    fails = rng.random() < (p.bad_rate if bad else 1 - p.success)
    if fails:
        plan.status, plan.failing = "failed", min(p.failing_step, p.steps)
        plan.error = (
            p.bad_error if bad else rng.choice(p.errors).replace("30", str(rng.randint(5, 60)))
        )
        return plan
    if p.threshold_ms is not None:
        hour = (t0 % DAY_MS) // 3_600_000
        slow = hour < 6 and _night_is_slow(p, day)
        incident = p.incident_day == day and 9 <= hour < 15
        rng_p95 = p.slow_p95 if slow else p.normal_p95
        value = rng.randint(2000, 4000) if incident else rng.randint(*rng_p95)
        alarm = value > p.threshold_ms
        plan.output = {"p95_ms": value, "alarm": alarm}
        plan.answer = {p.field_name: value, "service": "checkout"}
        if alarm and rng.random() < p.labelled:
            plan.label = "good" if incident else "bad"
            plan.note = (
                f"real incident: p95 {value} ms"
                if incident
                else f"false alarm: {value} ms is a normal night"
            )
    else:
        plan.output = {"ok": True, "n": rng.randint(0, 100)}
    return plan


def timeout_error(p: SeedSkill) -> str:
    """The error a timed-out GET of the profile's URL raises (retriable)."""
    host = p.url.split("/")[2]
    return f"TimeoutError: http tool: GET {host} timed out after {p.timeout_ms / 1000:g}s"


def _night_is_slow(p: SeedSkill, day: int) -> bool:
    # Its own generator: whether a night is slow does not depend on how many runs came before.
    return random.Random(f"{p.name}:{day}").random() < p.slow_nights


def _write(rt: Runtime, p: SeedSkill, run_id: str, t0: int, plan: _Plan) -> SeededRun:
    created = rt.runs.create_if_absent(
        skill=p.name, version=plan.version, run_id=run_id, at_ms=t0, dispatch=False,
        trigger={"type": "cron", "seeded": True},
    )  # fmt: skip
    if not created.created:
        raise ValueError(f"seeded run {run_id} exists already")
    acq = rt.leases.acquire(run_id, "history-seeder")
    if not isinstance(acq, Acquired):
        raise RuntimeError(f"seeded run {run_id} could not be taken: {acq}")
    start = t0 + 20
    rt.redis.hset(rt.keys.run(run_id), "started_at", start)
    t, last = start, p.steps if not plan.failing else plan.failing
    for seq in range(1, last + 1):
        end = t + plan.step_ms[seq - 1]
        failed = seq == plan.failing
        status = "failed" if failed and plan.origin == "skill" else "done"
        if failed and plan.origin == "platform":
            break  # the platform lost it mid-step: no record of that step
        name, tries = f"step-{seq}", plan.attempts[seq - 1]
        timed_out = plan.timeouts if seq == 1 and p.record else 0
        if timed_out:  # each failed attempt's record and its timed-out call, as the runner
            for attempt in range(1, min(timed_out, tries - 1) + 1):
                timeout = timeout_error(p)
                retry = StepRecord(
                    seq, name, StepKind.RUN, "retrying", attempt, t, t + 1, error=timeout
                )
                call = _recorded_get(p, seq, t, None, attempt, timeout)
                rt.checkpoints.commit(run_id, acq.token, retry, None, [call])
        elif tries > 1:  # the failed attempts' record, as ``retry_or_fail`` writes it
            retry = StepRecord(seq, name, StepKind.RUN, "retrying", tries - 1, t, t + 1)
            rt.checkpoints.commit(run_id, acq.token, retry, None)
        error = plan.error if failed else None
        rec = StepRecord(seq, name, StepKind.RUN, status, tries, t, end, error=error)
        out = None if failed else json.dumps(plan.output if seq == last else {"seq": seq})
        calls = None
        if p.record and seq == 1:
            last_error = timeout_error(p) if timed_out >= tries else None
            answer = None if last_error else plan.answer
            calls = [_recorded_get(p, seq, t, answer, tries, last_error)]
        rt.checkpoints.commit(run_id, acq.token, rec, out, calls)
        t = end
    finished = t + 5
    ending = Ending(
        plan.origin, plan.error, f"step-{plan.failing}" if plan.failing else "", finished
    )
    output = json.dumps(plan.output) if plan.status == "completed" else ""
    rt.transitions.finish(
        run_id, acq.token, plan.status, output, plan.error, finished - start,
        Declared.of(acq.run), ending,
    )  # fmt: skip
    return SeededRun(
        run_id, p.name, plan.version, plan.status, plan.origin, t0, finished,
        plan.output, plan.error, plan.label, plan.note,
    )  # fmt: skip


def _recorded_get(
    p: SeedSkill,
    seq: int,
    at: int,
    answer: dict[str, Any] | None,
    attempt: int = 1,
    error: str | None = None,
) -> str:
    """One recorded ``http`` GET in the runner's entry format (``runner/recording.py``): its
    answer, or (``error``) a timeout after ``timeout_ms``, retriable, with no status."""
    req = {"method": "GET", "url": p.url, "params": None, "headers": None, "body": None}
    failed = error is not None
    return json.dumps({
        "v": 1, "seq": seq, "attempt": attempt, "i": 0, "tool": "http", "at": at, "req": req,
        "res": None if failed else answer, "error": error, "retriable": failed,
        "status": None if failed else 200,
        "elapsed_ms": p.timeout_ms if failed else 40.0, "replayable": True,
    })  # fmt: skip


def seed_history(
    rt: Runtime,
    profiles: list[SeedSkill],
    *,
    days: int,
    end_ms: int,
    seed: int = 1,
    feedback: Feedback = direct_feedback,
    on_run: Callable[[SeededRun], None] | None = None,
) -> Counter[str]:
    """Write ``days`` days of history ending at ``end_ms`` for each profile (its versions
    registered by :func:`register_versions` first when it has none). Returns counts by
    ``skill:status`` and ``skill:label``."""
    counts: Counter[str] = Counter()
    start_day = (end_ms // DAY_MS - days + 1) * DAY_MS
    for given in profiles:
        p = given if given.versions else register_versions(rt, given)
        rng = random.Random(f"{seed}:{p.name}")
        for day in range(days):
            for i in range(p.runs_per_day):
                t0 = start_day + day * DAY_MS + i * (DAY_MS // p.runs_per_day) + rng.randint(0, 999)
                if t0 >= end_ms:
                    continue
                run_id = f"{t0:012x}{rng.getrandbits(32):08x}"
                run = _write(rt, p, run_id, t0, _plan(p, rng, day, t0))
                counts[f"{p.name}:{run.status}"] += 1
                if run.label is not None:
                    feedback(rt, run, run.label)
                    counts[f"{p.name}:{run.label}"] += 1
                if on_run is not None:
                    on_run(run)
    return counts


def demo_profiles() -> list[SeedSkill]:
    """The review demo's fleet: a health check with nightly false alarms and one incident, a
    skill broken by a renamed field in a new version, and a steady skill with a few platform
    failures (never the skill's fault)."""
    return [
        SeedSkill(
            "health-check", runs_per_day=48, success=0.995, threshold_ms=250, slow_nights=0.3,
            incident_day=10, labelled=0.8, steps=2,
        ),
        SeedSkill(
            "field-reader", runs_per_day=24, success=0.97, bad_version_day=20,
            bad_error="KeyError: 'p95_ms' (skill line 12)", failing_step=2,
        ),
        SeedSkill("steady", runs_per_day=24, success=0.99, platform_failures=0.03),
    ]  # fmt: skip


def review_profiles(days: int = 35, runs_per_day: int = 8) -> list[SeedSkill]:
    """One skill per verdict of the weekly review (``review/select.py``), over ``days`` days
    whose last 7 are the review window: a steady skill (healthy), one under the success floor
    (transient timeouts), one whose new version dropped below its own baseline, a health check
    whose nightly false alarms people labelled bad, one broken by a renamed field in the
    service's answer, one failed only by the platform, and one with too few runs."""
    week = days - 7
    n = runs_per_day
    return [
        SeedSkill("steady", runs_per_day=n, success=0.995, record=True),
        SeedSkill(
            "flaky-timeouts", runs_per_day=n, success=0.80, record=True,
            errors=("TimeoutError: no answer from http://127.0.0.1:9/metrics after 30s",),
        ),
        SeedSkill(
            "drifting", runs_per_day=n * 2, success=0.998, bad_version_day=week, bad_rate=0.06,
            bad_error="ValueError: could not parse 'latency' (skill line 9)", record=True,
        ),
        SeedSkill(
            "health-check", runs_per_day=n * 2, success=1.0, threshold_ms=250, slow_nights=0.9,
            labelled=1.0, steps=2, record=True,
        ),
        SeedSkill(
            "field-reader", runs_per_day=n, success=1.0, renamed_field_day=days - 3, record=True,
            failing_step=1,
        ),
        SeedSkill("platform-victim", runs_per_day=n, success=1.0, platform_failures=0.15),
        SeedSkill("rarely-run", runs_per_day=1, success=1.0),
    ]  # fmt: skip
