"""``loopwright skills ...``: submit skills through the sidecar and manage the registry.

``submit`` goes to the sidecar service when ``LOOPWRIGHT_SIDECAR_URL`` is set and runs the same
pipeline in-process otherwise; the other commands read and change the registry in Redis.
"""

from __future__ import annotations

import json
import sys
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
    open_runtime,
    plain,
)
from loopwright.cli.state import skill_state
from loopwright.errors import UserError

if TYPE_CHECKING:
    from loopwright.runner.runtime import Runtime

skills_app = typer.Typer(help="Submit skills and manage the registry.", no_args_is_help=True)

READ_CAP = 16 * 1024 * 1024  # larger files are refused unread; the pipeline caps far lower
Author = Annotated[str, typer.Option("--author", help="Who wrote it: person, agent or review.")]


def _piped() -> bool:
    """Whether stdout is not a terminal: then ids are printed in full and tables never fold
    (a script reading the output must get whole names and version ids)."""
    return not sys.stdout.isatty()


def _id(value: str | None) -> str:
    """A version id: 12 characters on a terminal, all of it in a pipe."""
    if not value:
        return "-"
    return value if _piped() else value[:12]


def _print_table(table: Any) -> None:
    """A table on a terminal as usual; in a pipe on a console wide enough that no cell is
    folded or cut (rich never prints wider than its console)."""
    if not _piped():
        console.print(table)
        return
    from rich.console import Console

    Console(width=100_000).print(table)


def _registry(rt: Runtime) -> Any:
    from loopwright.skills_registry.store import Registry

    return Registry(rt.redis, rt.keys)


def _read(path: Path, what: str) -> str:
    try:
        if not path.is_file():
            raise UserError(f"{what} {path}: no such file")
        if path.stat().st_size > READ_CAP:
            raise UserError(f"{what} {path}: over {READ_CAP} bytes")
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{what} {path}: not UTF-8 text") from None
    except OSError as exc:
        raise UserError(f"{what} {path}: cannot read: {exc.strerror}") from None


def _submit(rt: Runtime, source: str, tests: str | None, author: str) -> Any:
    st = rt.settings
    if st.sidecar_url:
        from loopwright.auth.local import sidecar_credential
        from loopwright.sidecar.client import SidecarClient

        token = sidecar_credential(rt.redis, rt.keys, st, "person")
        with SidecarClient(st.sidecar_url, token) as client:
            return client.submit(source, tests, author)
    from loopwright.sidecar.pipeline import Sidecar

    return Sidecar(rt).submit(source, tests, author=author)


def _show_verdict(verdict: Any) -> None:
    if verdict.accepted:
        console.print(f"[green]{literal(verdict.summary)}[/]")
        for w in verdict.warnings:
            console.print(f"  [yellow]warning[/] {literal(w.one_line())} - {literal(w.hint)}")
        for fire in verdict.next_fires:
            console.print(f"  next fire {literal(fire)}")
        if getattr(verdict, "replay", None) is not None:  # advisory, run ids only
            console.print(f"  {literal(verdict.replay.line())}")
        return
    console.print(f"[red]rejected at stage {literal(verdict.stage)}[/]")
    for f in verdict.findings:
        console.print(f"  {literal(f.one_line())}")
        if f.hint:
            console.print(f"      hint: {literal(f.hint)}")
    for case in verdict.cases:
        if not case.passed:
            steps = ", ".join(f"{s['name']}:{s['status']}" for s in case.steps)
            console.print(f"  case {literal(case.name)}: steps {literal(f'[{steps}]')}")


@skills_app.command("submit")
def submit(
    file: Annotated[Path, typer.Argument(help="The skill file (.py).")],
    tests: Annotated[
        Path | None,
        typer.Option("--tests", help="Test cases (JSON); default: NAME.tests.json beside FILE."),
    ] = None,
    author: Author = "person",
    as_json: JsonFlag = False,
) -> None:
    """Validate a skill (syntax, policy, manifest, capabilities, its tests in the sandbox) and
    register it."""
    from loopwright.skills_registry.files import tests_path

    rt = open_runtime()
    source = _read(file, "skill file")
    tpath = tests or tests_path(file)
    tests_text = _read(tpath, "tests file") if tests is not None or tpath.exists() else None
    verdict = _submit(rt, source, tests_text, author)
    if as_json:
        emit_json(verdict.model_dump(mode="json"))
    else:
        _show_verdict(verdict)
    if not verdict.accepted:
        raise UserError(f"{file}: {verdict.first_line()}")


@skills_app.command("list")
def list_skills(
    drafts: Annotated[
        bool, typer.Option("--drafts", help="Also list skills only ever run from a file.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Every registered skill: status, active version, owner, versions (drafts with --drafts)."""
    from rich.table import Table

    from loopwright.agent.tools import BUILTIN_SKILLS

    rt = open_runtime()
    skills = [s for s in _registry(rt).skills() if drafts or s.status != "draft"]
    if as_json:
        emit_json([s.model_dump() for s in skills])
        return
    table = Table()
    table.add_column("skill", no_wrap=True)
    for col in ("status", "active", "owner", "versions", "pending", "updated (UTC)"):
        table.add_column(col, no_wrap=col in ("active", "owner"))
    for s in skills:
        table.add_row(
            literal(s.name),
            literal(s.status),
            literal(_id(s.active)),
            "built-in" if s.name in BUILTIN_SKILLS else literal(s.owner),
            str(s.versions),
            literal(", ".join(_id(p) for p in s.pending) or "-"),
            fmt_ts(s.updated_at),
        )
    _print_table(table)


@skills_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Skill name.")],
    version: Annotated[
        str | None, typer.Option("--version", help="A version id or prefix (default: active).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """One skill: its record, a version's manifest and report, and the source."""
    from rich.syntax import Syntax

    from loopwright.sidecar.service import skill_view

    rt = open_runtime()
    reg = _registry(rt)
    if version is None:
        rec = reg.skill(name)
        if rec.active is None and rec.drafts:  # a skill only ever run from a file
            version = rec.drafts[-1]
    view = skill_view(reg, name, version)
    if view["version"]["state"] == "draft":
        view["next_fires"] = []  # a draft is never triggered
    if as_json:
        emit_json(view)
        return
    s, v = view["skill"], view["version"]
    console.print(
        f"[bold]{literal(s['name'])}[/]  {literal(s['status'])}  owner {literal(s['owner'])}  "
        f"{s['versions']} version(s)"
    )
    console.print(
        literal(
            f"version {v['version']} ({v['state']})  author {v['author']}  "
            f"parent {_id(v['parent'])}  created {fmt_ts(v['created_at'])}  "
            f"{'validated by the sidecar' if v['validated'] else 'run from a file (no sidecar)'}"
        )
    )
    m = v["manifest"] or {}
    trig = m.get("trigger") or {}
    if trig:
        console.print(literal(f"trigger {json.dumps(trig)}"))
    for fire in view["next_fires"]:
        console.print(literal(f"  next fire {fire}"))
    for key in ("tools", "http_allow", "secrets", "retries", "timeout", "concurrency"):
        if m.get(key):
            console.print(literal(f"{key} {json.dumps(m[key])}"))
    if m.get("params"):
        console.print(
            literal("params " + ", ".join(f"{k}={p['default']!r}" for k, p in m["params"].items()))
        )
    console.print(f"tests {len(v['tests'] or [])} case(s)")
    console.print(Syntax(plain(view["source"]), "python", line_numbers=True))


@skills_app.command("versions")
def versions(name: Annotated[str, typer.Argument()], as_json: JsonFlag = False) -> None:
    """A skill's versions, oldest first, with author, parent and state."""
    from rich.table import Table

    from loopwright.skills_registry.store import version_state

    rt = open_runtime()
    reg = _registry(rt)
    rec = reg.skill(name)
    rows = [
        {**v.model_dump(exclude={"tests", "manifest", "report"}), "state": version_state(rec, v)}
        for v in reg.versions(name)
    ]
    if as_json:
        emit_json(rows)
        return
    table = Table("version", "state", "author", "parent", "created (UTC)", "validated")
    for r in rows:
        table.add_row(
            literal(_id(r["version"])),
            literal(r["state"]),
            literal(r["author"]),
            literal(_id(r["parent"])),
            fmt_ts(r["created_at"]),
            "yes" if r["validated"] else "no (run from a file)",
        )
    _print_table(table)


@skills_app.command("diff")
def diff(
    name: Annotated[str, typer.Argument()],
    v1: Annotated[str, typer.Argument(help="From this version (id or prefix).")],
    v2: Annotated[str, typer.Argument(help="To this version (id or prefix).")],
    as_json: JsonFlag = False,
) -> None:
    """What changed between two versions: source, manifest fields, test cases."""
    from rich.syntax import Syntax

    from loopwright.skills_registry.diff import diff_refs

    rt = open_runtime()
    d = diff_refs(_registry(rt), name, v1, v2)
    if as_json:
        emit_json({**d.model_dump(), "summary": d.summary()})
        return
    console.print(literal(d.summary()))
    for key, change in d.manifest.items():
        console.print(
            literal(f"  {key}: {json.dumps(change['from'])} -> {json.dumps(change['to'])}")
        )
    if d.source_diff:
        console.print(Syntax(plain(d.source_diff), "diff"))


def _change(action: str, name: str, version: str | None, as_json: bool) -> None:
    rt = open_runtime()
    reg = _registry(rt)
    method = getattr(reg, action)
    change = method(name, version) if version is not None else method(name)
    if as_json:
        emit_json(change.model_dump())
        return
    if change.action == "unchanged":
        console.print(
            literal(f"{name}: nothing to do ({change.status}, version {_id(change.version)})")
        )
    else:
        console.print(
            literal(
                f"{name}: {change.action}; status {change.status}, active version "
                f"{_id(change.version)} (was {_id(change.previous)})"
            )
        )


@skills_app.command("approve")
def approve(
    name: Annotated[str, typer.Argument()],
    version: Annotated[str, typer.Argument(help="The pending version (id or prefix).")],
    as_json: JsonFlag = False,
) -> None:
    """Approve a version waiting in pending_approval and make it active."""
    _change("approve", name, version, as_json)


@skills_app.command("rollback")
def rollback(
    name: Annotated[str, typer.Argument()],
    version: Annotated[str, typer.Argument(help="An earlier version (id or prefix).")],
    as_json: JsonFlag = False,
) -> None:
    """Make an earlier version active again (runs in flight keep theirs)."""
    _change("rollback", name, version, as_json)


@skills_app.command("pause")
def pause(name: Annotated[str, typer.Argument()], as_json: JsonFlag = False) -> None:
    """Stop new runs (cron, events, run NAME); runs in flight go on."""
    _change("pause", name, None, as_json)


@skills_app.command("resume")
def resume(name: Annotated[str, typer.Argument()], as_json: JsonFlag = False) -> None:
    """Let a paused or retired skill run again (cron restarts from now)."""
    _change("resume", name, None, as_json)


@skills_app.command("retire")
def retire(name: Annotated[str, typer.Argument()], as_json: JsonFlag = False) -> None:
    """Take a skill out of service; its versions stay for history and rollback."""
    _change("retire", name, None, as_json)


@skills_app.command("delete")
def delete(
    name: Annotated[str, typer.Argument(help="The skill to delete.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Delete a skill: purge its versions, triggers and approvals; keep its run history.

    Refused while any of its runs is queued, running, sleeping or waiting."""
    from loopwright.service.skills import delete_skill, refuse_builtin

    refuse_builtin(name)
    rt = open_runtime()
    rec = _registry(rt).skill(name)  # an unknown name fails here, before the question
    if not yes:
        if not sys.stdin.isatty():
            raise UserError(f"deleting {name!r} needs confirmation: pass --yes")
        typer.confirm(
            f"Delete skill {name} ({rec.status}, {rec.versions} version(s))? Its runs stay "
            "in the history",
            abort=True,
        )
    result = delete_skill(rt.redis, rt.keys, name)
    if as_json:
        emit_json(result.model_dump())
        return
    console.print(
        literal(
            f"deleted {name}: {result.versions} version(s) purged, triggers removed; "
            f"{result.runs_kept} run(s) kept in the history ('loopwright runs list --skill "
            f"{name}')"
        ),
        soft_wrap=True,
    )


@skills_app.command("export")
def export(
    directory: Annotated[Path, typer.Argument(help="Folder to write into.")],
    as_json: JsonFlag = False,
) -> None:
    """Write every active (and paused) skill to a folder a person can review and commit."""
    from loopwright.skills_registry.files import export_dir

    rt = open_runtime()
    result = export_dir(_registry(rt), directory)
    if as_json:
        emit_json(result)
        return
    console.print(
        f"exported {len(result['skills'])} skill(s) to {literal(directory)}: "
        f"{len(result['written'])} file(s) written, {len(result['removed'])} removed"
    )
    for name in result["untested"]:
        err_console.print(
            f"[yellow]{literal(name)}: its active version was run from a file and has no tests; "
            f"add {literal(name)}.tests.json before importing it[/]"
        )


@skills_app.command("import")
def import_(
    directory: Annotated[Path, typer.Argument(help="A folder written by 'skills export'.")],
    author: Author = "person",
    as_json: JsonFlag = False,
) -> None:
    """Submit every NAME.py (with NAME.tests.json) in a folder through the sidecar pipeline."""
    from loopwright.skills_registry.files import ExportedSkill, read_dir

    rt = open_runtime()
    reg = _registry(rt)
    results: list[dict[str, Any]] = []
    for item in read_dir(directory, READ_CAP):
        if not isinstance(item, ExportedSkill):
            results.append({"file": item[0].name, "accepted": False, "summary": item[1]})
            continue
        verdict = _submit(rt, item.source, item.tests, author)
        entry = {
            "file": item.path.name,
            "accepted": verdict.accepted,
            "name": verdict.name,
            "version": verdict.version,
            "summary": verdict.first_line(),
        }
        if verdict.accepted and item.status == "paused" and verdict.name:
            entry["status"] = reg.pause(verdict.name).status
        results.append(entry)
    failed = [r for r in results if not r["accepted"]]
    if as_json:
        emit_json(results)
    else:
        for r in results:
            colour = "green" if r["accepted"] else "red"
            console.print(f"[{colour}]{literal(r['file'])}[/]: {literal(r['summary'])}")
    if failed:
        names = ", ".join(r["file"] for r in failed)
        raise UserError(f"{len(failed)} of {len(results)} file(s) not imported: {names}")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _ms(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.0f} ms" if x < 1000 else f"{x / 1000:.2f} s"


@skills_app.command("stats")
def stats(
    name: Annotated[str, typer.Argument()],
    window: Annotated[str, typer.Option("--window", help="How far back: 7d, 36h, 30d.")] = "7d",
    by: Annotated[str | None, typer.Option("--by", help="Group by 'version' or 'day'.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Runs, success rate (95% Wilson interval), durations, retries, cost, top errors and
    feedback of a skill, from its per-version daily rollups."""
    from rich.table import Table

    from loopwright.service.stats import skill_stats

    rt = open_runtime()
    try:
        report = skill_stats(rt.redis, rt.keys, name, window, by)
    except UserError as exc:
        from loopwright.cli.text import one_line

        sys.stderr.write(f"loopwright: error: {one_line(exc)}\n")
        raise typer.Exit(2) from None
    if as_json:
        emit_json(report.to_json())
        return
    t = report.total
    console.print(
        f"[bold]{literal(report.skill)}[/] {report.first_day}..{report.last_day} "
        f"({report.window_days}d): {t.runs} runs, success {_pct(t.success_rate)} "
        f"[{_pct(t.success_low)}, {_pct(t.success_high)}], platform failures "
        f"{t.failed_platform} (not counted against the skill), feedback "
        f"+{t.fb_good}/-{t.fb_bad}",
        highlight=False,
    )
    table = Table(
        report.by or "window", "runs", "ok", "failed", "platform", "success (95% CI)",
        "p50", "p95", "retries/run", "cost/run",
    )  # fmt: skip
    for s in report.groups or [t]:
        ci = f"{_pct(s.success_rate)} [{_pct(s.success_low)}-{_pct(s.success_high)}]"
        retries = "-" if s.retries_per_run is None else f"{s.retries_per_run:.2f}"
        cost = "-" if s.cost_per_run is None else f"${s.cost_per_run:.4f}"
        table.add_row(
            literal(s.group), str(s.runs), str(s.completed), str(s.failed_skill),
            str(s.failed_platform), ci, _ms(s.p50_ms), _ms(s.p95_ms), retries, cost,
        )  # fmt: skip
    console.print(table)
    if t.signatures:
        errs = Table("signature", "count", "origin", "failing step", "example run", "message")
        for sig in t.signatures:
            errs.add_row(
                sig.signature, str(sig.count), sig.origin, literal(sig.step) or "-",
                sig.example_run, literal(sig.message[:120]),
            )  # fmt: skip
        console.print(errs)


skills_app.command("state")(skill_state)  # ctx.state: cli/state.py
