"""Run operations a person reaches for when runs go wrong (issue 15): retry a run, rerun it as
a new run (same or edited input, this or another version, optionally reusing the checkpoints
before a step), and cancel many runs at once. The CLI is a thin shell over these; the MCP
server and the future API call the same functions, so each rule is written once.

* **retry** re-opens the same run: ``RunStore.retry`` (one script, ``RETRY_LUA``) keeps its
  finished checkpoints, drops the rest, moves the run out of its rollup bucket, advances the
  fence and queues it. A retry is not a new start: flow control's rate limit, debounce and
  idempotency do not apply (the run was admitted once), its concurrency limit does (the
  acquire takes a slot as for any queued run), and it does not charge its lineage budget (the
  steps it executes again charge it as usual, so a chain whose budget is spent fails again).
* **rerun** creates a new run linked to the old one (``rerun_of``), started by a person: a
  fresh event id and lineage, the old run's params and timeout, and its trust only on its own
  version (another version runs in the sandbox: trust was given to code, not to a skill).
  ``from_step`` copies the checkpoints of the steps before that step into the new run in its
  creation script (a fork, as DBOS does), so those steps replay and are not executed again.
* **cancel_many** cancels a skill's unfinished runs in one status; ``dry_run`` counts them.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

from loopwright.errors import NotFoundError, UserError
from loopwright.runner.lua import StaleDeclarationError
from loopwright.runner.records import Run, RunStatus
from loopwright.runner.runtime import Runtime
from loopwright.runner.store import Fork, Retried, new_run_id
from loopwright.skills_registry.store import Registry

UNFINISHED = (
    RunStatus.QUEUED.value,
    RunStatus.RUNNING.value,
    RunStatus.SLEEPING.value,
    RunStatus.WAITING.value,
)
SCAN_PAGE = 500


def retry(rt: Runtime, run_id: str) -> Retried:
    """Run a failed or cancelled run again from its first unfinished step (same run id); not
    while its skill is paused or retired (nothing of a paused skill starts)."""
    _refuse_stopped_skill(rt, rt.runs.get(run_id).skill)
    return rt.runs.retry(run_id)


def _refuse_stopped_skill(rt: Runtime, skill: str) -> None:
    """The registry's own error for a paused or retired skill (saying how to resume it)."""
    if rt.redis.hget(rt.keys.registry_skill(skill), "status") in ("paused", "retired"):
        raise Registry(rt.redis, rt.keys).not_runnable(skill)


@dataclass(frozen=True, slots=True)
class Rerun:
    """A new run made from an old one: its id, the version it runs, and the checkpoints it
    took over (``reused``: the old run's steps before ``from_step``)."""

    run_id: str
    rerun_of: str
    version: str
    from_step: str | None
    reused: int

    def to_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {
            "run_id": self.run_id,
            "rerun_of": self.rerun_of,
            "version": self.version,
            "from_step": self.from_step,
            "reused_steps": self.reused,
            "status": RunStatus.QUEUED.value,
        }


def rerun(
    rt: Runtime,
    run_id: str,
    data: Any = None,
    version: str | None = None,
    from_step: str | None = None,
) -> Rerun:
    """Start a new run of the old run's skill linked to it (see the module docstring).

    ``data`` replaces the input (``None``: the old run's), checked against the run input cap
    like any input; ``version`` is a registered version id or unique prefix (``None``: the old
    run's); ``from_step`` names the step the new run executes first."""
    old = rt.runs.get(run_id)
    registry = Registry(rt.redis, rt.keys)
    _refuse_stopped_skill(rt, old.skill)
    chosen = (
        old.version if version is None else registry.version_for_ref(old.skill, version.strip())
    )
    source, spec = rt.sources.declaration(chosen, old.skill)
    fork = None
    if from_step is not None:
        fork = _fork(rt, old, from_step, source if chosen != old.version else None, chosen)
    new_id = new_run_id()
    event_name = str(old.event.get("name") or "loopwright/manual")
    payload = old.event.get("data", {}) if data is None else data
    fields = {"rerun_of": old.id}
    if from_step is not None:
        fields["from_step"] = from_step
    try:
        rt.runs.create(
            run_id=new_id,
            skill=old.skill,
            version=chosen,
            data=payload,
            event_name=event_name,
            params=old.params,
            trigger={"type": "manual", "rerun_of": old.id},
            timeout=old.timeout,
            # Trust was given to the code the old run ran, never to another version.
            trusted=old.trusted and chosen == old.version,
            spec=spec,
            fields=fields,
            fork=fork,
        )
    except StaleDeclarationError:
        raise UserError(
            f"run {old.id} changed while its checkpoints were being copied (was it retried?); "
            "run the rerun again"
        ) from None
    return Rerun(new_id, old.id, chosen, from_step, len(fork.seqs) if fork else 0)


def _fork(rt: Runtime, old: Run, from_step: str, new_source: str | None, version: str) -> Fork:
    """The checkpoints before ``from_step`` that a rerun takes over; ``new_source`` is the
    version's source when it is not the old run's (its step names are checked)."""
    steps = rt.runs.steps(old.id)
    at = next((s for s in steps if s.name == from_step), None)
    if at is None:
        names = ", ".join(repr(s.name) for s in steps[:20]) or "none"
        raise UserError(
            f"run {old.id} never reached a step named {from_step!r} (its steps: {names})"
        )
    before = [s for s in steps if s.seq < at.seq]
    open_ = [s for s in before if s.status not in ("done", "failed")]
    if open_:
        raise UserError(
            f"step #{open_[0].seq} {open_[0].name!r} of run {old.id} did not finish "
            f"({open_[0].status}); rerun from it or an earlier step"
        )
    if new_source is not None:
        known = literal_step_names(new_source)
        missing = [s for s in before if known is not None and s.name not in known]
        if missing:
            raise UserError(
                f"version {version[:12]} has no step named {missing[0].name!r} (step "
                f"#{missing[0].seq} of run {old.id}, before {from_step!r}): its steps before "
                f"{from_step!r} differ, so their checkpoints cannot be reused (a replay would "
                "be non-deterministic); rerun without --from-step, or on the old version"
            )
    return Fork(old.id, tuple(s.seq for s in before), tuple(s.seq for s in before if s.ref))


def literal_step_names(source: str) -> set[str] | None:
    """The step names a skill's source gives as literals (``ctx.step.run("fetch", ...)``), read
    from its syntax tree; None when a step name is computed (then nothing can be said)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        if not (isinstance(owner, ast.Attribute) and owner.attr == "step"):
            continue
        first = node.args[0] if node.args else None
        if first is None:
            kw = next((k.value for k in node.keywords if k.arg == "name"), None)
            first = kw
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            names.add(first.value)
        else:
            return None
    return names


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What ``cancel_many`` did (or, in a dry run, would do): the runs that matched and the
    ids cancelled (children included)."""

    skill: str
    status: str | None
    matched: int
    cancelled: list[str]
    dry_run: bool
    ids: list[str]

    def to_dict(self) -> dict[str, Any]:
        """JSON view."""
        return {
            "skill": self.skill,
            "status": self.status,
            "matched": self.matched,
            "cancelled": self.cancelled,
            "dry_run": self.dry_run,
            "ids": self.ids,
        }


def matching_runs(rt: Runtime, skill: str, status: str | None) -> list[str]:
    """Ids of ``skill``'s unfinished runs (in ``status`` when given), oldest first, read from
    the skill's run index page by page."""
    if status is not None and status not in UNFINISHED:
        raise UserError(f"--status {status!r} cannot be cancelled; one of: {', '.join(UNFINISHED)}")
    wanted = {status} if status else set(UNFINISHED)
    index = rt.keys.runs_by_skill(skill)
    out: list[str] = []
    start = 0
    while True:
        ids = [str(x) for x in rt.redis.zrange(index, start, start + SCAN_PAGE - 1)]
        if not ids:
            return out
        start += len(ids)
        pipe = rt.redis.pipeline(transaction=False)
        for rid in ids:
            pipe.hget(rt.keys.run(rid), "status")
        out += [rid for rid, st in zip(ids, pipe.execute(), strict=True) if st in wanted]


def cancel_many(
    rt: Runtime,
    skill: str,
    status: str | None,
    *,
    dry_run: bool = False,
    only: list[str] | None = None,
) -> Cancelled:
    """Cancel every unfinished run of ``skill`` (in ``status`` when given) with its children;
    ``dry_run`` only counts them (``ids``: the runs that matched). ``only`` limits the cancel
    to runs counted before (the ones a person confirmed: a run that arrived since is left).
    Each cancel is its own script: a run that ended meanwhile is left as it ended."""
    if not rt.redis.exists(rt.keys.runs_by_skill(skill)) and not rt.redis.exists(
        rt.keys.registry_skill(skill)
    ):
        raise NotFoundError(f"unknown skill {skill!r} (list skills with: loopwright skills list)")
    ids = matching_runs(rt, skill, status)
    if only is not None:
        allowed = set(only)
        ids = [rid for rid in ids if rid in allowed]
    if dry_run:
        return Cancelled(skill, status, len(ids), [], True, ids)
    done: list[str] = []
    for rid in ids:
        done += rt.runs.cancel(rid, "cancelled by user (bulk cancel)")
    return Cancelled(skill, status, len(ids), done, False, ids)
