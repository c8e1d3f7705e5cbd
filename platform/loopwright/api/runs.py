"""``/api/v1/runs``: list with server-side filters and cursors, detail, steps, logs, recorded
calls, start, cancel, feedback and pins."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field

from loopwright.api.context import ApiContext
from loopwright.api.pagination import Cursor
from loopwright.auth.tokens import Principal
from loopwright.errors import NotFoundError, UserError
from loopwright.service.queries import RunFilter, find_runs
from loopwright.service.runs import RunService


class StartRun(BaseModel):
    """Start a run of a registered skill (its active version unless ``version`` is given)."""

    skill: str = Field(min_length=1, max_length=200)
    data: Any = None
    version: str | None = Field(default=None, max_length=80)
    timeout: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)


class RerunBody(BaseModel):
    """A new run from an old one: edited input, another version, reuse steps before one."""

    data: Any = None
    version: str | None = Field(default=None, max_length=80)
    from_step: str | None = Field(default=None, min_length=1, max_length=200)


class BulkCancel(BaseModel):
    """Cancel a skill's unfinished runs (in one status); ``dry_run`` counts them first and
    ``only`` limits the cancel to the runs a person saw counted."""

    skill: str = Field(min_length=1, max_length=200)
    status: str | None = None
    dry_run: bool = True
    only: list[str] | None = Field(default=None, max_length=10_000)


class FeedbackBody(BaseModel):
    """A person's label on a run."""

    good: bool
    note: str | None = Field(default=None, max_length=2000)


def parse_time(text: str | None, what: str) -> int | None:
    """Milliseconds since the epoch from ms digits, ISO-8601, or a duration ago (``2h``)."""
    if text is None:
        return None
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return int(dt.timestamp() * 1000)
    except ValueError:
        pass
    from loopwright.sdk.durations import parse_duration

    try:
        return int((time.time() - parse_duration(text)) * 1000)
    except ValueError:
        raise UserError(
            f"{what}: {text[:40]!r} is not a time (ms since epoch, ISO-8601, or a duration "
            "ago such as 2h)"
        ) from None


def run_view(run: Any) -> dict[str, Any]:
    """A run as the API shows it: the record, its labels and pin."""
    labels = {f: run.raw.get(f) for f in ("feedback", "feedback_note", "feedback_by")}
    extra = {
        "origin": run.raw.get("origin"),
        "signature": run.raw.get("sig"),
        "pinned": run.raw.get("pinned") == "1",
    }
    return {**run.to_dict(), **labels, **extra}


def router(ctx: ApiContext) -> APIRouter:
    """The runs routes."""
    r = APIRouter(prefix="/api/v1/runs", tags=["runs"])
    rt = ctx.rt
    read, operate = ctx.need("read"), ctx.need("operate")

    @r.get("", dependencies=[read])
    def list_runs(
        skill: str | None = None,
        version: str | None = None,
        status: str | None = None,
        trigger: str | None = None,
        since: str | None = None,
        until: str | None = None,
        signature: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        flt = RunFilter(
            skill=skill,
            version=version,
            status=status,
            trigger=trigger,
            since_ms=parse_time(since, "since"),
            until_ms=parse_time(until, "until"),
            signature=signature,
        )
        after = None
        if cursor is not None:
            c = Cursor.decode(cursor)
            after = (c.score, c.member)
        page = find_runs(rt.redis, rt.keys, flt, limit=limit, after=after)
        nxt = Cursor(*page.next_cursor).encode() if page.next_cursor else None
        return {
            "items": [run_view(x) for x in page.runs],
            "next_cursor": nxt,
            "scanned": page.scanned,
            "complete": page.exhausted,
        }

    @r.get("/{run_id}", dependencies=[read])
    def get_run(run_id: str) -> dict[str, Any]:
        run = rt.runs.get(_checked_id(run_id))
        children = sorted(str(c) for c in rt.redis.smembers(rt.keys.children(run.id)))
        return {**run_view(run), "children": children}

    @r.get("/{run_id}/steps", dependencies=[read])
    def steps(run_id: str) -> list[dict[str, Any]]:
        rt.runs.get(_checked_id(run_id))
        return [s.to_dict() for s in rt.runs.steps(run_id)]

    @r.get("/{run_id}/logs", dependencies=[read])
    def logs(run_id: str) -> list[dict[str, Any]]:
        rt.runs.get(_checked_id(run_id))
        return rt.runs.logs(run_id)

    @r.get("/{run_id}/calls", dependencies=[read])
    def calls(run_id: str) -> dict[str, Any]:
        from loopwright.runner.recording import load_recording

        rt.runs.get(_checked_id(run_id))
        rec = load_recording(rt.redis, rt.keys, run_id)
        if rec is None:
            return {"run_id": run_id, "recording": "none", "calls": []}
        return {"run_id": run_id, "recording": rec.state, "calls": rec.calls}

    @r.post("", status_code=202)
    def start(
        body: StartRun,
        idempotency_key: Annotated[str | None, Header()] = None,
        who: Principal = operate,
    ) -> Any:
        def action() -> tuple[int, Any]:
            if body.version is None:
                version = rt.sources.resolve(body.skill)
            else:
                version = _version_of(ctx, body.skill, body.version)
            run_id = rt.runs.create(
                skill=body.skill, version=version, data=body.data, timeout=body.timeout
            )
            ctx.audit.record(who, "runs.start", run_id, detail={"skill": body.skill})
            return 202, {"run_id": run_id, "status": "queued", "version": version}

        return ctx.idempotency.run(who, idempotency_key, ("start", body.model_dump()), action)

    @r.post("/{run_id}/cancel")
    def cancel(
        run_id: str,
        idempotency_key: Annotated[str | None, Header()] = None,
        who: Principal = operate,
    ) -> Any:
        def action() -> tuple[int, Any]:
            cancelled = rt.runs.cancel(_checked_id(run_id))
            run = rt.runs.get(run_id)
            ctx.audit.record(who, "runs.cancel", run_id, detail={"cancelled": cancelled})
            return 200, {"run_id": run_id, "status": run.status.value, "cancelled": cancelled}

        return ctx.idempotency.run(who, idempotency_key, ("cancel", run_id), action)

    @r.post("/cancel")
    def cancel_many(
        body: BulkCancel,
        idempotency_key: Annotated[str | None, Header()] = None,
        who: Principal = operate,
    ) -> Any:
        from loopwright.service.operations import cancel_many as cancel_all

        def action() -> tuple[int, Any]:
            done = cancel_all(rt, body.skill, body.status, dry_run=body.dry_run, only=body.only)
            if not body.dry_run:
                detail = {"status": body.status, "cancelled": len(done.cancelled)}
                ctx.audit.record(who, "runs.cancel_many", body.skill, detail=detail)
            return 200, done.to_dict()

        return ctx.idempotency.run(who, idempotency_key, ("cancel_many", body.model_dump()), action)

    @r.post("/{run_id}/retry", status_code=202)
    def retry(
        run_id: str,
        idempotency_key: Annotated[str | None, Header()] = None,
        who: Principal = operate,
    ) -> Any:
        from loopwright.service.operations import retry as retry_run

        def action() -> tuple[int, Any]:
            done = retry_run(rt, _checked_id(run_id))
            ctx.audit.record(who, "runs.retry", run_id, detail={"from_seq": done.from_seq})
            return 202, {"run_id": run_id, "status": "queued", "from_seq": done.from_seq,
                         "dropped_checkpoints": done.dropped}  # fmt: skip

        return ctx.idempotency.run(who, idempotency_key, ("retry", run_id), action)

    @r.post("/{run_id}/rerun", status_code=202)
    def rerun(
        run_id: str,
        body: RerunBody,
        idempotency_key: Annotated[str | None, Header()] = None,
        who: Principal = operate,
    ) -> Any:
        from loopwright.service.operations import rerun as rerun_run

        def action() -> tuple[int, Any]:
            done = rerun_run(rt, _checked_id(run_id), body.data, body.version, body.from_step)
            ctx.audit.record(who, "runs.rerun", run_id, detail={"new": done.run_id})
            return 202, done.to_dict()

        return ctx.idempotency.run(who, idempotency_key, ("rerun", run_id, body.model_dump()),
                                   action)  # fmt: skip

    @r.post("/{run_id}/feedback")
    def feedback(run_id: str, body: FeedbackBody, who: Principal = operate) -> dict[str, Any]:
        fb = RunService(rt.redis, rt.keys).feedback(
            _checked_id(run_id), body.good, body.note, who.identity
        )
        ctx.audit.record(who, "runs.feedback", run_id, detail={"good": body.good})
        return fb.to_dict()

    @r.post("/{run_id}/pin")
    def pin(run_id: str, who: Principal = operate) -> dict[str, Any]:
        RunService(rt.redis, rt.keys).pin(_checked_id(run_id))
        ctx.audit.record(who, "runs.pin", run_id)
        return {"run_id": run_id, "pinned": True}

    @r.post("/{run_id}/unpin")
    def unpin(run_id: str, who: Principal = operate) -> dict[str, Any]:
        RunService(rt.redis, rt.keys).unpin(_checked_id(run_id))
        ctx.audit.record(who, "runs.unpin", run_id)
        return {"run_id": run_id, "pinned": False}

    return r


def _checked_id(run_id: str) -> str:
    if not run_id or len(run_id) > 100 or not run_id.isprintable():
        raise NotFoundError(f"unknown run id {run_id[:100]!r}")
    return run_id


def _version_of(ctx: ApiContext, skill: str, version: str) -> str:
    from loopwright.skills_registry.store import Registry

    ver = Registry(ctx.rt.redis, ctx.rt.keys).version(skill, version)
    return ver.version
