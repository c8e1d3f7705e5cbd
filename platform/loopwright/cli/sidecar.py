"""``loopwright sidecar``: the validation service, optionally watching a folder of skill files."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from loopwright.cli.common import (
    JsonFlag,
    console,
    emit_json,
    err_console,
    literal,
    open_runtime,
)
from loopwright.errors import UserError


def _printer(as_json: bool) -> Any:
    def show(report: dict[str, Any]) -> None:
        if as_json:
            sys.stdout.write(json.dumps(report, default=str) + "\n")
            sys.stdout.flush()
            return
        ok = report.get("accepted")
        colour = "green" if ok else ("yellow" if report.get("event") == "removed" else "red")
        line = f"[{colour}]{literal(report['file'])}[/]: {literal(report['summary'])}"
        (console if ok or report.get("event") == "removed" else err_console).print(line)
        for f in report.get("findings") or []:
            err_console.print(
                literal(f"    line {f['line']}: {f['message']} [{f['rule']}] - {f['hint']}")
            )

    return show


def sidecar(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8765).")] = None,
    watch: Annotated[
        Path | None,
        typer.Option("--watch", help="Also submit skill files dropped or changed in this folder."),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="With --watch: process the folder once and exit.")
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Run the sidecar: the HTTP service that validates, tests and registers skills."""
    rt = open_runtime()
    st = rt.settings
    if watch is not None and not watch.is_dir():
        raise UserError(f"--watch {watch}: not a folder")
    if once:
        if watch is None:
            raise UserError("--once needs --watch DIR")
        from loopwright.sidecar.pipeline import Sidecar
        from loopwright.sidecar.watch import Watcher

        reports = Watcher(Sidecar(rt), watch, on_report=_printer(as_json)).scan(settle=False)
        rejected = [r for r in reports if not r.get("accepted") and r.get("event") != "removed"]
        if rejected:
            names = ", ".join(r["file"] for r in rejected)
            raise UserError(f"{len(rejected)} of {len(reports)} file(s) not registered: {names}")
        if as_json and not reports:
            emit_json([])
        return
    from loopwright.auth.local import ensure_local_tokens
    from loopwright.sidecar.service import check_bind, serve

    bind_host, bind_port = host or st.sidecar_host, port or st.sidecar_port
    check_bind(rt, bind_host)
    tokens = ensure_local_tokens(rt.redis, rt.keys, st)
    where = f" watching {watch}" if watch else ""
    err_console.print(
        literal(
            f"sidecar listening on http://{bind_host}:{bind_port} "
            f"(approval {st.approval_mode}){where}; local tools use the tokens in {tokens}"
        )
    )
    serve(rt, bind_host, bind_port, watch, on_report=_printer(as_json))
