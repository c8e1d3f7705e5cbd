"""Platform tokens (loopwright.auth): stored hashed, scoped, revocable, expiring; the CLI that
manages them; the local token file the tools on this machine share."""

from __future__ import annotations

import json
import os
import stat

import pytest
from pydantic import SecretStr

from conftest import Cluster, wait_until
from loopwright.auth.local import local_token, local_token_path, sidecar_credential
from loopwright.auth.tokens import AuthError, Principal, TokenStore, bearer, hash_token
from loopwright.errors import NotFoundError, UserError


def _store(cluster: Cluster) -> TokenStore:
    return TokenStore(cluster.rt.redis, cluster.rt.keys)


def _redis_dump(cluster: Cluster) -> str:
    """Every value under the test's prefix, as one string (to look for plaintext)."""
    r = cluster.rt.redis
    out = []
    for key in r.scan_iter(f"{cluster.settings.key_prefix}:*"):
        kind = r.type(key)
        if kind == "hash":
            out.append(json.dumps(r.hgetall(key)))
        elif kind == "zset":
            out.append(json.dumps(r.zrange(key, 0, -1)))
        elif kind == "string":
            out.append(str(r.get(key)))
    return "\n".join(out)


def test_cli_creates_lists_and_revokes_and_redis_never_holds_the_secret(cluster: Cluster) -> None:
    made = cluster.cli(
        "tokens", "create", "alice", "--scope", "operate", "-s", "approve", "--expires", "30d",
        "--json",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    plain = created["token"]
    assert plain.startswith("lwt_") and created["scopes"] == ["operate", "approve"]
    assert created["author"] == "person" and created["expires_at"] > created["created_at"]
    dump = _redis_dump(cluster)
    assert plain not in dump and plain.split("_", 2)[2] not in dump
    assert hash_token(plain) in dump  # only the hash is stored
    who = _store(cluster).authenticate(f"Bearer {plain}")
    assert who == Principal(created["id"], "alice", frozenset({"operate", "approve"}), "person")
    assert who.identity == "person:alice"

    listed = cluster.cli("tokens", "list", "--json")
    assert listed.returncode == 0 and plain not in listed.stdout
    (row,) = json.loads(listed.stdout)
    assert row["state"] == "active" and row["last_used_at"] is not None
    revoked = cluster.cli("tokens", "revoke", created["id"][:6])
    assert revoked.returncode == 0 and "revoked token" in revoked.stdout
    with pytest.raises(AuthError, match="revoked") as refused:
        _store(cluster).authenticate(f"Bearer {plain}")
    assert refused.value.status == 401
    assert json.loads(cluster.cli("tokens", "list", "--json").stdout)[0]["state"] == "revoked"


def test_plain_output_shows_the_secret_once_on_stdout(cluster: Cluster) -> None:
    made = cluster.cli("tokens", "create", "ci-bot", "--scope", "read", "--author", "agent")
    assert made.returncode == 0, made.stderr
    (line,) = made.stdout.splitlines()
    assert line.startswith("lwt_") and "shown once" in made.stderr
    assert _store(cluster).verify(line).author == "agent"


@pytest.mark.parametrize(
    ("name", "scopes", "author", "message"),
    [
        ("bad\nname", ["read"], "person", "token name"),
        ("bad name", ["read"], "person", "token name"),
        ("[red]x", ["read"], "person", "token name"),
        ("ok", ["root"], "person", "scopes must be some of"),
        ("ok", ["read"], "god", "author must be one of"),
    ],
)
def test_bad_input_creates_nothing(
    cluster: Cluster, name: str, scopes: list[str], author: str, message: str
) -> None:
    with pytest.raises(UserError, match=message):
        _store(cluster).create(name, scopes, author=author)
    assert _store(cluster).list() == []


def test_cli_bad_input_is_one_clear_line(cluster: Cluster) -> None:
    proc = cluster.cli("tokens", "create", "ok", "--scope", "read", "--expires", "soon")
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("loopwright: error: --expires: not a duration")
    proc = cluster.cli("tokens", "revoke", "abcdef")
    assert proc.returncode == 1 and "no token 'abcdef'" in proc.stderr
    assert _store(cluster).list() == []


def test_every_malformed_or_wrong_credential_is_refused(cluster: Cluster) -> None:
    store = _store(cluster)
    info, plain = store.create("bob", ["read"])
    token_id = info.id
    forged_secret = plain[:-4] + ("AAAA" if not plain.endswith("AAAA") else "BBBB")
    for header in (None, "", "Bearer", "Bearer ", "Basic " + plain, plain):
        with pytest.raises(AuthError, match="missing bearer token"):
            store.authenticate(header)
    for token in (
        forged_secret,  # right id, wrong secret
        f"lwt_{'0' * 12}_{plain.split('_', 2)[2]}",  # unknown id
        plain + "x",
        plain + "\n",  # a trailing newline is not the same token
        "lwt_" + token_id,
        "x" * 10_000,
        "lwt_\udcff",
    ):
        with pytest.raises(AuthError, match=r"^invalid token$"):
            store.verify(token)
    assert bearer(f"bearer   {plain}  ") == plain  # scheme is case-insensitive


def test_expired_tokens_are_refused(cluster: Cluster) -> None:
    store = _store(cluster)
    _, plain = store.create("short", ["read"], expires_in=0.2)
    assert store.verify(plain).name == "short"
    wait_until(lambda: _refused(store, plain), timeout=5)
    with pytest.raises(AuthError, match="expired"):
        store.verify(plain)
    assert store.list()[0].state() == "expired"


def _refused(store: TokenStore, plain: str) -> bool:
    try:
        store.verify(plain)
    except AuthError:
        return True
    return False


def test_scopes_admin_implies_all_and_every_scope_implies_read(cluster: Cluster) -> None:
    store = _store(cluster)
    admin = store.verify(store.create("root", ["admin"])[1])
    operate = store.verify(store.create("op", ["operate"])[1])
    for scope in ("read", "operate", "approve", "admin"):
        assert admin.allows(scope)
    assert operate.allows("read") and operate.allows("operate")
    with pytest.raises(AuthError, match="lacks the 'approve' scope") as refused:
        operate.require("approve")
    assert refused.value.status == 403
    assert not operate.allows("admin")
    with pytest.raises(UserError, match="scopes must be"):
        store.create("none", [])


def test_get_needs_an_unambiguous_id(cluster: Cluster) -> None:
    store = _store(cluster)
    info, _ = store.create("one", ["read"])
    assert store.get(info.id[:4]).id == info.id
    with pytest.raises(NotFoundError):
        store.get("zz")
    with pytest.raises(NotFoundError):
        store.get(info.id + "\n")


# The local token file -----------------------------------------------------------------------


def test_local_tokens_are_made_once_private_and_scoped_per_role(cluster: Cluster) -> None:
    rt, st = cluster.rt, cluster.settings
    person = local_token(rt.redis, rt.keys, st, "person")
    agent = local_token(rt.redis, rt.keys, st, "agent")
    path = local_token_path(st)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert local_token(rt.redis, rt.keys, st, "person") == person  # reused, not remade
    store = _store(cluster)
    assert store.verify(person).author == "person" and store.verify(person).allows("approve")
    who = store.verify(agent)
    assert who.author == "agent" and not who.allows("approve")
    assert {t.name for t in store.list()} == {"local-person", "local-agent"}
    assert all(t.local for t in store.list()) and not store.has_operator_token()
    # An explicitly configured token wins over the file
    explicit = st.model_copy(update={"sidecar_agent_token": SecretStr("lwt_configured")})
    assert sidecar_credential(rt.redis, rt.keys, explicit, "agent") == "lwt_configured"


def test_a_local_token_this_redis_never_issued_is_replaced(cluster: Cluster) -> None:
    rt, st = cluster.rt, cluster.settings
    path = local_token_path(st)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, json.dumps({"agent": "lwt_000000000000_" + "A" * 43}).encode())
    os.close(fd)
    token = local_token(rt.redis, rt.keys, st, "agent")
    assert token != "lwt_000000000000_" + "A" * 43 and _store(cluster).verify(token)


def test_a_revoked_local_token_is_not_silently_remade(cluster: Cluster) -> None:
    rt, st = cluster.rt, cluster.settings
    token = local_token(rt.redis, rt.keys, st, "agent")
    _store(cluster).revoke(_store(cluster).verify(token).token_id)
    with pytest.raises(UserError, match="delete the file"):
        local_token(rt.redis, rt.keys, st, "agent")


def test_a_local_token_file_others_can_read_is_refused(cluster: Cluster) -> None:
    rt, st = cluster.rt, cluster.settings
    local_token(rt.redis, rt.keys, st, "person")
    os.chmod(local_token_path(st), 0o644)
    with pytest.raises(UserError, match="readable by other users"):
        local_token(rt.redis, rt.keys, st, "person")
