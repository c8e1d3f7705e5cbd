"""``loopwright chat`` as a person uses it: one-turn JSON mode, resumed sessions, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import Cluster, wait_until
from loopwright.agent.session import SessionStore
from loopwright.testing.scripted import ScriptedServer

GOOD = """
from loopwright.sdk import skill


@skill(name="doubler", description="doubles n")
def main(ctx):
    return ctx.step.run("double", lambda: ctx.event["data"].get("n", 1) * 2)
"""
SMOKE = [{"name": "smoke", "event": {"data": {"n": 2}}, "expect": {"output": 4}}]


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def chat(
    cluster: Cluster, srv: ScriptedServer, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        **cluster.env,
        "LOOPWRIGHT_OPENAI_API_KEY": "k",
        "LOOPWRIGHT_OPENAI_BASE_URL": srv.openai_base_url,
    }
    return subprocess.run(
        [sys.executable, "-m", "loopwright.cli", "chat", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cluster.tmp,
        input=stdin,
        check=False,
    )


def as_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_one_turn_in_json_then_the_session_continues(
    cluster: Cluster, server: ScriptedServer
) -> None:
    server.push(
        {"tool_calls": [{"name": "write_skill", "arguments": {"source": GOOD, "tests": SMOKE}}]},
        {"text": "Registered doubler."},
        {"text": "You asked for a doubler earlier."},
    )
    first = as_json(chat(cluster, server, "--model", "openai:gpt-4.1", "-m", "doubler", "--json"))
    assert first["reply"] == "Registered doubler." and first["stopped"] is None
    assert first["activity"][0]["verdict"]["accepted"] is True
    assert first["metrics"]["model_calls"] == 2 and first["metrics"]["wall_ms"] > 0
    sid = first["session"]
    second = as_json(chat(cluster, server, "--session", sid, "-m", "what did I ask?", "--json"))
    assert second["reply"] == "You asked for a doubler earlier." and second["turn"] == 2
    # The second turn's request carried the first turn's conversation.
    texts = json.dumps(server.requests[-1].body["messages"])
    assert "doubler" in texts and "Registered doubler." in texts
    assert SessionStore(cluster.rt.redis, cluster.rt.keys).get(sid).turns == 2
    listed = cluster.cli("skills", "list")
    builtin = next(line for line in listed.stdout.splitlines() if "builder-session" in line)
    assert "built-in" in builtin


def test_interactive_chat_renders_tool_calls_and_verdicts(
    cluster: Cluster, server: ScriptedServer
) -> None:
    server.push(
        {"tool_calls": [{"name": "write_skill", "arguments": {"source": GOOD, "tests": SMOKE}}]},
        {"text": "Done: **doubler** is registered."},
    )
    proc = chat(cluster, server, "--model", "openai:gpt-4.1", stdin="make a doubler\n/exit\n")
    assert proc.returncode == 0, proc.stderr
    assert "→ write_skill" in proc.stdout and "✓ accepted doubler@" in proc.stdout
    assert "doubler is registered" in proc.stdout
    assert "continue later with: loopwright chat --session s-" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("-m", "  "), "the message is empty"),
        (("-m", "x" * 70_000), "the message is over"),
        (("--session", "../../etc", "-m", "hi"), "a session id is"),
        (("--session", "s-nope", "-m", "hi"), "unknown session 's-nope'"),
        (("--model", "gpt5", "-m", "hi"), "gpt5"),
        (("--model", "anthropic:claude-sonnet-4-5", "-m", "hi"), "LOOPWRIGHT_ANTHROPIC_API_KEY"),
    ],
)
def test_bad_input_is_one_clear_line_and_loses_nothing(
    cluster: Cluster, server: ScriptedServer, args: tuple[str, ...], message: str
) -> None:
    proc = chat(cluster, server, *args)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(server.requests) == 0


def test_a_chat_killed_mid_turn_is_resumed_by_the_next_chat(
    cluster: Cluster, server: ScriptedServer
) -> None:
    # Given a chat process killed while its second model call is in flight
    server.push(
        {"tool_calls": [{"name": "write_skill", "arguments": {"source": GOOD, "tests": SMOKE}}]},
        {"delay": 30, "text": "never delivered"},
        {"text": "Registered doubler after the crash."},
    )
    env = {
        **cluster.env,
        "LOOPWRIGHT_OPENAI_API_KEY": "k",
        "LOOPWRIGHT_OPENAI_BASE_URL": server.openai_base_url,
    }
    store = SessionStore(cluster.rt.redis, cluster.rt.keys)
    sid = store.create("openai:gpt-4.1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "loopwright.cli", "chat", "--session", sid, "-m", "doubler"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cluster.tmp,
    )
    wait_until(lambda: len(server.requests) >= 2, timeout=60)
    proc.kill()
    proc.wait()
    pending = store.get(sid).pending_run
    assert pending is not None
    # When the person opens the session again (no worker, no scheduler anywhere)
    out = as_json(chat(cluster, server, "--session", sid, "--json"))
    # Then the turn resumed at the unfinished model call and completed
    assert out["resumed"]["run_id"] == pending
    assert out["resumed"]["reply"] == "Registered doubler after the crash."
    assert [len(r.body["messages"]) for r in server.requests] == [2, 4, 4]
    steps = {s.name: s.attempts for s in cluster.rt.runs.steps(pending)}
    assert steps["tool-1-1-write_skill"] == 1 and steps["model-1"] == 1
    assert store.get(sid).turns == 1 and store.get(sid).pending_run is None


def test_sessions_are_listed_newest_first(cluster: Cluster, server: ScriptedServer) -> None:
    server.push({"text": "one"}, {"text": "two"})
    a = as_json(chat(cluster, server, "--model", "openai:gpt-4.1", "-m", "first", "--json"))
    b = as_json(chat(cluster, server, "--model", "openai:gpt-4.1", "-m", "second", "--json"))
    listed = as_json(chat(cluster, server, "--list", "--json"))
    assert [r["session"] for r in listed] == [b["session"], a["session"]]
    assert listed[0]["turns"] == 1 and listed[0]["tokens"] > 0 and listed[0]["pending_run"] is None
    table = chat(cluster, server, "--list")
    assert table.returncode == 0 and a["session"] in table.stdout
