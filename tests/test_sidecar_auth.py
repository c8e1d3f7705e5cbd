"""Hostile callers of the sidecar service (issue 9 item 4): a real server started by the CLI,
raw HTTP from 127.0.0.1. No token, a wrong, revoked or under-scoped token, a client-chosen
author, a foreign Host (DNS rebinding), a cross-site Origin, a non-loopback bind without a
token."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from conftest import Cluster, free_port, wait_until
from loopwright.agent.tools import make_sidecar
from loopwright.auth.local import local_token
from loopwright.auth.tokens import TokenStore
from loopwright.runner.runtime import Runtime
from loopwright.skills_registry.store import Registry

SMOKE = [{"name": "smoke", "event": {}, "expect": {"status": "completed"}}]
SOURCE = """
from loopwright.sdk import skill


@skill(name="{name}", description="doubles n", params={{"factor": {factor}}})
def main(ctx):
    n = ctx.event["data"].get("n", 1)
    return ctx.step.run("double", lambda: n * ctx.params["factor"])
"""


def source(name: str, factor: int = 2) -> str:
    return textwrap.dedent(SOURCE.format(name=name, factor=factor))


class Served:
    """A sidecar process and tokens for it."""

    def __init__(self, cluster: Cluster, port: int) -> None:
        self.cluster = cluster
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=120)
        self.store = TokenStore(cluster.rt.redis, cluster.rt.keys)

    def token(self, *scopes: str, author: str = "person") -> str:
        return self.store.create(f"t-{len(self.store.list())}", list(scopes), author=author)[1]

    def call(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http.request(method, path, headers=headers, **kw)

    def submit(self, token: str, name: str, factor: int = 2, **extra: Any) -> httpx.Response:
        body = {"source": source(name, factor), "tests": SMOKE, **extra}
        return self.call("POST", "/v1/skills", token, json=body)


@pytest.fixture
def serve(make_cluster: Callable[..., Cluster]) -> Iterator[Callable[..., Served]]:
    made: list[Served] = []

    def start(env: dict[str, str] | None = None, **settings: Any) -> Served:
        cluster = make_cluster(**settings)
        served = Served(cluster, free_port())
        cluster.spawn("sidecar", "--port", str(served.port), env=env)
        wait_until(lambda: _up(served), timeout=60)
        made.append(served)
        return served

    yield start
    for s in made:
        s.http.close()


def _up(served: Served) -> bool:
    try:
        return served.call("GET", "/v1/health").status_code == 200
    except httpx.HTTPError:
        return False


ENDPOINTS = [
    ("GET", "/v1/skills", None),
    ("GET", "/v1/skills/doubler", None),
    ("GET", "/v1/skills/doubler/versions", None),
    ("GET", "/v1/skills/doubler/diff?a=x&b=y", None),
    ("GET", "/v1/watch", None),
    ("POST", "/v1/skills", {"source": "x", "tests": SMOKE, "author": "person"}),
    ("POST", "/v1/skills/doubler/approve", {"version": "abcd"}),
    ("POST", "/v1/skills/doubler/rollback", {"version": "abcd"}),
    ("POST", "/v1/skills/doubler/pause", None),
    ("POST", "/v1/skills/doubler/resume", None),
    ("POST", "/v1/skills/doubler/retire", None),
]


def test_every_endpoint_but_health_refuses_missing_wrong_and_revoked_tokens(
    serve: Callable[..., Served],
) -> None:
    s = serve()
    good = s.token("admin")
    revoked = s.token("admin")
    s.store.revoke(s.store.verify(revoked).token_id)
    wrong = good[:-6] + ("A" * 6 if not good.endswith("A" * 6) else "B" * 6)
    # a static shared secret in the old style is not a platform token
    for token, why in [
        (None, "missing bearer token"),
        (wrong, "invalid token"),
        ("t0ken-for-tests", "invalid token"),
        (revoked, "revoked"),
    ]:
        for method, path, body in ENDPOINTS:
            resp = s.call(method, path, token, json=body)
            assert resp.status_code == 401, (method, path, token, resp.text)
            assert why in resp.json()["detail"]
            assert resp.headers["www-authenticate"].startswith("Bearer")
    assert s.cluster.rt.sources.names() == {}  # nothing was registered on the way
    anonymous = s.call("GET", "/v1/health").json()
    assert (
        anonymous["ok"] is True and "sandbox" not in anonymous and "approval_mode" not in anonymous
    )
    detailed = s.call("GET", "/v1/health", s.token("read")).json()
    assert detailed["approval_mode"] == "auto" and detailed["guests"]["limit"] == 4
    assert s.call("GET", "/openapi.json").status_code == 404
    assert s.call("GET", "/v1/skills", good).json() == []


def test_scopes_operate_cannot_approve_and_read_cannot_submit(
    serve: Callable[..., Served],
) -> None:
    s = serve(approval_mode="review")
    reader, agent = s.token("read"), s.token("operate", author="agent")
    assert s.submit(reader, "doubler").status_code == 403
    verdict = s.submit(agent, "doubler").json()
    assert verdict["registration"] == "pending" and verdict["author"] == "agent"
    version = verdict["version"]
    # The submitter tries to approve its own version (the self-approval of the review)
    refused = s.call("POST", "/v1/skills/doubler/approve", agent, json={"version": version})
    assert refused.status_code == 403 and "lacks the 'approve' scope" in refused.json()["detail"]
    for action in ("pause", "retire"):
        assert s.call("POST", f"/v1/skills/doubler/{action}", agent).status_code == 403
    registry = Registry(s.cluster.rt.redis, s.cluster.rt.keys)
    assert registry.skill("doubler").pending == [version]
    assert s.call("GET", "/v1/skills/doubler/versions", agent).status_code == 200  # implied read
    approver = s.token("approve")
    assert s.submit(approver, "other").status_code == 403  # approve does not imply operate
    ok = s.call("POST", "/v1/skills/doubler/approve", approver, json={"version": version[:8]})
    assert ok.status_code == 200 and s.cluster.rt.sources.resolve("doubler") == version


def test_the_author_is_the_tokens_never_the_request_bodys(serve: Callable[..., Served]) -> None:
    s = serve()
    person, agent = s.token("operate"), s.token("operate", author="agent")
    first = s.submit(person, "owned").json()
    assert first["accepted"] and first["author"] == "person"
    # The takeover: an agent claims to be a person to replace a person's skill
    takeover = s.submit(agent, "owned", factor=3, author="person").json()
    assert not takeover["accepted"] and takeover["findings"][0]["rule"] == "name-owned"
    registry = Registry(s.cluster.rt.redis, s.cluster.rt.keys)
    assert [v.author for v in registry.versions("owned")] == ["person"]
    # A new skill of the agent's, claimed as a person's, is recorded as the agent's
    claimed = s.submit(agent, "agents-own", author="person").json()
    assert claimed["accepted"] and claimed["author"] == "agent"
    assert registry.version("agents-own").author == "agent"
    assert registry.skill("agents-own").owner == "agent"
    # and the local tokens the tools use say who they are
    rt, st = s.cluster.rt, s.cluster.settings
    builder = local_token(rt.redis, rt.keys, st, "agent")
    assert s.submit(builder, "owned", factor=4).json()["findings"][0]["rule"] == "name-owned"


def test_foreign_hosts_get_421_and_cross_site_origins_403(serve: Callable[..., Served]) -> None:
    s = serve(env={"LOOPWRIGHT_SIDECAR_ALLOWED_HOSTS": '["sidecar.internal"]'})
    token = s.token("admin")
    port = s.port
    for host in (
        "evil.example",
        f"evil.example:{port}",
        f"127.0.0.1.evil.example:{port}",
        "localhost.evil.example",
        f"10.0.0.1:{port}",  # another address: not where this server is bound
        "",
        "evil.example/x",
        f"localhost:{port}@evil.example",
    ):
        for method, path in (("GET", "/v1/health"), ("GET", "/v1/skills")):
            resp = s.call(method, path, token, headers={"Host": host})
            assert resp.status_code == 421, (host, resp.status_code)
            assert "misdirected" in resp.json()["detail"]
    # DNS rebinding: the page's own origin (so no Origin header), Host evil.example, a token
    # the page somehow holds: still nothing happens
    rebind = s.call(
        "POST",
        "/v1/skills",
        token,
        headers={"Host": f"evil.example:{port}"},
        json={"source": source("rebound"), "tests": SMOKE},
    )
    assert rebind.status_code == 421 and s.cluster.rt.sources.names() == {}
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "sidecar.internal"):
        assert s.call("GET", "/v1/skills", token, headers={"Host": host}).status_code == 200
    for origin in ("https://evil.example", "null", f"http://evil.example:{port}", "file://"):
        resp = s.call("POST", "/v1/skills/x/pause", token, headers={"Origin": origin})
        assert resp.status_code == 403 and "cross-site" in resp.json()["detail"]
        assert s.call("GET", "/v1/health", headers={"Origin": origin}).status_code == 403
    cross = s.call("GET", "/v1/skills", token, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    same = s.call("GET", "/v1/skills", token, headers={"Origin": f"http://127.0.0.1:{port}"})
    assert same.status_code == 200


def test_a_non_loopback_bind_without_a_token_refuses_to_start(cluster: Cluster) -> None:
    # Exits before it binds: no traffic to any address
    proc = cluster.cli("sidecar", "--host", "0.0.0.0", "--port", str(free_port()), timeout=120)
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("loopwright: error: refusing to serve the sidecar on non-loopback")
    assert "loopwright tokens create" in line
    # Local tokens do not count: they exist for loopback tools
    from loopwright.sidecar.service import check_bind

    rt = cluster.rt
    local_token(rt.redis, rt.keys, cluster.settings, "person")
    with pytest.raises(Exception, match="refusing to serve"):
        check_bind(rt, "::")
    TokenStore(rt.redis, rt.keys).create("ops", ["operate"])
    check_bind(rt, "0.0.0.0")  # an operator made a token: allowed
    check_bind(rt, "127.0.0.1")


def test_the_cli_and_the_builder_client_present_their_local_tokens(
    serve: Callable[..., Served],
) -> None:
    s = serve()
    cluster = s.cluster
    path = cluster.tmp / "mine.py"
    path.write_text(source("mine"))
    (cluster.tmp / "mine.tests.json").write_text(json.dumps(SMOKE))
    env = {**cluster.env, "LOOPWRIGHT_SIDECAR_URL": s.url}
    proc = subprocess.run(
        [sys.executable, "-m", "loopwright.cli", "skills", "submit", str(path), "--json"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cluster.tmp,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accepted"] is True
    assert Registry(cluster.rt.redis, cluster.rt.keys).version("mine").author == "person"
    settings = cluster.settings.model_copy(update={"sidecar_url": s.url})
    rt = Runtime(settings)
    try:
        client = make_sidecar(rt)
        verdict = client.submit(source("built"), SMOKE, "person")
        assert verdict.accepted
    finally:
        rt.close()
    assert Registry(cluster.rt.redis, cluster.rt.keys).version("built").author == "agent"


def test_host_policy_by_bind_address() -> None:
    """The classifier alone (no connection): which Host headers each bind answers."""
    from loopwright.auth.origin import HostPolicy

    loop = HostPolicy("127.0.0.1", ("Sidecar.Internal.",))
    assert loop.host_allowed("127.0.0.1:8765") and loop.host_allowed("LOCALHOST")
    assert loop.host_allowed("[::1]:1") and loop.host_allowed("sidecar.internal:80")
    assert loop.host_allowed("127.0.0.2")  # still loopback
    for bad in (None, "", "10.0.0.5", "[::1", "[::1]x", "localhost:http", "a b", "::1"):
        assert not loop.host_allowed(bad), bad
    every = HostPolicy("0.0.0.0")
    assert every.host_allowed("10.0.0.5:8765") and every.host_allowed("[fd00::1]:8765")
    assert not every.host_allowed("evil.example") and not every.host_allowed("0.0.0.0.nip.io")
    one = HostPolicy("10.0.0.5")
    assert one.host_allowed("10.0.0.5:8765") and not one.host_allowed("10.0.0.6")
    assert not one.host_allowed("127.0.0.2")  # bound elsewhere: only the listed loopback names
    assert loop.origin_allowed(None) and loop.origin_allowed("http://localhost:3000")
    for origin in (
        "null",
        "https://evil.example",
        "http://",
        "javascript:alert(1)",
        "ftp://localhost",
    ):
        assert not loop.origin_allowed(origin), origin
    assert loop.refusal("evil.example", None) == (421, loop.refusal("x.example", None)[1])  # type: ignore[index]
    assert loop.refusal("localhost", None, "same-origin") is None
