"""What every route needs: the runtime, who is calling, idempotency and the audit log."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request

from loopwright.api.idempotency import Idempotency
from loopwright.auth.audit import AuditLog
from loopwright.auth.tokens import AuthError, Principal, TokenStore
from loopwright.auth.web import COOKIE, CSRF_HEADER, WebSessions, csrf_ok
from loopwright.runner.runtime import Runtime

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass
class ApiContext:
    """Shared by the route modules of one application."""

    rt: Runtime
    tokens: TokenStore
    sessions: WebSessions
    idempotency: Idempotency
    audit: AuditLog

    @classmethod
    def of(cls, rt: Runtime) -> ApiContext:
        """The context of a runtime."""
        tokens = TokenStore(rt.redis, rt.keys)
        return cls(
            rt=rt,
            tokens=tokens,
            sessions=WebSessions(rt.redis, rt.keys, tokens),
            idempotency=Idempotency(rt.redis, rt.keys),
            audit=AuditLog(rt.redis, rt.keys),
        )

    def principal(self, request: Request) -> Principal:
        """The caller: a bearer token, or a browser session (whose writes carry CSRF)."""
        header = request.headers.get("authorization")
        if header is not None:
            return self.tokens.authenticate(header)
        session = self.sessions.session(request.cookies.get(COOKIE))
        if session is None:
            raise AuthError(
                "missing bearer token: send 'Authorization: Bearer TOKEN' (create one with "
                "'loopwright tokens create') or sign in with the URL 'loopwright serve' prints"
            )
        if request.method not in SAFE_METHODS and not csrf_ok(
            session, request.headers.get(CSRF_HEADER)
        ):
            raise AuthError("missing or wrong CSRF token (X-CSRF-Token header)", status=403)
        return session.principal

    def need(self, scope: str) -> Any:
        """A FastAPI dependency: the caller's principal, holding ``scope``."""

        def dependency(request: Request) -> Principal:
            return self.principal(request).require(scope)

        dep: Callable[[Request], Principal] = dependency
        return Depends(dep)
