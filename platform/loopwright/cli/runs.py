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
    one_line,
    open_runtime,
    plain,
    preview,
    styled,
)
from loopwright.errors import SkillLoadError, UserError

if TYPE_CHECKING:
    from loopwright.runner.records import Run, StepRecord
    from loopwright.runner.runtime import Runtime
    from loopwright.service.runs import RunService

runs_app = typer.Typer(help="Inspect, retry, rerun and cancel runs.", no_args_is_help=True)

RunIdArg = Annotated[
    str, typer.Argument(help="The run id, or a unique prefix of it (at least 4 characters).")
]
INTERRUPTED = 130  # the shell's code for a command stopped by Ctrl-C


def piped() -> bool:
    """Whether stdout is not a terminal: then lists and views print full ids and untruncated
    text as plain tab-separated lines, for pipes and scripts, instead of fitted tables."""
    return not sys.stdout.isatty()


def out(line: str) -> None:
    """One plain line on stdout (piped output: no markup, control characters escaped)."""
    sys.stdout.write(plain(line) + "\n")


def full(value: Any) -> str:
    """A JSON value on one line, whole (piped output)."""
    return "" if value is None else json.dumps(value, default=str, ensure_ascii=False)


def resolve(rt: Runtime, run_id: str) -> str:
    """The full run id of ``run_id`` or a unique prefix of it (``RunStore.resolve_prefix``)."""
    return rt.runs.resolve_prefix(run_id)


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
    rt: Runtime,
    target: str,
    data: Any,
    timeout: float | None = None,
    trusted: bool = False,
    notes: list[str] | None = None,
) -> str:
    """Create a run of a skill file (stored as a draft version) or of a known skill name.

    A file is executed here only with ``trusted``; otherwise its declaration is read from the
    syntax tree and the policy checked, and it runs in the sandbox. A file is a one-off draft:
    it never becomes the active version (``notes`` receives the line saying so).
    """
    from loopwright.runner.sources import load_skill, read_skill_file

    path = Path(target)
    if target.endswith(".py") or path.exists():
        source = read_skill_file(path, rt.settings.skill_source_max_bytes)
        name = load_skill(source, str(path)).spec.name if trusted else _checked_name(source, path)
        reg = rt.sources.put_draft(source, name)
        version = reg.version
        if notes is not None and reg.outcome == "draft":
            notes.append(
                f"ran {target} as a draft of {name} (not registered: no trigger, not in "
                f"'skills list'); register it with 'loopwright skills submit {target}'"
            )
    else:
        name, version = target, rt.sources.resolve(target)
    return rt.runs.create(skill=name, version=version, data=data, timeout=timeout, trusted=trusted)


def wait_with_progress(rt: Runtime, run_id: str, timeout: float | None, quiet: bool) -> Run:
    """Wait for the run to end, showing its status and step count while it goes.

    With no live worker on the queue it says so at once (a queued run would wait forever).
    Ctrl-C stops the waiting, not the run: it says so, with the command to follow the run, and
    exits 130.
    """
    try:
        return _wait(rt, run_id, timeout, quiet)
    except KeyboardInterrupt:
        err_console.print(
            f"\nstopped waiting; run {literal(run_id)} continues in the background. "
            f"Follow it with: loopwright runs wait {literal(run_id)}"
        )
        raise typer.Exit(INTERRUPTED) from None


def _wait(rt: Runtime, run_id: str, timeout: float | None, quiet: bool) -> Run:
    deadline = None if timeout is None else time.monotonic() + timeout
    warned_sched = False
    run = rt.runs.get(run_id)
    if not run.status.terminal and live_workers(rt) == 0:
        err_console.print(
            f"[yellow]no worker is consuming queue '{literal(rt.settings.queue)}': the run "
            f"stays {literal(run.status.value)} until one starts. Start workers with "
            f"'loopwright up' (or 'loopwright worker'); waiting meanwhile[/]"
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


def print_outcome(run: Run, as_json: bool) -> None:
    """A waited-for run's end: JSON, or its status, output and error; exit 1 unless it
    completed."""
    if as_json:
        emit_json(run.to_dict())
    else:
        console.print(f"run [bold]{literal(run.id)}[/] {styled(run.status.value)}")
        if run.output is not None:
            console.print(literal(json.dumps(run.output, indent=2)))
        if run.error:
            err_console.print(f"[red]{literal(run.error)}[/]")
    if run.status.value != "completed":
        raise typer.Exit(1)


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
    notes: list[str] = []
    run_id = start_run(rt, target, payload, budget, trusted, notes)
    for note in notes:
        err_console.print(literal(note), soft_wrap=True)
    if not wait:
        if as_json:
            emit_json({"run_id": run_id, "status": "queued"})
        else:
            console.print(f"run [bold]{literal(run_id)}[/] queued")
        return
    print_outcome(wait_with_progress(rt, run_id, wait_timeout, quiet=as_json), as_json)


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
    rt = open_runtime()
    since_ms = None
    if since is not None:
        try:
            from loopwright.sdk.durations import parse_duration

            since_ms = int((time.time() - parse_duration(since)) * 1000)
        except ValueError as exc:
            raise UserError(f"--since: {exc}") from None
    if status is None:  # the time index (per skill) answers it: no index module to load
        runs = rt.runs.find(skill=skill, since_ms=since_ms, limit=limit)
    else:  # the status indexes, as the API reads them
        from loopwright.service.queries import RunFilter, collect_runs

        flt = RunFilter(skill=skill, status=status, since_ms=since_ms)
        runs = collect_runs(rt.redis, rt.keys, flt, limit)
    if as_json:
        emit_json([r.to_dict() for r in runs])
        return
    if piped():
        out("run\tskill\tstatus\tattempts\tcreated (UTC)\tactive\tresult")
        for r in runs:
            result = one_line(r.error) if r.error else full(r.output)
            out(
                f"{r.id}\t{r.skill}\t{r.status.value}\t{r.attempts}\t{fmt_ts(r.created_at)}\t"
                f"{r.active_ms / 1000:.2f}s\t{result}"
            )
        return
    from rich.table import Table  # terminals only: piped output never loads rich

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
def show_run(run_id: RunIdArg, as_json: JsonFlag = False) -> None:
    """Show one run with its step timeline and log."""
    rt = open_runtime()
    run_id = resolve(rt, run_id)
    if as_json:
        run = rt.runs.get(run_id)
        records = rt.runs.steps(run_id)
        steps = [s.to_dict() for s in records]
        labels = {f: run.raw.get(f) for f in ("feedback", "feedback_note", "feedback_by")}
        history = {**labels, "pinned": run.raw.get("pinned") == "1"}
        emit_json(
            {**run.to_dict(), **history, **lineage(run, records), "steps": steps,
             "logs": rt.runs.logs(run_id)}
        )  # fmt: skip
        return
    render_run(rt, run_id)


def next_retry_at(run: Run, steps: list[StepRecord]) -> int | None:
    """When a run parked for a step's retry wakes (the step's ``until``), else None."""
    retrying = [s for s in steps if s.status == "retrying" and s.until]
    if not retrying or run.status.terminal:
        return None
    return retrying[-1].until


def lineage(run: Run, steps: list[StepRecord]) -> dict[str, Any]:
    """Where a run came from and what was done to it: trigger, event id, rerun and retry
    links, the next retry time (``runs show``, text and JSON alike)."""
    raw = run.raw
    return {
        "event_id": run.event.get("id"),
        "event_name": run.event.get("name"),
        "rerun_of": raw.get("rerun_of") or None,
        "from_step": raw.get("from_step") or None,
        "retried": int(raw.get("retried") or 0),
        "retried_at": int(raw["retried_at"]) if raw.get("retried_at") else None,
        "previous_error": raw.get("prev_error") or None,
        "next_retry_at": next_retry_at(run, steps),
    }


def _facts(run: Run, steps: list[StepRecord]) -> list[str]:
    """The run's header lines, plain text (``literal`` or ``plain`` is applied by the caller)."""
    info = lineage(run, steps)
    trigger = " ".join(f"{k}={v}" for k, v in run.trigger.items() if k != "type")
    facts = [
        f"run {run.id}  skill {run.skill}@{run.version}  {run.status.value}  attempts "
        f"{run.attempts}  lost executors {run.reaps}",
        f"created {fmt_ts(run.created_at)}  started {fmt_ts(run.started_at)}  finished "
        f"{fmt_ts(run.finished_at)}  active {run.active_ms / 1000:.2f}s",
        f"trigger {run.trigger.get('type', '-')}{'  ' + trigger if trigger else ''}  event "
        f"{info['event_name'] or '-'}  event id {info['event_id'] or '-'}",
    ]
    if run.parent:
        facts.append(f"child of run {run.parent} (step #{run.parent_seq})")
    if info["rerun_of"]:
        src = f" from step {info['from_step']!r}" if info["from_step"] else ""
        facts.append(f"rerun of run {info['rerun_of']}{src}")
    if info["retried"]:
        facts.append(f"retried {info['retried']} time(s), last {fmt_ts(info['retried_at'])}")
        if info["previous_error"]:
            facts.append(f"error before the retry: {one_line(info['previous_error'])}")
    if info["next_retry_at"]:
        facts.append(f"next retry {fmt_ts(info['next_retry_at'])}")
    elif run.wake_at and not run.status.terminal:
        facts.append(f"wakes {fmt_ts(run.wake_at)}")
    return facts


def render_run(rt: Runtime, run_id: str) -> None:
    """Print a run's header, step timeline, output or error, and log (all of it literal);
    piped, the same as plain lines with nothing truncated."""
    run = rt.runs.get(run_id)
    steps = rt.runs.steps(run_id)
    logs = rt.runs.logs(run_id)
    feedback = ""
    if run.raw.get("feedback") or run.raw.get("pinned") == "1":
        note = run.raw.get("feedback_note")
        feedback = f"feedback: {run.raw.get('feedback', '-')}" + (f" ({note})" if note else "")
        feedback += "  pinned" if run.raw.get("pinned") == "1" else ""
    if piped():
        for fact in _facts(run, steps):
            out(fact)
        out("#\tstep\tkind\tstatus\tattempts\tduration\toutput / error")
        for s in steps:
            d = s.to_dict()
            dur = f"{d['duration_ms']} ms" if d["duration_ms"] is not None else "-"
            detail = one_line(s.error) if s.error else full(s.output)
            if s.kind == "sleep" and not s.error:
                detail = f"until {fmt_ts(s.until)}"
            out(f"{s.seq}\t{s.name}\t{s.kind}\t{s.status}\t{s.attempts}\t{dur}\t{detail}")
        if run.output is not None:
            out(f"output: {full(run.output)}")
        if run.error:
            out(f"error: {one_line(run.error)}")
        if feedback:
            out(one_line(feedback))
        for line in logs:
            out(f"  {fmt_ts(line['ts'])} {line['level']:7} #{line['step']} {line['message']}")
        return
    from rich.table import Table  # terminals only: piped output never loads rich

    facts = _facts(run, steps)
    console.print(f"[bold]{literal(facts[0])}[/]")
    for fact in facts[1:]:
        console.print(literal(fact))
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
    if feedback:
        console.print(literal(feedback))
    for line in logs:
        console.print(
            f"  {fmt_ts(line['ts'])} {literal(line['level']):7} #{literal(line['step'])} "
            f"{literal(line['message'])}"
        )


@runs_app.command("cancel")
def cancel_run(
    run_id: Annotated[
        str | None,
        typer.Argument(help="The run id or a unique prefix; or give --skill to cancel many."),
    ] = None,
    skill: Annotated[
        str | None, typer.Option(help="Cancel every unfinished run of this skill.")
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(help="With --skill: only runs in this status (queued, running, ...)."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --skill: only count what would be cancelled.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Cancel a run (and its child runs), or with --skill every unfinished run of a skill."""
    if (run_id is None) == (skill is None):
        raise typer.BadParameter("give a RUN_ID or --skill NAME (not both)")
    if run_id is not None and (status or dry_run):
        raise typer.BadParameter("--status and --dry-run go with --skill")
    rt = open_runtime()
    if skill is not None:
        _cancel_many(rt, skill, status, yes=yes, dry_run=dry_run, as_json=as_json)
        return
    assert run_id is not None
    run_id = resolve(rt, run_id)
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


def _cancel_many(
    rt: Runtime, skill: str, status: str | None, *, yes: bool, dry_run: bool, as_json: bool
) -> None:
    """Count first; then, on a terminal, ask (``--yes`` skips it; without a terminal
    ``--yes`` is required, so a script never cancels by accident)."""
    from loopwright.service.operations import cancel_many

    what = f"{status + ' ' if status else 'unfinished '}run(s) of skill {skill!r}"
    counted = cancel_many(rt, skill, status, dry_run=True)
    if dry_run or counted.matched == 0:
        if as_json:
            emit_json(counted.to_dict())
            return
        would = " would be cancelled" if counted.matched else ""
        console.print(f"{counted.matched} {literal(what)}{would}")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise typer.BadParameter(
                f"{counted.matched} {what} match; not on a terminal, so add --yes to cancel "
                "them (or --dry-run to only count)"
            )
        if not typer.confirm(f"cancel {counted.matched} {what}?", default=False):
            raise typer.Exit(1)
    done = cancel_many(rt, skill, status, only=counted.ids)  # what was counted and confirmed
    if as_json:
        emit_json(done.to_dict())
        return
    children = len(done.cancelled) - done.matched
    extra = f" and {children} child run(s)" if children > 0 else ""
    console.print(f"cancelled {done.matched} {literal(what)}{extra}")


@runs_app.command("retry")
def retry_run(run_id: RunIdArg, as_json: JsonFlag = False) -> None:
    """Run a failed or cancelled run again from its first unfinished step (same run id; its
    finished steps are not executed again)."""
    from loopwright.service.operations import retry

    rt = open_runtime()
    done = retry(rt, resolve(rt, run_id))
    if as_json:
        emit_json(
            {"run_id": done.run_id, "status": "queued", "from_seq": done.from_seq,
             "dropped_checkpoints": done.dropped}
        )  # fmt: skip
        return
    where = f"from step #{done.from_seq}" if done.from_seq else "(every checkpoint was finished)"
    console.print(
        f"run [bold]{literal(done.run_id)}[/] queued again {where}; follow it with: "
        f"loopwright runs wait {literal(done.run_id)}"
    )


@runs_app.command("rerun")
def rerun_run(
    run_id: RunIdArg,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", "-d", help="New input as JSON, @FILE or - for stdin (default: the old)."
        ),
    ] = None,
    version: Annotated[
        str | None, typer.Option("--version", help="A version id or prefix (default: the old).")
    ] = None,
    from_step: Annotated[
        str | None,
        typer.Option(
            "--from-step", help="Reuse the old run's checkpoints before this step (by name)."
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Wait for the new run to end.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Start a new run linked to an old one: the same or new input, on this or another version,
    optionally reusing its checkpoints before a step."""
    from loopwright.service.operations import rerun

    rt = open_runtime()
    run_id = resolve(rt, run_id)
    payload = parse_data(data, rt.settings.run_input_max_bytes) if data is not None else None
    made = rerun(rt, run_id, payload, version=version, from_step=from_step)
    if wait:
        print_outcome(wait_with_progress(rt, made.run_id, None, quiet=as_json), as_json)
        return
    if as_json:
        emit_json(made.to_dict())
        return
    reused = f", reusing {made.reused} checkpoint(s)" if made.from_step else ""
    console.print(
        f"run [bold]{literal(made.run_id)}[/] queued (rerun of {literal(run_id)} on "
        f"{literal(made.version[:12])}{reused})"
    )


@runs_app.command("wait")
def wait_run(
    run_id: RunIdArg,
    timeout: Annotated[
        float | None, typer.Option(help="Give up waiting after this many seconds.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Wait for a run to end and print how it ended (exit 1 unless it completed)."""
    rt = open_runtime()
    print_outcome(wait_with_progress(rt, resolve(rt, run_id), timeout, quiet=as_json), as_json)


@runs_app.command("replay")
def replay_command(
    run_id: RunIdArg,
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

    rt = open_runtime()
    data = replay(rt, resolve(rt, run_id), version=version, file=file)
    if as_json:
        emit_json(data)
        return
    for line in lines(data):
        console.print(literal(line), soft_wrap=True)


def _run_service(run_id: str) -> tuple[RunService, str]:
    """The run service and the full id of ``run_id`` (or a unique prefix of it)."""
    from loopwright.service.runs import RunService

    rt = open_runtime()
    return RunService(rt.redis, rt.keys), resolve(rt, run_id)


def _who() -> str:
    """Who gives feedback from this terminal (the login name, when there is one)."""
    import getpass  # here: it loads termios, which no other command needs

    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"


@runs_app.command("feedback")
def feedback_run(
    run_id: RunIdArg,
    good: Annotated[bool, typer.Option("--good", help="The run did the right thing.")] = False,
    bad: Annotated[bool, typer.Option("--bad", help="The run did the wrong thing.")] = False,
    note: Annotated[str | None, typer.Option(help="Why (plain text, e.g. 'false alarm').")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Record a verdict on a run; the run is pinned (kept by retention) as a replay case."""
    if good == bad:
        raise UserError("give exactly one of --good or --bad")
    service, run_id = _run_service(run_id)
    fb = service.feedback(run_id, good, note, _who())
    if as_json:
        emit_json(fb.to_dict())
        return
    was = f" (was {fb.previous})" if fb.previous else ""
    console.print(f"run {literal(run_id)}: {'good' if good else 'bad'}{was}; pinned")


@runs_app.command("pin")
def pin_run(run_id: RunIdArg, as_json: JsonFlag = False) -> None:
    """Keep a run until it is unpinned (retention skips pinned runs)."""
    service, run_id = _run_service(run_id)
    service.pin(run_id)
    if as_json:
        emit_json({"run_id": run_id, "pinned": True})
    else:
        console.print(f"run {literal(run_id)}: pinned")


@runs_app.command("unpin")
def unpin_run(run_id: RunIdArg, as_json: JsonFlag = False) -> None:
    """Release a pin: the run is deleted once LOOPWRIGHT_RUN_RETENTION has passed."""
    service, run_id = _run_service(run_id)
    service.unpin(run_id)
    if as_json:
        emit_json({"run_id": run_id, "pinned": False})
    else:
        console.print(f"run {literal(run_id)}: unpinned")
