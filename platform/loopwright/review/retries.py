"""Retries beyond the recording: what a candidate that retries more would have got.

A run that failed because every attempt of a call hit a transient error (a timeout, a 503)
recorded exactly the attempts its version's policy made. A candidate that retries more makes
an attempt the recording cannot answer: on its own it is off-script and fails, so a replay could
never show a retry fixing a transient failure. The review answers those attempts from the
*evidence of the same split*, never from nothing:

* :func:`retry_evidence`: for each recorded call (tool and request, ``match_key``) that failed
  with a retriable error in some run, how the recorded attempt that followed such a failure
  went — how many of them succeeded, the answers the call got when it succeeded (with their
  time) and the recorded time of a success and of a failure. At least ``MIN_EVIDENCE`` retried
  attempts are needed, otherwise the call is not extended (it stays off-script).
* :func:`extend`: each failed run whose call's *last* recorded attempt failed retriably gets
  up to ``extra`` more attempts of that call, appended after its own: attempt ``k`` succeeds
  when ``sha256(run id, call, k)`` falls under the measured success rate (deterministic: the
  same history gives the same extension), answered with the success of that call recorded
  nearest in time in the split (what the service answered around then); otherwise it fails
  again as the run's last attempt did (its error). Extension entries carry ``"predicted":
  true`` and no recorded time (``elapsed_ms`` 0; what it would likely have taken, the median
  of a recorded success or the failed attempt's time, is kept as ``predicted_ms``): the gate's
  p95 rule is about *recorded* tool time, and a predicted attempt has none.

The gate and the search judge the candidate on the extended recordings and name the runs whose
fix rests on a predicted attempt (``GateReport.predicted``). The old version never reaches the
extra attempts (its policy stopped where the recording stops), so its replays are unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loopwright.history.replay import Candidate
from loopwright.runner.recording import Recording, match_key
from loopwright.sidecar.replay import ReplayResult
from loopwright.skills_registry.declaration import DeclarationError, with_values

MIN_EVIDENCE = 5


@dataclass
class CallEvidence:
    """What retried attempts of one call did in a split."""

    retried: int = 0  # attempts made after a retriable failure of the call
    succeeded: int = 0  # of those, the ones that got an answer
    answers: list[tuple[int, Any]] = field(default_factory=list)  # (at, answer) of successes
    ok_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.succeeded / self.retried if self.retried else 0.0


def _key(entry: dict[str, Any]) -> str | None:
    req = entry.get("req")
    return match_key(str(entry.get("tool")), req) if isinstance(req, dict) else None


def _failed_retriably(entry: dict[str, Any]) -> bool:
    return entry.get("error") is not None and bool(entry.get("retriable"))


def retry_evidence(recordings: list[Recording]) -> dict[str, CallEvidence]:
    """Per call (``match_key``), how recorded retries after a retriable failure went."""
    out: dict[str, CallEvidence] = {}
    for rec in recordings:
        last: dict[tuple[Any, str], dict[str, Any]] = {}  # (step, call) -> previous attempt
        for entry in rec.tool_calls:
            key = _key(entry)
            if key is None or entry.get("predicted"):
                continue
            ev = out.setdefault(key, CallEvidence())
            if entry.get("error") is None:
                ev.answers.append((int(entry.get("at") or 0), entry.get("res")))
                ev.ok_ms.append(float(entry.get("elapsed_ms") or 0.0))
            before = last.get((entry.get("seq"), key))
            if before is not None and _failed_retriably(before):
                ev.retried += 1
                ev.succeeded += entry.get("error") is None
            last[(entry.get("seq"), key)] = entry
    return out


def _draw(run_id: str, key: str, k: int) -> float:
    digest = hashlib.sha256(f"loopwright-retry:1:{run_id}:{key}:{k}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _nearest(answers: list[tuple[int, Any]], at: int) -> Any:
    return min(answers, key=lambda a: (abs(a[0] - at), a[0]))[1]


def extend(
    recordings: list[Recording], evidence: dict[str, CallEvidence], extra: int
) -> list[Recording]:
    """``recordings`` with up to ``extra`` predicted attempts after each failed run's last
    retriably failed call (see the module docstring); other runs unchanged."""
    if extra <= 0:
        return recordings
    out = []
    for rec in recordings:
        tools = rec.tool_calls
        last = tools[-1] if tools else None
        key = _key(last) if last is not None else None
        ev = evidence.get(key) if key is not None else None
        if (
            rec.status != "failed"
            or last is None
            or key is None
            or not _failed_retriably(last)
            or ev is None
            or ev.retried < MIN_EVIDENCE
            or not ev.answers
        ):
            out.append(rec)
            continue
        added = []
        at = int(last.get("at") or 0)
        for k in range(1, extra + 1):
            entry = {
                **last,
                "attempt": int(last.get("attempt") or 1) + k,
                "predicted": True,
                "elapsed_ms": 0.0,
                "predicted_ms": float(last.get("elapsed_ms") or 0.0),
            }
            if _draw(rec.run_id, key, k) < ev.rate:
                entry |= {
                    "res": _nearest(ev.answers, at),
                    "error": None,
                    "retriable": False,
                    "status": last.get("status") if last.get("tool") != "http" else 200,
                    "predicted_ms": statistics.median(ev.ok_ms),
                }
                added.append(entry)
                break
            added.append(entry)
        out.append(dataclasses.replace(rec, calls=[*rec.calls, *added]))
    return out


def predicted_runs(recordings: list[Recording], answered: dict[str, int]) -> list[str]:
    """Runs whose replay answered more calls than the run recorded: its outcome rests on a
    predicted attempt (``answered``: calls answered per run id)."""
    out = []
    for rec in recordings:
        real = sum(1 for c in rec.tool_calls if not c.get("predicted"))
        if answered.get(rec.run_id, 0) > real:
            out.append(rec.run_id)
    return out


def only_retries_raised(old: Candidate, new: Candidate) -> bool:
    """``new`` is ``old`` with more ``retries`` and nothing else changed (its source is
    ``old``'s with the declaration's retries edited)."""
    if new.manifest.retries <= old.manifest.retries:
        return False
    try:
        return with_values(old.source, {}, {"retries": new.manifest.retries}) == new.source
    except DeclarationError:
        return False


def untouched_by_retries(rec: Recording) -> bool:
    """A run more retries cannot change: it completed and no step of it failed (every step
    succeeded within the attempts the old policy allowed, so a candidate that allows more
    makes the same calls and gets the same answers)."""
    return rec.status == "completed" and all(
        s.get("status") != "failed" for s in rec.steps.values()
    )


def candidate_results(
    old: Candidate,
    new: Candidate,
    recs: list[Recording],
    old_results: list[ReplayResult],
    replay: Callable[[Candidate, list[Recording]], list[ReplayResult]],
) -> list[ReplayResult]:
    """``new``'s replays of ``recs`` (already extended): in one batch, but when ``new`` only
    raises the retries, just the runs more retries can change; the others are ``old``'s own
    replays (the guest is deterministic and the skill's code is the same)."""
    if not only_retries_raised(old, new):
        return replay(new, recs)
    todo = [i for i, r in enumerate(recs) if not untouched_by_retries(r)]
    got = dict(zip(todo, replay(new, [recs[i] for i in todo]) if todo else [], strict=True))
    return [got.get(i, old_results[i]) for i in range(len(recs))]
