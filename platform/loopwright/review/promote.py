"""Promotion of a candidate that passed the gate, and the watch that guards it.

A rewrite (parameter or model) is submitted through the sidecar like any other version: full
validation with the old version's test cases, author ``review``, parent = the version active
when it registers (the old one). The registry's approval mode decides what happens next:
``review`` leaves it pending for a person (``loopwright skills approve``); ``auto`` makes it
active at once, under a **watch**. A rollback candidate is the registry's own rollback (``auto``)
or a suggestion (``review``).

The watch is a durable run of the built-in trusted skill ``loopwright-watch`` (one per
promotion; its run id is derived from the promoted version, so a promotion step run twice
starts one watch). It counts the new version's ended runs every ``review_watch_poll`` (a durable
sleep between counts) until ``review_watch_runs`` of them ended or ``review_watch_for`` passed,
then compares their success rate with the old version's over the review window: when the new
version's 95% Wilson upper bound is below the old one's lower bound, the registry rolls back to
the old version and the inbox says so. Platform failures count for neither.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import asdict, dataclass
from typing import Any

from loopwright.history.replay import Candidate
from loopwright.review.candidates import Proposal
from loopwright.runner.records import now_ms
from loopwright.runner.runtime import Runtime
from loopwright.service.stats import wilson
from loopwright.sidecar.pipeline import Sidecar
from loopwright.skills_registry.store import Registry

WATCH_NAME = "loopwright-watch"
WATCH_SOURCE = '''\
"""Built-in: watch a version the weekly review promoted; roll back when it fails live."""

from loopwright.review.promote import run_watch
from loopwright.sdk import skill


@skill(name="loopwright-watch", description="Watch a promoted version and roll it back if it "
       "does worse than the version it replaced", tools=["notify"], retries=3, backoff=1)
def main(ctx):
    return run_watch(ctx)
'''
SCAN_MAX = 5000  # runs of the skill read per count (newest first)


@dataclass
class Promotion:
    """What promoting one candidate did."""

    outcome: str  # activated | pending | rolled-back | suggested | rejected | dry-run | unchanged
    note: str
    version: str | None = None
    watch_run: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ensure_watch_builtin(rt: Runtime) -> str:
    """Register the watch skill (idempotent by content); returns its version."""
    reg, squatter = Registry(rt.redis, rt.keys).install_builtin(WATCH_SOURCE, WATCH_NAME)
    if squatter:
        logging.getLogger(__name__).warning(
            "replaced version %s of the reserved skill %r with the built-in", squatter[:12],
            WATCH_NAME,
        )  # fmt: skip
    return reg.version


def watch_run_id(skill: str, version: str) -> str:
    """The one watch run of a promotion (derived: a repeated promotion step finds it)."""
    return hashlib.sha256(f"watch:{skill}:{version}".encode()).hexdigest()[:20]


def start_watch(rt: Runtime, skill: str, old: str, new: str, window_from: int) -> str:
    """Create the promotion's watch run (once)."""
    st = rt.settings
    started = now_ms()
    data = {
        "skill": skill,
        "old": old,
        "new": new,
        "since": started,
        "until": started + int(st.review_watch_for * 1000),
        "runs": st.review_watch_runs,
        "old_from": window_from,
        "poll": st.review_watch_poll,
    }
    return rt.runs.create_if_absent(
        skill=WATCH_NAME,
        version=ensure_watch_builtin(rt),
        data=data,
        trusted=True,
        run_id=watch_run_id(skill, new),
    ).run_id


def promote(
    rt: Runtime,
    old: Candidate,
    proposal: Proposal,
    *,
    window_from: int,
    dry_run: bool = False,
) -> Promotion:
    """Submit (or roll back to) a candidate that passed the gate; start its watch when it is
    active at once. ``dry_run``: say what would happen, change nothing."""
    skill = old.manifest.name
    reg = Registry(rt.redis, rt.keys)
    mode = rt.settings.approval_mode
    if proposal.kind == "rollback":
        target = str(proposal.version)
        if dry_run:
            return Promotion("dry-run", f"would roll back to {target[:12]}", target)
        if mode == "review":
            return Promotion(
                "suggested",
                f"roll back with: loopwright skills rollback {skill} {target[:12]}",
                target,
            )
        reg.rollback(skill, target)
        watch = start_watch(rt, skill, str(old.version), target, window_from)
        return Promotion("rolled-back", f"rolled back to {target[:12]}", target, watch)
    if dry_run:
        return Promotion("dry-run", "would submit the candidate through the sidecar")
    tests: list[Any] = proposal.tests if proposal.tests is not None else []
    if proposal.tests is None and old.version:
        tests = list(reg.version(skill, old.version).tests or [])
    verdict = Sidecar(rt).submit(str(proposal.source), tests, author="review")
    if not verdict.accepted:
        return Promotion("rejected", f"the sidecar rejected it: {verdict.first_line()}")
    version = str(verdict.version)
    if verdict.registration == "pending":
        return Promotion(
            "pending",
            f"waiting for approval: loopwright skills approve {skill} {version[:12]}",
            version,
        )
    if verdict.status != "active" or reg.skill(skill).active != version:
        return Promotion(str(verdict.registration), verdict.summary, version)
    watch = start_watch(rt, skill, str(old.version), version, window_from)
    return Promotion("activated", f"active under watch (run {watch})", version, watch)


# ---- the watch (the built-in skill's body and its steps) ------------------------------------


def count_runs(
    rt: Runtime, skill: str, version: str, since: int, until: int | None
) -> dict[str, int]:
    """Ended runs of ``skill`` at ``version`` created in [since, until): completed and failed
    by the skill (platform failures and cancellations count for neither)."""
    hi = "+inf" if until is None else f"({until}"
    ids = rt.redis.zrevrangebyscore(rt.keys.runs_by_skill(skill), hi, since, start=0, num=SCAN_MAX)
    pipe = rt.redis.pipeline(transaction=False)
    for run_id in ids:
        pipe.hmget(rt.keys.run(str(run_id)), "version", "status", "origin")
    out = {"completed": 0, "failed": 0}
    for ver, status, origin in pipe.execute():
        if ver != version:
            continue
        if status == "completed":
            out["completed"] += 1
        elif status == "failed" and (origin or "skill") != "platform":
            out["failed"] += 1
    return out


def decide(rt: Runtime, data: dict[str, Any]) -> dict[str, Any]:
    """Compare the new version's runs with the old one's; roll back when clearly worse."""
    skill, old, new = str(data["skill"]), str(data["old"]), str(data["new"])
    now = now_ms()
    got = count_runs(rt, skill, new, int(data["since"]), None)
    before = count_runs(rt, skill, old, int(data["old_from"]), int(data["since"]))
    n_new, n_old = got["completed"] + got["failed"], before["completed"] + before["failed"]
    new_ci, old_ci = wilson(got["completed"], n_new), wilson(before["completed"], n_old)
    out: dict[str, Any] = {"new": got, "old": before, "new_ci": new_ci, "old_ci": old_ci}
    if new_ci is None or old_ci is None or new_ci[1] >= old_ci[0]:
        out["action"] = "kept"
        return out
    reg = Registry(rt.redis, rt.keys)
    if reg.skill(skill).active != new:
        out["action"] = "superseded"  # someone changed the active version meanwhile
        return out
    reg.rollback(skill, old)
    out["action"] = "rolled-back"
    out["at"] = now
    return out


def run_watch(ctx: Any) -> dict[str, Any]:
    """The built-in watch skill's body: count, sleep, count... then decide (each a step)."""
    from loopwright.runner.execute import current_runtime

    rt = current_runtime()
    data = dict(ctx.event["data"])
    i = 0
    while True:
        seen = ctx.step.run(
            f"count-{i}",
            lambda: {**count_runs(rt, data["skill"], data["new"], data["since"], None),
                     "now": now_ms()},
        )  # fmt: skip
        if seen["completed"] + seen["failed"] >= data["runs"] or seen["now"] >= data["until"]:
            break
        ctx.step.sleep(f"wait-{i}", float(data["poll"]))
        i += 1
    result = ctx.step.run("decide", decide, rt, data)
    if result["action"] == "rolled-back":
        lo, hi = result["new_ci"]
        olo, ohi = result["old_ci"]
        ctx.step.run(
            "tell",
            lambda: ctx.tools.notify(
                f"{data['skill']}: version {data['new'][:12]} promoted by the weekly review "
                f"succeeded in {result['new']['completed']} of "
                f"{result['new']['completed'] + result['new']['failed']} runs "
                f"(95% CI {lo:.0%}-{hi:.0%}) against {olo:.0%}-{ohi:.0%} before; rolled back "
                f"to {data['old'][:12]}",
                title=f"weekly review: rolled back {data['skill']}",
                level="warning",
            ),
        )
    return dict(result)
