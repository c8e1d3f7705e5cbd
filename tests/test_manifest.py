"""The skill declaration: one reader and one finding type (issue 14, layout), reserved names
(issue 9 item 6) and full-match validation of names and ids (issue 9 item 15), at every entry
point: the SDK, the sidecar, ``loopwright run FILE``, the registry, the agent's tools, the event
bus, the events CLI and run lookups."""

from __future__ import annotations

import json
import logging
import textwrap
from pathlib import Path

import pytest

from conftest import Cluster
from loopwright.agent.session import BUILTIN_NAME, BUILTIN_SOURCE, ensure_builtin
from loopwright.agent.tools import LocalSidecar, ToolBox
from loopwright.cli.runs import start_run
from loopwright.errors import LoopwrightError, NotFoundError, SkillLoadError, UserError
from loopwright.sandbox import policy
from loopwright.sdk import skill
from loopwright.sdk.errors import SkillDefinitionError
from loopwright.sdk.findings import Finding
from loopwright.sdk.manifest import ManifestInvalid, read_declaration, read_manifest
from loopwright.sidecar import verdict
from loopwright.sidecar.pipeline import Sidecar
from loopwright.skills_registry import manifest as registry_manifest
from loopwright.skills_registry.store import Registry

SMOKE = [{"name": "smoke", "event": {}, "expect": {"status": "completed"}}]


def source(name: str = "plain", extra: str = "") -> str:
    return textwrap.dedent(
        f"""
        from loopwright.sdk import skill, event

        @skill(name={name!r}{extra})
        def main(ctx):
            return ctx.step.run("one", lambda: 1)
        """
    )


# One model, one finding type -------------------------------------------------------------


def test_every_reader_reports_the_one_finding_type() -> None:
    assert policy.Finding is Finding and verdict.Finding is Finding
    assert registry_manifest.ManifestFinding is Finding
    assert registry_manifest.Manifest is read_manifest(source())[0].__class__
    [found] = policy.check_source("import os\n")
    assert isinstance(found, Finding)
    with pytest.raises(ManifestInvalid) as caught:
        read_manifest(source(extra=", http_allow=['https://x.example'], secrets=['a b']"))
    rules = sorted(f.rule for f in caught.value.findings)
    assert rules == ["invalid-host", "invalid-secret-name"]
    assert all(isinstance(f, Finding) for f in caught.value.findings)
    assert isinstance(caught.value, LoopwrightError)


def test_the_declaration_is_read_once_into_spec_and_manifest() -> None:
    decl = read_declaration(source(extra=", retries=5, params={'p95_ms': 800}"))
    manifest = decl.manifest()
    assert decl.spec.retries == manifest.retries == 5
    assert manifest.params["p95_ms"].type == "int"
    assert manifest.events is not None and manifest.events.send == []


def test_a_verdict_with_dataclass_findings_round_trips_through_json() -> None:
    v = verdict.rejected("policy", [Finding("x", 1, 2, "m", "h")], {})
    back = verdict.Verdict.model_validate(json.loads(v.model_dump_json()))
    assert back.findings == [Finding("x", 1, 2, "m", "h")]
    assert back.findings[0].one_line() == "line 1:2: m [x]"


# Reserved names ------------------------------------------------------------------------


RESERVED = ["builder-session", "weekly-review", "loopwright-anything"]


@pytest.mark.parametrize("name", RESERVED)
def test_the_sidecar_refuses_a_reserved_name_before_registering_anything(
    cluster: Cluster, name: str
) -> None:
    v = Sidecar(cluster.rt).submit(source(name), SMOKE)
    assert not v.accepted and v.stage == "manifest"
    assert v.findings[0].rule == "name-reserved" and "reserved" in v.findings[0].message
    assert name not in Registry(cluster.rt.redis, cluster.rt.keys).names()


def test_the_agents_write_skill_refuses_a_reserved_name_and_registers_nothing(
    cluster: Cluster,
) -> None:
    tools = ToolBox(cluster.rt, LocalSidecar(cluster.rt))
    res = tools.call("write_skill", {"source": source("builder-session"), "tests": SMOKE})
    assert not res.ok and "reserved" in res.content
    assert not cluster.rt.redis.exists(cluster.rt.keys.registry_skill("builder-session"))
    res = tools.call("run_skill", {"name": "weekly-review"})
    assert not res.ok and "built in" in res.content


def test_run_file_and_the_registry_refuse_a_reserved_name(cluster: Cluster) -> None:
    path = cluster.tmp / "squat.py"
    path.write_text(source("weekly-review"))
    with pytest.raises(UserError, match="reserved"):
        start_run(cluster.rt, str(path), None)
    registry = Registry(cluster.rt.redis, cluster.rt.keys)
    with pytest.raises(UserError, match="reserved"):
        registry.register_direct(source("loopwright-x"), "loopwright-x")
    assert registry.names() == []


def test_the_cli_refuses_a_reserved_name_in_one_line(cluster: Cluster) -> None:
    path = cluster.tmp / "squat.py"
    path.write_text(source("builder-session"))
    proc = cluster.cli("run", str(path))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "reserved for a built-in skill" in proc.stderr


def test_ensure_builtin_replaces_a_squatter_and_says_so(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(cluster.rt.redis, cluster.rt.keys)
    # A squatter from before names were reserved: validated by the sidecar, active.
    squat = source("builder-session")
    manifest, _ = read_manifest(squat)
    registry.register(squat, manifest, SMOKE, author="agent", mode="activate", builtin=True)
    squatter = registry.skill("builder-session").active
    cluster.rt.redis.hdel(cluster.rt.keys.registry_version(str(squatter)), "report")
    with caplog.at_level(logging.WARNING):
        version = ensure_builtin(cluster.rt)
    assert version != squatter
    assert registry.skill(BUILTIN_NAME).active == version
    assert cluster.rt.sources.resolve(BUILTIN_NAME) == version
    assert f"replaced version {str(squatter)[:12]}" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert ensure_builtin(cluster.rt) == version  # idempotent, nothing to say
    assert "replaced" not in caplog.text
    assert registry.source(version) == BUILTIN_SOURCE


# Full matches --------------------------------------------------------------------------

SKILL_LOOKALIKES = [
    "rt-baseline\n",
    "rt-baseline\r",
    "rt-baseline\x00",
    " rt-baseline",
    "rt-baseline ",
    "rt-basel\u0131ne",  # dotless i
    "rt\u2010baseline",  # unicode hyphen
    "rt-baseline\n\n",
]


@pytest.mark.parametrize("name", SKILL_LOOKALIKES)
def test_the_sdk_refuses_a_lookalike_skill_name(name: str) -> None:
    with pytest.raises(SkillDefinitionError):
        skill(name=name)
    with pytest.raises(ManifestInvalid) as caught:
        read_manifest(source(name))
    assert caught.value.rule == "invalid-name"


@pytest.mark.parametrize("name", SKILL_LOOKALIKES[:3])
def test_sidecar_and_run_file_refuse_a_lookalike_skill_name(cluster: Cluster, name: str) -> None:
    v = Sidecar(cluster.rt).submit(source(name), SMOKE)
    assert not v.accepted and v.stage == "manifest" and v.findings[0].rule == "invalid-name"
    path = cluster.tmp / "look.py"
    path.write_text(source(name))
    with pytest.raises(SkillLoadError, match="invalid-name"):
        start_run(cluster.rt, str(path), None)
    assert Registry(cluster.rt.redis, cluster.rt.keys).names() == []


@pytest.mark.parametrize(
    "extra",
    [
        ", secrets=['API_KEY\\n']",
        ", http_allow=['api.example.com\\n']",
        ", concurrency={'limit': 1, 'key': 'data.x\\n'}",
        ", params={'p95\\n': 1}",
        ", trigger=event('order.created\\n')",
        ", events={'send': ['order.*\\n']}",
        ", events={'receive': ['order.cre*ated']}",
    ],
)
def test_every_declared_name_is_a_full_match(extra: str) -> None:
    with pytest.raises(ManifestInvalid):
        read_manifest(source(extra=extra))


EVENT_LOOKALIKES = ["order.created\n", "order.created\r", "order.created ", "order.créated", ""]


@pytest.mark.parametrize("name", EVENT_LOOKALIKES)
def test_the_bus_refuses_lookalike_event_names_and_ids(cluster: Cluster, name: str) -> None:
    with pytest.raises(UserError, match="event name"):
        cluster.rt.bus.send(name, {})
    with pytest.raises(UserError, match="event id"):
        cluster.rt.bus.send("order.created", {}, event_id=name.replace("order.created", "id"))
    assert cluster.rt.redis.xlen(cluster.rt.keys.events) == 0


def test_id_and_id_newline_cannot_both_be_accepted(cluster: Cluster) -> None:
    first = cluster.rt.bus.send("order.created", {}, event_id="id-1")
    assert first.accepted
    with pytest.raises(UserError):
        cluster.rt.bus.send("order.created", {}, event_id="id-1\n")
    assert cluster.rt.redis.xlen(cluster.rt.keys.events) == 1


def test_the_events_cli_and_the_agent_refuse_a_lookalike_event_name(
    cluster: Cluster, tmp_path: Path
) -> None:
    proc = cluster.cli("events", "send", "order.created\n")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "event name" in proc.stderr
    proc = cluster.cli("events", "send", "order.created", "--id", "x\n")
    assert proc.returncode != 0 and "event id" in proc.stderr
    tools = ToolBox(cluster.rt, LocalSidecar(cluster.rt))
    res = tools.call("send_event", {"name": "order.created\n"})
    assert not res.ok
    assert cluster.rt.redis.xlen(cluster.rt.keys.events) == 0


def test_a_run_id_lookalike_is_not_found(cluster: Cluster) -> None:
    path = cluster.tmp / "plain.py"
    path.write_text(source())
    run_id = start_run(cluster.rt, str(path), None)
    assert cluster.rt.runs.get(run_id).id == run_id
    for lookalike in (run_id + "\n", " " + run_id, run_id.upper()):
        with pytest.raises(NotFoundError):
            cluster.rt.runs.get(lookalike)
    proc = cluster.cli("runs", "show", run_id + "\n")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


def test_ensure_builtin_does_not_call_an_earlier_install_a_squatter(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry(cluster.rt.redis, cluster.rt.keys)
    # How ensure_builtin registered before installs were marked: a direct run-from-file.
    report = {"mode": "direct", "stages": ["policy"], "note": "run from a file"}
    registry.register(
        BUILTIN_SOURCE, None, None, name=BUILTIN_NAME, author="person", report=report,
        mode="direct", builtin=True,
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        version = ensure_builtin(cluster.rt)
    assert registry.skill(BUILTIN_NAME).active == version
    assert "replaced" not in caplog.text
