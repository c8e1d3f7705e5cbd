"""Local credentials: tokens the tools on this machine use without anyone pasting them.

``loopwright sidecar`` and every local client (the CLI, the builder agent's sidecar client)
share a file in the data dir, ``tokens/local-{prefix}.json`` (mode 0600, folder 0700), holding
two platform tokens made on first use:

* ``person`` (scopes operate + approve, author person): what the CLI presents, because the
  person at the terminal is the one who can already read the data dir;
* ``agent`` (scope operate, author agent): what the builder agent's client presents, so
  whatever the model writes is recorded as the agent's, and it cannot approve.

The file is the boundary: a process that can read it runs as the platform's own user (which
can also reach the managed Redis). A web page or another user's process cannot read it, and
that is who the tokens stop. A token configured explicitly (``LOOPWRIGHT_SIDECAR_TOKEN`` for
the CLI, ``LOOPWRIGHT_SIDECAR_AGENT_TOKEN`` for the agent) wins over the file.

A file token unknown to this Redis (another server, a flushed database) is replaced; a revoked
one is not (revoking is deliberate): the error says to delete the file.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from redis import Redis

from loopwright.auth.tokens import AuthError, TokenStore
from loopwright.errors import UserError
from loopwright.keys import Keys
from loopwright.settings import Settings

Role = Literal["person", "agent"]
ROLES: dict[str, tuple[list[str], str]] = {
    "person": (["operate", "approve"], "person"),
    "agent": (["operate"], "agent"),
}


def local_token_path(settings: Settings) -> Path:
    """Where this keyspace's local tokens live."""
    return settings.data_dir / "tokens" / f"local-{settings.key_prefix}.json"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(path: Path) -> dict[str, str]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return {}
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise UserError(
            f"{path} is readable by other users: its tokens may have leaked; revoke them "
            "('loopwright tokens list', 'loopwright tokens revoke ID') and delete the file"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable local token file ({exc}); delete it") from None
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def _write(path: Path, data: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def _usable(store: TokenStore, token: str, path: Path, role: str) -> bool:
    """True for a live token; False for one this Redis never issued; error if revoked."""
    try:
        store.verify(token)
    except AuthError as exc:
        if str(exc) == "invalid token":
            return False
        raise UserError(
            f"the local {role} token in {path} is no longer valid ({exc}); delete the file "
            "to make new local tokens"
        ) from None
    return True


def local_token(redis: Redis, keys: Keys, settings: Settings, role: Role) -> str:
    """This machine's token for ``role``, created (and saved 0600) on first use."""
    path = local_token_path(settings)
    store = TokenStore(redis, keys)
    with _locked(path):
        data = _read(path)
        token = data.get(role)
        if token and _usable(store, token, path, role):
            return token
        scopes, author = ROLES[role]
        _, token = store.create(f"local-{role}", scopes, author=author, local=True)
        data[role] = token
        _write(path, data)
        return token


def ensure_local_tokens(redis: Redis, keys: Keys, settings: Settings) -> Path:
    """Make sure both local tokens exist (the sidecar does this at start); the file's path."""
    roles: tuple[Role, ...] = ("person", "agent")
    for role in roles:
        local_token(redis, keys, settings, role)
    return local_token_path(settings)


def sidecar_credential(redis: Redis, keys: Keys, settings: Settings, role: Role) -> str:
    """The token a local client presents to the sidecar service for ``role``."""
    configured = settings.sidecar_token if role == "person" else settings.sidecar_agent_token
    if configured is not None and configured.get_secret_value():
        return configured.get_secret_value()
    return local_token(redis, keys, settings, role)
