"""``POST /hooks/{source}``: webhook deliveries in, verified by the sender's signature.

No token: the signature is the credential (``events.webhooks`` verifies it the way each sender
signs). A delivery is refused before anything is stored when the source is unknown (404), the
body is over ``LOOPWRIGHT_WEBHOOK_MAX_BYTES`` (413), unsigned or badly signed (401), outside
the timestamp tolerance (401: a replay), not JSON (415) or without an id or type (400). A
verified one is sent as the event ``{source}.{type}`` with id ``{source}:{delivery}``: a
redelivery answers 200 with ``accepted: false`` and starts nothing.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from loopwright.api.context import ApiContext
from loopwright.api.problems import ProblemError
from loopwright.events.webhooks import WebhookError, parse_sources, verify

log = logging.getLogger(__name__)


def router(ctx: ApiContext) -> APIRouter:
    """The webhook route (sources read from settings once, at start-up)."""
    r = APIRouter(tags=["webhooks"])
    rt = ctx.rt
    sources = parse_sources(rt.settings.webhooks)
    limit = rt.settings.webhook_max_bytes

    @r.post("/hooks/{source}", status_code=202)
    async def deliver(source: str, request: Request) -> Any:
        src = sources.get(source)
        if src is None:
            raise ProblemError(404, f"no webhook source {source[:40]!r} is configured")
        secret = rt.settings.secrets.get(src.secret)
        if secret is None:
            raise ProblemError(
                503, f"webhook source {source!r} names secret {src.secret!r}, which is not set"
            )
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise ProblemError(413, f"delivery over {limit} bytes (LOOPWRIGHT_WEBHOOK_MAX_BYTES)")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ProblemError(
                    413, f"delivery over {limit} bytes (LOOPWRIGHT_WEBHOOK_MAX_BYTES)"
                )
        try:
            delivery = verify(src, secret.get_secret_value(), request.headers, bytes(body))
        except WebhookError as exc:
            log.warning("webhook %s refused: %s", source, exc)
            raise ProblemError(exc.status, str(exc)) from None
        sent = await run_in_threadpool(
            rt.bus.send, delivery.event_name, delivery.data, delivery.event_id
        )
        return JSONResponse(
            {"event": delivery.event_name, "id": sent.id, "accepted": sent.accepted},
            status_code=202 if sent.accepted else 200,
        )

    return r
