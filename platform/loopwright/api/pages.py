"""The web pages: server-rendered (jinja2) with htmx, live through the API's SSE stream.

Pages read through the same service layer as the API and the CLI, and act through small
``/ui/...`` POST routes that call the same functions, record the same audit entries and answer
with ``HX-Refresh`` (or an error fragment shown in the page's alert area). A browser signs in
with the one-time URL ``loopwright serve`` prints; every write carries the session's CSRF
secret (htmx sends it as ``X-CSRF-Token``). Everything a skill, a model or an event sender
controls is untrusted text: jinja2 autoescapes it, and nothing is marked safe.

Pages: needs attention (``/``), runs (``/runs``: filters in the URL, a "new runs" banner
instead of jumping rows), run detail (``/runs/{id}``: a failure banner, the step waterfall,
outputs, errors, logs, recorded calls, live while it runs; ``/runs/{id}/why``, whose button
opens a builder chat with the failure as a draft: ``api/failure_chat.py``), skills and skill
detail (7-day figures, a daily success-rate sparkline drawn on the server with its figures as
text, versions with author, a diff of any two, pause/resume/rollback/approve),
approvals, events (feed and a send form), workers, schedules (``/schedules``: cron in
words, timezone, next five fires; ``/schedules/{skill}``: the occurrence ledger) and the weekly
review reports (``/reports``, ``/reports/{id}``: the report in a sandboxed frame, its run ids
linked, and the runs behind each claim: ``api/reports.py``).
"""

from __future__ import annotations

import difflib
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from loopwright.api.context import ApiContext
from loopwright.auth.tokens import AuthError, Principal
from loopwright.auth.web import COOKIE, SESSION_TTL_S
from loopwright.errors import LoopwrightError, NotFoundError
from loopwright.runner.records import Run
from loopwright.service.queries import RunFilter, find_runs

HERE = Path(__file__).resolve().parent
STATUS = ("queued", "running", "sleeping", "waiting", "completed", "failed", "cancelled",
          "skipped")  # fmt: skip


def _fmt_ts(ms: int | None) -> str:
    if not ms:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000))


def _pretty(value: Any, limit: int = 20_000) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + f"\n… ({len(text)} characters)"


SPARK_W, SPARK_H, SPARK_PAD = 120, 28, 3


def sparkline(report: Any, w: int = SPARK_W, h: int = SPARK_H) -> dict[str, Any]:
    """A daily success-rate sparkline from ``skill_stats(..., by="day")``: the geometry
    (numbers only) and its text alternative with every day's figures. A day without judged
    runs (none completed or failed by the skill) is a gap in the line."""
    from datetime import UTC, datetime, timedelta

    by_day = {g.group: g for g in report.groups}
    first = datetime.strptime(report.first_day, "%Y%m%d").replace(tzinfo=UTC)
    days = [(first + timedelta(days=i)).strftime("%Y%m%d") for i in range(report.window_days)]
    step = (w - 2 * SPARK_PAD) / max(1, len(days) - 1)
    segments: list[list[str]] = [[]]
    dots: list[dict[str, float]] = []
    figures: list[dict[str, Any]] = []
    for i, day in enumerate(days):
        g = by_day.get(day)
        label = f"{day[:4]}-{day[4:6]}-{day[6:]}"
        rate = g.success_rate if g is not None else None
        judged = (g.completed + g.failed_skill) if g is not None else 0
        figures.append({"day": label, "rate": rate, "judged": judged,
                        "runs": g.runs if g is not None else 0})  # fmt: skip
        if rate is None:
            if segments[-1]:
                segments.append([])
            continue
        x = round(SPARK_PAD + i * step, 1)
        y = round(SPARK_PAD + (1 - rate) * (h - 2 * SPARK_PAD), 1)
        segments[-1].append(f"{x},{y}")
        dots.append({"x": x, "y": y})
    known = [f for f in figures if f["rate"] is not None]
    if known:
        lo = min(f["rate"] for f in known)
        hi = max(f["rate"] for f in known)
        last = known[-1]
        alt = (
            f"Daily success rate, {figures[0]['day']} to {figures[-1]['day']}: "
            f"{len(known)} of {len(figures)} days with runs, lowest {100 * lo:.0f}%, "
            f"highest {100 * hi:.0f}%, latest {100 * last['rate']:.0f}% on {last['day']}."
        )
    else:
        alt = f"No judged runs from {figures[0]['day']} to {figures[-1]['day']}."
    return {
        "w": w, "h": h, "lines": [" ".join(p) for p in segments if len(p) > 1],
        "dots": dots, "alt": alt, "figures": figures,
        "days_text": "; ".join(
            f"{f['day']}: {100 * f['rate']:.0f}% of {f['judged']}" if f["rate"] is not None
            else f"{f['day']}: no runs" for f in figures
        ),
    }  # fmt: skip


def templates() -> Jinja2Templates:
    """The page templates (autoescaped), with the filters they use."""
    t = Jinja2Templates(directory=str(HERE / "templates"))
    t.env.filters["ts"] = _fmt_ts
    t.env.filters["pretty"] = _pretty
    t.env.filters["short"] = lambda s, n=12: (s or "")[:n]
    return t


class Viewer:
    """Who is looking at a page, and the CSRF secret their writes carry."""

    def __init__(self, principal: Principal, csrf: str) -> None:
        self.principal = principal
        self.csrf = csrf


def router(ctx: ApiContext) -> APIRouter:
    """The page routes."""
    from loopwright.skills_registry.diff import diff_refs
    from loopwright.skills_registry.store import Registry, version_state

    r = APIRouter(include_in_schema=False)
    rt = ctx.rt
    registry = Registry(rt.redis, rt.keys)
    tpl = templates()

    def viewer(request: Request) -> Viewer | None:
        if request.headers.get("authorization"):
            try:
                return Viewer(ctx.tokens.authenticate(request.headers["authorization"]), "")
            except AuthError:
                return None
        session = ctx.sessions.session(request.cookies.get(COOKIE))
        return Viewer(session.principal, session.csrf) if session else None

    def page(request: Request, name: str, title: str, **data: Any) -> Response:
        who = viewer(request)
        if who is None:
            return tpl.TemplateResponse(
                request, "signin.html", {"title": "Sign in", "who": None}, status_code=401
            )
        return tpl.TemplateResponse(
            request, name, {"title": title, "who": who, "nav": name, **data}
        )

    def act(request: Request, scope: str, action: str, target: str, fn: Any) -> Response:
        """Run a page action for a session holding ``scope``: refresh, or an alert fragment."""
        try:
            who = ctx.principal(request).require(scope)
            detail = fn(who)
            ctx.audit.record(who, action, target, via="web", detail=detail or {})
        except (LoopwrightError, ValueError) as exc:
            status = getattr(exc, "status", 400)
            return tpl.TemplateResponse(
                request, "_alert.html", {"message": str(exc)}, status_code=status
            )
        return Response(status_code=204, headers={"HX-Refresh": "true"})

    @r.get("/login", response_class=HTMLResponse)
    def login(request: Request, code: str = "", next: str = "/") -> Response:
        try:
            cookie, session = ctx.sessions.redeem(code)
        except AuthError as exc:
            return tpl.TemplateResponse(
                request, "signin.html", {"title": "Sign in", "who": None, "message": str(exc)},
                status_code=401,
            )  # fmt: skip
        ctx.audit.record(session.principal, "web.login", session.principal.token_id, via="web")
        target = next if next.startswith("/") and not next.startswith("//") else "/"
        resp = RedirectResponse(target, status_code=303)
        resp.set_cookie(
            COOKIE, cookie, max_age=SESSION_TTL_S, httponly=True, samesite="strict",
            secure=rt.settings.api_cookie_secure, path="/",
        )  # fmt: skip
        return resp

    # Needs attention -------------------------------------------------------------------

    @r.get("/", response_class=HTMLResponse)
    def home(request: Request) -> Response:
        from loopwright.service.schedules import Trouble, troubled
        from loopwright.service.stats import skill_stats

        schedules: list[Trouble] = []
        failing: list[dict[str, Any]] = []
        pending: list[dict[str, Any]] = []
        cost = 0.0
        runs_today = 0
        if viewer(request) is not None:
            for s in registry.skills():
                if s.pending:
                    pending.append({"name": s.name, "versions": s.pending})
                try:
                    st = skill_stats(rt.redis, rt.keys, s.name, "1d").total
                except LoopwrightError:
                    continue
                runs_today += st.runs
                cost += (st.cost_per_run or 0.0) * st.runs
                for sig in st.signatures:
                    failing.append({"skill": s.name, **asdict(sig)})
            schedules = troubled(rt, int(time.time() * 1000) - 86_400_000)
        failing.sort(key=lambda f: -int(f["count"]))
        return page(
            request, "home.html", "Needs attention", failing=failing[:50], pending=pending,
            cost=cost, runs_today=runs_today, schedules=schedules,
        )  # fmt: skip

    # Runs -------------------------------------------------------------------------------

    @r.get("/runs", response_class=HTMLResponse)
    def runs(
        request: Request,
        skill: str | None = None,
        status: str | None = None,
        signature: str | None = None,
        cursor: str | None = None,
    ) -> Response:
        from loopwright.api.pagination import Cursor

        flt = RunFilter(skill=skill or None, status=status or None, signature=signature or None)
        error = None
        items: list[Run] = []
        nxt = None
        if viewer(request) is not None:
            try:
                after = None
                if cursor:
                    c = Cursor.decode(cursor)
                    after = (c.score, c.member)
                pg = find_runs(rt.redis, rt.keys, flt, limit=50, after=after)
                items = pg.runs
                nxt = Cursor(*pg.next_cursor).encode() if pg.next_cursor else None
            except LoopwrightError as exc:
                error = str(exc)
        cancellable: list[str] = []
        if skill and status in ("queued", "running", "sleeping", "waiting"):
            from loopwright.service.operations import matching_runs

            try:
                cancellable = matching_runs(rt, skill, status)
            except LoopwrightError:
                cancellable = []
        return page(
            request, "runs.html", "Runs", runs=items, next_cursor=nxt, error=error,
            cancellable=cancellable,
            filters={"skill": skill or "", "status": status or "", "signature": signature or ""},
            statuses=STATUS,
        )  # fmt: skip

    def run_data(run_id: str) -> dict[str, Any]:
        from loopwright.runner.recording import load_recording

        run = rt.runs.get(run_id)
        steps = [s.to_dict() for s in rt.runs.steps(run_id)]
        failed = next((s for s in steps if s["status"] == "failed"), None)
        rec = load_recording(rt.redis, rt.keys, run_id)
        t0 = min([s["started_at"] for s in steps if s.get("started_at")] or [run.created_at])
        ends = [s.get("ended_at") or s.get("started_at") or t0 for s in steps]
        span = max(1, max(ends or [t0]) - t0)
        for s in steps:
            start = (s.get("started_at") or t0) - t0
            end = (s.get("ended_at") or s.get("started_at") or t0) - t0
            s["bar_left"] = round(100 * start / span, 2)
            s["bar_width"] = max(0.5, round(100 * (end - start) / span, 2))
        return {
            "run": run,
            "steps": steps,
            "failed_step": failed,
            "logs": rt.runs.logs(run_id),
            "calls": rec.calls if rec else [],
            "recording": rec.state if rec else "none",
            "children": sorted(str(c) for c in rt.redis.smembers(rt.keys.children(run_id))),
            "feedback": run.raw.get("feedback"),
        }

    @r.get("/runs/{run_id}", response_class=HTMLResponse)
    def run_page(request: Request, run_id: str) -> Response:
        if viewer(request) is None:
            return page(request, "run.html", "Run")
        try:
            data = run_data(run_id)
        except NotFoundError as exc:
            return tpl.TemplateResponse(
                request, "notfound.html", {"title": "Not found", "who": viewer(request),
                                           "message": str(exc)}, status_code=404,
            )  # fmt: skip
        return page(request, "run.html", f"Run {run_id[:12]}", **data)

    @r.get("/runs/{run_id}/body", response_class=HTMLResponse)
    def run_body(request: Request, run_id: str) -> Response:
        if viewer(request) is None:
            return Response(status_code=401)
        data = run_data(run_id)
        # A run that has just ended: reload the page once, so its actions fit the end state
        # and its stream closes (a finished run's page opens none).
        done = data["run"].status.terminal and request.headers.get("hx-request") == "true"
        headers = {"HX-Refresh": "true"} if done else None
        return tpl.TemplateResponse(request, "_run_body.html", data, headers=headers)

    def why_data(run_id: str) -> dict[str, Any]:
        """A failed run's page data, with the last success, the input and the skill diff."""
        data = run_data(run_id)
        run: Run = data["run"]
        last_ok = _last_success(rt, run)
        input_diff: list[str] = []
        version_diff = None
        if last_ok is not None:
            a = _pretty({"event": last_ok.event, "params": last_ok.params}).splitlines()
            b = _pretty({"event": run.event, "params": run.params}).splitlines()
            input_diff = list(difflib.unified_diff(a, b, "last success", "this run", lineterm=""))
            if last_ok.version != run.version:
                try:
                    version_diff = diff_refs(registry, run.skill, last_ok.version, run.version)
                except LoopwrightError:
                    version_diff = None
        sig = run.raw.get("sig")
        sharing = 0
        if sig:
            page_ = find_runs(rt.redis, rt.keys, RunFilter(skill=run.skill, signature=sig),
                              limit=500)  # fmt: skip
            sharing = len(page_.runs)
        return {"last_ok": last_ok, "input_diff": input_diff, "version_diff": version_diff,
                "sharing": sharing, "signature": sig, **data}  # fmt: skip

    @r.get("/runs/{run_id}/why", response_class=HTMLResponse)
    def why(request: Request, run_id: str) -> Response:
        if viewer(request) is None:
            return page(request, "why.html", "Why did it fail")
        try:
            data = why_data(run_id)
        except NotFoundError as exc:
            return tpl.TemplateResponse(
                request, "notfound.html", {"title": "Not found", "who": viewer(request),
                                           "message": str(exc)}, status_code=404,
            )  # fmt: skip
        return page(request, "why.html", "Why did it fail", **data)

    @r.post("/ui/runs/{run_id}/ask")
    def ui_ask(request: Request, run_id: str) -> Response:
        """A new builder session about a failed run: the chat opens with a draft to edit."""
        from loopwright.agent.session import SessionStore, build_agent, ensure_builtin
        from loopwright.llm.factory import default_model_spec

        made: dict[str, str] = {}

        def fn(who: Principal) -> dict[str, Any]:
            run = rt.runs.get(run_id)  # NotFoundError: an alert, no session
            spec = default_model_spec(rt.settings)
            ensure_builtin(rt)
            build_agent(rt, spec)
            made["sid"] = SessionStore(rt.redis, rt.keys).create(spec)
            return {"session": made["sid"], "model": spec, "about_run": run.id}

        resp = act(request, "operate", "chat.create", "session", fn)
        if "sid" in made:
            target = f"/chat/{quote(made['sid'])}?about={quote(run_id, safe='')}"
            return Response(status_code=204, headers={"HX-Redirect": target})
        return resp

    @r.post("/ui/runs/{run_id}/cancel")
    def ui_cancel(request: Request, run_id: str) -> Response:
        return act(request, "operate", "runs.cancel", run_id,
                   lambda who: {"cancelled": rt.runs.cancel(run_id)})  # fmt: skip

    @r.post("/ui/runs/{run_id}/retry")
    def ui_retry(request: Request, run_id: str) -> Response:
        from loopwright.service.operations import retry

        return act(request, "operate", "runs.retry", run_id,
                   lambda who: {"from_seq": retry(rt, run_id).from_seq})  # fmt: skip

    @r.post("/ui/runs/{run_id}/rerun")
    def ui_rerun(
        request: Request,
        run_id: str,
        data: str = Form(""),
        version: str = Form(""),
        from_step: str = Form(""),
    ) -> Response:
        from loopwright.service.operations import rerun

        made: dict[str, str] = {}

        def fn(who: Principal) -> dict[str, Any]:
            try:
                payload = json.loads(data) if data.strip() else None
            except ValueError as exc:
                raise ValueError(f"input is not JSON: {exc}") from None
            done = rerun(rt, run_id, payload, version.strip() or None, from_step.strip() or None)
            made["id"] = done.run_id
            return {"new": done.run_id}

        resp = act(request, "operate", "runs.rerun", run_id, fn)
        if "id" in made:
            return Response(status_code=204, headers={"HX-Redirect": f"/runs/{made['id']}"})
        return resp

    @r.post("/ui/runs/cancel")
    def ui_cancel_many(
        request: Request,
        skill: str = Form(...),
        status: str = Form(""),
        ids: str = Form(""),
    ) -> Response:
        from loopwright.service.operations import cancel_many

        def fn(who: Principal) -> dict[str, Any]:
            only = [x for x in ids.split(",") if x]
            done = cancel_many(rt, skill, status or None, only=only)
            return {"cancelled": len(done.cancelled)}

        return act(request, "operate", "runs.cancel_many", skill, fn)

    @r.post("/ui/runs/{run_id}/feedback")
    def ui_feedback(request: Request, run_id: str, good: str = Form(...)) -> Response:
        from loopwright.service.runs import RunService

        def fn(who: Principal) -> dict[str, Any]:
            RunService(rt.redis, rt.keys).feedback(run_id, good == "1", None, who.identity)
            return {"good": good == "1"}

        return act(request, "operate", "runs.feedback", run_id, fn)

    # Skills -----------------------------------------------------------------------------

    @r.get("/skills", response_class=HTMLResponse)
    def skills(request: Request) -> Response:
        from loopwright.service.stats import skill_stats

        rows = []
        if viewer(request) is not None:
            for s in registry.skills():
                try:
                    st = skill_stats(rt.redis, rt.keys, s.name, "7d").total
                    spark = sparkline(skill_stats(rt.redis, rt.keys, s.name, "14d", by="day"))
                except LoopwrightError:
                    st, spark = None, None
                rows.append({"skill": s, "stats": st, "spark": spark})
        return page(request, "skills.html", "Skills", rows=rows)

    @r.get("/skills/{name}", response_class=HTMLResponse)
    def skill_page(
        request: Request, name: str, a: str | None = None, b: str | None = None
    ) -> Response:
        if viewer(request) is None:
            return page(request, "skill.html", name)
        try:
            rec = registry.skill(name)
        except NotFoundError as exc:
            return tpl.TemplateResponse(
                request, "notfound.html", {"title": "Not found", "who": viewer(request),
                                           "message": str(exc)}, status_code=404,
            )  # fmt: skip
        versions = [{"v": v, "state": version_state(rec, v)} for v in registry.versions(name)]
        diff = None
        diff_error = None
        if b:
            try:
                diff = diff_refs(registry, name, a or None, b)
            except LoopwrightError as exc:
                diff_error = str(exc)
        in_flight = [
            x for x in find_runs(rt.redis, rt.keys, RunFilter(skill=name), limit=200).runs
            if not x.status.terminal
        ]  # fmt: skip
        from loopwright.service.stats import skill_stats

        try:
            stats = skill_stats(rt.redis, rt.keys, name, "7d").total
            spark = sparkline(skill_stats(rt.redis, rt.keys, name, "30d", by="day"), 360, 60)
        except LoopwrightError:
            stats, spark = None, None
        return page(
            request, "skill.html", name, skill=rec, versions=versions, diff=diff,
            diff_error=diff_error, in_flight=in_flight, a=a or "", b=b or "", stats=stats,
            spark=spark,
        )  # fmt: skip

    for action in ("pause", "resume"):

        def lifecycle(request: Request, name: str, _action: str = action) -> Response:
            fn = getattr(registry, _action)
            return act(request, "approve", f"skills.{_action}", name,
                       lambda who: {"status": fn(name).status})  # fmt: skip

        r.post(f"/ui/skills/{{name}}/{action}")(lifecycle)

    @r.post("/ui/skills/{name}/rollback")
    def ui_rollback(request: Request, name: str, version: str = Form(...)) -> Response:
        return act(request, "approve", "skills.rollback", name,
                   lambda who: {"version": registry.rollback(name, version).version})  # fmt: skip

    @r.post("/ui/skills/{name}/approve")
    def ui_approve(request: Request, name: str, version: str = Form(...)) -> Response:
        return act(request, "approve", "skills.approve", name,
                   lambda who: {"version": registry.approve(name, version).version})  # fmt: skip

    @r.get("/approvals", response_class=HTMLResponse)
    def approvals(request: Request) -> Response:
        items = []
        if viewer(request) is not None:
            for s in registry.skills():
                for v in s.pending:
                    ver = registry.version(s.name, v)
                    items.append({"skill": s, "version": ver})
        return page(request, "approvals.html", "Approvals", items=items)

    # Chat -------------------------------------------------------------------------------

    def turns_of(sid: str, limit: int = 20) -> list[dict[str, Any]]:
        from loopwright.api.chat import cards

        found = find_runs(rt.redis, rt.keys, RunFilter(skill="builder-session"), limit=500)
        out = []
        for run in found.runs:
            data = run.event.get("data") or {}
            if data.get("session") != sid:
                continue
            reply = run.output.get("reply") if isinstance(run.output, dict) else None
            out.append({"run": run, "message": data.get("message"), "reply": reply,
                        "cards": cards(rt.runs.steps(run.id))})  # fmt: skip
            if len(out) >= limit:
                break
        return list(reversed(out))

    @r.get("/chat", response_class=HTMLResponse)
    def chat_home(request: Request) -> Response:
        from loopwright.agent.session import SessionStore

        items = SessionStore(rt.redis, rt.keys).list(50) if viewer(request) else []
        return page(request, "chat_list.html", "Chat", sessions=items)

    @r.post("/ui/chat/new")
    def ui_chat_new(request: Request) -> Response:
        from loopwright.agent.session import SessionStore, build_agent, ensure_builtin
        from loopwright.llm.factory import default_model_spec

        made: dict[str, str] = {}

        def fn(who: Principal) -> dict[str, Any]:
            spec = default_model_spec(rt.settings)
            ensure_builtin(rt)
            build_agent(rt, spec)
            made["sid"] = SessionStore(rt.redis, rt.keys).create(spec)
            return {"session": made["sid"], "model": spec}

        resp = act(request, "operate", "chat.create", "session", fn)
        if "sid" in made:
            return Response(status_code=204, headers={"HX-Redirect": f"/chat/{made['sid']}"})
        return resp

    @r.get("/chat/{sid}", response_class=HTMLResponse)
    def chat_page(request: Request, sid: str, about: str = "") -> Response:
        from loopwright.agent.session import SessionStore

        if viewer(request) is None:
            return page(request, "chat.html", "Chat")
        try:
            info = SessionStore(rt.redis, rt.keys).get(sid)
        except (LoopwrightError, ValueError) as exc:
            return tpl.TemplateResponse(
                request, "notfound.html", {"title": "Not found", "who": viewer(request),
                                           "message": str(exc)}, status_code=404,
            )  # fmt: skip
        turns = turns_of(sid)
        draft, about_run = "", None
        if about and not turns:  # from a why page's button: a draft the person edits
            from loopwright.api.failure_chat import failure_message

            try:
                facts = why_data(about)
                if facts["run"].status.value == "failed":
                    draft, about_run = failure_message(facts), about
            except NotFoundError:
                draft = ""
        return page(request, "chat.html", "Chat", session=info, turns=turns, draft=draft,
                    about_run=about_run)  # fmt: skip

    @r.get("/chat/{sid}/turns/{run_id}", response_class=HTMLResponse)
    def chat_turn(request: Request, sid: str, run_id: str) -> Response:
        from loopwright.api.chat import cards

        if viewer(request) is None:
            return Response(status_code=401)
        run = rt.runs.get(run_id)
        data = run.event.get("data") or {}
        if run.skill != "builder-session" or data.get("session") != sid:
            return Response(status_code=404)
        reply = run.output.get("reply") if isinstance(run.output, dict) else None
        turn = {"run": run, "message": data.get("message"), "reply": reply,
                "cards": cards(rt.runs.steps(run_id))}  # fmt: skip
        return tpl.TemplateResponse(request, "_turn.html", {"t": turn, "sid": sid})

    @r.post("/ui/chat/{sid}/message")
    def ui_chat_message(request: Request, sid: str, message: str = Form(...)) -> Response:
        from loopwright.agent.session import SessionStore

        return act(request, "operate", "chat.message", sid,
                   lambda who: {"run_id": SessionStore(rt.redis, rt.keys).start_turn(
                       rt, sid, message)})  # fmt: skip

    # Events and workers -----------------------------------------------------------------

    @r.get("/events", response_class=HTMLResponse)
    def events_page(request: Request) -> Response:
        feed = []
        if viewer(request) is not None:
            rows: list[tuple[str, dict[str, str]]] = rt.redis.xrevrange(  # type: ignore[assignment]
                rt.keys.events, count=100
            )
            for sid, f in rows:
                feed.append({"stream_id": sid, **f})
        return page(request, "events.html", "Events", feed=feed)

    @r.post("/ui/events/send")
    def ui_send(
        request: Request,
        name: str = Form(...),
        data: str = Form(""),
    ) -> Response:
        def fn(who: Principal) -> dict[str, Any]:
            try:
                payload = json.loads(data) if data.strip() else {}
            except ValueError as exc:
                raise ValueError(f"data is not JSON: {exc}") from None
            sent = rt.bus.send(name, payload)
            return {"id": sent.id}

        return act(request, "operate", "events.send", name, fn)

    # Schedules ----------------------------------------------------------------------------

    @r.get("/schedules", response_class=HTMLResponse)
    def schedules_page(request: Request) -> Response:
        from loopwright.service.schedules import list_schedules

        rows = list_schedules(rt) if viewer(request) is not None else []
        return page(request, "schedules.html", "Schedules", rows=rows)

    @r.get("/schedules/{skill}", response_class=HTMLResponse)
    def schedule_page(request: Request, skill: str) -> Response:
        from loopwright.service.schedules import get_schedule

        if viewer(request) is None:
            return page(request, "schedule.html", skill)
        try:
            sched = get_schedule(rt, skill)
        except NotFoundError as exc:
            return tpl.TemplateResponse(
                request, "notfound.html", {"title": "Not found", "who": viewer(request),
                                           "message": str(exc)}, status_code=404,
            )  # fmt: skip
        return page(request, "schedule.html", f"Schedule {skill}", s=sched)

    # Reports ------------------------------------------------------------------------------

    @r.get("/reports", response_class=HTMLResponse)
    def reports_page(request: Request) -> Response:
        from loopwright.review.store import list_reviews

        rows = list_reviews(rt.redis, rt.keys) if viewer(request) is not None else []
        return page(request, "reports.html", "Reports", rows=rows)

    @r.get("/reports/{review_id}", response_class=HTMLResponse)
    def report_page(request: Request, review_id: str) -> Response:
        from loopwright.api.reports import claims, link_runs
        from loopwright.review.report import render_html, summary_line
        from loopwright.review.store import get_review

        if viewer(request) is None:
            return page(request, "report.html", review_id)
        try:
            review = get_review(rt.redis, rt.keys, review_id)
        except LoopwrightError as exc:
            return tpl.TemplateResponse(
                request, "notfound.html", {"title": "Not found", "who": viewer(request),
                                           "message": str(exc)}, status_code=404,
            )  # fmt: skip
        # The report is one self-contained document (its own CSP: no script, inline CSS):
        # shown in a sandboxed frame through ``srcdoc``, which jinja2 escapes like any value.
        # Each run id it shows links to that run (``target=_top``: the frame may navigate
        # the page on a click, nothing else), and the claims naming runs are listed below it.
        html = link_runs(render_html(review, rt.settings.review_min_success), review)
        return page(
            request, "report.html", f"Report {review.id}", review=review,
            summary=summary_line(review), html=html, claims=claims(review),
        )  # fmt: skip

    @r.get("/workers", response_class=HTMLResponse)
    def workers(request: Request) -> Response:
        from loopwright.service.health import health

        report = health(rt) if viewer(request) is not None else {}
        return page(request, "workers.html", "Workers", health=report)

    return r


def _last_success(rt: Any, run: Run) -> Run | None:
    """The newest completed run of the same skill created before ``run``."""
    page_ = find_runs(
        rt.redis, rt.keys, RunFilter(skill=run.skill, status="completed",
                                     until_ms=max(0, run.created_at - 1)), limit=1,
    )  # fmt: skip
    return page_.runs[0] if page_.runs else None
