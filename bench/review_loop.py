"""Benchmark of the weekly review's candidates, gate and promotion on replayable skills.

    .venv/bin/python bench/review_loop.py [--quick] [--out docs/benchmarks.md]

Against a private Redis (no workers: the review runs in this process, as ``loopwright review
run`` does): a fleet of skills whose registered versions are real sources (a health check with
a ``threshold`` param, a field reader), with 35 days of history written by the history seeder
(each run's tool call recorded), a fault injected into most of them:

- *false alarms*: nightly p95 just above the threshold, labelled bad, and an incident in the
  window labelled good (fixable offline: the parameter search);
- *renamed field*: the service renamed the field the reader reads (fixable by a model only);
- *bad version*: a new version reads a field the service never sends (fixable by rollback);
- *healthy*: no fault (must be left alone).

The review runs twice on the same fleet history (two key prefixes): offline (the offline model
only), and with the scripted model server (``loopwright.testing``) answering the rewrite prompt
with the correct fix. Then deliberately worse candidates are gated for every faulty skill (a
threshold above the incident; a rewrite reading yet another field; the bad version itself) to
count regressions the gate blocks. Counted: fixable faults promoted within one review, healthy
skills touched, false promotions (a promoted threshold that silences the incident or keeps the
false alarms, or any promotion of a healthy skill), worse candidates blocked, the review's wall
time and the replay time per run.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    Processes,
    RedisServer,
    load_average,
    machine_info,
    make_settings,
    run_benchmark,
    summary,
)

from loopwright.assembly import build_runtime
from loopwright.cli.chat import drive
from loopwright.history.replay import candidate_from_source, candidate_from_version
from loopwright.history.seeder import SeedSkill, seed_history
from loopwright.review.gate import gate
from loopwright.review.loop import recorded_ids, start_review
from loopwright.review.split import split_runs
from loopwright.runner.execute import install_runtime
from loopwright.runner.recording import load_recording
from loopwright.runner.records import now_ms
from loopwright.runner.runtime import Runtime
from loopwright.sidecar.pipeline import Sidecar
from loopwright.testing.scripted import ScriptedServer

DAYS = 35
URL = SeedSkill("x").url
KINDS = ("false_alarms", "renamed_field", "bad_version", "healthy")
INCIDENT = (2000, 4000)  # the seeder's incident p95 range; false alarms sit in (255, 320)

HEALTH = """\
from loopwright.sdk import skill


@skill(name="{name}", tools=["http", "notify"], http_allow=["127.0.0.1"],
       params={{"threshold": {threshold}}})
def main(ctx):
    m = ctx.step.run("fetch", lambda: ctx.tools.http.get_json("{url}"))
    alarm = m["p95_ms"] > ctx.params["threshold"]
    if alarm:
        ctx.step.run("alert", lambda: ctx.tools.notify("p95 is " + str(m["p95_ms"])))
    return {{"p95_ms": m["p95_ms"], "alarm": alarm}}
"""

READER = """\
from loopwright.sdk import skill


@skill(name="{name}", tools=["http"], http_allow=["127.0.0.1"])
def main(ctx):
    m = ctx.step.run("fetch", lambda: ctx.tools.http.get_json("{url}"))
    return {{"p95_ms": m["{field}"]}}
"""


READER_EITHER = READER.replace('m["{field}"]', 'm["p95"] if "p95" in m else m["p95_ms"]')


def health(name: str, threshold: int = 250) -> str:
    return HEALTH.format(name=name, threshold=threshold, url=URL)


def reader(name: str, field: str = "p95_ms") -> str:
    return READER.format(name=name, field=field, url=URL)


def case(field: str, out: dict[str, Any], value: int = 120) -> dict[str, Any]:
    return {
        "name": f"reads-{value}",
        "event": {},
        "mocks": {"http": [{"method": "GET", "url": URL, "response": {field: value}}]},
        "expect": {"status": "completed", "output_contains": out},
    }


def register(rt: Runtime, source: str, tests: list[dict[str, Any]]) -> str:
    verdict = Sidecar(rt).submit(source, tests, author="agent", approval="auto")
    assert verdict.accepted, verdict.first_line()
    return str(verdict.version)


def fleet(rt: Runtime, size: int, per_day: int) -> tuple[list[SeedSkill], dict[str, str]]:
    """Register the fleet's real versions; the seeder profiles and each skill's fault kind."""
    profiles, kinds = [], {}
    for i in range(size):
        kind = KINDS[i % len(KINDS)]
        name = f"r-{i:02d}"
        kinds[name] = kind
        if kind in ("false_alarms", "healthy"):
            v = register(rt, health(name), [case("p95_ms", {"alarm": False})])
            p = SeedSkill(name, per_day * 2, success=1.0, threshold_ms=250, steps=2,
                          slow_nights=0.7 if kind == "false_alarms" else 0.0,
                          incident_day=DAYS - 3 if kind == "false_alarms" else None,
                          labelled=1.0, record=True, retry_rate=0.0, versions=(v,))  # fmt: skip
        elif kind == "renamed_field":
            v = register(rt, reader(name), [case("p95_ms", {"p95_ms": 120})])
            p = SeedSkill(name, per_day, success=1.0, renamed_field_day=DAYS - 4, steps=1,
                          failing_step=1, record=True, retry_rate=0.0, versions=(v,))  # fmt: skip
        else:
            good = register(rt, reader(name), [case("p95_ms", {"p95_ms": 120})])
            bad = register(rt, reader(name, "latency"), [case("latency", {"p95_ms": 120})])
            p = SeedSkill(name, per_day, success=1.0, bad_version_day=DAYS - 6, bad_rate=1.0,
                          bad_error="KeyError: 'latency'", steps=1, failing_step=1, record=True,
                          retry_rate=0.0, versions=(good, bad))  # fmt: skip
        profiles.append(p)
    return profiles, kinds


def responder(protocol: str, body: dict[str, Any]) -> dict[str, Any]:
    """The scripted model: a sound fix for the skill the prompt names (a reader that takes
    the field under either name; a health check with a higher threshold)."""
    text = json.dumps(body)
    start = text.index("Skill '") + len("Skill '")
    name = text[start : text.index("'", start)]
    if "threshold" in text:
        fixed, tests = health(name, 1000), [case("p95_ms", {"alarm": False})]
    else:
        fixed = READER_EITHER.format(name=name, url=URL)
        tests = [case("p95", {"p95_ms": 120}), case("p95_ms", {"p95_ms": 121}, 121)]
    return {"text": f"```python\n{fixed}```\n```json\n{json.dumps(tests)}\n```"}


def review_once(rt: Runtime, kinds: dict[str, str]) -> dict[str, Any]:
    """One review of the fleet; decisions, promotions checked, wall time."""
    install_runtime(rt)
    t0 = time.perf_counter()
    run_id = start_review(rt, "7d")
    out = drive(rt, run_id, 3600, False)
    wall = time.perf_counter() - t0
    res: dict[str, Any] = {"wall_s": wall, "decisions": {}, "false_promotions": [],
                           "healthy_touched": []}  # fmt: skip
    for card in out["skills"]:
        name = card["score"]["skill"]
        kind = kinds.get(name)
        if kind is None:
            continue
        res["decisions"][name] = card["decision"]
        res.setdefault("reasons", {})[name] = card["decision_reason"][:600]
        if kind == "healthy" and card["decision"] != "healthy":
            res["healthy_touched"].append(name)
        if card["decision"] == "improved" and kind == "false_alarms":
            t = candidate_from_version(rt, name, card["promoted_version"]).manifest
            value = t.params["threshold"].default
            if not 320 <= value < INCIDENT[0]:
                res["false_promotions"].append(f"{name}: threshold {value}")
        if card["decision"] == "improved" and kind == "healthy":
            res["false_promotions"].append(f"{name}: a healthy skill was changed")
    return res


def worse(
    rt: Runtime, kinds: dict[str, str], first_versions: dict[str, str], end: int
) -> dict[str, Any]:
    """Gate deliberately worse candidates on each faulty skill's held-out runs."""
    tried = blocked = 0
    replay_ms: list[float] = []
    passed: list[str] = []
    for name, kind in kinds.items():
        if kind == "healthy":
            continue
        version = first_versions[name]
        old = candidate_from_version(rt, name, version)
        ids = recorded_ids(rt, name, version, end - 7 * 86_400_000, end)
        held = [r for r in (load_recording(rt.redis, rt.keys, i) for i in
                            split_runs(ids, lambda x: x).held_out) if r is not None]  # fmt: skip
        if kind == "false_alarms":
            bad = [health(name, 5000)]  # silences the incident
        elif kind == "renamed_field":
            bad = [reader(name, "p95_millis")]  # reads yet another field
        else:
            bad = [reader(name, "latency_ms")]  # another broken read
        for source in bad:
            t0 = time.perf_counter()
            result = gate(rt, old, candidate_from_source(source, name), held)
            replay_ms.append((time.perf_counter() - t0) * 1000 / max(1, 2 * len(held)))
            tried += 1
            blocked += not result.passed
            if result.passed:
                passed.append(f"{name} ({kind}): {result.reason}")
    return {"tried": tried, "blocked": blocked, "replay_ms": replay_ms, "passed": passed}


def one(tmp: Path, url: str, size: int, per_day: int, model: ScriptedServer | None) -> Any:
    over: dict[str, Any] = {"http_private_allow": "127.0.0.1", "approval_mode": "auto"}
    if model is not None:
        over |= {"review_model": "openai:gpt-4.1", "openai_base_url": model.openai_base_url,
                 "openai_api_key": "bench"}  # fmt: skip
    rt = build_runtime(make_settings(url, tmp / ("model" if model else "offline"), **over))
    try:
        profiles, kinds = fleet(rt, size, per_day)
        # The review reads the real clock's last 7 days: the history ends now.
        end = now_ms()
        t0 = time.perf_counter()
        seed_history(rt, profiles, days=DAYS, end_ms=end)
        seed_s = time.perf_counter() - t0
        active = {p.name: p.versions[-1] for p in profiles}
        res = review_once(rt, kinds)
        res["seed_s"] = seed_s
        res["kinds"] = kinds
        if model is None:
            res["worse"] = worse(rt, kinds, active, end)
        return res
    finally:
        rt.close()


def measure(quick: bool) -> dict[str, Any]:
    size, per_day = (8, 4) if quick else (16, 6)
    results: dict[str, Any] = {"quick": quick, "size": size, "per_day": per_day}
    with tempfile.TemporaryDirectory() as tmp:
        procs = Processes(Path(tmp))
        server = RedisServer(Path(tmp) / "redis", procs)
        server.start()
        try:
            results["machine"] = machine_info(server.url)
            results["offline"] = one(Path(tmp), server.url, size, per_day, None)
            with ScriptedServer(responder=responder) as srv:
                results["model"] = one(Path(tmp), server.url, size, per_day, srv)
                results["model_requests"] = len(srv.requests_for("openai"))
        finally:
            server.stop()
            procs.kill_all()
    results["load"] = load_average()
    return results


def _fixed(r: dict[str, Any], kind: str, want: str = "improved") -> tuple[int, int]:
    names = [n for n, k in r["kinds"].items() if k == kind]
    return sum(r["decisions"].get(n) == want for n in names), len(names)


def section(r: dict[str, Any], command: str) -> str:
    """The Markdown section for docs/benchmarks.md."""
    m, off, mod = r["machine"], r["offline"], r["model"]
    w = off["worse"]
    rep = summary(w["replay_ms"] or [0.0])
    rows = []
    for kind in KINDS:
        o, n = _fixed(off, kind, "healthy" if kind == "healthy" else "improved")
        mo, _ = _fixed(mod, kind, "healthy" if kind == "healthy" else "improved")
        rows.append(f"| {kind.replace('_', ' ')} | {n} | {o} | {mo} |")
    fixable_off = sum(_fixed(off, k)[0] for k in KINDS[:3])
    fixable_mod = sum(_fixed(mod, k)[0] for k in KINDS[:3])
    offline_fixable = sum(_fixed(off, k)[1] for k in ("false_alarms", "bad_version"))
    faults = sum(_fixed(off, k)[1] for k in KINDS[:3])
    return "\n".join([
        "## Weekly review: candidates, gate and promotion (issue 11)",
        "",
        f"`{command}` on {m['nproc']} cores ({m['cpu']}), Python {m['python']}, load "
        f"{r['load']}. A fleet of {r['size']} replayable skills (real sources: a health check "
        f"with a `threshold` param, a field reader), {DAYS} days seeded with recorded tool calls "
        f"({off['seed_s']:.0f} s), reviewed twice: offline, and with the scripted model server "
        f"answering the rewrite prompt ({r['model_requests']} model requests).",
        "",
        "| fault | skills | offline: promoted (healthy: left alone) | scripted model |",
        "|---|---|---|---|",
        *rows,
        "",
        f"- Fixable faults promoted within one review: offline **{fixable_off} of "
        f"{offline_fixable}** offline-fixable (false alarms, bad version; the renamed fields "
        f"are reported `needs_model`), **{fixable_mod} of {faults}** with the scripted model.",
        f"- Deliberately worse candidates blocked by the gate: **{w['blocked']} of "
        f"{w['tried']}** (a threshold above the incident, a rewrite reading another field, "
        "another broken read).",
        f"- False promotions: **{len(off['false_promotions']) + len(mod['false_promotions'])}**; "
        f"healthy skills touched: **{len(off['healthy_touched']) + len(mod['healthy_touched'])}**.",
        f"- Review wall time for the fleet: offline **{off['wall_s']:.0f} s**, with the model "
        f"{mod['wall_s']:.0f} s; replay time per run in the gate: median "
        f"{rep['median']:.0f} ms, p95 {rep['p95']:.0f} ms (one sandbox guest per run, a few at a "
        "time; no batching of runs in one guest yet).",
        "",
        *(f"- Passed although worse: {p}" for p in w["passed"]),
        *(["  (a threshold above the incident passes the gate when the hash split put every "
           "incident run on the search side: nothing the gate sees contradicts it; the "
           "search, which does see them, never proposes it)"] if w["passed"] else []),
        "",
        "Transient timeouts are not in this fleet: the seeder records no failed (retriable) "
        "call, so a replay cannot show a retry fixing one.",
    ])  # fmt: skip


if __name__ == "__main__":
    sys.exit(run_benchmark("review_loop", __doc__ or "", measure, section))
