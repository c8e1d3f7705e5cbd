"""``/api/v1/events``: send an event (durably, deduplicated by id) and read the recent feed."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, Field

from loopwright.api.context import ApiContext
from loopwright.auth.tokens import Principal
from loopwright.errors import UserError
from loopwright.service.events import recent_events


class SendEvent(BaseModel):
    """An event: its name, data and optional id (a resend with the same id starts nothing)."""

    name: str = Field(min_length=1, max_length=200)
    data: Any = None
    id: str | None = Field(default=None, min_length=1, max_length=200)


def router(ctx: ApiContext) -> APIRouter:
    """The events routes."""
    r = APIRouter(prefix="/api/v1/events", tags=["events"])
    rt = ctx.rt
    read, operate = ctx.need("read"), ctx.need("operate")

    @r.post("", status_code=202)
    def send(
        body: SendEvent,
        idempotency_key: Annotated[str | None, Header()] = None,
        who: Principal = operate,
    ) -> Any:
        size = len(json.dumps(body.data, default=str).encode())
        if size > rt.settings.run_input_max_bytes:
            raise UserError(
                f"data: {size} bytes, over {rt.settings.run_input_max_bytes} "
                "(LOOPWRIGHT_RUN_INPUT_MAX_BYTES)"
            )

        def action() -> tuple[int, Any]:
            sent = rt.bus.send(body.name, body.data, body.id)
            ctx.audit.record(who, "events.send", body.name, detail={"id": sent.id})
            return 202, {"id": sent.id, "stream_id": sent.stream_id, "accepted": sent.accepted}

        return ctx.idempotency.run(who, idempotency_key, ("event", body.model_dump()), action)

    @r.get("", dependencies=[read])
    def recent(limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
        return recent_events(rt.redis, rt.keys, limit)

    return r
