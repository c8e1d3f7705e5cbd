"""``Idempotency-Key`` on POST: a retried request gets the first answer, not a second action.

Per token and key, Redis holds first a short ``pending`` marker (``SET NX``: a concurrent
duplicate gets 409), then the answer (status and JSON body) for a day. A retry with the same key
and the same request replays the answer with ``Idempotent-Replayed: true``; the same key with a
different request is refused (422), as the IETF draft and Stripe do. A server error (5xx)
releases the key so the client may retry; a crash while pending frees it after
``PENDING_TTL_S``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi.responses import JSONResponse

from loopwright.api.problems import ProblemError

if TYPE_CHECKING:
    from redis import Redis

    from loopwright.auth.tokens import Principal
    from loopwright.keys import Keys

PENDING_TTL_S = 60
KEEP_S = 24 * 3600
KEY_MAX = 255


class Idempotency:
    """Runs a POST action at most once per (token, Idempotency-Key)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    def run(
        self,
        who: Principal,
        key: str | None,
        request_repr: Any,
        action: Callable[[], tuple[int, Any]],
    ) -> JSONResponse:
        """``action()`` -> (status, JSON body), once per key; without a key, just once."""
        if key is None:
            status, body = action()
            return JSONResponse(body, status_code=status)
        if not key or len(key) > KEY_MAX or not key.isprintable():
            raise ProblemError(400, f"Idempotency-Key: 1 to {KEY_MAX} printable characters")
        rkey = self.keys.api_idempotency(who.token_id, hashlib.sha256(key.encode()).hexdigest())
        fp = hashlib.sha256(
            json.dumps(request_repr, sort_keys=True, default=str).encode()
        ).hexdigest()
        if not self.redis.set(rkey, json.dumps({"fp": fp, "state": "pending"}), nx=True,
                              ex=PENDING_TTL_S):  # fmt: skip
            raw = self.redis.get(rkey)
            stored = json.loads(raw) if raw else {}
            if stored.get("fp") != fp:
                raise ProblemError(
                    422,
                    "Idempotency-Key was already used for a different request; use a new key",
                    kind="idempotency-key-reused",
                )
            if stored.get("state") == "pending":
                raise ProblemError(
                    409,
                    "a request with this Idempotency-Key is still in progress; retry shortly",
                    kind="idempotency-in-progress",
                )
            return JSONResponse(
                stored.get("body"),
                status_code=int(stored.get("status", 200)),
                headers={"Idempotent-Replayed": "true"},
            )
        try:
            status, body = action()
        except ProblemError as exc:
            if exc.status >= 500:
                self.redis.delete(rkey)
                raise
            self._keep(rkey, fp, exc.status, {"status": exc.status, "detail": exc.detail})
            raise
        except BaseException:
            self.redis.delete(rkey)
            raise
        self._keep(rkey, fp, status, body)
        return JSONResponse(body, status_code=status)

    def _keep(self, rkey: str, fp: str, status: int, body: Any) -> None:
        doc = {"fp": fp, "state": "done", "status": status, "body": body}
        self.redis.set(rkey, json.dumps(doc, default=str), ex=KEEP_S)
