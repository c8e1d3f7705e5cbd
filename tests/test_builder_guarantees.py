"""The builder's guarantees that hold whatever the model does (issue 12): no silent overwrite,
lifecycle requests through lifecycle tools, no placeholder or harmful host registered, edits
shown as diffs, follow-ups resolved against the session. First the tools against a real Redis,
sidecar pipeline and sandbox; then a scripted model that misbehaves, over both wire protocols."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from conftest import Cluster
from loopwright.agent.guards import hosts_of, refusals
from loopwright.agent.loop import Agent, InlineSteps
from loopwright.agent.state import new_state
from loopwright.agent.tools import LocalSidecar, ToolBox
from loopwright.llm.factory import make_model
from loopwright.runner.addresses import is_placeholder
from loopwright.sdk.manifest import read_manifest
from loopwright.settings import Settings
from loopwright.skills_registry.store import Registry
from loopwright.testing.scripted import ScriptedServer

ORDERS = """
from loopwright.sdk import skill, cron


# A comment the derived versions must keep.
@skill(name="orders-digest", description="counts orders", trigger=cron("0 9 * * *"),
       params={"limit": 10, "url": "URL"})
def main(ctx):
    return ctx.step.run("count", lambda: min(ctx.params["limit"], 3))
"""
REAL_URL = "https://shop.acme-corp.io/api/orders"
CASES = [{"name": "smoke", "event": {"data": {}}, "expect": {"output": 3}}]
PROTOCOLS = ("openai", "anthropic")


def orders(url: str = REAL_URL, limit: int = 10) -> str:
    return ORDERS.replace("URL", url).replace('"limit": 10', f'"limit": {limit}')


def box(cluster: Cluster) -> ToolBox:
    return ToolBox(cluster.rt, LocalSidecar(cluster.rt))


def registry(cluster: Cluster) -> Registry:
    return Registry(cluster.rt.redis, cluster.rt.keys)


def existing(cluster: Cluster) -> str:
    """orders-digest registered by someone else (another session): its version."""
    wrote = box(cluster).call("write_skill", {"source": orders(), "tests": CASES})
    assert wrote.ok, wrote.content
    return str(wrote.data["version"])


# The tools ------------------------------------------------------------------------------------


def test_an_existing_skill_from_elsewhere_is_not_overwritten_without_edit(
    cluster: Cluster,
) -> None:
    # Given orders-digest registered by another session
    v1 = existing(cluster)
    tools = box(cluster)
    # When this session writes the same name without saying it is an edit
    refused = tools.call("write_skill", {"source": orders(limit=5), "tests": CASES})
    # Then it is refused, nothing is stored, and the message says how to edit
    assert not refused.ok and "already exists" in refused.content
    assert "edit: true" in refused.content and v1[:12] in refused.content
    assert registry(cluster).skill("orders-digest").versions == 1
    # A stale base_version is refused too
    stale = tools.call(
        "write_skill",
        {"source": orders(limit=5), "tests": CASES, "edit": True, "base_version": "0" * 8},
    )
    assert not stale.ok and registry(cluster).skill("orders-digest").versions == 1
    # An edit from the active version is accepted and carries the diff of code and manifest
    edit = tools.call(
        "write_skill",
        {"source": orders(limit=5), "tests": CASES, "edit": True, "base_version": v1[:10]},
    )
    assert edit.ok, edit.content
    diff = edit.data["diff"]
    assert diff["from"] == v1 and diff["to"] == edit.data["version"]
    assert diff["manifest"]["params.limit.default"] == {"from": 10, "to": 5}
    assert '-       params={"limit": 10' in diff["source"]
    assert '+       params={"limit": 5' in diff["source"]
    # A skill this toolbox wrote may be written again unflagged
    again = tools.call("write_skill", {"source": orders(limit=7), "tests": CASES})
    assert again.ok and again.data["diff"]["from"] == edit.data["version"]
    # An edit of a skill that does not exist is refused
    ghost = tools.call(
        "write_skill",
        {"source": orders().replace("orders-digest", "ghost"), "tests": CASES, "edit": True},
    )
    assert not ghost.ok and "no skill 'ghost'" in ghost.content


def test_an_edit_waits_for_approval_in_review_mode(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(approval_mode="review")
    first = box(cluster).call("write_skill", {"source": orders(), "tests": CASES})
    assert first.ok and first.data["status"] == "pending_approval"
    registry(cluster).approve("orders-digest", first.data["version"])
    edit = box(cluster).call(
        "write_skill", {"source": orders(limit=4), "tests": CASES, "edit": True}
    )
    assert edit.ok and edit.data["registration"] == "pending"
    assert registry(cluster).skill("orders-digest").active == first.data["version"]
    assert registry(cluster).skill("orders-digest").pending == [edit.data["version"]]
    assert edit.data["diff"]["manifest"]["params.limit.default"] == {"from": 10, "to": 4}


@pytest.mark.parametrize(
    "url", ["https://api.example.com/items", "http://orders.test/x", "http://localhost:8080/a"]
)
def test_a_placeholder_host_is_refused_unless_asked_for(cluster: Cluster, url: str) -> None:
    tools = box(cluster)
    refused = tools.call("write_skill", {"source": orders(url), "tests": CASES})
    assert not refused.ok and "placeholder host" in refused.content
    assert "ask them for it" in refused.content and registry(cluster).names() == []
    asked = tools.call(
        "write_skill", {"source": orders(url), "tests": CASES, "placeholder_ok": True}
    )
    assert asked.ok and asked.data["placeholder_hosts"] == [hosts_of(orders(url), [])[0]]


def test_cloud_metadata_is_refused_in_plain_words_without_advice_to_weaken_anything(
    cluster: Cluster,
) -> None:
    url = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    refused = box(cluster).call(
        "write_skill", {"source": orders(url), "tests": CASES, "placeholder_ok": True}
    )
    assert not refused.ok and "cloud instance metadata service" in refused.content
    assert "LOOPWRIGHT_" not in refused.content and "do not suggest" in refused.content
    assert registry(cluster).names() == []


def test_private_addresses_follow_the_network_policy() -> None:
    assert [r.host for r in refusals(["10.0.0.5", "api.acme.io"], private_ok=False)] == ["10.0.0.5"]
    assert refusals(["10.0.0.5"], private_ok=True) == []
    assert [r.host for r in refusals(["169.254.169.254", "fe80::1"], private_ok=True)] == [
        "169.254.169.254",
        "fe80::1",
    ]
    assert refusals(["metadata.google.internal"], private_ok=True)
    assert all(map(is_placeholder, ["example.org", "a.b.example", "x.invalid", "your-domain.io"]))
    assert not any(map(is_placeholder, ["example-corp.io", "api.github.com", "10.0.0.1"]))


def test_lifecycle_tools_pause_resume_schedule_params_delete(cluster: Cluster) -> None:
    v1 = existing(cluster)
    tools, reg = box(cluster), registry(cluster)
    assert tools.call("pause_skill", {"name": "orders-digest"}).ok
    assert reg.skill("orders-digest").status == "paused"
    assert tools.call("resume_skill", {"name": "orders-digest"}).ok
    assert reg.skill("orders-digest").status == "active"
    # A schedule change is a derived version: only the trigger differs
    moved = tools.call(
        "set_schedule", {"name": "orders-digest", "cron": "0 9 * * 1-5", "tz": "America/New_York"}
    )
    assert moved.ok, moved.content
    new_source = reg.source(moved.data["version"])
    assert new_source == orders().replace(
        'cron("0 9 * * *")', "cron('0 9 * * 1-5', tz='America/New_York')"
    )
    assert "# A comment the derived versions must keep." in new_source
    assert set(moved.data["diff"]["manifest"]) == {"trigger.expr", "trigger.tz"}
    assert moved.data["diff"]["from"] == v1
    # Params: declared ones only, type-checked
    assert not tools.call("set_params", {"name": "orders-digest", "params": {"nope": 1}}).ok
    wrong = tools.call("set_params", {"name": "orders-digest", "params": {"limit": "x"}})
    assert not wrong.ok and "expected int" in wrong.content
    # A derived version is tested like any other: this one breaks its case and is rejected
    broken = tools.call("set_params", {"name": "orders-digest", "params": {"limit": 2}})
    assert not broken.ok and broken.data["stage"] == "tests"
    tuned = tools.call("set_params", {"name": "orders-digest", "params": {"limit": 5}})
    assert tuned.ok, tuned.content
    assert set(tuned.data["diff"]["manifest"]) == {"params.limit.default"}
    manifest = read_manifest(reg.source(tuned.data["version"]))[0]
    assert manifest.params["url"].default == REAL_URL and manifest.trigger is not None
    assert manifest.trigger.model_dump()["tz"] == "America/New_York"
    assert not tools.call("set_schedule", {"name": "orders-digest"}).ok
    # Delete purges it (skills delete): versions gone, what it did is said
    deleted = tools.call("delete_skill", {"name": "orders-digest"})
    assert deleted.ok and "orders-digest" not in {s.name for s in reg.skills()}
    assert deleted.data["outcome"] == "deleted" and deleted.data["versions"] == 3
    assert not tools.call("pause_skill", {"name": "nope"}).ok


# The agent with a misbehaving scripted model -------------------------------------------------


def call(tool: str, **arguments: Any) -> dict[str, Any]:
    return {"tool_calls": [{"name": tool, "arguments": arguments}]}


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def agent_for(cluster: Cluster, srv: ScriptedServer, protocol: str) -> Agent:
    s = Settings(
        **{
            **cluster.settings.model_dump(),
            "openai_base_url": srv.openai_base_url,
            "openai_api_key": "test-key",
            "anthropic_base_url": srv.anthropic_base_url,
            "anthropic_api_key": "test-key",
            "llm_max_retries": 1,
        }
    )
    spec = "openai:gpt-4.1" if protocol == "openai" else "anthropic:claude-sonnet-4-5"
    return Agent(make_model(spec, s), ToolBox(cluster.rt, LocalSidecar(cluster.rt)), s)


def last_tool_results(srv: ScriptedServer, protocol: str) -> list[str]:
    out: list[str] = []
    for m in srv.requests[-1].body["messages"]:
        if protocol == "openai" and m.get("role") == "tool":
            out.append(m["content"])
        elif protocol == "anthropic" and isinstance(m.get("content"), list):
            out += [str(b.get("content")) for b in m["content"] if b.get("type") == "tool_result"]
    return out


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_model_that_creates_on_a_pause_request_is_stopped_and_pauses_instead(
    cluster: Cluster, server: ScriptedServer, protocol: str
) -> None:
    # Given orders-digest from another session, and a model that answers "pause orders-digest"
    # first by rewriting it at a placeholder URL, then by overwriting it, then by pausing it
    v1 = existing(cluster)
    server.push(
        call("write_skill", source=orders("https://api.example.com/items"), tests=CASES),
        call("write_skill", source=orders(limit=1), tests=CASES),
        call("pause_skill", name="orders-digest"),
        {"text": "Paused orders-digest."},
    )
    state = new_state("s-guard", "m")
    result = agent_for(cluster, server, protocol).turn(
        InlineSteps(), state, "pause orders-digest", key="s-guard:1"
    )
    # Then both writes came back as tool errors the model could read, nothing was written,
    # the skill is paused on its original version, and the answer says so from the records
    placeholder, overwrite, _ = last_tool_results(server, protocol)
    assert "placeholder host(s) api.example.com" in placeholder
    assert "already exists" in overwrite and "pause" in overwrite
    rec = registry(cluster).skill("orders-digest")
    assert (rec.status, rec.active, rec.versions) == ("paused", v1, 1)
    assert result.reply.startswith("Paused orders-digest.")
    assert "- orders-digest: paused" in result.reply
    assert result.state["metrics"]["tool_errors"] == 2
    assert result.state["ledger"]["named"] == ["orders-digest"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_edit_shows_its_diff_in_the_answer_and_a_follow_up_needs_no_flag(
    cluster: Cluster, server: ScriptedServer, protocol: str
) -> None:
    v1 = existing(cluster)
    agent = agent_for(cluster, server, protocol)
    server.push(
        call("write_skill", source=orders(limit=4), tests=CASES, edit=True, base_version=v1),
        {"text": "Lowered the limit to 4."},
    )
    state = new_state("s-edit", "m")
    first = agent.turn(InlineSteps(), state, "lower orders-digest's limit to 4", key="s-edit:1")
    assert first.reply.startswith("Lowered the limit to 4.")
    assert "What changed (from the platform's records)" in first.reply
    assert "manifest params.limit.default: 10 -> 4" in first.reply
    assert '+       params={"limit": 4' in first.reply
    # A follow-up turn of the same session changes it again without the flag: it wrote it
    server.push(
        call("write_skill", source=orders(limit=6), tests=CASES),
        call("set_schedule", name="orders-digest", cron="*/10 * * * *"),
        {"text": "Done."},
    )
    agent = agent_for(cluster, server, protocol)  # a new turn builds a new toolbox
    second = agent.turn(InlineSteps(), first.state, "make it 6, every 10 minutes", key="s-edit:2")
    results = last_tool_results(server, protocol)
    assert json.loads(results[-2])["accepted"] and json.loads(results[-1])["accepted"]
    assert "trigger.expr: '0 9 * * *' -> '*/10 * * * *'" in second.reply
    assert registry(cluster).skill("orders-digest").versions == 4
    assert second.state["ledger"]["named"] == ["orders-digest"]


def test_set_schedule_to_an_interval_adds_the_import_and_changes_only_the_trigger(
    cluster: Cluster,
) -> None:
    existing(cluster)
    tools, reg = box(cluster), registry(cluster)
    assert not tools.call("set_schedule", {"name": "orders-digest", "every": "90m", "tz": "UTC"}).ok
    moved = tools.call("set_schedule", {"name": "orders-digest", "every": "90m"})
    assert moved.ok, moved.content
    source = reg.source(moved.data["version"])
    assert "from loopwright.sdk import skill, cron\nfrom loopwright.sdk import every\n" in source
    assert "trigger=every('90m')" in source
    assert set(moved.data["diff"]["manifest"]) == {
        "trigger.type", "trigger.expr", "trigger.every", "trigger.seconds"
    }  # fmt: skip
    assert len(moved.data["next_fires"]) == 3
