"""The MCP server's tools: the builder's toolbox plus the run operations and reads the HTTP API
offers (retry, rerun, cancel, bulk cancel, feedback, pins, versions, diff, stats, schedules,
recent events).

Each added tool is a thin call into the service function the API route calls
(``service.operations.retry``/``rerun``/``cancel_many``, ``RunService``,
``service.schedules``, ``service.stats``, the registry), so validation and errors are the
same; the arguments are capped like the API's bodies. Every action that changes something is
written to the audit log as the API writes it (same action names), with ``via: "mcp"`` and
the principal ``agent:mcp`` (the MCP transport has one static bearer, not platform tokens).

What MCP deliberately does not offer: approving a version (the approval gate is a person's
decision; an agent token cannot approve either, see docs/security.md) and the built-in skills
(the toolbox's rule: the agent neither lists, changes nor runs them).

Results are JSON documents (:func:`bounded_json`): run outputs, errors, logs and step names
come from skills and are returned as values, never spliced into text, and an oversized
result stays valid JSON, its long strings and lists cut with a visible marker.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field

from loopwright.agent.tools import (
    NoArgs,
    ToolBox,
    ToolResult,
    _Args,
    _schema,
    _Tool,
    make_sidecar,
)
from loopwright.auth.audit import AuditLog
from loopwright.auth.tokens import Principal
from loopwright.errors import UserError
from loopwright.llm.types import ToolSpec
from loopwright.runner.runtime import Runtime
from loopwright.sdk.names import is_reserved

# Who MCP callers are in the audit log and on feedback: an agent (the toolbox's author).
MCP_PRINCIPAL = Principal(token_id="mcp", name="mcp", scopes=frozenset({"operate"}), author="agent")
VIA = "mcp"
MAX_WAIT_S = 300.0
RUN_ID_MAX = 100  # as the API's run-id check
EVENTS_MAX = 100


class RunIdArgs(_Args):
    run_id: str = Field(min_length=1, max_length=RUN_ID_MAX, description="Full run id.")


class WaitArgs(RunIdArgs):
    wait: bool = Field(default=False, description="Wait for the run to end.")
    timeout: float = Field(default=60.0, gt=0, le=MAX_WAIT_S, description="Seconds to wait.")


class RerunArgs(WaitArgs):
    data: dict[str, Any] | None = Field(
        default=None, description="New event data; default the old run's input."
    )
    version: str | None = Field(
        default=None,
        min_length=4,
        max_length=80,
        description="Version id or unique prefix (list_versions); default the old run's.",
    )
    from_step: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Reuse the old run's checkpoints before this step; execute from it.",
    )


class CancelRunsArgs(_Args):
    skill: str = Field(min_length=1, max_length=200)
    status: str | None = Field(
        default=None, max_length=16, description="queued, running, sleeping or waiting."
    )
    dry_run: bool = Field(
        default=True, description="Count only (the default): lists the ids that would go."
    )
    only: list[str] | None = Field(
        default=None,
        max_length=10_000,
        description="With dry_run false, required: the ids a dry run listed (a run that "
        "arrived since is left alone).",
    )


class FeedbackArgs(RunIdArgs):
    good: bool
    note: str | None = Field(default=None, max_length=2000)


class SkillArgs(_Args):
    name: str = Field(min_length=1, max_length=200)


class DiffArgs(SkillArgs):
    a: str = Field(min_length=4, max_length=80, description="Version id or unique prefix.")
    b: str = Field(min_length=4, max_length=80, description="Version id or unique prefix.")


class StatsArgs(SkillArgs):
    window: str = Field(default="7d", max_length=16, description="Days, e.g. 7d or 30d.")
    by: str | None = Field(default=None, max_length=16, description="version or day.")


class ScheduleGetArgs(SkillArgs):
    limit: int = Field(default=20, ge=1, le=200, description="Ledger entries, newest first.")


class EventsArgs(_Args):
    limit: int = Field(default=20, ge=1, le=EVENTS_MAX)


class McpToolBox(ToolBox):
    """The toolbox with the API's run operations and reads added, audited as ``agent:mcp``."""

    def __init__(self, runtime: Runtime, *, who: Principal = MCP_PRINCIPAL) -> None:
        super().__init__(runtime, make_sidecar(runtime), author="agent")
        self.who = who
        self.audit = AuditLog(runtime.redis, runtime.keys)
        added = [
            _Tool("retry_run", "Run a failed or cancelled run again under the same id, from its "
                  "first unfinished step (finished steps are not executed again).", WaitArgs,
                  self._retry_run),
            _Tool("rerun_run", "Start a new run from an old one (linked to it): same or edited "
                  "input (data), this or another version, optionally reusing the checkpoints "
                  "before from_step.", RerunArgs, self._rerun_run),
            _Tool("cancel_run", "Cancel one unfinished run and its children.", RunIdArgs,
                  self._cancel_run),
            _Tool("cancel_runs", "Cancel a skill's unfinished runs (optionally in one status). "
                  "Count first: dry_run (the default) lists the ids; then call with dry_run "
                  "false and only set to those ids.", CancelRunsArgs, self._cancel_runs),
            _Tool("feedback_run", "Label a run good or bad (with a note); pins it.",
                  FeedbackArgs, self._feedback_run),
            _Tool("pin_run", "Keep a run past retention.", RunIdArgs, self._pin_run),
            _Tool("unpin_run", "Release a run's pin.", RunIdArgs, self._unpin_run),
            _Tool("list_versions", "A skill's versions, oldest first, with author and state.",
                  SkillArgs, self._list_versions),
            _Tool("diff_versions", "What changed between two versions of a skill.", DiffArgs,
                  self._diff_versions),
            _Tool("skill_stats", "A skill's success rate, durations and error signatures over a "
                  "window.", StatsArgs, self._skill_stats),
            _Tool("list_schedules", "Every timed skill: its schedule in words and next fires.",
                  NoArgs, self._list_schedules),
            _Tool("get_schedule", "One timed skill's schedule with its occurrence ledger (each "
                  "tick: started, skipped or missed, and why).", ScheduleGetArgs,
                  self._get_schedule),
            _Tool("list_events", "Recent events, newest first.", EventsArgs, self._list_events),
        ]  # fmt: skip
        for tool in added:
            self._tools[tool.name] = tool
            self._specs.append(ToolSpec(tool.name, tool.description, _schema(tool.args)))

    def call(self, name: str, arguments: Any, key: str | None = None) -> ToolResult:
        """As :meth:`ToolBox.call`; the builder's own actions are audited here (the added
        tools audit themselves, as the API routes do)."""
        result = super().call(name, arguments, key)
        if isinstance(arguments, dict):
            self._audit_builder(name, arguments, result)
        return result

    # Auditing the builder's tools: the same action names as the API's routes.

    def _record(self, action: str, target: str, *, outcome: str = "ok", **detail: Any) -> None:
        self.audit.record(self.who, action, target, outcome=outcome, via=VIA, detail=detail)

    def _audit_builder(self, name: str, args: dict[str, Any], result: ToolResult) -> None:
        data = result.data if isinstance(result.data, dict) else None
        if data is None:
            return  # refused before anything happened (bad arguments, a guard, an error)
        target = str(args.get("name") or data.get("name") or "?")
        if name in ("write_skill", "test_skill", "set_schedule", "set_params"):
            if "accepted" not in data:
                return
            action = "skills.submit" if name.endswith("_skill") else f"skills.{name}"
            self._record(
                action,
                str(data.get("name") or target),
                outcome="accepted" if data["accepted"] else "rejected",
                version=data.get("version"),
                dry_run=name == "test_skill",
            )
        elif not result.ok:
            return
        elif name == "run_skill":
            self._record("runs.start", str(data.get("run_id")), skill=target)
        elif name == "send_event":
            self._record("events.send", target, id=data.get("event_id"))
        elif name in ("pause_skill", "resume_skill", "rollback_skill", "delete_skill"):
            verb = name.removesuffix("_skill")
            if verb == "rollback":
                self._record("skills.rollback", target, version=args.get("version"))
            else:
                self._record(f"skills.{verb}", target)

    # The added tools: each the API route's service call.

    def _run_of(self, run_id: str) -> str:
        """The run's skill, refusing a built-in one (``NotFoundError`` for an unknown run)."""
        run = self.rt.runs.get(run_id)
        self._guard(run.skill)
        return run.skill

    def _outcome(self, run_id: str, wait: bool, timeout: float) -> dict[str, Any]:
        run = self.rt.runs.wait(run_id, timeout=timeout) if wait else self.rt.runs.get(run_id)
        out: dict[str, Any] = {"run_id": run_id, "status": run.status.value}
        if run.status.value == "completed":
            out["output"] = run.output
        elif run.error:
            out["error"] = run.error
        if wait and not run.status.terminal:
            out["note"] = (
                f"still {run.status.value} after {timeout:g}s; check later with get_run "
                "(is a worker running?)"
            )
        return out

    def _retry_run(self, args: WaitArgs, key: str | None) -> dict[str, Any]:
        from loopwright.service.operations import retry

        self._run_of(args.run_id)
        done = retry(self.rt, args.run_id)
        self._record("runs.retry", args.run_id, from_seq=done.from_seq)
        out = {"from_seq": done.from_seq, "dropped_checkpoints": done.dropped}
        return {**out, **self._outcome(args.run_id, args.wait, args.timeout)}

    def _rerun_run(self, args: RerunArgs, key: str | None) -> dict[str, Any]:
        from loopwright.service.operations import rerun

        self._run_of(args.run_id)
        done = rerun(self.rt, args.run_id, args.data, args.version, args.from_step)
        self._record("runs.rerun", args.run_id, new=done.run_id)
        return {**done.to_dict(), **self._outcome(done.run_id, args.wait, args.timeout)}

    def _cancel_run(self, args: RunIdArgs, key: str | None) -> dict[str, Any]:
        self._run_of(args.run_id)
        cancelled = self.rt.runs.cancel(args.run_id)
        run = self.rt.runs.get(args.run_id)
        self._record("runs.cancel", args.run_id, cancelled=cancelled)
        return {"run_id": args.run_id, "status": run.status.value, "cancelled": cancelled}

    def _cancel_runs(self, args: CancelRunsArgs, key: str | None) -> dict[str, Any]:
        from loopwright.service.operations import cancel_many

        self._guard(args.skill)
        if not args.dry_run and args.only is None:
            raise UserError(
                "cancel_runs: count first: call with dry_run true, then with dry_run false and "
                "only set to the ids it listed (nothing was cancelled)"
            )
        done = cancel_many(self.rt, args.skill, args.status, dry_run=args.dry_run, only=args.only)
        if not args.dry_run:
            self._record(
                "runs.cancel_many", args.skill, status=args.status, cancelled=len(done.cancelled)
            )
        return done.to_dict()

    def _feedback_run(self, args: FeedbackArgs, key: str | None) -> dict[str, Any]:
        from loopwright.service.runs import RunService

        self._run_of(args.run_id)
        fb = RunService(self.rt.redis, self.rt.keys).feedback(
            args.run_id, args.good, args.note, self.who.identity
        )
        self._record("runs.feedback", args.run_id, good=args.good)
        return fb.to_dict()

    def _set_pin(self, run_id: str, pinned: bool) -> dict[str, Any]:
        from loopwright.service.runs import RunService

        self._run_of(run_id)
        service = RunService(self.rt.redis, self.rt.keys)
        (service.pin if pinned else service.unpin)(run_id)
        self._record("runs.pin" if pinned else "runs.unpin", run_id)
        return {"run_id": run_id, "pinned": pinned}

    def _pin_run(self, args: RunIdArgs, key: str | None) -> dict[str, Any]:
        return self._set_pin(args.run_id, True)

    def _unpin_run(self, args: RunIdArgs, key: str | None) -> dict[str, Any]:
        return self._set_pin(args.run_id, False)

    def _list_versions(self, args: SkillArgs, key: str | None) -> list[dict[str, Any]]:
        from loopwright.skills_registry.store import version_state

        self._guard(args.name)
        rec = self.registry.skill(args.name)
        return [
            {**v.model_dump(exclude={"tests", "manifest"}), "state": version_state(rec, v)}
            for v in self.registry.versions(args.name)
        ]

    def _diff_versions(self, args: DiffArgs, key: str | None) -> dict[str, Any]:
        from loopwright.skills_registry.diff import diff_refs

        self._guard(args.name)
        d = diff_refs(self.registry, args.name, args.a, args.b)
        return {**d.model_dump(), "summary": d.summary()}

    def _skill_stats(self, args: StatsArgs, key: str | None) -> dict[str, Any]:
        from loopwright.service.stats import skill_stats

        self._guard(args.name)
        return skill_stats(self.rt.redis, self.rt.keys, args.name, args.window, args.by).to_json()

    def _list_schedules(self, args: NoArgs, key: str | None) -> list[dict[str, Any]]:
        from loopwright.service.schedules import list_schedules

        return [
            s.to_json(with_ledger=False)
            for s in list_schedules(self.rt)
            if not is_reserved(s.skill)
        ]

    def _get_schedule(self, args: ScheduleGetArgs, key: str | None) -> dict[str, Any]:
        from loopwright.service.schedules import get_schedule

        self._guard(args.name)
        return get_schedule(self.rt, args.name, args.limit).to_json()

    def _list_events(self, args: EventsArgs, key: str | None) -> list[dict[str, Any]]:
        from loopwright.service.events import recent_events

        return recent_events(self.rt.redis, self.rt.keys, args.limit)


def bounded_json(value: Any, limit: int) -> str:
    """``value`` as JSON text of at most ``limit`` characters that still parses: strings
    longer than a cap end in ``… [truncated N chars]``, long lists and objects keep their
    first entries and say how many more there were; the cap halves until it fits."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= limit:
        return text
    cap = max(limit // 2, 64)
    while cap >= 16:
        shrunk = json.dumps(_shrink(value, cap), ensure_ascii=False, default=str)
        if len(shrunk) <= limit:
            return shrunk
        cap //= 2
    preview = text[: max(limit // 2 - 80, 0)]
    return json.dumps({"truncated": True, "chars": len(text), "preview": preview})


def _shrink(node: Any, cap: int) -> Any:
    items = max(3, cap // 32)
    if isinstance(node, str):
        if len(node) <= cap:
            return node
        return f"{node[:cap]}… [truncated {len(node) - cap} chars]"
    if isinstance(node, (list, tuple)):
        head = [_shrink(x, cap) for x in node[:items]]
        if len(node) > items:
            head.append(f"… [{len(node) - items} more items]")
        return head
    if isinstance(node, dict):
        out = {str(_shrink(str(k), cap)): _shrink(v, cap) for k, v in list(node.items())[:items]}
        if len(node) > items:
            out["…"] = f"[{len(node) - items} more keys]"
        return out
    return node


def result_text(result: ToolResult, limit: int) -> str:
    """What an MCP client reads: a result's data as bounded JSON; a failure as
    ``{"error": message}``; the SDK reference (platform text, no data) as it is."""
    if result.data is not None:
        return bounded_json(result.data, limit)
    if result.ok:
        return result.content
    return json.dumps({"error": result.content}, ensure_ascii=False)


def make_mcp_toolbox(runtime: Runtime) -> McpToolBox:
    """The MCP server's toolbox over ``runtime``."""
    return McpToolBox(runtime)
