"""``/api/v1/reports``: the weekly review reports (``review/store.py``), newest first, and one
report as its canonical JSON or as Markdown (``?format=md``)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import PlainTextResponse

from loopwright.api.context import ApiContext
from loopwright.review.report import render_markdown
from loopwright.review.store import get_review, list_reviews


def router(ctx: ApiContext) -> APIRouter:
    """The reports routes (read scope)."""
    r = APIRouter(prefix="/api/v1/reports", tags=["reports"])
    rt, read = ctx.rt, ctx.need("read")

    @r.get("", dependencies=[read])
    def reports(limit: Annotated[int, Query(ge=1, le=500)] = 100) -> list[dict[str, Any]]:
        return [e.to_dict() for e in list_reviews(rt.redis, rt.keys, limit)]

    @r.get("/{review_id}", dependencies=[read])
    def report(review_id: str, format: Literal["json", "md"] = "json") -> Any:
        review = get_review(rt.redis, rt.keys, review_id)
        if format == "md":
            text = render_markdown(review, rt.settings.review_min_success)
            return PlainTextResponse(text, media_type="text/markdown; charset=utf-8")
        out: dict[str, Any] = json.loads(review.to_json())
        return out

    return r
