"""The builder's tools one by one, against a real Redis, sidecar pipeline, sandbox and worker:
what each does, that replayed calls are idempotent, and that hostile arguments are refused."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from conftest import Cluster
from loopwright import sdk
from loopwright.agent.reference import SDK_REFERENCE
from loopwright.agent.session import BUILTIN_NAME, ensure_builtin
from loopwright.agent.tools import LocalSidecar, ToolBox
from loopwright.runner.context import LocalStep
from loopwright.runner.state import LocalState
from loopwright.runner.tools import HttpTool
from loopwright.sandbox.guest import GuestState
from loopwright.skills_registry.store import Registry

GOOD = """
from loopwright.sdk import skill, event


@skill(name="doubler", description="doubles n", trigger=event("numbers.arrived"))
def main(ctx):
    return ctx.step.run("double", lambda: ctx.event["data"].get("n", 1) * {factor})
"""
SMOKE = [{"name": "smoke", "event": {"data": {"n": 2}}, "expect": {"status": "completed"}}]


def box(cluster: Cluster) -> ToolBox:
    return ToolBox(cluster.rt, LocalSidecar(cluster.rt))


def good(factor: int = 2) -> str:
    return GOOD.replace("{factor}", str(factor))


def test_tool_definitions_are_stable_and_complete(cluster: Cluster) -> None:
    a, b = box(cluster), box(cluster)
    assert [s.name for s in a.specs()] == [
        "sdk_reference", "list_skills", "read_skill", "write_skill", "test_skill", "run_skill",
        "list_runs", "get_run", "send_event", "pause_skill", "rollback_skill", "resume_skill",
        "delete_skill", "set_schedule", "set_params",
    ]  # fmt: skip
    dump = json.dumps([(s.name, s.description, s.parameters) for s in a.specs()])
    assert dump == json.dumps([(s.name, s.description, s.parameters) for s in b.specs()])
    write = next(s for s in a.specs() if s.name == "write_skill").parameters
    assert write["required"] == ["source", "tests"] and write["additionalProperties"] is False


def test_sdk_reference_names_only_things_that_exist() -> None:
    for name in re.findall(r"ctx\.step\.(\w+)", SDK_REFERENCE):
        assert hasattr(LocalStep, name), name
    for name in re.findall(r"ctx\.tools\.http\.(\w+)", SDK_REFERENCE):
        assert hasattr(HttpTool, name), name
    for name in re.findall(r"ctx\.state\.(\w+)", SDK_REFERENCE):
        assert hasattr(LocalState, name) and hasattr(GuestState, name), name
    (imported,) = re.findall(r"from loopwright\.sdk import ([\w, ]+)", SDK_REFERENCE)
    for name in imported.split(", "):
        assert hasattr(sdk, name.strip()), name


def test_test_skill_is_a_dry_run_and_write_skill_registers(cluster: Cluster) -> None:
    tools = box(cluster)
    dry = tools.call("test_skill", {"source": good(), "tests": SMOKE})
    assert dry.ok and dry.data["registration"] == "dry-run"
    assert json.loads(tools.call("list_skills", {}).content) == []
    wrote = tools.call("write_skill", {"source": good(), "tests": SMOKE})
    assert wrote.ok and wrote.data["accepted"] and wrote.data["status"] == "active"
    listed = json.loads(tools.call("list_skills", {}).content)
    assert [s["name"] for s in listed] == ["doubler"]
    assert listed[0]["trigger"]["type"] == "event"
    read = tools.call("read_skill", {"name": "doubler"})
    assert read.ok and read.data["source"] == good() and read.data["tests"] == SMOKE
    bad = tools.call("write_skill", {"source": "import os\n" + good(), "tests": SMOKE})
    assert not bad.ok and bad.data["stage"] == "policy"
    assert (
        bad.data["findings"][0]["rule"] == "import-not-allowed" and bad.data["findings"][0]["hint"]
    )


def test_run_skill_and_send_event_are_idempotent_by_key(cluster: Cluster) -> None:
    cluster.scheduler()
    cluster.worker()
    tools = box(cluster)
    assert tools.call("write_skill", {"source": good(), "tests": SMOKE}).ok
    args = {"name": "doubler", "data": {"n": 21}, "timeout": 60}
    first = tools.call("run_skill", args, key="s-1:1:3:1")
    again = tools.call("run_skill", args, key="s-1:1:3:1")  # a replayed step
    assert first.ok and first.data["status"] == "completed" and first.data["output"] == 42
    assert again.data["run_id"] == first.data["run_id"]
    assert len(cluster.rt.runs.find(skill="doubler")) == 1
    other = tools.call("run_skill", {**args, "wait": False}, key="s-1:1:4:1")
    assert other.data["run_id"] != first.data["run_id"]
    sent = tools.call("send_event", {"name": "numbers.arrived", "data": {"n": 5}}, key="k:1")
    resent = tools.call("send_event", {"name": "numbers.arrived", "data": {"n": 5}}, key="k:1")
    assert sent.data["accepted"] and not resent.data["accepted"]
    got = tools.call("get_run", {"run_id": first.data["run_id"]})
    assert got.ok and [s["name"] for s in got.data["steps"]] == ["double"]
    runs = json.loads(tools.call("list_runs", {"skill": "doubler"}).content)
    assert first.data["run_id"] in {r["run_id"] for r in runs}


def test_pause_and_rollback(cluster: Cluster) -> None:
    tools = box(cluster)
    v1 = tools.call("write_skill", {"source": good(2), "tests": SMOKE}).data["version"]
    v2 = tools.call("write_skill", {"source": good(3), "tests": SMOKE}).data["version"]
    registry = Registry(cluster.rt.redis, cluster.rt.keys)
    assert registry.skill("doubler").active == v2
    assert tools.call("rollback_skill", {"name": "doubler", "version": v1[:8]}).ok
    assert registry.skill("doubler").active == v1
    assert tools.call("pause_skill", {"name": "doubler"}).ok
    assert registry.skill("doubler").status == "paused"
    refused = tools.call("run_skill", {"name": "doubler"})
    assert not refused.ok and "paused" in refused.content


def test_the_builtin_session_skill_is_out_of_the_agents_reach(cluster: Cluster) -> None:
    ensure_builtin(cluster.rt)
    tools = box(cluster)
    assert json.loads(tools.call("list_skills", {}).content) == []
    for name, args in (
        ("run_skill", {"name": BUILTIN_NAME}),
        ("pause_skill", {"name": BUILTIN_NAME}),
        ("rollback_skill", {"name": BUILTIN_NAME, "version": "abcd"}),
    ):
        result = tools.call(name, args)
        assert not result.ok and "built in" in result.content
    takeover = good().replace('name="doubler"', f'name="{BUILTIN_NAME}"')
    result = tools.call("write_skill", {"source": takeover, "tests": SMOKE})
    assert not result.ok
    assert Registry(cluster.rt.redis, cluster.rt.keys).version(BUILTIN_NAME).author == "person"


@pytest.mark.parametrize(
    ("name", "args", "expected"),
    [
        ("write_skill", {"source": "x" * 300_000, "tests": SMOKE}, "source"),
        ("write_skill", {"source": good(), "tests": []}, "tests"),
        ("write_skill", {"source": good(), "tests": SMOKE, "extra": 1}, "extra"),
        ("run_skill", {"name": "doubler", "timeout": 10_000}, "timeout"),
        ("read_skill", {"name": ""}, "name"),
        ("get_run", {"run_id": "nope"}, "unknown run id"),
        ("send_event", {"name": "bad name!"}, "event name"),
        ("list_runs", {"status": "exploded"}, "unknown status"),
        ("read_skill", {"name": "ghost"}, "ghost"),
    ],
)
def test_hostile_and_wrong_arguments_are_refused_clearly(
    cluster: Cluster, name: str, args: dict[str, Any], expected: str
) -> None:
    result = box(cluster).call(name, args)
    assert not result.ok and expected in result.content, result.content
    assert len(result.content) < 2000
