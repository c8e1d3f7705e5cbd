"""Browser sign-in without a second credential scheme: one-time login codes and sessions.

``loopwright serve`` prints a login URL (as Jupyter does) holding a one-time code bound to a
platform token. Opening it consumes the code (``GETDEL``: a second use fails) and makes a
session: a random cookie value whose SHA-256 is the Redis key, holding the token id and a CSRF
secret. Every request through a session re-reads the token, so revoking the token signs the
browser out at once; scopes are the token's. Redis never holds a usable code or cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from loopwright.auth.tokens import AuthError, Principal, TokenStore

if TYPE_CHECKING:
    from redis import Redis

    from loopwright.keys import Keys

LOGIN_TTL_S = 600
SESSION_TTL_S = 12 * 3600
COOKIE = "lw_session"
USED = "this login link is invalid, expired or already used: run 'loopwright serve' for a new one"
CSRF_HEADER = "x-csrf-token"


def _h(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class WebSession:
    """A signed-in browser: who it is and the CSRF secret its forms must carry."""

    principal: Principal
    csrf: str


class WebSessions:
    """Login codes and browser sessions, stored hashed in Redis with expiries."""

    def __init__(self, redis: Redis, keys: Keys, tokens: TokenStore) -> None:
        self.redis = redis
        self.keys = keys
        self.tokens = tokens

    def login_code(self, token_id: str, ttl_s: int = LOGIN_TTL_S) -> str:
        """A one-time code that signs a browser in as ``token_id`` (valid ``ttl_s``)."""
        code = secrets.token_urlsafe(32)
        self.redis.set(self.keys.web_login(_h(code)), token_id, ex=ttl_s)
        return code

    def redeem(self, code: str) -> tuple[str, WebSession]:
        """Consume ``code``: a new session cookie value and its session, or AuthError."""
        if not code or len(code) > 200:
            raise AuthError(USED)
        token_id = self.redis.getdel(self.keys.web_login(_h(code)))
        if not token_id:
            raise AuthError(USED)
        principal = self._principal(str(token_id))
        cookie = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        key = self.keys.web_session(_h(cookie))
        pipe = self.redis.pipeline()
        pipe.hset(key, mapping={"token_id": principal.token_id, "csrf": csrf})
        pipe.expire(key, SESSION_TTL_S)
        pipe.execute()
        return cookie, WebSession(principal, csrf)

    def session(self, cookie: str | None) -> WebSession | None:
        """The session of a cookie value, or None (unknown, expired, token revoked)."""
        if not cookie or len(cookie) > 200:
            return None
        raw: dict[str, str] = self.redis.hgetall(self.keys.web_session(_h(cookie)))  # type: ignore[assignment]
        if not raw.get("token_id"):
            return None
        try:
            principal = self._principal(raw["token_id"])
        except AuthError:
            return None
        return WebSession(principal, raw.get("csrf", ""))

    def end(self, cookie: str | None) -> None:
        """Sign a browser out."""
        if cookie and len(cookie) <= 200:
            self.redis.delete(self.keys.web_session(_h(cookie)))

    def _principal(self, token_id: str) -> Principal:
        info = self.tokens.by_id(token_id)
        if info is None:
            raise AuthError("the token this session was made from no longer exists")
        if info.state() != "active":
            raise AuthError(f"token {info.name!r} ({info.id}) is {info.state()}")
        return Principal(
            token_id=info.id, name=info.name, scopes=frozenset(info.scopes), author=info.author
        )


def csrf_ok(session: WebSession, given: str | None) -> bool:
    """True when ``given`` is the session's CSRF secret (constant-time)."""
    return bool(given) and hmac.compare_digest(session.csrf, given or "")
