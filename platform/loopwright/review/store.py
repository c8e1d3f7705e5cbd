"""Stored reviews: one JSON string per review and an index by start time, capped.

``{p}:review:{id}`` holds the review's canonical JSON (``Review.to_json``) and ``{p}:reviews``
scores its id by start time. Saving is one Lua script (write, index, drop the oldest beyond
``review_keep``), so a crash never leaves an indexed id without its review or a review the cap
forgot. A review saved again under its id (the durable skill's ``report`` step re-run after a
crash) replaces itself, never duplicates.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from redis import Redis

from loopwright.errors import NotFoundError, UserError
from loopwright.keys import Keys
from loopwright.review.report import summary_line
from loopwright.review.types import Review
from loopwright.scripts import NAMED, named

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")

# Atomically: store one review, index it by start time, and drop the oldest reviews (their
# JSON and index entries) beyond the cap.
# KEYS (named): review, index   ARGV (named): id, json, at (ms), keep, prefix (of review keys)
SAVE_LUA = (
    NAMED
    + """
redis.call('SET', K.review, A.json)
redis.call('ZADD', K.index, A.at, A.id)
local over = redis.call('ZCARD', K.index) - tonumber(A.keep)
if over > 0 then
  local old = redis.call('ZRANGE', K.index, 0, over - 1)
  for _, id in ipairs(old) do redis.call('DEL', A.prefix .. id) end
  redis.call('ZREMRANGEBYRANK', K.index, 0, over - 1)
end
return over > 0 and over or 0
"""
)


@dataclass(frozen=True, slots=True)
class ReviewEntry:
    """One line of ``loopwright review list``."""

    id: str
    started_at: int
    finished_at: int | None
    window: str
    summary: str
    dry_run: bool
    cost_usd: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "started_at": self.started_at, "finished_at": self.finished_at,
            "window": self.window, "summary": self.summary, "dry_run": self.dry_run,
            "cost_usd": self.cost_usd,
        }  # fmt: skip


def check_id(review_id: str) -> str:
    """``review_id`` when it is a well-formed id; a ``UserError`` naming the rule otherwise."""
    if not ID_RE.fullmatch(review_id):
        raise UserError(
            "a review id is 1-100 letters, digits, '.', '_', ':' or '-' "
            "(list them with: loopwright review list)"
        )
    return review_id


def save_review(redis: Redis, keys: Keys, review: Review, keep: int) -> int:
    """Store ``review`` (replacing one with its id); returns how many old reviews the cap
    dropped."""
    check_id(review.id)
    ks, args = named(
        {"review": keys.review(review.id), "index": keys.reviews},
        {"id": review.id, "json": review.to_json(), "at": review.started_at, "keep": keep,
         "prefix": keys.review("")},
    )  # fmt: skip
    return int(redis.eval(SAVE_LUA, len(ks), *ks, *args))


def _parse(review_id: str, raw: str) -> Review:
    try:
        return Review.from_json(raw)
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(
            f"stored review {review_id} cannot be read ({type(exc).__name__}: {exc}); it was "
            "written by an incompatible version: run a new review with 'loopwright review run'"
        ) from None


def get_review(redis: Redis, keys: Keys, review_id: str | None = None) -> Review:
    """The review ``review_id``, or the latest one when None; ``NotFoundError`` when absent."""
    if review_id is None:
        latest = redis.zrevrange(keys.reviews, 0, 0)
        if not latest:
            raise NotFoundError("no review yet (start one with: loopwright review run)")
        review_id = str(latest[0])
    raw = redis.get(keys.review(check_id(review_id)))
    if raw is None:
        raise NotFoundError(f"no review {review_id!r} (list them with: loopwright review list)")
    return _parse(review_id, str(raw))


def list_reviews(redis: Redis, keys: Keys, limit: int = 100) -> list[ReviewEntry]:
    """The latest ``limit`` stored reviews, newest first (an unreadable one listed as such)."""
    ids = [str(x) for x in redis.zrevrange(keys.reviews, 0, max(0, limit - 1))]
    raws = redis.mget([keys.review(i) for i in ids]) if ids else []
    out: list[ReviewEntry] = []
    for review_id, raw in zip(ids, raws, strict=True):
        if raw is None:
            continue
        try:
            r = Review.from_json(str(raw))
        except (ValueError, KeyError, TypeError):
            at = redis.zscore(keys.reviews, review_id) or 0
            out.append(ReviewEntry(review_id, int(at), None, "", "unreadable", False, 0.0))
            continue
        out.append(
            ReviewEntry(
                r.id, r.started_at, r.finished_at, r.window, summary_line(r), r.dry_run,
                r.cost_usd,
            )
        )  # fmt: skip
    return out


def dumps_entries(entries: list[ReviewEntry]) -> str:
    """``review list --json``."""
    return json.dumps([e.to_dict() for e in entries], indent=2, sort_keys=True)
