"""``/api/v1/schedules``: every timed skill (cron or interval) in words, its next five fires
and its occurrence ledger (``service/schedules.py``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from loopwright.api.context import ApiContext
from loopwright.service.schedules import LEDGER_MAX, get_schedule, list_schedules


def router(ctx: ApiContext) -> APIRouter:
    """The schedules routes (read scope)."""
    r = APIRouter(prefix="/api/v1/schedules", tags=["schedules"])
    rt, read = ctx.rt, ctx.need("read")

    @r.get("", dependencies=[read])
    def schedules() -> list[dict[str, Any]]:
        return [s.to_json(with_ledger=False) for s in list_schedules(rt)]

    @r.get("/{skill}", dependencies=[read])
    def schedule(
        skill: str, limit: Annotated[int, Query(ge=1, le=LEDGER_MAX)] = LEDGER_MAX
    ) -> dict[str, Any]:
        return get_schedule(rt, skill, limit).to_json()

    return r
