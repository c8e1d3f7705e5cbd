"""``loopwright mcp`` with the official MCP client, over stdio and streamable HTTP: the tools and
schemas are the toolbox's own, skills are written and run through them, every failure is a tool
result with isError (never a protocol error), calls run off the event loop, and HTTP demands the
bearer token when one is configured."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import httpx
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CallToolResult, TextContent

from conftest import Cluster, free_port, wait_until
from loopwright.agent.tools import make_toolbox

SKILL = textwrap.dedent(
    """
    from loopwright.sdk import skill


    @skill(name="{name}", description="doubles n", params={{"factor": 2}})
    def main(ctx):
        n = ctx.event["data"].get("n", 1)
        return ctx.step.run("double", lambda: n * ctx.params["factor"])
    """
)
TESTS = [{"name": "smoke", "event": {"data": {"n": 3}}, "expect": {"output": 6}}]

Session = Callable[[ClientSession], Awaitable[None]]
# A raw initialize request, for checks below the client.
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"},
    },
}
ACCEPT = {"Accept": "application/json, text/event-stream"}


def text(result: CallToolResult) -> str:
    assert len(result.content) == 1
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def call(session: ClientSession, name: str, args: dict[str, Any]) -> tuple[bool, str]:
    """(isError, text) of one tool call."""
    result = await session.call_tool(name, args)
    return result.is_error, text(result)


async def check_tools(session: ClientSession, cluster: Cluster) -> None:
    """tools/list is exactly the toolbox: names, descriptions and argument schemas."""
    init = await session.initialize()
    assert init.server_info.name == "loopwright"
    assert init.instructions and "sdk_reference" in init.instructions
    listed = (await session.list_tools()).tools
    specs = make_toolbox(cluster.rt).specs()
    assert [t.name for t in listed] == [s.name for s in specs]
    for tool, spec in zip(listed, specs, strict=True):
        assert tool.input_schema == spec.parameters
        assert tool.description == spec.description
    error, ref = await call(session, "sdk_reference", {})
    assert not error and "@skill" in ref


async def write_and_run(session: ClientSession, name: str, n: int) -> None:
    """A skill written through write_skill runs through run_skill on the cluster's worker."""
    error, body = await call(
        session, "write_skill", {"source": SKILL.format(name=name), "tests": TESTS}
    )
    verdict = json.loads(body)
    assert not error and verdict["accepted"] is True, body
    assert verdict["name"] == name and verdict["version"]
    error, body = await call(
        session, "run_skill", {"name": name, "data": {"n": n}, "wait": True, "timeout": 60}
    )
    out = json.loads(body)
    assert not error and out["status"] == "completed" and out["output"] == 2 * n, body


async def check_failures(session: ClientSession) -> None:
    """Rejections, bad arguments and unknown tools come back as isError results."""
    error, body = await call(
        session, "write_skill", {"source": "import os\n" + SKILL.format(name="bad"), "tests": TESTS}
    )
    verdict = json.loads(body)
    assert error and verdict["accepted"] is False and verdict["stage"] == "policy", body
    assert verdict["findings"][0]["rule"] == "import-not-allowed" and verdict["findings"][0]["hint"]
    error, body = await call(session, "run_skill", {"data": {}, "timeout": "soon"})
    assert error and "invalid arguments for run_skill" in body
    assert "name: Field required" in body and "timeout" in body
    error, body = await call(session, "rollback_skill", {"name": "nope", "version": "abcd"})
    assert error and "rollback_skill failed" in body
    error, body = await call(session, "make_coffee", {})
    assert error and "unknown tool 'make_coffee'" in body and "write_skill" in body


async def check_lifecycle(session: ClientSession, cluster: Cluster) -> None:
    """A skill this MCP session did not write is not overwritten; lifecycle tools reach it."""
    taken = {"source": SKILL.format(name="taken"), "tests": TESTS}
    assert make_toolbox(cluster.rt).call("write_skill", taken).ok  # another session's skill
    error, body = await call(session, "write_skill", taken)
    assert error and "already exists" in body and "edit: true" in body
    error, body = await call(session, "write_skill", {**taken, "edit": True})
    assert not error and json.loads(body)["registration"] == "unchanged", body
    for tool, status in (("pause_skill", "paused"), ("resume_skill", "active")):
        error, body = await call(session, tool, {"name": "taken"})
        assert not error and json.loads(body)["status"] == status, body
    error, body = await call(session, "delete_skill", {"name": "taken"})
    assert not error and json.loads(body)["outcome"] == "deleted", body


def stdio_params(cluster: Cluster) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "loopwright.cli", "mcp"],
        env=cluster.env,
        cwd=str(cluster.tmp),
    )


async def over_stdio(cluster: Cluster, body: Session) -> None:
    with open(cluster.tmp / "mcp-stdio.log", "w") as errlog:
        async with (
            stdio_client(stdio_params(cluster), errlog=errlog) as (read, write),
            ClientSession(read, write) as session,
        ):
            with anyio.fail_after(90):
                await body(session)


def test_stdio_lists_the_toolbox_and_writes_and_runs_a_skill(cluster: Cluster) -> None:
    async def body(session: ClientSession) -> None:
        await check_tools(session, cluster)
        error, body = await call(
            session, "write_skill", {"source": SKILL.format(name="slow"), "tests": TESTS}
        )
        assert not error, body
        # No worker yet: run_skill blocks in its thread for 3 s while other calls are answered.
        pending: dict[str, Any] = {}

        async def waiting_run() -> None:
            pending["result"] = await call(
                session, "run_skill", {"name": "slow", "data": {"n": 5}, "timeout": 3}
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(waiting_run)
            await anyio.sleep(0.3)
            started = time.monotonic()
            error, listed = await call(session, "list_skills", {})
            await session.send_ping()
            assert time.monotonic() - started < 1.5
            assert not error and json.loads(listed)[0]["name"] == "slow"
            assert "result" not in pending
        error, body = pending["result"]
        queued = json.loads(body)
        assert not error and queued["status"] == "queued" and "worker" in queued["note"]
        cluster.worker()
        await write_and_run(session, "doubler", 21)
        run = cluster.wait(queued["run_id"])  # the earlier run, picked up by the worker
        assert run.output == 10
        await check_failures(session)
        await check_lifecycle(session, cluster)

    anyio.run(over_stdio, cluster, body)
    log = (cluster.tmp / "mcp-stdio.log").read_text()
    assert "Traceback" not in log, log


def test_stdio_writes_nothing_but_protocol_to_stdout(cluster: Cluster) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopwright.cli", "mcp", "--verbose"],
        env=cluster.env,
        cwd=cluster.tmp,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    messages: list[dict[str, Any]] = [
        INIT,
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_runs"}},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "nope"}},
    ]
    replies = []
    try:
        for message in messages:
            proc.stdin.write(json.dumps(message) + "\n")
            proc.stdin.flush()
            if "id" in message:
                replies.append(json.loads(proc.stdout.readline()))
        rest, err = proc.communicate(timeout=20)  # closes stdin: the server ends
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and rest == "", rest
    assert [r["id"] for r in replies] == [1, 2, 3]
    assert replies[0]["result"]["serverInfo"]["name"] == "loopwright"
    assert replies[1]["result"]["isError"] is False
    assert json.loads(replies[1]["result"]["content"][0]["text"]) == []
    assert replies[2]["result"]["isError"] is True
    assert "tool list_runs -> ok" in err  # --verbose logs went to stderr


def test_stdio_with_redis_down_fails_with_one_line(cluster: Cluster) -> None:
    env = {**cluster.env, "LOOPWRIGHT_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    proc = subprocess.run(
        [sys.executable, "-m", "loopwright.cli", "mcp"],
        env=env,
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("loopwright: error:") and "Traceback" not in proc.stderr


def start_http(cluster: Cluster, *args: str, token: str | None = None) -> str:
    port = free_port()
    env = {"LOOPWRIGHT_SIDECAR_TOKEN": token} if token else None
    proc = cluster.spawn("mcp", "--http", "--port", str(port), *args, env=env)

    def listening() -> bool:
        assert proc.poll() is None, "loopwright mcp --http exited"
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_until(listening, timeout=20)
    return f"http://127.0.0.1:{port}/mcp"


async def over_http(url: str, body: Session, token: str | None = None) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with (
        create_mcp_http_client(headers=headers) as client,
        streamable_http_client(url, http_client=client) as (read, write),
        ClientSession(read, write) as session,
    ):
        with anyio.fail_after(90):
            await body(session)


def test_http_requires_the_bearer_token_and_serves_the_tools(cluster: Cluster) -> None:
    url = start_http(cluster, token="s3cret-token")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        r = httpx.post(url, json=INIT, headers={**ACCEPT, **headers}, timeout=10)
        assert r.status_code == 401, (headers, r.status_code, r.text)
        assert r.json() == {"detail": "missing or wrong bearer token"}
    ok = httpx.post(
        url, json=INIT, headers={**ACCEPT, "Authorization": "Bearer s3cret-token"}, timeout=10
    )
    assert ok.status_code == 200, ok.text
    cluster.worker()

    async def body(session: ClientSession) -> None:
        await check_tools(session, cluster)
        await write_and_run(session, "doubler-http", 4)
        await check_failures(session)

    anyio.run(over_http, url, body, "s3cret-token")


def test_http_without_a_token_binds_loopback_only(cluster: Cluster) -> None:
    refused = cluster.cli("mcp", "--http", "--host", "0.0.0.0", "--port", str(free_port()))
    assert refused.returncode == 1 and "non-loopback" in refused.stderr
    assert "LOOPWRIGHT_SIDECAR_TOKEN" in refused.stderr
    url = start_http(cluster)
    # A foreign Host header (DNS rebinding) is refused on loopback.
    r = httpx.post(url, json=INIT, headers={**ACCEPT, "Host": "evil.example:80"}, timeout=10)
    assert r.status_code == 421

    async def body(session: ClientSession) -> None:
        await session.initialize()
        error, ref = await call(session, "sdk_reference", {})
        assert not error and "@skill" in ref

    anyio.run(over_http, url, body)


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "127.0.0.2"])
def test_loopback_hosts(host: str) -> None:
    from loopwright.agent.mcp_server import is_loopback

    assert is_loopback(host)
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")
