"""The sidecar over HTTP (FastAPI): submit skills and manage the registry.

Endpoints (JSON)::

    GET  /v1/health                       approval mode, sandbox protections
    POST /v1/skills                       {source, tests, author} -> verdict (200 either way)
    GET  /v1/skills                       every skill
    GET  /v1/skills/{name}[?version=V]    one skill with a version, its manifest and source
    GET  /v1/skills/{name}/versions       its versions
    GET  /v1/skills/{name}/diff?a=&b=     what changed between two versions
    POST /v1/skills/{name}/approve|rollback  {version}
    POST /v1/skills/{name}/pause|resume|retire
    GET  /v1/watch                        the folder watch's latest report per file

Binds 127.0.0.1 by default; with ``LOOPWRIGHT_SIDECAR_TOKEN`` set every request needs
``Authorization: Bearer TOKEN``. Request bodies are capped before they are read.
"""

from __future__ import annotations

import hmac
import logging
import threading
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from redis.exceptions import RedisError
from starlette.types import ASGIApp, Receive, Scope, Send

from loopwright.errors import InfrastructureError, LoopwrightError, NotFoundError
from loopwright.runner.runtime import Runtime
from loopwright.sidecar.pipeline import Sidecar
from loopwright.sidecar.watch import Watcher
from loopwright.skills_registry.diff import diff_refs
from loopwright.skills_registry.store import Registry, SkillStateError, version_state

log = logging.getLogger(__name__)


class SubmitRequest(BaseModel):
    """A submission: the skill source, its test cases (JSON text or list), its author."""

    source: str
    tests: str | list[Any] | None = None
    author: Literal["agent", "person", "review"] = "agent"
    dry_run: bool = False


class VersionRequest(BaseModel):
    """Names a version (full id or unique prefix)."""

    version: str


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes (declared or streamed) with 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0

        async def counted() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"request body over {self.limit} bytes")
            return message

        await self.app(scope, counted, send)

    async def _refuse(self, send: Send) -> None:
        body = b'{"detail":"request body over the size limit"}'
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})


def create_app(runtime: Runtime, watcher: Watcher | None = None) -> FastAPI:
    """The service bound to ``runtime`` (its Redis, settings and sandbox)."""
    sidecar = Sidecar(runtime)
    registry = sidecar.registry
    settings = runtime.settings
    token = settings.sidecar_token.get_secret_value() if settings.sidecar_token else None

    def authorised(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "missing or wrong bearer token")

    app = FastAPI(
        title="Loopwright sidecar",
        version="1",
        dependencies=[Depends(authorised)],
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(LoopwrightError)
    async def _loopwright_error(request: Request, exc: LoopwrightError) -> JSONResponse:
        status = 400
        if isinstance(exc, NotFoundError):
            status = 404
        elif isinstance(exc, SkillStateError):
            status = 409
        elif isinstance(exc, InfrastructureError):
            status = 503
        return JSONResponse({"detail": str(exc)}, status_code=status)

    @app.exception_handler(RedisError)
    async def _redis_error(request: Request, exc: RedisError) -> JSONResponse:
        return JSONResponse({"detail": f"Redis error: {exc}"}, status_code=503)

    @app.get("/v1/health")
    def health() -> dict[str, Any]:
        runtime.ping()
        return {
            "ok": True,
            "approval_mode": settings.approval_mode,
            "sandbox": sidecar.backend.protections(),
            "watching": str(watcher.directory) if watcher else None,
        }

    @app.post("/v1/skills")
    def submit(body: SubmitRequest) -> dict[str, Any]:
        verdict = sidecar.submit(body.source, body.tests, author=body.author, dry_run=body.dry_run)
        return verdict.model_dump(mode="json")

    @app.get("/v1/skills")
    def skills() -> list[dict[str, Any]]:
        return [s.model_dump() for s in registry.skills()]

    @app.get("/v1/skills/{name}")
    def skill(name: str, version: str | None = None) -> dict[str, Any]:
        return skill_view(registry, name, version)

    @app.get("/v1/skills/{name}/versions")
    def versions(name: str) -> list[dict[str, Any]]:
        rec = registry.skill(name)
        return [
            {**v.model_dump(exclude={"tests", "manifest"}), "state": version_state(rec, v)}
            for v in registry.versions(name)
        ]

    @app.get("/v1/skills/{name}/diff")
    def diff(name: str, a: str, b: str) -> dict[str, Any]:
        d = diff_refs(registry, name, a, b)
        return {**d.model_dump(), "summary": d.summary()}

    @app.post("/v1/skills/{name}/approve")
    def approve(name: str, body: VersionRequest) -> dict[str, Any]:
        return registry.approve(name, body.version).model_dump()

    @app.post("/v1/skills/{name}/rollback")
    def rollback(name: str, body: VersionRequest) -> dict[str, Any]:
        return registry.rollback(name, body.version).model_dump()

    @app.post("/v1/skills/{name}/pause")
    def pause(name: str) -> dict[str, Any]:
        return registry.pause(name).model_dump()

    @app.post("/v1/skills/{name}/resume")
    def resume(name: str) -> dict[str, Any]:
        return registry.resume(name).model_dump()

    @app.post("/v1/skills/{name}/retire")
    def retire(name: str) -> dict[str, Any]:
        return registry.retire(name).model_dump()

    @app.get("/v1/watch")
    def watch() -> dict[str, Any]:
        if watcher is None:
            raise HTTPException(404, "this sidecar is not watching a folder (--watch DIR)")
        return {"directory": str(watcher.directory), "files": watcher.reports()}

    limit = settings.skill_source_max_bytes * 2 + settings.sidecar_tests_max_bytes + 65536
    app.add_middleware(BodyLimit, limit=limit)
    return app


def skill_view(registry: Registry, name: str, version: str | None) -> dict[str, Any]:
    """A skill's record with one version (active by default): manifest, source, next fires."""
    rec = registry.skill(name)
    ver = registry.version(name, version)
    trigger = (ver.manifest or {}).get("trigger") or {}
    fires: list[str] = []
    if trigger.get("type") == "cron":
        from loopwright.skills_registry.manifest import CronSpec

        fires = CronSpec.model_validate(trigger).next_fires(3)
    return {
        "skill": rec.model_dump(),
        "version": {**ver.model_dump(), "state": version_state(rec, ver)},
        "source": registry.source(ver.version),
        "next_fires": fires,
    }


def serve(
    runtime: Runtime,
    host: str,
    port: int,
    watch_dir: Path | None = None,
    on_report: Any = None,
) -> None:
    """Run the service (and the folder watch) in the foreground until SIGINT/SIGTERM."""
    import uvicorn

    stop = threading.Event()
    watcher = None
    if watch_dir is not None:
        watcher = Watcher(Sidecar(runtime), watch_dir, on_report=on_report)
        threading.Thread(
            target=watcher.run, args=(stop,), name="loopwright-watch", daemon=True
        ).start()
    app = create_app(runtime, watcher)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run()
    finally:
        stop.set()
