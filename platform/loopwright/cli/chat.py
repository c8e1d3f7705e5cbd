"""``loopwright chat``: talk to the builder agent.

Each message is one durable turn (a run of the built-in ``builder-session`` skill). This
process executes the turn itself when no worker took it first, and renders the steps as they
are checkpointed: model answers, tool calls, sidecar verdicts. A turn interrupted by a crash is
resumed by the next ``loopwright chat --session ID`` (or by any worker).
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from loopwright.cli.common import JsonFlag, console, emit_json, fmt_ts, open_runtime, plain
from loopwright.cli.common import literal as escape
from loopwright.errors import UserError

if TYPE_CHECKING:
    from loopwright.agent.session import SessionStore
    from loopwright.runner.runtime import Runtime

EXIT_WORDS = {"/exit", "/quit", "exit", "quit"}


class StepPrinter:
    """Polls a turn's checkpoints and prints each new one (works wherever the turn runs)."""

    def __init__(self, rt: Runtime, run_id: str) -> None:
        self.rt = rt
        self.run_id = run_id
        self.seen: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chat-printer", daemon=True)

    def __enter__(self) -> StepPrinter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.flush()

    def _loop(self) -> None:
        while not self._stop.wait(0.15):
            try:
                self.flush()
            except Exception:
                continue

    def flush(self) -> None:
        for s in self.rt.runs.steps(self.run_id):
            if s.seq in self.seen or s.status not in ("done", "failed"):
                continue
            self.seen.add(s.seq)
            render_step(s.name, s.status, s.output, s.error)


def render_step(name: str, status: str, output: Any, error: str | None) -> None:
    if status == "failed":
        console.print(f"  [red]✗ {escape(name)}: {escape(error or '')}[/]")
        return
    if name.startswith("model-") and isinstance(output, dict):
        text = (output.get("text") or "").strip()
        if text and output.get("tool_calls"):
            console.print(f"  [dim]{escape(text[:300])}[/]")
        for call in output.get("tool_calls") or []:
            args = call.get("arguments") or {}
            shown = {k: v for k, v in args.items() if k not in ("source", "tests")}
            if "source" in args:
                shown["source"] = f"<{len(str(args['source']))} chars>"
            if "tests" in args:
                shown["tests"] = (
                    f"<{len(args['tests']) if isinstance(args['tests'], list) else '?'} cases>"
                )
            console.print(
                f"  [cyan]→ {escape(call.get('name', '?'))}[/] {escape(json.dumps(shown)[:200])}"
            )
    elif name.startswith("tool-") and isinstance(output, dict):
        data = output.get("data")
        if isinstance(data, dict) and "accepted" in data:
            mark = "[green]✓[/]" if data["accepted"] else "[red]✗[/]"
            console.print(f"    {mark} {escape(str(data.get('summary', ''))[:300])}")
        elif output.get("ok"):
            console.print(f"    [green]✓[/] {escape(str(output.get('content', ''))[:200])}")
        else:
            console.print(f"    [red]✗ {escape(str(output.get('content', ''))[:300])}[/]")
    elif name.startswith("critic-") and isinstance(output, dict):
        mark = "[green]passed[/]" if output.get("passed") else "[red]failed[/]"
        console.print(
            f"    critic {mark} score {escape(str(output.get('score')))}: "
            + escape(str(output.get("notes", ""))[:200])
        )


def drive(rt: Runtime, run_id: str, timeout: float, show: bool) -> dict[str, Any]:
    """Execute (or wait for) a turn's run; returns the turn report."""
    from loopwright.runner.execute import Executor
    from loopwright.runner.records import now_ms

    printer = StepPrinter(rt, run_id) if show else None
    if printer is not None:
        printer.__enter__()
    try:
        deadline = time.monotonic() + timeout
        while True:
            Executor(rt).execute(run_id)  # a no-op when a worker holds it or it has ended
            run = rt.runs.get(run_id)
            if run.status.terminal or time.monotonic() > deadline:
                break
            if run.status.value == "sleeping" and (run.wake_at or 0) <= now_ms():
                # A retry parked the turn: wake it here, no scheduler needed to chat (the wake
                # is the scheduler's own state-checked script, so racing one is harmless).
                jid = rt.transitions.wake(run_id)
                if jid:
                    rt.dispatcher.enqueue(run_id, jid)
                continue
            rt.runs.wait(run_id, timeout=min(0.5, max(0.05, deadline - time.monotonic())))
    finally:
        if printer is not None:
            printer.__exit__(None, None, None)
    if run.status.value != "completed":
        raise UserError(
            f"turn {run_id} ended {run.status.value}: {run.error or 'no error recorded'}"
        )
    return dict(run.output)


def render_report(report: dict[str, Any]) -> None:
    """The builder's reply as Markdown (control characters made visible, links shown as text)
    and the turn's metrics."""
    from rich.markdown import Markdown
    from rich.panel import Panel

    reply = plain(report.get("reply") or "")
    style = "yellow" if report.get("stopped") else "green"
    console.print(Panel(Markdown(reply, hyperlinks=False), title="builder", border_style=style))
    m = report.get("metrics") or {}
    console.print(
        f"[dim]steps {m.get('model_calls', 0) + m.get('tool_calls', 0)} · tool calls "
        f"{m.get('tool_calls', 0)} ({m.get('tool_errors', 0)} errors) · tokens "
        f"{m.get('input_tokens', 0)} in / {m.get('output_tokens', 0)} out / "
        f"{m.get('cached_tokens', 0)} cached · ${m.get('cost_usd', 0):.4f} · rejections "
        f"{m.get('rejections', 0)} · {m.get('wall_ms', 0) / 1000:.1f}s[/]"
    )


def show_sessions(store: SessionStore, json_out: bool) -> None:
    from rich.table import Table

    rows = []
    for info in store.list(50):
        m = info.state.get("metrics") or {}
        rows.append(
            {
                "session": info.id,
                "model": info.model,
                "turns": info.turns,
                "updated_at": info.updated_at,
                "tokens": m.get("input_tokens", 0) + m.get("output_tokens", 0),
                "cost_usd": m.get("cost_usd", 0.0),
                "accepted": m.get("accepted", 0),
                "pending_run": info.pending_run,
            }
        )
    if json_out:
        emit_json(rows)
        return
    table = Table()
    table.add_column("session", no_wrap=True)
    table.add_column("model", no_wrap=True)
    for name in ("turns", "updated", "tokens", "cost", "skills", "pending"):
        table.add_column(name)
    for r in rows:
        table.add_row(
            escape(r["session"]), escape(r["model"]), str(r["turns"]), fmt_ts(r["updated_at"]),
            str(r["tokens"]), f"${r['cost_usd']:.4f}", str(r["accepted"]),
            escape(r["pending_run"] or ""),
        )  # fmt: skip
    console.print(table)


def chat(
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Send one message and exit.")
    ] = None,
    session: Annotated[
        str | None,
        typer.Option("--session", help="Continue this session (resumes a crashed turn)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model of a new session, e.g. anthropic:claude-sonnet-4-5."),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for one turn.")] = 1800.0,
    list_sessions: Annotated[
        bool, typer.Option("--list", help="List recent sessions and exit.")
    ] = False,
    json_out: JsonFlag = False,
) -> None:
    """Chat with the builder agent: ask for a capability, get tested, registered skills."""
    from loopwright.agent.session import SessionStore, build_agent, ensure_builtin
    from loopwright.llm.factory import default_model_spec
    from loopwright.runner.execute import install_runtime

    rt = open_runtime()
    install_runtime(rt)
    try:
        store = SessionStore(rt.redis, rt.keys)
        if list_sessions:
            show_sessions(store, json_out)
            return
        ensure_builtin(rt)
        if session:
            sid = store.get(session).id
            build_agent(rt, store.get(sid).model)  # a broken configuration fails here
        else:
            spec = model or default_model_spec(rt.settings)
            build_agent(rt, spec)  # a bad model string, key or critic fails here, not mid-turn
            sid = store.create(spec)
        show = not json_out
        if show:
            console.print(f"[dim]session {escape(sid)} · model {escape(store.get(sid).model)}[/]")
        resumed: dict[str, Any] | None = None
        pending = store.pending(rt, sid)
        if pending:
            if show:
                console.print(f"[yellow]resuming the unfinished turn (run {escape(pending)})[/]")
            resumed = {"run_id": pending, **drive(rt, pending, timeout, show)}
            if show:
                render_report(resumed)
        if message is not None:
            run_id = store.start_turn(rt, sid, message)
            report = drive(rt, run_id, timeout, show)
            if json_out:
                extra = {"resumed": resumed} if resumed else {}
                emit_json({"session": sid, "run_id": run_id, **report, **extra})
            else:
                render_report(report)
            return
        if json_out:  # no message: report the resumed turn (if any) and stop
            emit_json({"session": sid, "resumed": resumed})
            return
        while True:
            try:
                line = console.input("[bold]you>[/] ")
            except (EOFError, KeyboardInterrupt):
                console.print()
                break
            if line.strip() in EXIT_WORDS:
                break
            if not line.strip():
                continue
            try:
                run_id = store.start_turn(rt, sid, line)
                render_report(drive(rt, run_id, timeout, True))
            except UserError as exc:
                console.print(f"[red]{escape(str(exc))}[/]")
        console.print(f"[dim]continue later with: loopwright chat --session {escape(sid)}[/]")
    finally:
        install_runtime(None)
        rt.close()
