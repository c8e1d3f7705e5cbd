"""``loopwright run`` and ``loopwright runs list|show|cancel``."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from loopwright.cli.common import (
    JsonFlag,
    console,
    emit_json,
    err_console,
    fmt_ts,
    literal,
    live_workers,
    open_runtime,
    preview,
    styled,
)
from loopwright.errors import SkillLoadError, UserError

if TYPE_CHECKING:
    from loopwright.runner.records import Run
    from loopwright.runner.runtime import Runtime
    from loopwright.service.runs import RunService

runs_app = typer.Typer(help="Inspect and cancel runs.", no_args_is_help=True)


def _read_capped(stream: Any, max_bytes: int, what: str) -> str:
    raw = stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise UserError(f"{what} is over the {max_bytes}-byte run input cap")
    try:
        return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError:
        raise UserError(f"{what} is not UTF-8 text") from None


def parse_data(data: str | None, max_bytes: int) -> Any:
    """``--data`` as JSON (inline, ``@file`` or ``-`` for stdin), with a size cap."""
    if data is None:
        return {}
    if data == "-":
        data = _read_capped(sys.stdin.buffer, max_bytes, "--data from stdin")
    elif data.startswith("@"):
        path = Path(data[1:])
        try:
            with path.open("rb") as fh:
                data = _read_capped(fh, max_bytes, f"--data file {path}")
        except OSError as exc:
            raise UserError(f"--data file {path}: {exc.strerror}") from None
    size = len(data.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise UserError(f"--data is {size} bytes, over the {max_bytes}-byte run input cap")
    try:
        return json.loads(data)
    except ValueError as exc:
        raise UserError(f"--data is not valid JSON: {exc}") from None
    except RecursionError:
        raise UserError("--data is nested too deeply to be read as JSON") from None


def _checked_name(source: str, path: Path) -> str:
    """The skill's name, after the sandbox policy accepted the source (nothing is executed)."""
    from loopwright.sandbox.policy import check_source
    from loopwright.sdk.manifest import ManifestError, read_declaration

    try:
        name = read_declaration(source).spec.name
    except ManifestError as exc:
        raise SkillLoadError(f"{path}: {exc} [{exc.rule}]") from None
    findings = check_source(source, str(path))
    if findings:
        shown = "; ".join(f"line {f.line}: {f.message} [{f.rule}]" for f in findings[:3])
        more = f" (+{len(findings) - 3} more)" if len(findings) > 3 else ""
        raise SkillLoadError(f"{path}: refused by the sandbox policy: {shown}{more}")
    return name


def start_run(
    rt: Runtime, target: str, data: Any, timeout: float | None = None, trusted: bool = False
) -> str:
    """Create a run of a skill file (stored by content hash) or of a known skill name.

    A file is executed here only with ``trusted``; otherwise its declaration is read from the
    syntax tree and the policy checked, and it runs in the sandbox.
    """
    from loopwright.runner.sources import load_skill, read_skill_file

    path = Path(target)
    if target.endswith(".py") or path.exists():
        source = read_skill_file(path, rt.settings.skill_source_max_bytes)
        name = load_skill(source, str(path)).spec.name if trusted else _checked_name(source, path)
        version = rt.sources.put(source, name)
    else:
        name, version = target, rt.sources.resolve(target)
    return rt.runs.create(skill=name, version=version, data=data, timeout=timeout, trusted=trusted)


def wait_with_progress(rt: Runtime, run_id: str, timeout: float | None, quiet: bool) -> Run:
    """Wait for the run to end, showing its status and step count while it goes.

    With no live worker on the queue it says so at once (a queued run would wait forever).
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    warned_sched = False
    if live_workers(rt) == 0:
        err_console.print(
            f"[yellow]no worker is consuming queue '{literal(rt.settings.queue)}': start one "
            f"with 'loopwright worker' or 'loopwright up'[/]"
        )
    with console.status("waiting for the run...", spinner="dots") as status:
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            run = rt.runs.wait(run_id, timeout=min(1.0, left) if left is not None else 1.0)
            if run.status.terminal or (left is not None and left <= 0):
                return run
            steps = rt.redis.hlen(rt.keys.steps(run_id))
            if not quiet:
                status.update(
                    f"run {literal(run_id)}: {run.status.value}, {steps} step(s) checkpointed"
                )
            overdue = run.wake_at is not None and run.wake_at < time.time() * 1000 - 2000
            if not warned_sched and overdue and not rt.redis.exists(rt.keys.scheduler_heartbeat):
                err_console.print(
                    "[yellow]no scheduler is running: sleeping runs and retries will not wake; "
                    "start one with 'loopwright scheduler' or 'loopwright up'[/]"
                )
                warned_sched = True


def run_command(
    target: Annotated[str, typer.Argument(help="A skill file (.py) or the name of a known skill.")],
    data: Annotated[
        str | None,
        typer.Option("--data", "-d", help="Run input as JSON, @FILE to read a file, - for stdin."),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="Wait for the run to end.")] = False,
    timeout: Annotated[
        str | None, typer.Option(help="Active-time budget for this run, e.g. 30s, 5m.")
    ] = None,
    wait_timeout: Annotated[
        float | None, typer.Option(help="Give up waiting after this many seconds.")
    ] = None,
    trusted: Annotated[
        bool,
        typer.Option(
            "--trusted", help="Run in the worker process, not the sandbox (your own code only)."
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Start a run of a skill (in the sandbox); with --wait, follow it to the end."""
    rt = open_runtime()
    payload = parse_data(data, rt.settings.run_input_max_bytes)
    try:
        from loopwright.sdk.durations import parse_duration

        budget = parse_duration(timeout) if timeout is not None else None
    except ValueError as exc:
        raise UserError(f"--timeout: {exc}") from None
    run_id = start_run(rt, target, payload, budget, trusted)
    if not wait:
        if as_json:
            emit_json({"run_id": run_id, "status": "queued"})
        else:
            console.print(f"run [bold]{literal(run_id)}[/] queued")
        return
    run = wait_with_progress(rt, run_id, wait_timeout, quiet=as_json)
    if as_json:
        emit_json(run.to_dict())
    else:
        console.print(f"run [bold]{literal(run_id)}[/] {styled(run.status.value)}")
        if run.output is not None:
            console.print(literal(json.dumps(run.output, indent=2)))
        if run.error:
            err_console.print(f"[red]{literal(run.error)}[/]")
    if run.status.value != "completed":
        raise typer.Exit(1)


@runs_app.command("list")
def list_runs(
    skill: Annotated[str | None, typer.Option(help="Only runs of this skill.")] = None,
    status: Annotated[str | None, typer.Option(help="Only runs in this status.")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only runs created in the last DURATION (e.g. 1h, 2d).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: JsonFlag = False,
) -> None:
    """List runs, newest first."""
    from rich.table import Table

    rt = open_runtime()
    since_ms = None
    if since is not None:
        try:
            from loopwright.sdk.durations import parse_duration

            since_ms = int((time.time() - parse_duration(since)) * 1000)
        except ValueError as exc:
            raise UserError(f"--since: {exc}") from None
    runs = rt.runs.find(skill=skill, status=status, since_ms=since_ms, limit=limit)
    if as_json:
        emit_json([r.to_dict() for r in runs])
        return
    table = Table("run", "skill", "status", "attempts", "created (UTC)", "active", "result")
    for r in runs:
        result = literal(r.error[:60]) if r.error else preview(r.output, 40)
        table.add_row(
            literal(r.id),
            literal(r.skill),
            styled(r.status.value),
            str(r.attempts),
            fmt_ts(r.created_at),
            f"{r.active_ms / 1000:.2f}s",
            result,
        )
    console.print(table)


@runs_app.command("show")
def show_run(
    run_id: Annotated[str, typer.Argument(help="The run id.")], as_json: JsonFlag = False
) -> None:
    """Show one run with its step timeline and log."""
    rt = open_runtime()
    if as_json:
        run = rt.runs.get(run_id)
        steps = [s.to_dict() for s in rt.runs.steps(run_id)]
        labels = {f: run.raw.get(f) for f in ("feedback", "feedback_note", "feedback_by")}
        history = {**labels, "pinned": run.raw.get("pinned") == "1"}
        emit_json({**run.to_dict(), **history, "steps": steps, "logs": rt.runs.logs(run_id)})
        return
    render_run(rt, run_id)


def render_run(rt: Runtime, run_id: str) -> None:
    """Print a run's header, step timeline, output or error, and log (all of it literal)."""
    from rich.table import Table

    run = rt.runs.get(run_id)
    steps = rt.runs.steps(run_id)
    logs = rt.runs.logs(run_id)
    console.print(
        f"run [bold]{literal(run.id)}[/]  skill [bold]{literal(run.skill)}[/]"
        f"@{literal(run.version[:12])}  "
        f"{styled(run.status.value)}  attempts {run.attempts}  lost executors {run.reaps}"
    )
    console.print(
        f"created {fmt_ts(run.created_at)}  started {fmt_ts(run.started_at)}  "
        f"finished {fmt_ts(run.finished_at)}  active {run.active_ms / 1000:.2f}s"
    )
    table = Table("#", "step", "kind", "status", "attempts", "duration", "output / error")
    for s in steps:
        d = s.to_dict()
        dur = f"{d['duration_ms']} ms" if d["duration_ms"] is not None else "-"
        if s.error:
            detail = literal(s.error)
        else:
            detail = f"until {fmt_ts(s.until)}" if s.kind == "sleep" else preview(s.output)
        table.add_row(
            str(s.seq), literal(s.name), literal(s.kind), styled(s.status), str(s.attempts), dur,
            detail,
        )  # fmt: skip
    console.print(table)
    if run.output is not None:
        console.print("output:", preview(run.output, 200))
    if run.error:
        console.print(f"[red]error: {literal(run.error)}[/]")
    if run.raw.get("feedback") or run.raw.get("pinned") == "1":
        note = run.raw.get("feedback_note")
        label = f"feedback: {run.raw.get('feedback', '-')}" + (f" ({note})" if note else "")
        console.print(literal(label) + ("  pinned" if run.raw.get("pinned") == "1" else ""))
    for line in logs:
        console.print(
            f"  {fmt_ts(line['ts'])} {literal(line['level']):7} #{literal(line['step'])} "
            f"{literal(line['message'])}"
        )


@runs_app.command("cancel")
def cancel_run(
    run_id: Annotated[str, typer.Argument(help="The run id.")], as_json: JsonFlag = False
) -> None:
    """Cancel a run (and its child runs)."""
    rt = open_runtime()
    cancelled = rt.runs.cancel(run_id)
    run = rt.runs.get(run_id)
    if as_json:
        emit_json({"run_id": run_id, "status": run.status.value, "cancelled": cancelled})
    elif cancelled:
        console.print(f"cancelled {literal(', '.join(cancelled))}")
    else:
        console.print(
            f"run {literal(run_id)} had already ended ({run.status.value}); nothing to cancel"
        )


@runs_app.command("replay")
def replay_command(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    version: Annotated[
        str | None, typer.Option("--version", help="A registered version id (or prefix).")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", help="A skill file to replay the run on.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Replay a recorded run in the sandbox (on its version, another one, or a file): tool
    calls answered from the recording, side effects captured, never performed."""
    from loopwright.service.replay import lines, replay

    data = replay(open_runtime(), run_id, version=version, file=file)
    if as_json:
        emit_json(data)
        return
    for line in lines(data):
        console.print(literal(line), soft_wrap=True)


def _run_service() -> RunService:
    from loopwright.service.runs import RunService

    rt = open_runtime()
    return RunService(rt.redis, rt.keys)


def _who() -> str:
    """Who gives feedback from this terminal (the login name, when there is one)."""
    import getpass  # here: it loads termios, which no other command needs

    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


@runs_app.command("feedback")
def feedback_run(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    good: Annotated[bool, typer.Option("--good", help="The run did the right thing.")] = False,
    bad: Annotated[bool, typer.Option("--bad", help="The run did the wrong thing.")] = False,
    note: Annotated[str | None, typer.Option(help="Why (plain text, e.g. 'false alarm').")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Record a verdict on a run; the run is pinned (kept by retention) as a replay case."""
    if good == bad:
        raise UserError("give exactly one of --good or --bad")
    fb = _run_service().feedback(run_id, good, note, _who())
    if as_json:
        emit_json(fb.to_dict())
        return
    was = f" (was {fb.previous})" if fb.previous else ""
    console.print(f"run {literal(run_id)}: {'good' if good else 'bad'}{was}; pinned")


@runs_app.command("pin")
def pin_run(
    run_id: Annotated[str, typer.Argument(help="The run id.")], as_json: JsonFlag = False
) -> None:
    """Keep a run until it is unpinned (retention skips pinned runs)."""
    _run_service().pin(run_id)
    if as_json:
        emit_json({"run_id": run_id, "pinned": True})
    else:
        console.print(f"run {literal(run_id)}: pinned")


@runs_app.command("unpin")
def unpin_run(
    run_id: Annotated[str, typer.Argument(help="The run id.")], as_json: JsonFlag = False
) -> None:
    """Release a pin: the run is deleted once LOOPWRIGHT_RUN_RETENTION has passed."""
    _run_service().unpin(run_id)
    if as_json:
        emit_json({"run_id": run_id, "pinned": False})
    else:
        console.print(f"run {literal(run_id)}: unpinned")
