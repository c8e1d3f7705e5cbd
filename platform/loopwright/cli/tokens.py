"""``loopwright tokens create|list|revoke``: the platform's API tokens (docs/security.md).

Anyone who can run these commands can reach Redis, so they need no token themselves. The
plaintext of a new token is printed once and never stored.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated

import typer

from loopwright.auth.scopes import AUTHORS, SCOPES
from loopwright.cli.common import (
    JsonFlag,
    console,
    emit_json,
    err_console,
    fmt_ts,
    literal,
    open_runtime,
)
from loopwright.errors import UserError
from loopwright.sdk.durations import parse_duration

if TYPE_CHECKING:
    from loopwright.auth.tokens import TokenInfo, TokenStore

tokens_app = typer.Typer(
    help="Platform tokens for the sidecar service and the API.", no_args_is_help=True
)


def _store() -> TokenStore:
    from loopwright.auth.tokens import TokenStore

    rt = open_runtime()
    return TokenStore(rt.redis, rt.keys)


def _expires(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise UserError(f"--expires: {exc}") from None
    if seconds <= 0:
        raise UserError("--expires must be a positive duration, e.g. 30d or 12h")
    return seconds


@tokens_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="What the token is for, e.g. alice or ci-bot.")],
    scope: Annotated[
        list[str],
        typer.Option("--scope", "-s", help=f"Repeatable: {', '.join(SCOPES)} (admin: all)."),
    ],
    author: Annotated[
        str,
        typer.Option(help=f"Who its submissions are recorded as: {', '.join(AUTHORS)}."),
    ] = "person",
    expires: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 30d, 12h (default: no expiry).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Create a token; its secret is printed once."""
    scopes = [s.strip() for item in scope for s in item.split(",") if s.strip()]
    info, plain = _store().create(name, scopes, author=author, expires_in=_expires(expires))
    if as_json:
        emit_json({**info.model_dump(), "token": plain})
        return
    err_console.print(
        f"created token {info.id} '{literal(info.name)}' (scopes {', '.join(info.scopes)}; "
        f"author {info.author}; expires {fmt_ts(info.expires_at) if info.expires_at else 'never'})"
        "; the secret below is shown once, store it now:"
    )
    print(plain)


def _row(t: TokenInfo) -> list[str]:
    return [
        t.id,
        literal(t.name) + (" (local)" if t.local else ""),
        ",".join(t.scopes),
        t.author,
        t.state(),
        fmt_ts(t.created_at),
        fmt_ts(t.last_used_at),
        fmt_ts(t.expires_at) if t.expires_at else "never",
    ]


@tokens_app.command("list")
def list_tokens(as_json: JsonFlag = False) -> None:
    """Every token (never its secret): scopes, author, state, last use."""
    tokens = _store().list()
    if as_json:
        emit_json([{**t.model_dump(), "state": t.state()} for t in tokens])
        return
    from rich.table import Table

    table = Table("id", "name", "scopes", "author", "state", "created", "last used", "expires")
    for t in tokens:
        table.add_row(*_row(t))
    # In a pipe, no column is folded or cut (rich never prints wider than its console).
    if sys.stdout.isatty():
        console.print(table)
    else:
        from rich.console import Console

        Console(width=100_000).print(table)


@tokens_app.command("revoke")
def revoke(
    token_id: Annotated[str, typer.Argument(metavar="ID", help="Token id (or unique prefix).")],
    as_json: JsonFlag = False,
) -> None:
    """Revoke a token: its next request is refused."""
    info = _store().revoke(token_id)
    if as_json:
        emit_json({**info.model_dump(), "state": info.state()})
        return
    console.print(f"revoked token {info.id} '{literal(info.name)}'")
