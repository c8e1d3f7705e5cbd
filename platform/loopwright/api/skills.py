"""``/api/v1/skills``: list, one skill, versions, diff, stats, submit, approve, rollback,
pause and resume. Submissions go through the sidecar pipeline (validation, tests in the
sandbox); the token decides the author."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import BaseModel, Field

from loopwright.api.context import ApiContext
from loopwright.auth.tokens import Principal
from loopwright.service.stats import skill_stats


class Submit(BaseModel):
    """A skill's source and its test cases."""

    source: str
    tests: str | list[Any] | None = None
    dry_run: bool = False


class VersionRef(BaseModel):
    """A version: full id or unique prefix."""

    version: str = Field(min_length=1, max_length=80)


def router(ctx: ApiContext) -> APIRouter:
    """The skills routes."""
    from loopwright.sidecar.service import skill_view
    from loopwright.skills_registry.diff import diff_refs
    from loopwright.skills_registry.store import Registry, version_state

    r = APIRouter(prefix="/api/v1/skills", tags=["skills"])
    rt = ctx.rt
    registry = Registry(rt.redis, rt.keys)
    read, operate, approve = ctx.need("read"), ctx.need("operate"), ctx.need("approve")

    @r.get("", dependencies=[read])
    def skills() -> list[dict[str, Any]]:
        return [s.model_dump() for s in registry.skills()]

    @r.get("/{name}", dependencies=[read])
    def skill(name: str, version: str | None = None) -> dict[str, Any]:
        return skill_view(registry, name, version)

    @r.get("/{name}/versions", dependencies=[read])
    def versions(name: str) -> list[dict[str, Any]]:
        rec = registry.skill(name)
        return [
            {**v.model_dump(exclude={"tests", "manifest"}), "state": version_state(rec, v)}
            for v in registry.versions(name)
        ]

    @r.get("/{name}/diff", dependencies=[read])
    def diff(name: str, a: str, b: str) -> dict[str, Any]:
        d = diff_refs(registry, name, a, b)
        return {**d.model_dump(), "summary": d.summary()}

    @r.get("/{name}/stats", dependencies=[read])
    def stats(name: str, window: str = "7d", by: str | None = None) -> dict[str, Any]:
        return skill_stats(rt.redis, rt.keys, name, window, by).to_json()

    @r.post("")
    def submit(
        body: Submit,
        idempotency_key: Annotated[str | None, Header()] = None,
        who: Principal = operate,
    ) -> Any:
        limit = rt.settings.skill_source_max_bytes
        if len(body.source.encode("utf-8", "surrogatepass")) > limit:
            from loopwright.errors import UserError

            raise UserError(f"source: over {limit} bytes (LOOPWRIGHT_SKILL_SOURCE_MAX_BYTES)")

        def action() -> tuple[int, Any]:
            from loopwright.sidecar.pipeline import Sidecar

            verdict = Sidecar(rt).submit(
                body.source, body.tests, author=who.author, dry_run=body.dry_run
            )
            data = {**verdict.model_dump(mode="json"), "author": who.author}
            ctx.audit.record(
                who,
                "skills.submit",
                str(data.get("name") or "?"),
                outcome="accepted" if data.get("accepted") else "rejected",
                detail={"version": data.get("version"), "dry_run": body.dry_run},
            )
            return 200, data

        return ctx.idempotency.run(who, idempotency_key, ("submit", body.model_dump()), action)

    @r.post("/{name}/approve")
    def approve_version(name: str, body: VersionRef, who: Principal = approve) -> dict[str, Any]:
        out = registry.approve(name, body.version).model_dump()
        ctx.audit.record(who, "skills.approve", name, detail={"version": body.version})
        return out

    @r.post("/{name}/rollback")
    def rollback(name: str, body: VersionRef, who: Principal = approve) -> dict[str, Any]:
        out = registry.rollback(name, body.version).model_dump()
        ctx.audit.record(who, "skills.rollback", name, detail={"version": body.version})
        return out

    @r.post("/{name}/pause")
    def pause(name: str, who: Principal = approve) -> dict[str, Any]:
        out = registry.pause(name).model_dump()
        ctx.audit.record(who, "skills.pause", name)
        return out

    @r.post("/{name}/resume")
    def resume(name: str, who: Principal = approve) -> dict[str, Any]:
        out = registry.resume(name).model_dump()
        ctx.audit.record(who, "skills.resume", name)
        return out

    return r
