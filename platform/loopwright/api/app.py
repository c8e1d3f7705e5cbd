"""The API application: guards, auth, problem documents, routes; and ``serve``.

Routes (``/api/v1``): ``runs`` (filters and cursors, detail, steps, logs, recorded calls, start,
cancel, feedback, pins), ``skills`` (list, versions, diff, stats, submit, approve, rollback,
pause, resume), ``schedules`` (timed skills, next fires, the occurrence ledger),
``reports`` (the weekly reviews: list, one as JSON or Markdown), ``events``
(send, recent), ``health``, ``whoami``, ``audit`` (admin) and
``openapi.json`` (read). Outside it: ``/healthz`` (no token: liveness for load balancers) and
``/login?code=`` (the one-time URL ``serve`` prints; sets an HttpOnly, SameSite=Strict cookie).

Every other request needs a platform token (``Authorization: Bearer``) or that cookie; writes
through the cookie carry the session's CSRF secret in ``X-CSRF-Token``. A foreign ``Host``
gets 421 and a cross-site ``Origin`` 403 before any route runs (DNS rebinding, CSRF).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopwright.api import (
    chat,
    events,
    hooks,
    pages,
    problems,
    reports,
    runs,
    schedules,
    skills,
    stream,
)
from loopwright.api.context import ApiContext
from loopwright.auth.asgi import BodyLimit, HostGuard
from loopwright.auth.origin import HostPolicy, is_loopback
from loopwright.auth.tokens import Principal
from loopwright.auth.web import COOKIE
from loopwright.runner.runtime import Runtime

log = logging.getLogger(__name__)


def create_app(rt: Runtime, host: str = "127.0.0.1") -> FastAPI:
    """The API bound to ``rt`` (its Redis and settings), served on ``host``."""
    ctx = ApiContext.of(rt)
    app = FastAPI(
        title="Loopwright API",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind a token
    )
    problems.install(app)
    read, admin = ctx.need("read"), ctx.need("admin")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, Any]:
        rt.redis.ping()
        return {"ok": True}

    @app.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        ctx.principal(request)  # a cookie write: needs its CSRF secret
        ctx.sessions.end(request.cookies.get(COOKIE))
        resp = JSONResponse({"signed_out": True})
        resp.delete_cookie(COOKIE, path="/")
        return resp

    @app.get("/api/v1/whoami")
    def whoami(request: Request, who: Principal = read) -> dict[str, Any]:
        session = ctx.sessions.session(request.cookies.get(COOKIE))
        out: dict[str, Any] = {
            "name": who.name,
            "author": who.author,
            "scopes": sorted(who.scopes),
            "token_id": who.token_id,
        }
        if session is not None and request.headers.get("authorization") is None:
            out["csrf"] = session.csrf  # pages read it once and send it with writes
        return out

    @app.get("/api/v1/health", dependencies=[read])
    def health() -> dict[str, Any]:
        from loopwright.service.health import health as report

        return report(rt)

    @app.get("/api/v1/audit", dependencies=[admin])
    def audit(limit: int = 100) -> list[dict[str, Any]]:
        return [e.to_dict() for e in ctx.audit.recent(limit)]

    @app.get("/api/v1/openapi.json", dependencies=[read], include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    app.include_router(runs.router(ctx))
    app.include_router(skills.router(ctx))
    app.include_router(schedules.router(ctx))
    app.include_router(reports.router(ctx))
    app.include_router(events.router(ctx))
    app.include_router(chat.router(ctx))
    app.include_router(hooks.router(ctx))
    app.include_router(stream.router(ctx))
    app.include_router(pages.router(ctx))
    from fastapi.staticfiles import StaticFiles

    app.mount("/static", StaticFiles(directory=pages.HERE / "static"), name="static")

    limit = (
        max(rt.settings.skill_source_max_bytes * 2, rt.settings.webhook_max_bytes)
        + rt.settings.run_input_max_bytes
        + 65536
    )
    app.add_middleware(ResponseHeaders)
    app.add_middleware(BodyLimit, limit=limit)
    app.add_middleware(HostGuard, policy=HostPolicy(host, tuple(rt.settings.sidecar_allowed_hosts)))
    return app


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'self'"
)
_SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class ResponseHeaders:
    """Headers on every response: the security policy (pages load scripts from this origin
    only, cannot be framed, are never sniffed as another type) and ``Server-Timing:
    app;dur=<ms>``, the application's own time, which benchmarks and browser dev tools read
    without the network in it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def headed(message: Message) -> None:
            if message["type"] == "http.response.start":
                timing = (b"server-timing", f"app;dur={(time.perf_counter() - t0) * 1000:.2f}")
                headers = [*message.get("headers", []), *_SECURITY_HEADERS]
                message = {**message, "headers": [*headers, (timing[0], timing[1].encode())]}
            await send(message)

        await self.app(scope, receive, headed)


def bind_warning(host: str, tls: bool) -> str | None:
    """What to tell the person binding ``host`` (None when loopback or behind TLS)."""
    if is_loopback(host) or tls:
        return None
    return (
        f"warning: serving on {host} without TLS: tokens and session cookies cross the network "
        "in clear text; put a TLS proxy in front (and set LOOPWRIGHT_API_COOKIE_SECURE=true)"
    )


def login_url(rt: Runtime, host: str, port: int) -> str:
    """A one-time login URL signing a browser in as this machine's person token."""
    from loopwright.auth.local import local_token
    from loopwright.auth.tokens import TokenStore

    token = local_token(rt.redis, rt.keys, rt.settings, "person")
    principal = TokenStore(rt.redis, rt.keys).verify(token)
    code = ApiContext.of(rt).sessions.login_code(principal.token_id)
    shown = host if host not in ("0.0.0.0", "::") else "127.0.0.1"
    if ":" in shown and not shown.startswith("["):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/login?code={code}"


def serve(rt: Runtime, host: str, port: int, *, on_ready: Any = None) -> None:
    """Run the API in the foreground until SIGINT/SIGTERM."""
    import uvicorn

    from loopwright.sidecar.service import check_bind

    check_bind(rt, host)
    app = create_app(rt, host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    if on_ready is not None:
        on_ready()
    server.run()
