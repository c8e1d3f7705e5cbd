"""A tidy registry: ``run FILE`` is a one-off draft (not listed, no trigger), ``skills delete``
purges a skill but refuses while its runs are in flight and keeps their history, and a cron
tick racing a delete starts nothing. Real Redis, workers and scheduler processes."""

from __future__ import annotations

import json
import subprocess
import textwrap
from typing import Any

import pytest

from conftest import Cluster, wait_until
from loopwright.errors import NotFoundError
from loopwright.scheduler.catalog import Entry
from loopwright.scheduler.starts import start_once
from loopwright.sdk.manifest import read_declaration
from loopwright.service.skills import delete_skill
from loopwright.sidecar.pipeline import Sidecar
from loopwright.skills_registry.store import Registry

SMOKE = [{"name": "smoke", "event": {}, "expect": {"status": "completed"}}]

TICKER = """
from loopwright.sdk import skill, cron

@skill(name="{name}", trigger=cron("* * * * * *"))
def main(ctx):
    return ctx.step.run("tick", lambda: ctx.event["data"].get("tick_ms", 0))
"""

HOLDER = """
from loopwright.sdk import skill

@skill(name="holder", retries=0)
def main(ctx):
    if ctx.event["data"].get("hold"):
        ctx.step.sleep("hold", ctx.event["data"]["hold"])
    return ctx.step.run("answer", lambda: "held")
"""


def _registry(cluster: Cluster) -> Registry:
    return Registry(cluster.rt.redis, cluster.rt.keys)


def _submit(cluster: Cluster, source: str) -> str:
    verdict = Sidecar(cluster.rt).submit(textwrap.dedent(source), SMOKE)
    assert verdict.accepted, verdict.findings
    assert verdict.version is not None
    return verdict.version


def _runs(cluster: Cluster, skill: str) -> int:
    return len(cluster.rt.runs.find(skill=skill, limit=1000))


def _json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_run_file_is_a_draft_that_is_not_listed_and_takes_no_trigger(cluster: Cluster) -> None:
    cluster.worker()
    cluster.scheduler()
    path = cluster.tmp / "drafty.py"
    path.write_text(TICKER.format(name="drafty"))
    # When a cron skill is run from its file
    proc = cluster.cli("run", str(path), "--wait", "--json")
    # Then it ran, and the command says it was a draft and how to register it
    assert _json(proc)["status"] == "completed"
    assert f"ran {path} as a draft of drafty" in proc.stderr
    assert f"loopwright skills submit {path}" in proc.stderr
    # And it is not among the skills (only with --drafts), and is not runnable by name
    assert [s["name"] for s in _json(cluster.cli("skills", "list", "--json"))] == []
    (listed,) = _json(cluster.cli("skills", "list", "--drafts", "--json"))
    assert listed["name"] == "drafty" and listed["status"] == "draft" and not listed["active"]
    assert listed["pending"] == [] and len(listed["drafts"]) == 1
    assert "drafty" not in cluster.rt.sources.names()
    assert "is a draft" in _one_error_line(cluster.cli("run", "drafty"))
    (ver,) = _json(cluster.cli("skills", "versions", "drafty", "--json"))
    assert ver["state"] == "draft" and not ver["validated"]
    # And its cron never fires, while a cron skill registered the way 'run FILE' did before
    # drafts existed (the direct path: active, unvalidated) keeps ticking as it did
    cluster.rt.sources.put(textwrap.dedent(TICKER.format(name="clock")), "clock")
    assert not _registry(cluster).version("clock").validated
    wait_until(lambda: _runs(cluster, "clock") >= 3, timeout=30)
    assert _runs(cluster, "drafty") == 1
    # A draft version cannot be approved into service: it goes through the sidecar
    reg = _registry(cluster)
    assert reg.version("drafty", listed["drafts"][0]).draft
    approve = cluster.cli("skills", "approve", "drafty", listed["drafts"][0][:12])
    assert "skills submit" in _one_error_line(approve)
    # Submitted through the sidecar, the skill becomes active and listed as usual
    submitted = _submit(cluster, TICKER.format(name="drafty"))
    assert reg.skill("drafty").status == "active" and reg.skill("drafty").active == submitted


def test_delete_refuses_in_flight_runs_then_purges_and_keeps_history(cluster: Cluster) -> None:
    cluster.worker()
    cluster.scheduler()
    version = _submit(cluster, HOLDER)
    done = cluster.wait(cluster.start("holder", {}, trusted=False))
    assert done.output == "held"
    held = cluster.start("holder", {"hold": "5m"}, trusted=False)
    wait_until(lambda: cluster.rt.runs.get(held).status.value == "sleeping", timeout=20)
    # A run in flight: nothing is deleted, and the refusal says how many and what to do
    refused = cluster.cli("skills", "delete", "holder", "--yes")
    line = _one_error_line(refused)
    assert "1 run(s) in flight (1 sleeping)" in line and "loopwright runs cancel" in line
    assert _registry(cluster).skill("holder").active == version
    # Without --yes and no terminal to ask on, it asks for --yes
    assert "--yes" in _one_error_line(cluster.cli("skills", "delete", "holder"))
    cluster.rt.runs.cancel(held)
    deleted = _json(cluster.cli("skills", "delete", "holder", "--yes", "--json"))
    assert deleted == {
        "outcome": "deleted",
        "name": "holder",
        "versions": 1,
        "runs_kept": 2,
        "in_flight": {},
    }
    # The registry forgot it: no record, version, source, name or runnable entry
    rt = cluster.rt
    assert _registry(cluster).names() == []
    assert not rt.redis.exists(
        rt.keys.registry_skill("holder"),
        rt.keys.registry_versions("holder"),
        rt.keys.registry_version(version),
        rt.keys.source(version),
    )
    assert "holder" not in rt.sources.names()
    with pytest.raises(NotFoundError, match="unknown skill 'holder'"):
        rt.sources.resolve("holder")
    # The history stays: runs show, runs list and the rollups
    shown = _json(cluster.cli("runs", "show", done.id, "--json"))
    assert shown["status"] == "completed" and shown["output"] == "held"
    assert {r.id for r in rt.runs.find(skill="holder")} == {done.id, held}
    assert rt.redis.zcard(rt.keys.rollup_index("holder")) >= 1
    # Deleting again is a clear error; a built-in name is refused before anything is read
    with pytest.raises(NotFoundError, match="unknown skill"):
        delete_skill(rt.redis, rt.keys, "holder")
    builtin = cluster.cli("skills", "delete", "weekly-review", "--yes")
    assert "built into the platform" in _one_error_line(builtin)
    # The name is free again: a new skill under it starts from scratch
    again = _submit(cluster, HOLDER.replace('"held"', '"again"'))
    assert _registry(cluster).skill("holder").versions == 1 and again != version


def test_a_cron_tick_after_a_delete_starts_nothing(cluster: Cluster) -> None:
    cluster.worker()
    cluster.scheduler()
    source = textwrap.dedent(TICKER.format(name="doomed"))
    version = _submit(cluster, source)
    _submit(cluster, TICKER.format(name="clock"))
    wait_until(lambda: _runs(cluster, "doomed") >= 2, timeout=30)
    reg = _registry(cluster)
    # A tick's run may be in flight ("busy"): try again until it falls between two runs
    wait_until(lambda: reg.delete("doomed").outcome == "deleted", timeout=30, interval=0.05)
    after = _runs(cluster, "doomed")
    # The scheduler keeps ticking (the other cron skill's runs grow) and starts no doomed run
    clock = _runs(cluster, "clock")
    wait_until(lambda: _runs(cluster, "clock") >= clock + 3, timeout=30)
    assert _runs(cluster, "doomed") == after
    # A tick that read the catalog before the delete and starts after it creates nothing
    entry = Entry("doomed", version, read_declaration(source).spec)
    run_id, created = start_once(
        cluster.rt, entry, "cron:1", {"name": "loopwright/cron", "data": {}}, {"type": "cron"}
    )
    assert not created and not cluster.rt.runs.exists(run_id)
    assert _runs(cluster, "doomed") == after


def test_piped_skill_and_token_lists_keep_full_names_and_ids(cluster: Cluster) -> None:
    long_name = "a-skill-with-a-name-long-enough-to-be-cut-in-a-narrow-table-x"
    version = _submit(cluster, HOLDER.replace('"holder"', f'"{long_name}"'))
    listed = cluster.cli("skills", "list")  # stdout is a pipe here
    assert listed.returncode == 0, listed.stderr
    assert long_name in listed.stdout and version in listed.stdout
    versions = cluster.cli("skills", "versions", long_name)
    assert version in versions.stdout
    made = _json(
        cluster.cli(
            "tokens", "create", "a-token-name-that-is-rather-long-too", "-s", "read", "--json"
        )
    )
    tokens = cluster.cli("tokens", "list")
    assert made["id"] in tokens.stdout and "a-token-name-that-is-rather-long-too" in tokens.stdout
    for line in tokens.stdout.splitlines():
        assert "…" not in line, line


def test_skills_show_of_a_draft_shows_its_latest_draft_without_fires(cluster: Cluster) -> None:
    path = cluster.tmp / "drafty.py"
    path.write_text(TICKER.format(name="drafty"))
    assert cluster.cli("run", str(path)).returncode == 0  # queued: no worker needed
    view = _json(cluster.cli("skills", "show", "drafty", "--json"))
    assert view["skill"]["status"] == "draft" and view["version"]["state"] == "draft"
    assert view["next_fires"] == [] and view["source"] == path.read_text()
