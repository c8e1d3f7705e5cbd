"""Platform tokens: who is calling a Loopwright service, with which scopes, as which author.

A token is ``lwt_<id>_<secret>``: a public id (12 hex digits, the Redis key) and 256 random
bits. Redis keeps only the SHA-256 of the whole token, so a copy of the database does not
hold a usable credential; the plaintext is shown once, when the token is created. A
high-entropy secret needs no slow hash (there is nothing to brute-force), and the comparison
is constant-time.

Scopes: ``read`` (look), ``operate`` (submit skills, run, send events), ``approve`` (approve,
roll back, pause, resume, retire), ``admin`` (everything). Every scope implies ``read``.

The author is part of the credential, not of a request: a service records a submitted version
as written by the token's author (``person``, ``agent`` or ``review``), so a builder agent
holding an agent token cannot claim to be a person and replace a person's skill.

``TokenStore.authenticate`` is the one verification function; it knows nothing about HTTP
frameworks (the sidecar wraps it in a FastAPI dependency, the API of issue 13 reuses it).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from loopwright.auth.scopes import AUTHORS, SCOPES
from loopwright.errors import NotFoundError, UserError
from loopwright.keys import Keys

if TYPE_CHECKING:
    from redis import Redis

TOKEN_PREFIX = "lwt_"
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
_TOKEN_RE = re.compile(r"lwt_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
LAST_USED_GRANULARITY_MS = 1000  # at most one last-used write per token per second


class AuthError(UserError):
    """A request without a usable credential (401) or without the scope it needs (403)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token says the caller is."""

    token_id: str
    name: str
    scopes: frozenset[str]
    author: str

    @property
    def identity(self) -> str:
        """``author:name``, e.g. ``person:alice`` (for logs and audit lines)."""
        return f"{self.author}:{self.name}"

    def allows(self, scope: str) -> bool:
        """True when the token grants ``scope`` (admin grants all, every scope grants read)."""
        if "admin" in self.scopes or scope in self.scopes:
            return True
        return scope == "read" and bool(self.scopes)

    def require(self, scope: str) -> Principal:
        """Self, or :class:`AuthError` (403) naming the missing scope."""
        if not self.allows(scope):
            raise AuthError(
                f"token {self.name!r} ({self.token_id}) lacks the {scope!r} scope; create one "
                f"with 'loopwright tokens create NAME --scope {scope}'",
                status=403,
            )
        return self


class TokenInfo(BaseModel):
    """A token as listed: never its secret."""

    id: str
    name: str
    scopes: list[str]
    author: str
    created_at: int
    last_used_at: int | None = None
    expires_at: int | None = None
    revoked_at: int | None = None
    local: bool = False

    def state(self, now_ms: int | None = None) -> str:
        """``active``, ``expired`` or ``revoked``."""
        now_ms = now_ms if now_ms is not None else _now_ms()
        if self.revoked_at:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now_ms:
            return "expired"
        return "active"


def hash_token(token: str) -> str:
    """The stored form of a token: hex SHA-256 of the whole string."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def bearer(header: str | None) -> str | None:
    """The token in an ``Authorization: Bearer TOKEN`` header value, or None."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _now_ms() -> int:
    return int(time.time() * 1000)


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value not in (None, "") else None


def check_scopes(scopes: list[str]) -> list[str]:
    """Known scopes, deduplicated in canonical order; :class:`UserError` otherwise."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown or not scopes:
        raise UserError(f"scopes must be some of {list(SCOPES)}, not {scopes!r}")
    return [s for s in SCOPES if s in scopes]


class TokenStore:
    """Creates, lists, revokes and verifies tokens kept (hashed) in Redis."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    def create(
        self,
        name: str,
        scopes: list[str],
        *,
        author: str = "person",
        expires_in: float | None = None,
        local: bool = False,
    ) -> tuple[TokenInfo, str]:
        """A new token and its plaintext, which is not stored and cannot be shown again."""
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            raise UserError(
                f"token name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-' "
                "starting with a letter or digit"
            )
        if author not in AUTHORS:
            raise UserError(f"author must be one of {list(AUTHORS)}, not {author!r}")
        if expires_in is not None and expires_in <= 0:
            raise UserError("--expires must be a positive duration, e.g. 30d or 12h")
        token_id = secrets.token_hex(6)
        plain = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        now = _now_ms()
        info = TokenInfo(
            id=token_id,
            name=name,
            scopes=check_scopes(scopes),
            author=author,
            created_at=now,
            expires_at=now + int(expires_in * 1000) if expires_in is not None else None,
            local=local,
        )
        fields: dict[Any, Any] = {
            "id": token_id,
            "name": name,
            "hash": hash_token(plain),
            "scopes": ",".join(info.scopes),
            "author": author,
            "created_at": now,
            "expires_at": info.expires_at if info.expires_at is not None else "",
            "local": "1" if local else "",
        }
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.auth_token(token_id), mapping=fields)
        pipe.zadd(self.keys.auth_tokens, {token_id: now})
        pipe.execute()
        return info, plain

    def _info(self, raw: dict[str, str]) -> TokenInfo:
        return TokenInfo(
            id=raw["id"],
            name=raw.get("name", "?"),
            scopes=[s for s in raw.get("scopes", "").split(",") if s],
            author=raw.get("author", "agent"),
            created_at=int(raw.get("created_at") or 0),
            last_used_at=_int_or_none(raw.get("last_used_at")),
            expires_at=_int_or_none(raw.get("expires_at")),
            revoked_at=_int_or_none(raw.get("revoked_at")),
            local=bool(raw.get("local")),
        )

    def list(self) -> list[TokenInfo]:
        """Every token, oldest first (revoked and expired ones included)."""
        ids: list[str] = self.redis.zrange(self.keys.auth_tokens, 0, -1)  # type: ignore[assignment]
        pipe = self.redis.pipeline(transaction=False)
        for token_id in ids:
            pipe.hgetall(self.keys.auth_token(token_id))
        return [self._info(raw) for raw in pipe.execute() if raw]

    def get(self, ref: str) -> TokenInfo:
        """A token by id or unique id prefix (at least 4 characters)."""
        if not re.fullmatch(r"[0-9a-f]{4,12}", ref or ""):
            raise NotFoundError(f"no token {ref!r}: give its id (see 'loopwright tokens list')")
        matches = [t for t in self.list() if t.id.startswith(ref)]
        if len(matches) != 1:
            what = "no token" if not matches else f"{len(matches)} tokens match"
            raise NotFoundError(f"{what} {ref!r}: give its id (see 'loopwright tokens list')")
        return matches[0]

    def by_id(self, token_id: str) -> TokenInfo | None:
        """A token by its exact id (one read), or None."""
        if not re.fullmatch(r"[0-9a-f]{12}", token_id or ""):
            return None
        raw: dict[str, str] = self.redis.hgetall(self.keys.auth_token(token_id))  # type: ignore[assignment]
        return self._info(raw) if raw else None

    def revoke(self, ref: str) -> TokenInfo:
        """Revoke a token for good; its next request is refused (idempotent)."""
        info = self.get(ref)
        if not info.revoked_at:
            self.redis.hsetnx(self.keys.auth_token(info.id), "revoked_at", _now_ms())
        return self.get(info.id)

    def has_operator_token(self) -> bool:
        """True when an active token made with ``loopwright tokens create`` exists."""
        now = _now_ms()
        return any(t.state(now) == "active" and not t.local for t in self.list())

    def authenticate(self, header: str | None) -> Principal:
        """The principal of an ``Authorization`` header value, or :class:`AuthError` (401)."""
        token = bearer(header)
        if token is None:
            raise AuthError(
                "missing bearer token: send 'Authorization: Bearer TOKEN' "
                "(create one with 'loopwright tokens create')"
            )
        return self.verify(token)

    def verify(self, token: str) -> Principal:
        """The principal of a plaintext token, or :class:`AuthError` (401)."""
        m = _TOKEN_RE.fullmatch(token)
        raw: dict[str, str] = (
            self.redis.hgetall(self.keys.auth_token(m.group(1))) if m else {}  # type: ignore[assignment]
        )
        stored = raw.get("hash", "")
        given = hash_token(token)
        # Compared even when the id is unknown, so both paths cost the same.
        if not hmac.compare_digest(given, stored or "0" * 64) or not stored:
            raise AuthError("invalid token")
        info = self._info(raw)
        now = _now_ms()
        state = info.state(now)
        if state != "active":
            raise AuthError(f"token {info.name!r} ({info.id}) is {state}")
        if (info.last_used_at or 0) + LAST_USED_GRANULARITY_MS <= now:
            self.redis.hset(self.keys.auth_token(info.id), "last_used_at", now)
        return Principal(
            token_id=info.id, name=info.name, scopes=frozenset(info.scopes), author=info.author
        )
