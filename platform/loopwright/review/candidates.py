"""Candidates for a flagged skill: an offline parameter search, a rollback, and the overfitting
check every rewrite must pass. (The model's rewrite is ``review/rewrite.py``.)

The parameter search needs no model. It changes one declared value at a time — a numeric
``params`` default, or ``retries`` — over a capped grid (``review_grid_max`` points):

1. values that *separate* the recorded responses of runs people labelled bad from those of
   runs labelled good (for each numeric field of the answers, when every bad run's value lies
   below every good run's, or above: points inside that gap, rounded to the fewest significant
   digits that stay inside it, never a value copied from a response);
2. then steps around the current value (x0.8, x1.2, x1.5, x2);
3. ``retries`` +1 and +2 when a failed run's last call failed with a retriable error (the
   attempts beyond the recording are answered from the split's recorded retries,
   ``review/retries.py``). ``backoff`` and ``timeout`` are not searched: a replay skips the
   waits and its clock is virtual, so no recording can show what changing them would do.

Each point is the same source with that one value changed (an edit of the syntax tree's value
span, ``skills_registry/declaration.py``) and is scored by replaying the *search* split — first the
labelled and failed runs (the ones it can fix or must keep), then, for the best survivors only,
the rest — and judged by the gate's own rules (``review/gate.py``). The best point that the
judge passes on the whole search split (most runs fixed, then the smallest change) is the
candidate; the gate then decides on the held-out split it never saw.
"""

from __future__ import annotations

import ast
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from loopwright.history.replay import Candidate, candidate_from_source, replay_runs
from loopwright.review.gate import judge
from loopwright.review.retries import candidate_results, extend, retry_evidence
from loopwright.review.types import VersionChange
from loopwright.runner.recording import Recording
from loopwright.runner.runtime import Runtime
from loopwright.service.stats import skill_stats
from loopwright.sidecar.replay import ReplayResult
from loopwright.skills_registry.declaration import DeclarationError, with_values

Kind = Literal["param", "rollback", "model"]
MIN_ROLLBACK_RUNS = 5
TRIVIAL_NUMBERS = frozenset({-1, 0, 1, 2})


@dataclass
class Proposal:
    """One candidate version: a new source (params, model) or an earlier version (rollback)."""

    kind: Kind
    note: str
    source: str | None = None
    version: str | None = None  # rollback: the earlier version
    changes: dict[str, Any] = field(default_factory=dict)
    tests: list[Any] | None = None  # the rewrite's own test cases (None: the old version's)
    tried: list[dict[str, Any]] = field(default_factory=list)  # search points and their scores

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Proposal:
        return cls(**data)


@dataclass
class Outcome:
    """What a candidate generator found: a proposal, or why there is none."""

    proposal: Proposal | None
    reason: str
    tried: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        prop = data.get("proposal")
        return cls(
            Proposal.from_dict(prop) if prop else None, str(data["reason"]), data.get("tried", [])
        )


# ---- values in recordings -------------------------------------------------------------------


def _walk(value: Any, path: str, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _walk(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, list):
        for v in value[:200]:
            _walk(v, f"{path}[]", out)
    else:
        out.append((path, value))


def leaves(value: Any) -> list[tuple[str, Any]]:
    """(path, value) of every scalar in a JSON-like value (values only, never keys)."""
    out: list[tuple[str, Any]] = []
    _walk(value, "", out)
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def answered_numbers(rec: Recording) -> dict[str, list[float]]:
    """Numbers in the answers the run's calls got, by call tool and JSON path."""
    out: dict[str, list[float]] = {}
    for call in rec.tool_calls:
        if call.get("error") is not None:
            continue
        for path, v in leaves(call.get("res")):
            if _is_number(v):
                out.setdefault(f"{call.get('tool')}:{path}", []).append(float(v))
    return out


def failing(recordings: list[Recording]) -> list[Recording]:
    """Runs that failed (by the skill) or that somebody labelled bad."""
    return [r for r in recordings if r.feedback == "bad" or r.status == "failed"]


# ---- the grid -------------------------------------------------------------------------------


def _nice(x: float, lo: float, hi: float, integer: bool) -> float | None:
    """``x`` rounded to the fewest significant digits that keep it strictly inside (lo, hi)."""
    if x == 0:
        return 0.0 if lo < 0 < hi else None
    mag = math.floor(math.log10(abs(x)))
    for digits in range(1, 8):
        r = round(x, -mag + digits - 1)
        r = float(round(r)) if integer else r
        if lo < r < hi:
            return r
    return None


def _typed(v: float, integer: bool) -> int | float:
    return round(v) if integer else round(v, 6)


def grid(
    manifest_params: dict[str, Any], search: list[Recording], cap: int
) -> list[dict[str, Any]]:
    """The points to try: ``{"params": {name: value}}`` or ``{"policy": {"retries": n}}``."""
    bad = [answered_numbers(r) for r in search if r.feedback == "bad"]
    good = [answered_numbers(r) for r in search if r.feedback == "good"]
    observed = {v for r in failing(search) for vs in answered_numbers(r).values() for v in vs}
    points: list[dict[str, Any]] = []

    def add(name: str, value: float, integer: bool, current: float) -> None:
        typed = _typed(value, integer)
        if typed == current or float(typed) in observed or typed < 0:
            return
        point = {"params": {name: typed}}
        if point not in points:
            points.append(point)

    numeric = {
        n: float(p.default) for n, p in sorted(manifest_params.items()) if _is_number(p.default)
    }
    for name, current in numeric.items():
        integer = isinstance(manifest_params[name].default, int)
        paths = sorted({k for b in bad for k in b} & {k for g in good for k in g})
        for path in paths:
            b = [v for r in bad for v in r.get(path, [])]
            g = [v for r in good for v in r.get(path, [])]
            if max(b) < min(g):
                lo, hi = max(b), min(g)
            elif min(b) > max(g):
                lo, hi = max(g), min(b)
            else:
                continue
            for frac in (0.5, 0.25, 0.75):  # in log space when both ends are positive
                x = lo * (hi / lo) ** frac if lo > 0 else lo + (hi - lo) * frac
                found = _nice(x, lo, hi, integer)
                if found is not None:
                    add(name, found, integer, current)
        if not good and bad:  # no incident to keep: just above what the bad runs saw
            top = max(v for r in bad for vs in r.values() for v in vs)
            for factor in (1.1, 1.25):
                found = _nice(top * factor, top, math.inf, integer)
                if found is not None:
                    add(name, found, integer, current)
    for name, current in numeric.items():
        integer = isinstance(manifest_params[name].default, int)
        for factor in (1.2, 1.5, 2.0, 0.8):
            found = _nice(current * factor, -math.inf, math.inf, integer)
            if found is not None:
                add(name, found, integer, current)
    return points[:cap]


def policy_points(retries: int, search: list[Recording]) -> list[dict[str, Any]]:
    """``retries`` +1/+2 when a failed run's last call failed with a retriable error."""
    transient = any(
        r.status == "failed" and r.tool_calls and bool(r.tool_calls[-1].get("retriable"))
        for r in search
    )
    return [{"policy": {"retries": retries + d}} for d in (1, 2)] if transient else []


# ---- the search -----------------------------------------------------------------------------


def _results(rt: Runtime, cand: Candidate, recs: list[Recording]) -> list[ReplayResult]:
    return [d.replayed for d in replay_runs(rt, cand, recs)] if recs else []


def param_search(rt: Runtime, old: Candidate, search: list[Recording], cap: int) -> Outcome:
    """The best single-value change of ``old`` on the search split, or why there is none.

    Replays are spent where they decide: every point on the labelled and failed runs first;
    the unlabelled successes (and the old version's replays of them) only for a point that
    passed there. A point that fixes every fixable run is final at once when it passes on the
    whole split (no later point can fix more)."""
    m = old.manifest
    points = grid(dict(m.params), search, cap)
    points += policy_points(m.retries, search)[: max(0, cap - len(points))]
    if not points:
        return Outcome(None, "no numeric params or retriable failures to tune")
    if not failing(search):
        return Outcome(None, "the search split has no failed or bad-labelled run to fix")
    first = [r for r in search if r.feedback in ("good", "bad") or r.status == "failed"]
    chosen = {id(r) for r in first}
    rest = [r for r in search if id(r) not in chosen]
    fixable = len(failing(first))
    old_first = _results(rt, old, first)
    old_rest: list[ReplayResult] | None = None
    current = {n: float(p.default) for n, p in m.params.items() if _is_number(p.default)}
    current["retries"] = float(m.retries)
    tried: list[dict[str, Any]] = []
    evidence = retry_evidence(search)

    def replay(cand: Candidate, recs: list[Recording]) -> list[ReplayResult]:
        return _results(rt, cand, recs)  # one batch per candidate and part of the split

    def runs_for(cand: Candidate, recs: list[Recording]) -> list[Recording]:
        # a candidate that retries more is answered beyond the recording (review/retries.py)
        return extend(recs, evidence, cand.manifest.retries - m.retries)

    def whole(i: int, cand: Candidate, got: list[ReplayResult]) -> Outcome | None:
        nonlocal old_rest
        if old_rest is None:
            old_rest = _results(rt, old, rest)
        more = candidate_results(old, cand, runs_for(cand, rest), old_rest, replay)
        verdict = judge(first + rest, old_first + old_rest, got + more)
        tried[i]["whole_split"] = verdict.verdict
        if not verdict.passed:
            return None
        point = points[i]
        note = ", ".join(
            f"{k} {_fmt(current.get(k))} -> {v}"
            for k, v in {**point.get("params", {}), **point.get("policy", {})}.items()
        )
        prop = Proposal(
            "param",
            f"{note}: fixes {len(verdict.fixed)} of the search split's runs, regresses none",
            source=cand.source,
            changes=point,
            tried=tried,
        )
        return Outcome(prop, prop.note, tried)

    survivors: list[tuple[int, int, Candidate, list[ReplayResult]]] = []
    for i, point in enumerate(points):
        try:
            source = with_values(old.source, point.get("params", {}), point.get("policy", {}))
        except DeclarationError as exc:
            tried.append({"point": point, "verdict": "invalid", "reason": str(exc)})
            continue
        cand = candidate_from_source(source, m.name)
        got = candidate_results(old, cand, runs_for(cand, first), old_first, replay)
        verdict = judge(first, old_first, got, tail=False)  # the tail: on the whole split
        tried.append(
            {
                "point": point,
                "verdict": verdict.verdict,
                "fixed": len(verdict.fixed),
                "regressed": len(verdict.regressed),
            }
        )
        if not verdict.passed:
            continue
        if len(verdict.fixed) >= fixable:
            found = whole(i, cand, got)
            if found is not None:
                return found
            continue
        survivors.append((-len(verdict.fixed), i, cand, got))
    # Most runs fixed first; then grid order: separating values (the middle of the gap
    # first) before steps around the current value, so the choice keeps a margin both ways.
    for _, i, cand, got in sorted(survivors, key=lambda s: s[:2]):
        found = whole(i, cand, got)
        if found is not None:
            return found
    return Outcome(
        None, f"none of {len(points)} parameter settings passes on the search split", tried
    )


def _fmt(v: float | None) -> str:
    return "?" if v is None else (str(int(v)) if v == int(v) else f"{v:g}")


# ---- rollback -------------------------------------------------------------------------------


def rollback_candidate(
    rt: Runtime,
    skill: str,
    active: str,
    window: str = "7d",
    now: int | None = None,
    change: VersionChange | None = None,
) -> Outcome:
    """The last healthy version when the diagnosis found the regression began with a change
    from it (``change``); else an earlier version that was clearly healthier in the window (its
    Wilson lower bound above the active version's upper bound); or why there is none."""
    if change is not None and change.to_version == active and change.from_version != active:
        note = f"roll back to {change.from_version[:12]}: the failures began with {active[:12]}"
        prop = Proposal("rollback", note, version=change.from_version,
                        changes={"version": change.from_version})  # fmt: skip
        return Outcome(prop, note)
    report = skill_stats(rt.redis, rt.keys, skill, window, by="version", now=now)
    by_version = {g.group: g for g in report.groups}
    cur = by_version.get(active)
    if cur is None or cur.success_low is None or cur.success_high is None:
        return Outcome(None, "the active version has no judged runs in the window")
    order = [str(v) for v in rt.redis.zrange(rt.keys.registry_versions(skill), 0, -1)]
    best = None
    for version in order:
        g = by_version.get(version)
        if version == active or g is None or g.success_low is None:
            continue
        judged = g.completed + g.failed_skill
        if judged >= MIN_ROLLBACK_RUNS and g.success_low > cur.success_high:
            best = (version, g)
    if best is None:
        return Outcome(None, "no earlier version was clearly healthier in the window")
    version, g = best
    note = (
        f"roll back to {version[:12]}: {g.success_rate or 0:.0%} success in the window against "
        f"{cur.success_rate or 0:.0%} for {active[:12]}"
    )
    return Outcome(Proposal("rollback", note, version=version, changes={"version": version}), note)


# ---- overfitting ----------------------------------------------------------------------------


def _constants(source: str) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        value = node.value if isinstance(node, ast.Constant) else None
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            out.add(repr(value))
    return out


def _significant(v: Any) -> bool:
    if isinstance(v, str):
        return len(v.strip()) >= 3
    return _is_number(v) and v not in TRIVIAL_NUMBERS


def copied_literals(old_source: str, new_source: str, failing_runs: list[Recording]) -> list[str]:
    """Literal values the new source adds that appear in the failing runs' inputs or recorded
    answers (values, not field names): what a rewrite fitted to those runs would copy."""
    added = _constants(new_source) - _constants(old_source)
    seen: set[str] = set()
    for rec in failing_runs:
        for _, v in leaves(rec.event.get("data") if isinstance(rec.event, dict) else None):
            if _significant(v):
                seen.add(repr(v))
        for call in rec.tool_calls:
            for _, v in leaves(call.get("res")):
                if _significant(v):
                    seen.add(repr(v))
                    if isinstance(v, int):
                        seen.add(repr(float(v)))
                    elif isinstance(v, float) and v.is_integer():
                        seen.add(repr(int(v)))
    return sorted(added & seen)
