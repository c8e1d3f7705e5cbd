"""``loopwright mcp``: the builder's tools served over MCP (stdio, or streamable HTTP)."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from loopwright.cli.common import err_console, load_settings, open_runtime


def mcp(
    http: Annotated[
        bool, typer.Option("--http", help="Serve streamable HTTP instead of stdio.")
    ] = False,
    host: Annotated[
        str, typer.Option(help="With --http: address to bind (non-loopback needs a token).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="With --http: port.")] = 8766,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
) -> None:
    """Serve the builder's tools (write, test and run skills) to MCP clients.

    stdio by default: an MCP client spawns 'loopwright mcp'; stdout carries only the protocol.

    --http: streamable HTTP at http://HOST:PORT/mcp; bearer token: LOOPWRIGHT_SIDECAR_TOKEN.
    """
    # stdout belongs to the protocol on stdio: every log line goes to stderr.
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from loopwright.agent.mcp_server import http_token, serve_http, serve_stdio

    settings = load_settings()
    if not http:
        rt = open_runtime(settings)
        err_console.print("loopwright MCP server on stdio", highlight=False)
        serve_stdio(rt)
        return
    token = http_token(settings, host)  # refuses a non-loopback host without a token
    rt = open_runtime(settings)
    shown = f"[{host}]" if ":" in host else host
    auth = "bearer token required" if token else "no token"
    err_console.print(
        f"loopwright MCP server on http://{shown}:{port}/mcp ({auth})", highlight=False
    )
    serve_http(rt, host, port)
