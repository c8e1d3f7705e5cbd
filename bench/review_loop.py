"""Benchmark of the weekly review's candidates, gate and promotion on a fleet of replayable skills.

    .venv/bin/python bench/review_loop.py [--quick] [--size 40] [--runs 200] [--out FILE.md]

Against a private Redis (no workers: the review runs in this process, as ``loopwright review
run`` does): a fleet of ``--size`` skills (40) whose registered versions are real sources (a
health check with a ``threshold`` param, a field reader with its ``retries``), each with about
``--runs`` (200) recorded runs over 26 days written by the history seeder (every attempt of a
tool call recorded, timed-out ones with their retriable error), some lost to the platform. A
quarter of the skills get a fault, in turn:

- *false alarms*: nightly p95 just above the threshold, labelled bad, and an incident in the
  window labelled good (fixable offline: the parameter search);
- *transient timeouts*: from the window on the service times out on 40% of the attempts
  and the reader retries once (fixable offline: more retries, the attempts beyond the recording
  answered from the split's recorded retries);
- *renamed field*: the service renamed the field the reader reads (fixable by a model only);
- *bad version*: a new version reads a field the service never sends (fixable by rollback).

The rest are healthy (must be left alone): health checks without false alarms, readers whose
rare timeouts their retries absorb, a few with 1 in 10 runs lost to the platform (never the
skill's fault). The review runs twice on the same fleet history (two key prefixes): offline
(the offline model only), and with the scripted model server (``loopwright.testing``) answering
the rewrite prompt with a sound fix. Then deliberately worse candidates are gated for every
faulty skill on its held-out split (a threshold above the incident; fewer retries; a rewrite
reading yet another field; another broken read). Counted: healthy skills flagged, fixable faults
promoted within one review, worse candidates blocked, false promotions, platform failures
blamed on skills, the review's wall time and how much of it is replay, and replay time per run.
"""

from __future__ import annotations

import argparse
import json
import shutil
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
    bench_parser,
    load_average,
    machine_info,
    make_settings,
    report,
    summary,
)

import loopwright.history.replay as history_replay
from loopwright.assembly import build_runtime
from loopwright.cli.chat import drive
from loopwright.history.replay import candidate_from_source, candidate_from_version
from loopwright.history.seeder import SeedSkill, seed_history
from loopwright.review.gate import class_of, gate
from loopwright.review.loop import recorded_classes, start_review
from loopwright.review.split import split_runs
from loopwright.runner.execute import install_runtime
from loopwright.runner.recording import load_recording
from loopwright.runner.records import now_ms
from loopwright.runner.runtime import Runtime
from loopwright.sidecar.pipeline import Sidecar
from loopwright.testing.scripted import ScriptedServer

DAYS = 26  # 25 whole days and today's runs so far: at least 25 x runs per day
URL = SeedSkill("x").url
FAULTS = ("false_alarms", "transient_timeouts", "renamed_field", "bad_version")
KINDS = (*FAULTS, "healthy")
OFFLINE_FIXABLE = ("false_alarms", "transient_timeouts", "bad_version")
INCIDENT = (2000, 4000)  # the seeder's incident p95 range; false alarms sit in (255, 320)
PLATFORM_ERROR = "sandbox: the guest did not start"
LEFT_ALONE = ("healthy", "platform_only", "insufficient_data")  # decisions that change nothing

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


@skill(name="{name}", tools=["http"], http_allow=["127.0.0.1"], retries={retries}, backoff=0.5)
def main(ctx):
    m = ctx.step.run("fetch", lambda: ctx.tools.http.get_json("{url}"))
    return {{"p95_ms": m["{field}"]}}
"""


READER_EITHER = READER.replace('m["{field}"]', 'm["p95"] if "p95" in m else m["p95_ms"]')


def health(name: str, threshold: int = 250) -> str:
    return HEALTH.format(name=name, threshold=threshold, url=URL)


def reader(name: str, field: str = "p95_ms", retries: int = 2) -> str:
    return READER.format(name=name, field=field, url=URL, retries=retries)


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


def kind_of(i: int, size: int) -> str:
    """A quarter of the fleet (at least one of each fault) is faulty, the faults in turn."""
    faulty = max(len(FAULTS), size // 4)
    return FAULTS[i % len(FAULTS)] if i < faulty else "healthy"


def fleet(rt: Runtime, size: int, per_day: int) -> tuple[list[SeedSkill], dict[str, str]]:
    """Register the fleet's real versions; the seeder profiles and each skill's fault kind."""
    profiles, kinds = [], {}
    for i in range(size):
        kind = kind_of(i, size)
        name = f"r-{i:02d}"
        kinds[name] = kind
        lost = 0.1 if kind == "healthy" and i % 6 == 5 else 0.01  # runs the platform lost
        common: dict[str, Any] = {"runs_per_day": per_day, "success": 1.0, "record": True,
                                  "retry_rate": 0.0, "platform_failures": lost}  # fmt: skip
        if kind == "false_alarms" or (kind == "healthy" and i % 2 == 0):
            v = register(rt, health(name), [case("p95_ms", {"alarm": False})])
            p = SeedSkill(name, threshold_ms=250, steps=2,
                          slow_nights=0.7 if kind == "false_alarms" else 0.0,
                          incident_day=DAYS - 3 if kind == "false_alarms" else None,
                          labelled=1.0, versions=(v,), **common)  # fmt: skip
        elif kind == "transient_timeouts":
            v = register(rt, reader(name, retries=1), [case("p95_ms", {"p95_ms": 120})])
            p = SeedSkill(name, steps=1, failing_step=1, timeout_rate=0.4, call_retries=1,
                          timeouts_from_day=DAYS - 7, versions=(v,), **common)  # fmt: skip
        elif kind == "healthy":  # rare timeouts, absorbed by two retries
            v = register(rt, reader(name), [case("p95_ms", {"p95_ms": 120})])
            p = SeedSkill(name, steps=1, failing_step=1, timeout_rate=0.05, call_retries=2,
                          versions=(v,), **common)  # fmt: skip
        elif kind == "renamed_field":
            v = register(rt, reader(name), [case("p95_ms", {"p95_ms": 120})])
            p = SeedSkill(name, renamed_field_day=DAYS - 4, steps=1, failing_step=1,
                          versions=(v,), **common)  # fmt: skip
        else:
            good = register(rt, reader(name), [case("p95_ms", {"p95_ms": 120})])
            bad = register(rt, reader(name, "latency"), [case("latency", {"p95_ms": 120})])
            p = SeedSkill(name, bad_version_day=DAYS - 6, bad_rate=1.0,
                          bad_error="KeyError: 'latency'", steps=1, failing_step=1,
                          versions=(good, bad), **common)  # fmt: skip
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
        retries = 3 if "timed out" in text else 2
        fixed = READER_EITHER.format(name=name, url=URL, retries=retries)
        tests = [case("p95", {"p95_ms": 120}), case("p95_ms", {"p95_ms": 121}, 121)]
    return {"text": f"```python\n{fixed}```\n```json\n{json.dumps(tests)}\n```"}


class ReplayClock:
    """Times every batch the review replays (``history.replay`` calls ``replay_many`` once per
    candidate and batch of runs): calls, runs and seconds."""

    def __init__(self) -> None:
        self.calls = self.runs = 0
        self.seconds = 0.0
        self._real = getattr(history_replay, "replay_many")  # noqa: B009 (not re-exported)

    def __enter__(self) -> ReplayClock:
        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return self._real(*args, **kw)
            finally:
                self.seconds += time.perf_counter() - t0
                self.calls += 1
                self.runs += len(args[3])

        setattr(history_replay, "replay_many", timed)  # noqa: B010
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(history_replay, "replay_many", self._real)  # noqa: B010


def _false_promotion(rt: Runtime, name: str, kind: str, card: dict[str, Any]) -> str | None:
    """Why a promotion is wrong (None: it is a sound fix of the skill's fault)."""
    if kind == "healthy":
        return f"{name}: a healthy skill was changed"
    cand = candidate_from_version(rt, name, card["promoted_version"])
    if kind == "false_alarms":
        value = cand.manifest.params["threshold"].default
        if not 250 < value < INCIDENT[0]:  # silences the incident, or no false alarm fixed
            return f"{name}: threshold {value}"
    elif kind == "transient_timeouts":
        if cand.manifest.retries <= 1:
            return f"{name}: retries {cand.manifest.retries}"
    elif 'm["p95_ms"]' not in cand.source and '"p95"' not in cand.source:
        return f"{name}: the promoted version reads neither field"
    return None


def review_once(rt: Runtime, kinds: dict[str, str]) -> dict[str, Any]:
    """One review of the fleet; decisions, promotions checked, wall and replay time."""
    install_runtime(rt)
    with ReplayClock() as clock:
        t0 = time.perf_counter()
        run_id = start_review(rt, "7d")
        out = drive(rt, run_id, 3600, False)
        wall = time.perf_counter() - t0
    res: dict[str, Any] = {
        "wall_s": wall, "replay_s": clock.seconds, "replay_calls": clock.calls,
        "replayed_runs": clock.runs, "decisions": {}, "verdicts": {}, "false_promotions": [],
        "healthy_touched": [], "platform_blamed": [], "reasons": {},
    }  # fmt: skip
    for card in out["skills"]:
        name = card["score"]["skill"]
        kind = kinds.get(name)
        if kind is None:
            continue
        res["decisions"][name] = card["decision"]
        res["verdicts"][name] = card["score"]["verdict"]
        res["reasons"][name] = card["decision_reason"][:600]
        if kind == "healthy" and card["decision"] not in LEFT_ALONE:
            res["healthy_touched"].append(name)
        clusters = (card.get("diagnosis") or {}).get("clusters") or []
        if any(PLATFORM_ERROR in str(c.get("message")) for c in clusters):
            res["platform_blamed"].append(name)
        if card["decision"] == "improved":
            why = _false_promotion(rt, name, kind, card)
            if why is not None:
                res["false_promotions"].append(why)
    return res


def worse_sources(name: str, kind: str) -> list[str]:
    """Deliberately worse candidates for a faulty skill."""
    if kind == "false_alarms":
        return [health(name, 5000), health(name, 200)]  # silences the incident; more alarms
    if kind == "transient_timeouts":
        return [reader(name, retries=0), reader(name, "p95", retries=3)]  # fewer; wrong field
    if kind == "renamed_field":
        return [reader(name, "p95_millis")]  # reads yet another field
    return [reader(name, "latency_ms")]  # another broken read


def worse(rt: Runtime, kinds: dict[str, str], active: dict[str, str], end: int) -> dict[str, Any]:
    """Gate deliberately worse candidates on each faulty skill's held-out split (the review's
    own split: stratified by outcome class)."""
    tried = blocked = 0
    verdicts: dict[str, int] = {}
    replay_ms: list[float] = []
    passed: list[str] = []
    for name, kind in kinds.items():
        if kind == "healthy":
            continue
        old = candidate_from_version(rt, name, active[name])
        classes = recorded_classes(rt, name, active[name], end - 7 * 86_400_000, end)
        split = split_runs(classes, lambda x: x, classes.__getitem__)
        loaded = {i: load_recording(rt.redis, rt.keys, i) for i in classes}
        held = [r for r in (loaded[i] for i in split.held_out) if r is not None]
        every = {class_of(r) for r in loaded.values() if r is not None}
        old_results = None
        for source in worse_sources(name, kind):
            t0 = time.perf_counter()
            first = old_results is None
            if first:
                old_results = [d.replayed for d in history_replay.replay_runs(rt, old, held)]
            result = gate(rt, old, candidate_from_source(source, name), held, old_results, every)
            runs = (2 if first else 1) * max(1, len(held))
            replay_ms.append((time.perf_counter() - t0) * 1000 / runs)
            tried += 1
            blocked += not result.passed
            verdicts[result.verdict] = verdicts.get(result.verdict, 0) + 1
            if result.passed:
                passed.append(f"{name} ({kind}): {result.reason}")
    return {"tried": tried, "blocked": blocked, "verdicts": verdicts, "replay_ms": replay_ms,
            "passed": passed}  # fmt: skip


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
        counts = seed_history(rt, profiles, days=DAYS, end_ms=end)
        seed_s = time.perf_counter() - t0
        runs = [sum(n for k, n in counts.items() if k.startswith(f"{p.name}:") and
                    k.split(":")[1] in ("completed", "failed")) for p in profiles]  # fmt: skip
        active = {p.name: p.versions[-1] for p in profiles}
        res = review_once(rt, kinds)
        res |= {"seed_s": seed_s, "kinds": kinds, "runs_min": min(runs), "runs_max": max(runs)}
        if model is None:
            res["worse"] = worse(rt, kinds, active, end)
        return res
    finally:
        rt.close()


def measure(size: int, runs: int) -> dict[str, Any]:
    per_day = max(1, -(-runs // (DAYS - 1)))
    results: dict[str, Any] = {"size": size, "runs": runs, "per_day": per_day, "days": DAYS}
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


def _count(r: dict[str, Any], kinds: tuple[str, ...], want: str = "improved") -> tuple[int, int]:
    names = [n for n, k in r["kinds"].items() if k in kinds]
    return sum(r["decisions"].get(n) == want for n in names), len(names)


def _left_alone(r: dict[str, Any]) -> tuple[int, int]:
    names = [n for n, k in r["kinds"].items() if k == "healthy"]
    return sum(r["decisions"].get(n) in LEFT_ALONE for n in names), len(names)


def _span(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _pct(a: int, b: int) -> str:
    return f"{a / b:.0%}" if b else "n/a"


def section(r: dict[str, Any], command: str) -> str:
    """The Markdown section for docs/benchmarks.md."""
    m, off, mod = r["machine"], r["offline"], r["model"]
    w = off["worse"]
    rep = summary(w["replay_ms"] or [0.0])
    rows = []
    for kind in KINDS:
        if kind == "healthy":
            o, n = _left_alone(off)
            mo, _ = _left_alone(mod)
        else:
            o, n = _count(off, (kind,))
            mo, _ = _count(mod, (kind,))
        rows.append(f"| {kind.replace('_', ' ')} | {n} | {o} | {mo} |")
    healthy = [n for n, k in off["kinds"].items() if k == "healthy"]
    flagged = [n for n in healthy if off["verdicts"].get(n) == "underperforming"]
    fixed_off, faults = _count(off, FAULTS)
    fixable_off, n_fixable = _count(off, OFFLINE_FIXABLE)
    fixed_mod, _ = _count(mod, FAULTS)
    false = off["false_promotions"] + mod["false_promotions"]
    blamed = sorted(set(off["platform_blamed"] + mod["platform_blamed"]))
    per_run = off["replay_s"] * 1000 / max(1, off["replayed_runs"])
    return "\n".join([
        "## Weekly review: candidates, gate and promotion (issue 11)",
        "",
        f"`{command}` on {m['nproc']} cores ({m['cpu']}), Python {m['python']}, load "
        f"{r['load']}. A fleet of **{r['size']} replayable skills** (real sources: a health "
        f"check with a `threshold` param, a field reader with its `retries`), "
        f"{_span(off['runs_min'], off['runs_max'])} recorded runs each over {r['days']} days "
        f"(every attempt of a call recorded; seeded in {off['seed_s']:.0f} s), faults in a "
        f"quarter of them; reviewed twice: offline, and with the scripted model server "
        f"answering the rewrite prompt ({r['model_requests']} model requests).",
        "",
        "| fault | skills | offline: promoted (healthy: left alone) | scripted model |",
        "|---|---|---|---|",
        *rows,
        "",
        f"- Healthy skills flagged: **{len(flagged)} of {len(healthy)}** "
        f"({_pct(len(flagged), len(healthy))}; target at most 5%); healthy skills changed: "
        f"{len(off['healthy_touched']) + len(mod['healthy_touched'])}.",
        f"- Fixable faults promoted within one review: offline **{fixable_off} of "
        f"{n_fixable}** offline-fixable ({_pct(fixable_off, n_fixable)}: false alarms, "
        f"transient timeouts, bad versions; {fixed_off} of all {faults} faults, the renamed "
        f"fields being `needs_model`), scripted model **{fixed_mod} of {faults}** "
        f"({_pct(fixed_mod, faults)}); target at least 70%.",
        f"- Regressions blocked by the gate: **{w['blocked']} of {w['tried']}** deliberately "
        f"worse candidates ({_pct(w['blocked'], w['tried'])}; target at least 95%; "
        f"{w['verdicts'].get('rejected', 0)} rejected, {w['verdicts'].get('inconclusive', 0)} "
        "inconclusive): a "
        "threshold above the incident, one below the false alarms, fewer retries, rewrites "
        "reading another field.",
        f"- False promotions: **{len(false)}**; platform failures blamed on skills: "
        f"**{len(blamed)}** (1% of every skill's runs lost to the platform, 10% for some "
        "healthy ones: never in a cluster, never flagged).",
        f"- Review wall time for the fleet: offline **{off['wall_s']:.0f} s**, of which "
        f"replay {off['replay_s']:.0f} s ({off['replayed_runs']} run replays in "
        f"{off['replay_calls']} batches, one per candidate and split part); with the model "
        f"{mod['wall_s']:.0f} s (replay {mod['replay_s']:.0f} s, {mod['replayed_runs']} "
        f"replays). Replay time per run: {per_run:.0f} ms in the review; in the gate median "
        f"{rep['median']:.0f} ms, p95 {rep['p95']:.0f} ms.",
        "",
        *(f"- Passed although worse: {p}" for p in w["passed"]),
        *(f"- False promotion: {p}" for p in false),
        *(f"- Platform failure blamed on: {p}" for p in blamed),
    ])  # fmt: skip


def main() -> int:
    parser: argparse.ArgumentParser = bench_parser("review_loop", __doc__ or "")
    parser.add_argument("--size", type=int, default=40, help="skills in the fleet (40)")
    parser.add_argument("--runs", type=int, default=200, help="recorded runs per skill (200)")
    args = parser.parse_args()
    if not shutil.which("redis-server"):
        print("bench: redis-server is required", file=sys.stderr)
        return 1
    size, runs = (5, 75) if args.quick else (args.size, args.runs)
    if size < 4 or runs < 25:
        parser.error("--size must be at least 4 and --runs at least 25")
    return report("review_loop", measure(size, runs), section, args)


if __name__ == "__main__":
    sys.exit(main())
