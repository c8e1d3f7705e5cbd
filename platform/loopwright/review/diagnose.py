"""Diagnosis of a flagged skill version: what failed, what people said, what the runs saw.

* **Error clusters** come from the rollups' error signatures (``history/signature.py``): count,
  message sample, failing step, example runs, the day first seen over the window and the
  baseline before it, and whether the signature *began with a version change*: it first
  appeared on a version whose predecessors ran in the same span without it. Then the registry's
  diff from the last healthy earlier version to the current one is attached.
* **Bad runs**: the window's runs of this version labelled bad, with their notes.
* **Shared responses**: the recorded ``http`` answers (``{p}:run:{id}:calls``) of the problem
  runs (labelled bad or failed by the skill) against those of ordinary completed runs of the
  same version: a field whose values in the problem runs lie in a range few of the others
  reach (``MAX_OVERLAP``), one absent only from the problem runs (a renamed field), or one
  present only in them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from redis import Redis

from loopwright.history.rollups import Rollup, read_rollups
from loopwright.keys import Keys
from loopwright.review.select import BASELINE_DAYS, DAY_MS, window_days
from loopwright.review.types import Cluster, Diagnosis, SharedResponse, SkillScore, VersionChange
from loopwright.runner.recording import parse_calls
from loopwright.service.stats import wilson
from loopwright.skills_registry.diff import diff_refs
from loopwright.skills_registry.store import Registry

MAX_CLUSTERS = 5
MAX_EXAMPLES = 3
MAX_SAMPLE = 50  # problem runs, and as many ordinary ones, whose recordings are read
MAX_SHARED = 8
MAX_BAD_RUNS = 50
MAX_SCAN = 5000  # the window's newest run records read (a busy skill's week is bounded)
MAX_FLATTEN_DEPTH = 3
# A value range shared by the problem runs is reported while at most this share of the other
# runs fall inside it (unlabelled runs are not all fine: a false alarm nobody labelled is one).
MAX_OVERLAP = 0.25


@dataclass(slots=True)
class _Sig:
    message: str
    step: str
    origin: str
    count: int = 0
    examples: list[str] = field(default_factory=list)
    last_day: str = ""


def _is_healthy(rollups: list[Rollup], min_success: float) -> bool:
    ok = sum(r.counts.get("status:completed", 0) for r in rollups)
    bad = sum(r.counts.get("failed:skill", 0) for r in rollups)
    bounds = wilson(ok, ok + bad)
    return bounds is not None and bounds[1] >= min_success


def _clusters(
    rollups: list[Rollup], version: str, first_window_day: str, order: list[str]
) -> list[Cluster]:
    window = sorted(
        (r for r in rollups if r.version == version and r.day >= first_window_day),
        key=lambda r: r.day,
    )
    found: dict[str, _Sig] = {}
    for r in window:
        for sig, parts in r.sigs.items():
            n = int(parts.get("n", 0) or 0)
            if n <= 0 or parts.get("origin", "skill") != "skill":
                continue
            cur = found.setdefault(sig, _Sig(parts.get("msg", ""), parts.get("step", ""), "skill"))
            cur.count += n
            cur.last_day = r.day
            for run in (parts.get("first", ""), parts.get("last", "")):
                if run and run not in cur.examples and len(cur.examples) < MAX_EXAMPLES:
                    cur.examples.append(run)
    rank = {v: i for i, v in enumerate(order)}
    out: list[Cluster] = []
    for sig, s in sorted(found.items(), key=lambda kv: (-kv[1].count, kv[0]))[:MAX_CLUSTERS]:
        with_sig = [r for r in rollups if int(r.sigs.get(sig, {}).get("n", 0) or 0) > 0]
        first = min(with_sig, key=lambda r: (r.day, rank.get(r.version, -1)))
        began: str | None = None
        earlier = [r for r in rollups if rank.get(r.version, -1) < rank.get(first.version, -1)]
        if earlier and not any(sig in r.sigs for r in earlier):
            began = first.version
        out.append(
            Cluster(
                signature=sig,
                message=s.message,
                step=s.step,
                count=s.count,
                example_runs=s.examples,
                first_seen=first.day,
                began_with_version=began,
                origin=s.origin,
                last_seen=s.last_day,
            )
        )
    return out


def _version_change(
    redis: Redis, keys: Keys, score: SkillScore, rollups: list[Rollup], order: list[str],
    min_success: float,
) -> VersionChange | None:  # fmt: skip
    if score.version not in order:
        return None
    for prev in reversed(order[: order.index(score.version)]):
        mine = [r for r in rollups if r.version == prev]
        if mine and _is_healthy(mine, min_success):
            diff = diff_refs(Registry(redis, keys), score.skill, prev, score.version)
            return VersionChange(prev, score.version, diff.source_diff)
    return None


def _flatten(value: Any, prefix: str = "", depth: int = 0) -> dict[str, Any]:
    if not isinstance(value, dict) or depth >= MAX_FLATTEN_DEPTH:
        return {prefix: value} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in value.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k), depth + 1))
    return out


def _answers(redis: Redis, keys: Keys, run_ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """run -> ``tool url`` -> flattened answer of its recorded ``http`` calls (the last
    answer per URL wins)."""
    pipe = redis.pipeline(transaction=False)
    for r in run_ids:
        pipe.lrange(keys.run_calls(r), 0, -1)
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for run, raw in zip(run_ids, pipe.execute(), strict=True):
        seen: dict[str, dict[str, Any]] = {}
        for call in parse_calls([str(x) for x in raw]):
            req = call.get("req") or {}
            if call.get("tool") != "http" or not isinstance(req, dict):
                continue
            if isinstance(call.get("res"), dict):
                seen[str(req.get("url", ""))] = _flatten(call["res"])
        out[run] = seen
    return out


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _fmt(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"


def _shared(
    problem: dict[str, dict[str, dict[str, Any]]], normal: dict[str, dict[str, dict[str, Any]]]
) -> list[SharedResponse]:
    found: list[SharedResponse] = []
    urls = sorted({u for a in problem.values() for u in a})
    for url in urls:
        p_runs = sorted(r for r, a in problem.items() if url in a)
        n_runs = sorted(r for r, a in normal.items() if url in a)
        if len(p_runs) < 2:
            continue
        p_paths = {p for r in p_runs for p in problem[r][url]}
        n_paths = {p for r in n_runs for p in normal[r][url]}
        for path in sorted(n_paths - p_paths):
            found.append(SharedResponse("http", url, path, "absent", p_runs))
        for path in sorted(p_paths):
            having = [r for r in p_runs if path in problem[r][url]]
            if len(having) < 2:
                continue
            if n_runs and path not in n_paths and len(having) == len(p_runs):
                found.append(SharedResponse("http", url, path, "present", having))
                continue
            values = [problem[r][url][path] for r in having]
            others = [normal[r][url][path] for r in n_runs if path in normal[r][url]]
            nums = [_num(v) for v in values]
            if all(x is not None for x in nums):
                lo, hi = (
                    min(x for x in nums if x is not None),
                    max(x for x in nums if x is not None),
                )
                o_nums = [x for x in (_num(v) for v in others) if x is not None]
                inside = sum(1 for x in o_nums if lo <= x <= hi)
                if len(o_nums) != len(others) or inside > MAX_OVERLAP * len(o_nums):
                    continue
                pattern = f"in [{_fmt(lo)}, {_fmt(hi)}]"
                if inside:
                    pattern += f" (also {inside} of {len(o_nums)} other runs)"
                elif o_nums:
                    pattern += f" (other runs {_fmt(min(o_nums))}-{_fmt(max(o_nums))})"
                found.append(SharedResponse("http", url, path, pattern, having))
            elif len({json.dumps(v, sort_keys=True) for v in values}) == 1:
                if sum(1 for v in others if v == values[0]) * 2 >= len(others) and others:
                    continue
                found.append(
                    SharedResponse("http", url, path, "= " + json.dumps(values[0]), having)
                )
    found.sort(key=lambda s: (-len(s.runs), s.tool, s.target, s.path))
    return found[:MAX_SHARED]


def diagnose(
    redis: Redis, keys: Keys, score: SkillScore, *, now: int, days: int = 7,
    min_success: float = 0.95,
) -> Diagnosis:  # fmt: skip
    """The diagnosis of ``score``'s skill version over the window ending at ``now`` (see the
    module doc). Reads rollups, the window's run records and recordings of a bounded sample."""
    w_days = window_days(now, days)
    b_days = window_days(now - days * DAY_MS, BASELINE_DAYS)
    rollups = read_rollups(redis, keys, score.skill, b_days[0], w_days[-1])
    order = Registry(redis, keys).version_ids(score.skill)
    clusters = _clusters(rollups, score.version, w_days[0], order)
    change = None
    if any(c.began_with_version == score.version for c in clusters):
        change = _version_change(redis, keys, score, rollups, order, min_success)
    start_ms = now - days * DAY_MS
    newest = redis.zrevrangebyscore(
        keys.runs_by_skill(score.skill), now, start_ms, start=0, num=MAX_SCAN
    )
    ids = [str(x) for x in reversed(newest)]  # oldest first: the latest are kept below
    pipe = redis.pipeline(transaction=False)
    for r in ids:
        pipe.hmget(keys.run(r), ["version", "status", "origin", "feedback", "feedback_note"])
    bad: list[tuple[str, str]] = []
    problem: list[str] = []
    normal: list[str] = []
    for run, (version, status, origin, fb, note) in zip(ids, pipe.execute(), strict=True):
        if version != score.version:
            continue
        if fb == "bad":
            bad.append((run, str(note or "")))
            problem.append(run)
        elif status == "failed" and (origin or "skill") == "skill":
            problem.append(run)
        elif status == "completed":
            normal.append(run)
    problem, normal = problem[-MAX_SAMPLE:], normal[-MAX_SAMPLE:]
    answers = _answers(redis, keys, problem + normal)
    shared = _shared({r: answers[r] for r in problem}, {r: answers[r] for r in normal})
    return Diagnosis(
        skill=score.skill,
        version=score.version,
        clusters=clusters,
        bad_runs=bad[-MAX_BAD_RUNS:],
        shared_responses=shared,
        version_change=change,
    )
