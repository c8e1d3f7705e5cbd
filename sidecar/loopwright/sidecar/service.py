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

Every endpoint but the health check needs ``Authorization: Bearer TOKEN``, a platform token
(``loopwright.auth``): ``read`` to look, ``operate`` to submit, ``approve`` to approve, roll
back, pause, resume or retire. A submitted version's author is the token's, never the body's.
Requests whose Host is not this service's (DNS rebinding) get 421, cross-site ones 403, both
before anything else runs. Binds 127.0.0.1 by default; another address needs a token made with
``loopwright tokens create`` first. Request bodies are capped before they are read; verdicts
over ``sidecar_response_max_bytes`` lose their step outputs; test guests are capped across
submissions (503 when none comes free in time).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from redis.exceptions import RedisError

from loopwright.auth.asgi import BodyLimit, HostGuard
from loopwright.auth.origin import HostPolicy, is_loopback
from loopwright.auth.tokens import AuthError, Principal, TokenStore
from loopwright.errors import InfrastructureError, LoopwrightError, NotFoundError, UserError
from loopwright.runner.runtime import Runtime
from loopwright.sidecar.pipeline import Sidecar
from loopwright.sidecar.quotas import SidecarBusyError, guest_slots
from loopwright.sidecar.watch import Watcher
from loopwright.skills_registry.diff import diff_refs
from loopwright.skills_registry.store import Registry, SkillStateError, version_state

log = logging.getLogger(__name__)


class SubmitRequest(BaseModel):
    """A submission: the skill source and its test cases (JSON text or list).

    ``author`` is accepted for old clients and ignored: the token decides who wrote it.
    """

    source: str
    tests: str | list[Any] | None = None
    author: Literal["agent", "person", "review"] | None = None
    dry_run: bool = False


class VersionRequest(BaseModel):
    """Names a version (full id or unique prefix)."""

    version: str


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AuthError)
    async def _auth_error(request: Request, exc: AuthError) -> JSONResponse:
        headers = {"WWW-Authenticate": 'Bearer realm="loopwright"'} if exc.status == 401 else {}
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(SidecarBusyError)
    async def _busy(request: Request, exc: SidecarBusyError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

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


def _need(store: TokenStore, scope: str) -> Any:
    """A FastAPI dependency: the caller's :class:`Principal`, holding ``scope``."""

    def dependency(request: Request) -> Principal:
        return store.authenticate(request.headers.get("authorization")).require(scope)

    return Depends(dependency)


def create_app(
    runtime: Runtime, watcher: Watcher | None = None, host: str = "127.0.0.1"
) -> FastAPI:
    """The service bound to ``runtime`` (its Redis, settings and sandbox), served on ``host``."""
    sidecar = Sidecar(runtime)
    registry = sidecar.registry
    settings = runtime.settings
    store = TokenStore(runtime.redis, runtime.keys)
    app = FastAPI(  # no schema or docs pages: nothing for anonymous callers to read
        title="Loopwright sidecar", version="1", docs_url=None, redoc_url=None, openapi_url=None
    )
    _install_error_handlers(app)

    @app.get("/v1/health")
    def health(request: Request) -> dict[str, Any]:
        runtime.ping()
        out: dict[str, Any] = {"ok": True}
        header = request.headers.get("authorization")
        if header is None:
            return {**out, "detail": "send a token with the read scope for details"}
        store.authenticate(header).require("read")
        return {
            **out,
            "approval_mode": settings.approval_mode,
            "sandbox": sidecar.backend.protections(),
            "guests": guest_slots(settings.sidecar_max_guests).stats(),
            "watching": str(watcher.directory) if watcher else None,
        }

    operator = _need(store, "operate")

    @app.post("/v1/skills")
    def submit(body: SubmitRequest, who: Principal = operator) -> Response:
        verdict = sidecar.submit(body.source, body.tests, author=who.author, dry_run=body.dry_run)
        data = {**verdict.model_dump(mode="json"), "author": who.author}
        return bounded_response(data, settings.sidecar_response_max_bytes)

    _registry_routes(app, registry, store)

    @app.get("/v1/watch", dependencies=[_need(store, "read")])
    def watch() -> dict[str, Any]:
        if watcher is None:
            raise HTTPException(404, "this sidecar is not watching a folder (--watch DIR)")
        return {"directory": str(watcher.directory), "files": watcher.reports()}

    limit = settings.skill_source_max_bytes * 2 + settings.sidecar_tests_max_bytes + 65536
    app.add_middleware(BodyLimit, limit=limit)
    app.add_middleware(HostGuard, policy=HostPolicy(host, tuple(settings.sidecar_allowed_hosts)))
    return app


def _registry_routes(app: FastAPI, registry: Registry, store: TokenStore) -> None:
    read, approve = [_need(store, "read")], [_need(store, "approve")]

    @app.get("/v1/skills", dependencies=read)
    def skills() -> list[dict[str, Any]]:
        return [s.model_dump() for s in registry.skills()]

    @app.get("/v1/skills/{name}", dependencies=read)
    def skill(name: str, version: str | None = None) -> dict[str, Any]:
        return skill_view(registry, name, version)

    @app.get("/v1/skills/{name}/versions", dependencies=read)
    def versions(name: str) -> list[dict[str, Any]]:
        rec = registry.skill(name)
        return [
            {**v.model_dump(exclude={"tests", "manifest"}), "state": version_state(rec, v)}
            for v in registry.versions(name)
        ]

    @app.get("/v1/skills/{name}/diff", dependencies=read)
    def diff(name: str, a: str, b: str) -> dict[str, Any]:
        d = diff_refs(registry, name, a, b)
        return {**d.model_dump(), "summary": d.summary()}

    @app.post("/v1/skills/{name}/approve", dependencies=approve)
    def approve_version(name: str, body: VersionRequest) -> dict[str, Any]:
        return registry.approve(name, body.version).model_dump()

    @app.post("/v1/skills/{name}/rollback", dependencies=approve)
    def rollback(name: str, body: VersionRequest) -> dict[str, Any]:
        return registry.rollback(name, body.version).model_dump()

    @app.post("/v1/skills/{name}/pause", dependencies=approve)
    def pause(name: str) -> dict[str, Any]:
        return registry.pause(name).model_dump()

    @app.post("/v1/skills/{name}/resume", dependencies=approve)
    def resume(name: str) -> dict[str, Any]:
        return registry.resume(name).model_dump()

    @app.post("/v1/skills/{name}/retire", dependencies=approve)
    def retire(name: str) -> dict[str, Any]:
        return registry.retire(name).model_dump()


def _encode(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def bounded_response(data: dict[str, Any], max_bytes: int) -> Response:
    """The verdict as a response of at most about ``max_bytes``: beyond it the cases' step
    outputs, then their steps and notifications, are left out (with a warning saying so)."""
    body = _encode(data)
    if len(body) <= max_bytes:
        return Response(body, media_type="application/json")
    cases = data.get("cases") or []
    for case in cases:
        for step in case.get("steps") or []:
            step.pop("output", None)
        case["output"] = None
    if len(_encode(data)) > max_bytes:
        for case in cases:
            case["steps"], case["notifications"] = [], []
    data.setdefault("warnings", []).append(
        {
            "rule": "response-trimmed",
            "line": 0,
            "col": 0,
            "message": f"the verdict was over {max_bytes} bytes: test cases' outputs (and "
            "steps if needed) are left out (LOOPWRIGHT_SIDECAR_RESPONSE_MAX_BYTES)",
            "hint": "",
            "file": "source",
        }
    )
    return Response(_encode(data), media_type="application/json")


def check_bind(runtime: Runtime, host: str) -> None:
    """Refuse a non-loopback address until an operator made a token (UserError)."""
    if is_loopback(host):
        return
    if not TokenStore(runtime.redis, runtime.keys).has_operator_token():
        raise UserError(
            f"refusing to serve the sidecar on non-loopback address {host!r} without a token: "
            "create one with 'loopwright tokens create NAME --scope operate' and give it to "
            "the clients (LOOPWRIGHT_SIDECAR_TOKEN), or bind 127.0.0.1"
        )


def skill_view(registry: Registry, name: str, version: str | None) -> dict[str, Any]:
    """A skill's record with one version (active by default): manifest, source, next fires."""
    rec = registry.skill(name)
    ver = registry.version(name, version)
    trigger = (ver.manifest or {}).get("trigger") or {}
    fires: list[str] = []
    if trigger.get("type") == "cron":
        from loopwright.skills_registry.manifest import CronSpec

        fires = CronSpec.model_validate(trigger).next_fires(3)
    elif trigger.get("type") == "every":
        from loopwright.skills_registry.manifest import IntervalSpec

        fires = IntervalSpec.model_validate(trigger).next_fires(3)
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
    """Run the service (and the folder watch) in the foreground until SIGINT/SIGTERM.

    Raises :class:`UserError` for a non-loopback ``host`` before any operator token exists.
    """
    import uvicorn

    check_bind(runtime, host)
    stop = threading.Event()
    watcher = None
    if watch_dir is not None:
        watcher = Watcher(Sidecar(runtime), watch_dir, on_report=on_report)
        threading.Thread(
            target=watcher.run, args=(stop,), name="loopwright-watch", daemon=True
        ).start()
    app = create_app(runtime, watcher, host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    try:
        uvicorn.Server(config).run()
    finally:
        stop.set()
