"""Reading per-version rollups, recounting them from the runs, and moving a run back out.

The rollups are written by the runner, inside the script that ends a run (``run_ended``; the
fields are described in ``loopwright.runner.rollup``). This module reads them for a window
(through the per-skill index, never a SCAN), recounts them from run hashes and step records
(the exactly-once check of the tests and a repair tool), and holds :func:`unroll`: a run that
is re-opened (a retry, issue 15) leaves its day's buckets before it ends again, so it moves
between status buckets instead of counting twice.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from redis import Redis

from loopwright.keys import Keys
from loopwright.runner.rollup import UNROLL, duration_bucket
from loopwright.runner.signature import signature
from loopwright.scripts import NAMED, named

# The run-hash counters folded into a rollup, by the rollup field they feed.
COUNTERS = {
    "active_ms": "active_ms",
    "steps": "c_steps",
    "attempts": "c_attempts",
    "retries": "c_retries",
    "tokens_in": "c_tokens_in",
    "tokens_out": "c_tokens_out",
    "cost_micros": "c_cost_micros",
}


@dataclass(frozen=True, slots=True)
class Rollup:
    """One (skill, version, day) rollup: its integer fields and its signatures' details."""

    skill: str
    version: str
    day: str
    counts: dict[str, int]
    sigs: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, skill: str, version: str, day: str, raw: dict[str, str]) -> Rollup:
        counts: dict[str, int] = {}
        sigs: dict[str, dict[str, str]] = {}
        for name, value in raw.items():
            if name.startswith("sig:"):
                _, sig, part = name.split(":", 2)
                sigs.setdefault(sig, {})[part] = value
            else:
                try:
                    counts[name] = int(value)
                except ValueError:
                    continue
        return cls(skill, version, day, counts, sigs)


def read_rollups(
    redis: Redis, keys: Keys, skill: str, first_day: str, last_day: str
) -> list[Rollup]:
    """The skill's rollups from ``first_day`` to ``last_day`` (``yyyymmdd``, inclusive)."""
    members: list[str] = redis.zrangebyscore(keys.rollup_index(skill), first_day, last_day)  # type: ignore[assignment]
    pairs = [str(m).split(":", 1) for m in members]
    pipe = redis.pipeline(transaction=False)
    for day, version in pairs:
        pipe.hgetall(keys.rollup(skill, version, day))
    found = []
    for (day, version), raw in zip(pairs, pipe.execute(), strict=True):
        if raw:
            found.append(Rollup.parse(skill, version, day, raw))
    return found


def recount(
    redis: Redis, keys: Keys, run_ids: Iterable[str]
) -> dict[tuple[str, str, str], Counter[str]]:
    """What the rollups of these runs should hold, recounted from the runs themselves: the run
    hash (status, origin, times, error) and the step records (attempts). Runs never counted
    (no ``rolled`` day: not ended, or ended before rollups existed) are left out. Signatures
    are recounted as ``sig:<hash>:n`` from the stored error text."""
    out: dict[tuple[str, str, str], Counter[str]] = {}
    for run_id in run_ids:
        h: dict[str, str] = redis.hgetall(keys.run(run_id))  # type: ignore[assignment]
        if not h.get("rolled"):
            continue
        c = out.setdefault((h["skill"], h["version"], h["rolled"]), Counter())
        status = h["status"]
        c["runs"] += 1
        c[f"status:{status}"] += 1
        if status == "failed":
            c[f"failed:{h.get('origin', 'skill')}"] += 1
        dur = max(0, int(h.get("finished_at", 0)) - int(h.get("created_at", 0)))
        c[f"dur:{duration_bucket(dur)}"] += 1
        c["dur_ms"] += dur
        c["active_ms"] += int(h.get("active_ms", 0))
        steps: dict[str, str] = redis.hgetall(keys.steps(run_id))  # type: ignore[assignment]
        for raw in steps.values():
            rec = json.loads(raw)
            if rec.get("status") in ("done", "failed"):
                tries = int(rec.get("attempts", 1))
                c["steps"] += 1
                c["attempts"] += tries
                c["retries"] += tries - 1
        if status in ("failed", "cancelled") and h.get("error"):
            c[f"sig:{signature(h['error'])}:n"] += 1
    return {k: Counter({n: v for n, v in c.items() if v}) for k, c in out.items()}


def counted(rollup: Rollup) -> Counter[str]:
    """A rollup's integer fields and signature counts, in :func:`recount`'s shape (feedback
    excluded: it is not recounted from runs)."""
    c = Counter({n: v for n, v in rollup.counts.items() if v and not n.startswith("fb_")})
    for sig, parts in rollup.sigs.items():
        if int(parts.get("n", 0)):
            c[f"sig:{sig}:n"] = int(parts["n"])
    return c


# Atomically: take one ended run's contribution back out of its day's rollup (status, origin,
# duration, counters, signature count) and clear its ``rolled`` mark, so that its next end
# counts it again in the bucket of its new status. Nothing when it was never counted.
# KEYS (named): run, rollup (built from the run's skill, version and ``rolled`` day)
# ARGV (named): day (the ``rolled`` day the caller read)   Returns 1 when moved out, else 0.
UNROLL_LUA = NAMED + UNROLL + "return unroll(K.run, K.rollup, A.day)\n"


def unroll(redis: Redis, keys: Keys, run_id: str) -> bool:
    """Move one ended run out of its rollup buckets (see ``UNROLL_LUA``); False when it was not
    counted. The caller re-opens the run in the same breath (issue 15); its next end counts it
    again, in its new status."""
    h = redis.hmget(keys.run(run_id), ["skill", "version", "rolled"])
    skill, version, day = (str(x) if x is not None else "" for x in h)
    if not day:
        return False
    ks, args = named(
        {"run": keys.run(run_id), "rollup": keys.rollup(skill, version, day)}, {"day": day}
    )
    return bool(redis.eval(UNROLL_LUA, len(ks), *ks, *args))
