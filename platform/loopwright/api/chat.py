"""``/api/v1/chat``: the builder conversation over HTTP.

A session is the same durable object ``loopwright chat`` uses (``agent.session``). Posting a
message starts the turn as a run of the built-in ``builder-session`` skill and answers 202 with
its run id at once; a worker executes it. Follow the turn with ``GET /api/v1/stream?topics=
run:<id>`` and read its steps (model answers, tool calls, sidecar verdicts) from
``GET /api/v1/chat/sessions/{id}/turns/{run_id}``, which returns them as cards. One turn at a
time per session: a second message while one runs is refused (409).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import BaseModel, Field

from loopwright.api.context import ApiContext
from loopwright.api.problems import ProblemError
from loopwright.auth.tokens import Principal
from loopwright.errors import UserError


class NewSession(BaseModel):
    """A new builder session (the default model unless one is named)."""

    model: str | None = Field(default=None, max_length=200)


class Message(BaseModel):
    """What the person says."""

    message: str = Field(min_length=1)


def cards(steps: list[Any]) -> list[dict[str, Any]]:
    """A turn's checkpoints as cards: a model answer, each tool call with its arguments and
    result, the sidecar's verdict inline."""
    out: list[dict[str, Any]] = []
    for s in steps:
        d = s.to_dict() if hasattr(s, "to_dict") else dict(s)
        name, output = str(d.get("name", "")), d.get("output")
        card: dict[str, Any] = {"seq": d.get("seq"), "name": name, "status": d.get("status")}
        if d.get("error"):
            card.update(kind="error", text=d["error"])
        elif name.startswith("model-") and isinstance(output, dict):
            calls = [
                {"tool": c.get("name"), "arguments": c.get("arguments")}
                for c in output.get("tool_calls") or []
                if isinstance(c, dict)
            ]
            card.update(kind="model", text=output.get("text") or "", tool_calls=calls)
        elif name.startswith("tool-"):
            parts = name.split("-", 3)  # tool-<round>-<call>-<tool name>
            res = output if isinstance(output, dict) else {}
            data = res.get("data")
            verdict = None
            if isinstance(data, dict) and "accepted" in data:
                verdict = {k: data.get(k) for k in ("accepted", "name", "version", "stage")}
            card.update(
                kind="tool",
                tool=parts[3] if len(parts) == 4 else name,
                ok=res.get("ok"),
                result=str(res.get("content", ""))[:4000],
                verdict=verdict,
            )
        else:
            card.update(kind="step", output=output)
        out.append(card)
    return out


def router(ctx: ApiContext) -> APIRouter:
    """The chat routes."""
    from loopwright.agent.session import SessionStore, build_agent, ensure_builtin

    r = APIRouter(prefix="/api/v1/chat", tags=["chat"])
    rt = ctx.rt
    store = SessionStore(rt.redis, rt.keys)
    read, operate = ctx.need("read"), ctx.need("operate")

    def info_view(sid: str) -> dict[str, Any]:
        info = store.get(sid)
        metrics = info.state.get("metrics") or {}
        return {
            "id": info.id,
            "model": info.model,
            "turns": info.turns,
            "pending_run": info.pending_run,
            "created_at": info.created_at,
            "updated_at": info.updated_at,
            "metrics": metrics,
            "skills": info.state.get("skills") or [],
        }

    @r.post("/sessions", status_code=201)
    def create(body: NewSession, who: Principal = operate) -> dict[str, Any]:
        from loopwright.llm.factory import default_model_spec

        spec = body.model or default_model_spec(rt.settings)
        ensure_builtin(rt)
        build_agent(rt, spec)  # a bad model string or a missing key fails here
        sid = store.create(spec)
        ctx.audit.record(who, "chat.create", sid, detail={"model": spec})
        return info_view(sid)

    @r.get("/sessions", dependencies=[read])
    def sessions(limit: int = 20) -> list[dict[str, Any]]:
        return [info_view(i.id) for i in store.list(max(1, min(limit, 100)))]

    @r.get("/sessions/{sid}", dependencies=[read])
    def session(sid: str) -> dict[str, Any]:
        return info_view(sid)

    @r.post("/sessions/{sid}/messages", status_code=202)
    def message(
        sid: str,
        body: Message,
        idempotency_key: Annotated[str | None, Header()] = None,
        who: Principal = operate,
    ) -> Any:
        def action() -> tuple[int, Any]:
            try:
                run_id = store.start_turn(rt, sid, body.message)
            except UserError as exc:
                if "in progress" in str(exc):
                    raise ProblemError(409, str(exc), kind="turn-in-progress") from None
                raise
            ctx.audit.record(who, "chat.message", sid, detail={"run_id": run_id})
            return 202, {"session": sid, "run_id": run_id,
                         "stream": f"/api/v1/stream?topics=run:{run_id}"}  # fmt: skip

        return ctx.idempotency.run(who, idempotency_key, ("chat", sid, body.message), action)

    @r.get("/sessions/{sid}/turns/{run_id}", dependencies=[read])
    def turn(sid: str, run_id: str) -> dict[str, Any]:
        store.get(sid)
        run = rt.runs.get(run_id)
        if run.skill != "builder-session" or (run.event.get("data") or {}).get("session") != sid:
            raise ProblemError(404, f"run {run_id[:40]!r} is not a turn of session {sid!r}")
        answer = run.output.get("reply") if isinstance(run.output, dict) else None
        return {
            "run_id": run_id,
            "status": run.status.value,
            "message": (run.event.get("data") or {}).get("message"),
            "answer": answer,
            "error": run.error,
            "cards": cards(rt.runs.steps(run_id)),
        }

    return r
