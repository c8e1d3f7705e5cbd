"""The orchestration SDK as tools: what the builder agent (and any MCP client) can do.

Every tool has a pydantic model for its arguments; the JSON schema the model sees is generated
from it once, deterministically, so the tool definitions stay byte-identical across requests
(the provider's prompt-prefix cache depends on it). A call never raises for bad input: wrong
arguments, unknown skills or a rejected submission come back as a :class:`ToolResult` with
``ok=False`` and a message written for the model to act on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from redis.exceptions import RedisError

from loopwright.agent.guards import (
    hosts_of,
    placeholders,
    private_allowed,
    refusal_text,
    refusals,
)
from loopwright.agent.reference import SDK_REFERENCE
from loopwright.errors import InfrastructureError, LoopwrightError, NotFoundError
from loopwright.llm.types import ToolSpec
from loopwright.runner.runtime import Runtime
from loopwright.sdk.manifest import manifest_or_none
from loopwright.sdk.manifest_model import ParamSpec
from loopwright.sdk.names import RESERVED_NAMES, is_reserved
from loopwright.sidecar.verdict import Verdict
from loopwright.skills_registry.declaration import derive, literal
from loopwright.skills_registry.diff import diff_refs
from loopwright.skills_registry.store import Registry

log = logging.getLogger(__name__)

BUILTIN_SKILLS = RESERVED_NAMES  # the agent neither lists, changes nor runs them
MAX_WAIT_S = 300.0
DIFF_MAX_CHARS = 6000


def delete_skill(registry: Registry, name: str) -> dict[str, Any]:
    """Delete a skill through the service layer (``skills delete``): its versions, triggers,
    approvals and state are purged, its run history kept; refused while runs are in flight."""
    from loopwright.service.skills import delete_skill as purge

    done = purge(registry.redis, registry.keys, name)
    return {**done.model_dump(), "note": "deleted: its versions and triggers are gone; its run "
            "history stays"}  # fmt: skip


class SidecarPort(Protocol):
    """What the tools need from the sidecar: the in-process pipeline or the HTTP client."""

    def submit(
        self, source: str, tests: str | list[Any] | None, author: str = ..., *, dry_run: bool = ...
    ) -> Verdict: ...


class LocalSidecar:
    """The sidecar pipeline in this process (when no ``sidecar_url`` is configured)."""

    def __init__(self, runtime: Runtime) -> None:
        from loopwright.sidecar.pipeline import Sidecar

        self._sidecar = Sidecar(runtime)

    def submit(
        self,
        source: str,
        tests: str | list[Any] | None,
        author: str = "agent",
        *,
        dry_run: bool = False,
    ) -> Verdict:
        return self._sidecar.submit(source, tests, author=author, dry_run=dry_run)


def make_sidecar(runtime: Runtime) -> SidecarPort:
    """The sidecar service at ``sidecar_url`` when set, else the pipeline in-process."""
    s = runtime.settings
    if s.sidecar_url:
        from loopwright.auth.local import sidecar_credential
        from loopwright.sidecar.client import SidecarClient

        token = sidecar_credential(runtime.redis, runtime.keys, s, "agent")
        return SidecarClient(s.sidecar_url, token=token)
    return LocalSidecar(runtime)


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NoArgs(_Args):
    pass


class ReadSkillArgs(_Args):
    name: str = Field(min_length=1, max_length=64, description="Skill name.")
    version: str | None = Field(
        default=None, max_length=64, description="Version id or prefix; default the active one."
    )


class WriteSkillArgs(_Args):
    source: str = Field(
        min_length=1, max_length=256 * 1024, description="The whole Python module of the skill."
    )
    tests: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=50,
        description="Test cases (see sdk_reference): at least the main path with mocks.",
    )
    edit: bool = Field(
        default=False,
        description="True when this changes an existing skill the person named (not one "
        "written in this session); without it an existing name is refused.",
    )
    base_version: str | None = Field(
        default=None,
        max_length=64,
        description="The version this edit was made from (read_skill); refused when stale.",
    )
    placeholder_ok: bool = Field(
        default=False,
        description="True only when the person asked for a placeholder host (example.com...); "
        "say so in the answer.",
    )


class RunSkillArgs(_Args):
    name: str = Field(min_length=1, max_length=64)
    data: dict[str, Any] = Field(default_factory=dict, description="The event data.")
    wait: bool = Field(default=True, description="Wait for the run to end.")
    timeout: float = Field(default=60.0, gt=0, le=MAX_WAIT_S, description="Seconds to wait.")


class ListRunsArgs(_Args):
    skill: str | None = Field(default=None, max_length=64)
    status: str | None = Field(default=None, max_length=16)
    limit: int = Field(default=20, ge=1, le=100)


class GetRunArgs(_Args):
    run_id: str = Field(min_length=1, max_length=64)


class SendEventArgs(_Args):
    name: str = Field(min_length=1, max_length=128, description="Event name, e.g. order.created")
    data: dict[str, Any] = Field(default_factory=dict)
    id: str | None = Field(default=None, max_length=200, description="Dedupe id.")


class NameArgs(_Args):
    name: str = Field(min_length=1, max_length=64)


class ScheduleArgs(_Args):
    name: str = Field(min_length=1, max_length=64)
    cron: str | None = Field(
        default=None, max_length=120, description='Cron expression, e.g. "*/10 * * * *".'
    )
    every: str | None = Field(
        default=None, max_length=32, description='A fixed interval instead, e.g. "90m".'
    )
    tz: str | None = Field(
        default=None, max_length=64, description='IANA timezone of the cron, e.g. "Europe/Paris".'
    )


class ParamsArgs(_Args):
    name: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(
        min_length=1, description="New values of declared params, by name."
    )


class RollbackArgs(_Args):
    name: str = Field(min_length=1, max_length=64)
    version: str = Field(min_length=4, max_length=64, description="Version id or unique prefix.")


@dataclass(slots=True)
class ToolResult:
    """The outcome of one call: ``content`` is what the model reads (JSON text, capped)."""

    ok: bool
    content: str
    data: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "content": self.content, "data": self.data}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToolResult:
        return cls(ok=bool(d["ok"]), content=str(d["content"]), data=d.get("data"))


@dataclass(frozen=True, slots=True)
class _Tool:
    name: str
    description: str
    args: type[_Args]
    fn: Callable[[Any, str | None], Any]


def _dump(value: Any, limit: int) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str, sort_keys=False)
    if len(text) > limit:
        text = text[: limit - 60] + f"... [truncated {len(text) - limit + 60} chars]"
    return text


def verdict_view(v: Verdict) -> dict[str, Any]:
    """What the model needs from a verdict: the outcome, findings with hints, failing cases."""
    view: dict[str, Any] = {
        "accepted": v.accepted,
        "name": v.name,
        "version": v.version,
        "summary": v.summary if v.accepted else v.first_line(),
    }
    if v.accepted:
        view.update(status=v.status, registration=v.registration, next_fires=v.next_fires)
        if v.warnings:
            view["warnings"] = [w.one_line() for w in v.warnings]
        if v.replay is not None:  # advisory: behaviour on recorded runs, shown to the person
            view["replay"] = v.replay.line()
    else:
        view["stage"] = v.stage
        view["findings"] = [f.to_dict() for f in v.findings]
        failing = [c for c in v.cases if not c.passed]
        if failing:
            view["failing_cases"] = [
                {"name": c.name, "status": c.status, "problems": c.problems, "error": c.error}
                for c in failing
            ]
    return view


def derived_run_id(key: str) -> str:
    """A run id derived from an idempotency key: a replayed tool call finds its run again."""
    return hashlib.sha256(key.encode()).hexdigest()[:20]


class ToolBox:
    """The builder's tools bound to a runtime and a sidecar."""

    def __init__(self, runtime: Runtime, sidecar: SidecarPort, *, author: str = "agent") -> None:
        self.rt = runtime
        self.sidecar = sidecar
        self.author = author
        self.registry = Registry(runtime.redis, runtime.keys)
        self.max_chars = runtime.settings.agent_tool_result_max_chars
        # Skills this session wrote: writing them again needs no edit flag. The agent loop sets
        # it from the session's ledger before each call; the toolbox adds what it registers.
        self.session_skills: set[str] = set()
        tools = [
            _Tool("sdk_reference", "The skill SDK, sandbox rules and test-case format. "
                  "Read it before writing a skill.", NoArgs, self._sdk_reference),
            _Tool("list_skills", "Registered skills: name, status, active version, trigger.",
                  NoArgs, self._list_skills),
            _Tool("read_skill", "Source, test cases and manifest of a skill version.",
                  ReadSkillArgs, self._read_skill),
            _Tool("write_skill", "Submit a skill with its test cases to the sidecar: it is "
                  "validated, tested in the sandbox and registered when accepted. A rejection "
                  "lists findings with hints.", WriteSkillArgs, self._write_skill),
            _Tool("test_skill", "Validate and run a skill's test cases without registering it.",
                  WriteSkillArgs, self._test_skill),
            _Tool("run_skill", "Start a run of a registered skill (sandboxed) and optionally "
                  "wait for its result.", RunSkillArgs, self._run_skill),
            _Tool("list_runs", "Recent runs, newest first.", ListRunsArgs, self._list_runs),
            _Tool("get_run", "One run with its steps and logs.", GetRunArgs, self._get_run),
            _Tool("send_event", "Send an event; skills triggered by it start.", SendEventArgs,
                  self._send_event),
            _Tool("pause_skill", "Pause a skill: its triggers stop starting runs.", NameArgs,
                  self._pause_skill),
            _Tool("rollback_skill", "Make an earlier version of a skill the active one.",
                  RollbackArgs, self._rollback_skill),
            _Tool("resume_skill", "Resume a paused skill: its triggers start runs again.",
                  NameArgs, self._resume_skill),
            _Tool("delete_skill", "Take a skill out of service for good (its history stays). "
                  "Only when the person asked to delete it.", NameArgs, self._delete_skill),
            _Tool("set_schedule", "Change when a skill runs (cron with optional tz, or every): "
                  "a new version derived from the active one, nothing else changed.",
                  ScheduleArgs, self._set_schedule),
            _Tool("set_params", "Change declared params' values: a new version derived from "
                  "the active one, nothing else changed.", ParamsArgs, self._set_params),
        ]  # fmt: skip
        self._tools = {t.name: t for t in tools}
        self._specs = [ToolSpec(t.name, t.description, _schema(t.args)) for t in tools]

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def specs(self) -> list[ToolSpec]:
        """The tool definitions, identical on every call."""
        return list(self._specs)

    def call(self, name: str, arguments: Any, key: str | None = None) -> ToolResult:
        """Run tool ``name``; ``key`` makes effects idempotent when a step is replayed.

        Mistakes (bad arguments, unknown names, rejections) come back as a result; an outage
        (Redis, the sidecar service) raises ``InfrastructureError``/``RedisError`` so a durable
        step retries it instead of blaming the model.
        """
        tool = self._tools.get(name)
        if tool is None:
            return ToolResult(
                False, f"unknown tool {str(name)[:80]!r}; the tools are: {', '.join(self._tools)}"
            )
        if not isinstance(arguments, dict):
            return ToolResult(False, f"{name}: arguments must be a JSON object")
        try:
            args = tool.args.model_validate(arguments)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}"
                for e in exc.errors()[:10]
            )
            return ToolResult(False, f"invalid arguments for {name}: {problems}")
        try:
            out = tool.fn(args, key)
        except (InfrastructureError, RedisError):
            raise  # transient: the caller's step retries it (the model cannot fix an outage)
        except LoopwrightError as exc:
            return ToolResult(False, f"{name} failed: {exc}")
        if isinstance(out, ToolResult):
            return out
        return ToolResult(True, _dump(out, self.max_chars), out)

    # The tools.

    def _sdk_reference(self, args: NoArgs, key: str | None) -> ToolResult:
        return ToolResult(True, SDK_REFERENCE)

    def _list_skills(self, args: NoArgs, key: str | None) -> list[dict[str, Any]]:
        out = []
        for rec in self.registry.skills():
            if is_reserved(rec.name):
                continue
            item: dict[str, Any] = {
                "name": rec.name,
                "status": rec.status,
                "active": rec.active,
                "versions": rec.versions,
            }
            if rec.active:
                manifest = self.registry.version(rec.name, rec.active).manifest or {}
                item["description"] = manifest.get("description", "")
                item["trigger"] = manifest.get("trigger")
            out.append(item)
        return out

    def _read_skill(self, args: ReadSkillArgs, key: str | None) -> dict[str, Any]:
        v = self.registry.version(args.name, args.version)
        return {
            "name": v.name,
            "version": v.version,
            "author": v.author,
            "source": self.registry.source(v.version),
            "tests": v.tests,
            "manifest": v.manifest,
        }

    def _submit(self, args: WriteSkillArgs, dry_run: bool) -> ToolResult:
        manifest = manifest_or_none(args.source)
        hosts = hosts_of(args.source, manifest.http_allow if manifest else [])
        refused = refusals(hosts, private_ok=private_allowed(self.rt.settings))
        if refused:
            return ToolResult(False, refusal_text(refused))
        found = placeholders(hosts)
        if found and not args.placeholder_ok and not dry_run:
            return ToolResult(
                False,
                f"refused: the skill points at placeholder host(s) {', '.join(found)}, not a "
                "real service, so it would fail on every run. Use the URL the person gave; if "
                "they gave none, ask them for it instead of inventing one. Only if they asked "
                "for a placeholder, call again with placeholder_ok: true and say so loudly.",
            )
        previous: str | None = None
        if manifest is not None and not dry_run:
            checked = self._may_write(manifest.name, args)
            if isinstance(checked, ToolResult):
                return checked
            previous = checked
        # The sidecar refuses reserved names before registering anything (stage manifest).
        verdict = self.sidecar.submit(args.source, args.tests, self.author, dry_run=dry_run)
        view = verdict_view(verdict)
        if verdict.accepted and not dry_run and verdict.name:
            self.session_skills.add(verdict.name)
            self._add_diff(view, verdict.name, previous, verdict.version)
            if found:
                view["placeholder_hosts"] = found
        return ToolResult(verdict.accepted, _dump(view, self.max_chars), view)

    def _may_write(self, name: str, args: WriteSkillArgs) -> str | ToolResult | None:
        """The active version a write replaces (None for a new skill), or the refusal of an
        overwrite: an existing skill not written in this session needs ``edit``/``base_version``,
        and a ``base_version`` that is no longer the active one is stale."""
        try:
            rec = self.registry.skill(name)
        except NotFoundError:
            if args.edit or args.base_version:
                return ToolResult(
                    False,
                    f"there is no skill {name!r} to edit; to create it, drop edit/base_version",
                )
            return None
        ids = self.registry.version_ids(name)
        current = rec.active or (ids[-1] if ids else None)
        if args.base_version:
            try:
                base = self.registry.version_for_ref(name, args.base_version)
            except LoopwrightError as exc:
                return ToolResult(False, f"write_skill failed: {exc}")
            if base != current:
                return ToolResult(
                    False,
                    f"refused: base_version {args.base_version} is stale; {name}'s active version "
                    f"is now {str(current)[:12]}. read_skill {name} and redo the change on it.",
                )
        elif not args.edit and name not in self.session_skills:
            described = ""
            if current:
                manifest = self.registry.version(name, current).manifest or {}
                described = f", {str(manifest.get('description', ''))[:120]!r}"
            return ToolResult(
                False,
                f"refused: skill {name!r} already exists ({rec.status}, active version "
                f"{str(current)[:12]}, owner {rec.owner}{described}) and was not written in "
                "this session, so writing it would overwrite it. If the person asked to change "
                f"{name}, read_skill it and call write_skill with edit: true and base_version; "
                "for pause, resume, delete, schedule or params use those tools; otherwise pick "
                "another name.",
            )
        return current

    def _add_diff(
        self, view: dict[str, Any], name: str, previous: str | None, new: str | None
    ) -> None:
        """Put what an edit changed (code and manifest) into the tool result."""
        if not previous or not new or previous == new:
            return
        d = diff_refs(self.registry, name, previous, new)
        source_diff = d.source_diff
        if len(source_diff) > DIFF_MAX_CHARS:
            source_diff = source_diff[:DIFF_MAX_CHARS] + "\n... (diff truncated)\n"
        view["diff"] = {
            "from": previous,
            "to": new,
            "summary": d.summary(),
            "manifest": d.manifest,
            "source": source_diff,
        }

    def _write_skill(self, args: WriteSkillArgs, key: str | None) -> ToolResult:
        return self._submit(args, dry_run=False)

    def _test_skill(self, args: WriteSkillArgs, key: str | None) -> ToolResult:
        return self._submit(args, dry_run=True)

    def _guard(self, name: str) -> None:
        if is_reserved(name):
            raise LoopwrightError(f"{name!r} is built in; the agent cannot change or run it")

    def _run_skill(self, args: RunSkillArgs, key: str | None) -> dict[str, Any]:
        self._guard(args.name)
        rt = self.rt
        run_id = derived_run_id(key) if key else None
        if run_id is None or not rt.runs.exists(run_id):
            version = rt.sources.resolve(args.name)
            run_id = rt.runs.create_if_absent(
                skill=args.name, version=version, data=args.data, run_id=run_id
            ).run_id
        if not args.wait:
            return {"run_id": run_id, "status": rt.runs.get(run_id).status.value}
        run = rt.runs.wait(run_id, timeout=args.timeout)
        out: dict[str, Any] = {"run_id": run_id, "status": run.status.value}
        if run.status.value == "completed":
            out["output"] = run.output
        elif run.error:
            out["error"] = run.error
        if not run.status.terminal:
            out["note"] = (
                f"still {run.status.value} after {args.timeout:g}s; check later with get_run "
                "(is a worker running?)"
            )
        return out

    def _list_runs(self, args: ListRunsArgs, key: str | None) -> list[dict[str, Any]]:
        from loopwright.service.queries import RunFilter, collect_runs

        flt = RunFilter(skill=args.skill, status=args.status)
        runs = collect_runs(self.rt.redis, self.rt.keys, flt, args.limit)
        return [
            {
                "run_id": r.id,
                "skill": r.skill,
                "version": r.version[:12],
                "status": r.status.value,
                "created_at": r.created_at,
                "error": (r.error or "")[:300] or None,
            }
            for r in runs
            if not is_reserved(r.skill)
        ]

    def _get_run(self, args: GetRunArgs, key: str | None) -> dict[str, Any]:
        run = self.rt.runs.get(args.run_id)
        return {
            "run_id": run.id,
            "skill": run.skill,
            "version": run.version,
            "status": run.status.value,
            "output": run.output,
            "error": run.error,
            "attempts": run.attempts,
            "steps": [
                {"name": s.name, "status": s.status, "attempts": s.attempts, "error": s.error}
                for s in self.rt.runs.steps(run.id)
            ],
            "logs": self.rt.runs.logs(run.id)[-20:],
        }

    def _send_event(self, args: SendEventArgs, key: str | None) -> dict[str, Any]:
        eid = args.id or (derived_run_id(key) if key else None)
        sent = self.rt.bus.send(args.name, args.data, event_id=eid)
        return {"event_id": sent.id, "accepted": sent.accepted}

    def _pause_skill(self, args: NameArgs, key: str | None) -> dict[str, Any]:
        self._guard(args.name)
        return self.registry.pause(args.name).model_dump()

    def _rollback_skill(self, args: RollbackArgs, key: str | None) -> dict[str, Any]:
        self._guard(args.name)
        return self.registry.rollback(args.name, args.version).model_dump()

    def _resume_skill(self, args: NameArgs, key: str | None) -> dict[str, Any]:
        self._guard(args.name)
        return self.registry.resume(args.name).model_dump()

    def _delete_skill(self, args: NameArgs, key: str | None) -> dict[str, Any]:
        self._guard(args.name)
        return delete_skill(self.registry, args.name)

    def _derive(self, name: str, keyword: str, text: str, imports: tuple[str, ...]) -> ToolResult:
        """Submit the active version of ``name`` with one declaration argument changed."""
        self._guard(name)
        rec = self.registry.skill(name)
        if not rec.active:
            raise LoopwrightError(f"{name!r} has no active version to change")
        current = self.registry.version(name, rec.active)
        source = derive(self.registry.source(current.version), keyword, text, imports)
        verdict = self.sidecar.submit(source, current.tests, self.author)
        view = verdict_view(verdict)
        if verdict.accepted:
            self._add_diff(view, name, current.version, verdict.version)
        return ToolResult(verdict.accepted, _dump(view, self.max_chars), view)

    def _set_schedule(self, args: ScheduleArgs, key: str | None) -> ToolResult:
        if (args.cron is None) == (args.every is None):
            return ToolResult(False, "set_schedule: give exactly one of cron or every")
        if args.every is not None:
            if args.tz is not None:
                return ToolResult(False, "set_schedule: tz applies to cron only, not every")
            return self._derive(args.name, "trigger", f"every({args.every!r})", ("every",))
        tz = f", tz={args.tz!r}" if args.tz else ""
        return self._derive(args.name, "trigger", f"cron({args.cron!r}{tz})", ("cron",))

    def _set_params(self, args: ParamsArgs, key: str | None) -> ToolResult:
        self._guard(args.name)
        rec = self.registry.skill(args.name)
        manifest = self.registry.version(args.name, rec.active).manifest if rec.active else None
        declared: dict[str, Any] = (manifest or {}).get("params") or {}
        unknown = sorted(set(args.params) - set(declared))
        if unknown:
            return ToolResult(
                False,
                f"set_params: {args.name} declares no param {', '.join(unknown)}; its params "
                f"are {sorted(declared) or 'none'} (a new param needs a code change: write_skill "
                "with edit: true)",
            )
        values = {k: (v or {}).get("default") for k, v in declared.items()}
        for k, v in args.params.items():
            why = ParamSpec.model_validate(declared[k]).accepts(v)
            if why:
                return ToolResult(False, f"set_params: {k}: {why}")
            values[k] = v
        return self._derive(args.name, "params", literal(values), ())


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    """A compact, deterministic JSON schema (no titles) for a tool's arguments."""
    schema = model.model_json_schema()

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: strip(v) for k, v in node.items() if k != "title"}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    out: dict[str, Any] = strip(schema)
    out.setdefault("properties", {})
    return out


def make_toolbox(runtime: Runtime, author: str = "agent") -> ToolBox:
    """The toolbox with the configured sidecar."""
    return ToolBox(runtime, make_sidecar(runtime), author=author)
