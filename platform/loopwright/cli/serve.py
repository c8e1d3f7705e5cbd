"""``loopwright serve``: the HTTP API (and pages) on 127.0.0.1:8700 by default."""

from __future__ import annotations

from typing import Annotated

import typer

from loopwright.cli.common import console, err_console, literal, open_runtime


def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (LOOPWRIGHT_API_HOST).")] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (LOOPWRIGHT_API_PORT).")
    ] = None,
    tls: Annotated[
        bool, typer.Option("--behind-tls", help="A TLS proxy is in front: no clear-text warning.")
    ] = False,
) -> None:
    """Serve the HTTP API; prints a one-time login URL for this machine's browser."""
    from loopwright.api.app import bind_warning, login_url
    from loopwright.api.app import serve as run_server

    rt = open_runtime()
    host = host or rt.settings.api_host
    port = port or rt.settings.api_port
    warning = bind_warning(host, tls)
    if warning:
        err_console.print(f"[yellow]{literal(warning)}[/]")

    def ready() -> None:
        console.print(f"Loopwright API on http://{literal(host)}:{port}/api/v1")
        console.print(f"sign in (one time, 10 minutes): {literal(login_url(rt, host, port))}")

    run_server(rt, host, port, on_ready=ready)
