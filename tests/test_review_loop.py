"""The weekly review end to end: the built-in ``weekly-review`` run (in the CLI process or on
real workers), the sidecar, the registry's approval modes, the watch, and the scripted model
server for the model path. History is written through the runner's scripts with recordings
(``review_support``); every replay runs in a real sandbox guest.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Cluster, wait_until
from loopwright.cli.chat import drive
from loopwright.history.replay import candidate_from_version
from loopwright.review.loop import start_review
from loopwright.review.promote import watch_run_id
from loopwright.runner.execute import install_runtime
from loopwright.runner.records import now_ms
from loopwright.sidecar.pipeline import Sidecar
from loopwright.skills_registry.store import Registry
from loopwright.testing.scripted import ScriptedServer
from review_support import (
    Planned,
    answer,
    health,
    health_tests,
    renamed_week,
    review_week,
    seed_health,
    write_run,
)

SKILL = "health-check"


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as srv:
        yield srv


def _cluster(make_cluster: Callable[..., Cluster], **over: Any) -> Cluster:
    # 10 judged runs are enough here (20 by default): fewer replays keep the tests fast.
    return make_cluster(
        http_private_allow="127.0.0.1", sidecar_case_timeout=20, review_min_runs=10, **over
    )


def _register(cluster: Cluster, source: str, tests: list[dict[str, Any]]) -> str:
    # Written by the builder (an agent): a review's rewrite of a person's skill always waits
    # for approval, whatever the mode (the registry's author policy).
    verdict = Sidecar(cluster.rt).submit(source, tests, author="agent", approval="auto")
    assert verdict.accepted, verdict.first_line()
    return str(verdict.version)


def _review(cluster: Cluster, **kw: Any) -> dict[str, Any]:
    install_runtime(cluster.rt)
    run_id = start_review(cluster.rt, "7d", SKILL, **kw)
    return {"run_id": run_id, **drive(cluster.rt, run_id, 240, False)}


def _active(cluster: Cluster) -> str:
    return str(cluster.rt.redis.hget(cluster.rt.keys.skills, SKILL))


def _inbox(cluster: Cluster) -> list[dict[str, Any]]:
    from loopwright.inbox import Inbox

    rt = cluster.rt
    return [
        {"message": f"{n.title}\n{n.body}", "source": n.source, "level": n.level}
        for n in Inbox(rt.redis, rt.keys, rt.settings).list(limit=500)
    ]


def test_review_run_promotes_the_offline_threshold_fix_under_a_watch(
    make_cluster: Callable[..., Cluster],
) -> None:
    # Given a health check whose false alarms people labelled bad (approval mode auto)
    cluster = _cluster(make_cluster)
    old = _register(cluster, health(250), health_tests())
    seed_health(cluster.rt, old, *review_week())
    # When `loopwright review run` runs (no worker: the CLI executes the review itself)
    res = cluster.cli("review", "run", "--skill", SKILL, "--json", timeout=240)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    # Then the parameter search's threshold passed the gate and is active, written by the
    # review with the old version as its parent
    [card] = out["skills"]
    assert card["decision"] == "improved", card
    gated = [c for c in card["candidates"] if c["gate"]]
    assert [c["kind"] for c in gated] == ["param"] and gated[0]["gate"]["outcome"] == "passed"
    new = _active(cluster)
    assert new != old and card["promoted_version"] == new
    rec = Registry(cluster.rt.redis, cluster.rt.keys).version(SKILL, new)
    assert rec.author == "review" and rec.parent == old
    threshold = candidate_from_version(cluster.rt, SKILL, new).manifest.params["threshold"]
    assert 300 < threshold.default < 2800
    # And a watch run guards it, the report is written and the inbox has the summary
    assert cluster.rt.runs.exists(watch_run_id(SKILL, new))
    assert Path(out["report"]).read_text().startswith("# Weekly review")
    assert any("1 skill reviewed: 1 improved" in m["message"] for m in _inbox(cluster))


def test_in_review_mode_the_fix_waits_for_a_person_and_dry_run_submits_nothing(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = _cluster(make_cluster, approval_mode="review")
    old = _register(cluster, health(250), health_tests())
    seed_health(cluster.rt, old, *review_week())
    # A dry run gates the candidate but registers nothing
    dry = _review(cluster, dry_run=True)
    assert dry["skills"][0]["decision"] == "dry_run"
    reg = Registry(cluster.rt.redis, cluster.rt.keys)
    assert reg.version_ids(SKILL) == [old]
    # The real review registers it pending approval; the active version does not change
    out = _review(cluster)
    [card] = out["skills"]
    # (the same history gave the same gate decisions as the dry run)
    assert [c["gate"] for c in card["candidates"]] == [
        c["gate"] for c in dry["skills"][0]["candidates"]
    ]
    assert card["decision"] == "awaiting_approval", card
    assert _active(cluster) == old
    pending = card["candidates"][-1]["version"]
    assert reg.version(SKILL, pending).approved is False
    assert not cluster.rt.runs.exists(watch_run_id(SKILL, pending))


def test_the_watch_rolls_back_a_promoted_version_that_fails_live(
    make_cluster: Callable[..., Cluster],
) -> None:
    # Given a promoted version under watch (3 runs, counted every 0.2 s) and a worker
    cluster = _cluster(make_cluster, review_watch_runs=3, review_watch_poll=0.2)
    old = _register(cluster, health(250), health_tests())
    seed_health(cluster.rt, old, *review_week())
    out = _review(cluster)
    new = _active(cluster)
    assert out["skills"][0]["decision"] == "improved" and new != old
    cluster.worker()
    watch = watch_run_id(SKILL, new)
    # When its next runs fail live (the service renamed the field)
    for i in range(3):
        run_id = f"live{i:016x}"
        write_run(
            cluster.rt, SKILL, new, run_id, now_ms() + i, Planned(200, field="latency_p95_ms"), 250
        )
    # Then the watch rolls the skill back to the old version and the inbox says so
    run = cluster.wait(watch, timeout=60)
    assert run.status.value == "completed", run.error
    assert run.output["action"] == "rolled-back"
    assert _active(cluster) == old
    assert any("rolled back" in m["message"] for m in _inbox(cluster))


def _fixed_source() -> str:
    return health(250, field="latency_p95_ms")


def _model_cluster(
    make_cluster: Callable[..., Cluster], srv: ScriptedServer, **over: Any
) -> Cluster:
    return _cluster(
        make_cluster,
        review_model="openai:gpt-4.1",
        openai_base_url=srv.openai_base_url,
        openai_api_key="test-key",
        llm_max_retries=1,
        **over,
    )


def _steps(cluster: Cluster, run_id: str) -> dict[str, str]:
    raw = cluster.rt.redis.hgetall(cluster.rt.keys.steps(run_id))
    out = {}
    for text in raw.values():
        rec = json.loads(text)
        out[str(rec.get("name"))] = str(rec.get("status"))
    return out


def test_the_model_fixes_a_renamed_field_and_a_killed_worker_never_repeats_the_call(
    make_cluster: Callable[..., Cluster], server: ScriptedServer
) -> None:
    # Given a skill broken by a renamed field, and a model that writes the fix
    cluster = _model_cluster(make_cluster, server)
    old = _register(cluster, health(250), health_tests())
    seed_health(cluster.rt, old, *renamed_week(), tag="r")
    server.push({"delay": 0.5, **answer(_fixed_source(), health_tests("latency_p95_ms"))})
    cluster.scheduler()
    worker = cluster.worker()
    install_runtime(cluster.rt)
    run_id = start_review(cluster.rt, "7d", SKILL)
    # When the worker is SIGKILLed right after the model call's step is checkpointed
    wait_until(lambda: _steps(cluster, run_id).get(f"{SKILL}:model-call-1") == "done", 90)
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    assert not cluster.rt.runs.get(run_id).status.terminal
    cluster.worker()
    run = cluster.wait(run_id, timeout=120)
    # Then the review finishes on the new worker, the model was asked exactly once, and its
    # fix passed the gate and is active
    assert run.status.value == "completed", run.error
    assert len(server.requests_for("openai")) == 1
    [card] = run.output["skills"]
    assert card["decision"] == "improved", card
    assert "latency_p95_ms" in str(cluster.rt.redis.get(cluster.rt.keys.source(_active(cluster))))


def test_at_most_two_rewrites_and_the_retry_sees_the_gate_findings(
    make_cluster: Callable[..., Cluster], server: ScriptedServer
) -> None:
    # Given a broken skill and a model whose rewrites fix nothing (it reads yet another field)
    cluster = _model_cluster(make_cluster, server)
    old = _register(cluster, health(250), health_tests())
    seed_health(cluster.rt, old, *renamed_week(), tag="t")
    wrong = health(250, field="p95")
    for _ in range(3):
        server.push(answer(wrong, health_tests("p95")))
    # When the review runs
    out = _review(cluster)
    # Then two candidates were gated, the second asked with the first's findings, no more
    [card] = out["skills"]
    gated = [c for c in card["candidates"] if c["gate"]]
    assert len(gated) == 2 and all(c["gate"]["outcome"] == "inconclusive" for c in gated)
    prompts = server.requests_for("openai")
    assert len(prompts) == 2
    assert "rejected" in json.dumps(prompts[1].body) and "fixes none" in json.dumps(prompts[1].body)
    assert card["decision"] == "no_fix" and _active(cluster) == old


def test_a_bad_new_version_is_rolled_back_to_the_healthy_one_it_replaced(
    make_cluster: Callable[..., Cluster],
) -> None:
    # Given a healthy version, then a new version that reads a field the service never sends
    cluster = _cluster(make_cluster)
    good = _register(cluster, health(250, field="latency_p95_ms"), health_tests("latency_p95_ms"))
    seed_health(cluster.rt, good, *renamed_week(), tag="g", read_field="latency_p95_ms")
    bad = _register(cluster, health(250, field="p95"), health_tests("p95"))
    seed_health(cluster.rt, bad, *renamed_week(), tag="b", read_field="p95")
    # When the review runs
    out = _review(cluster)
    # Then the rollback candidate passed the gate and the healthy version is active again
    [card] = out["skills"]
    assert card["decision"] == "improved", card["decision_reason"]
    assert [c["kind"] for c in card["candidates"]] == ["rollback"]
    assert card["candidates"][0]["gate"]["outcome"] == "passed"
    assert _active(cluster) == good == card["promoted_version"]


def test_review_run_refuses_bad_input_in_one_line(make_cluster: Callable[..., Cluster]) -> None:
    cluster = _cluster(make_cluster)
    bad_window = cluster.cli("review", "run", "--window", "soon")
    assert bad_window.returncode == 2 and "--window" in bad_window.stderr
    unknown = cluster.cli("review", "run", "--skill", "no-such-skill")
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines() == [
        "loopwright: error: no active skill 'no-such-skill' (list skills with: loopwright "
        "skills list)"
    ]
    assert not cluster.rt.redis.exists(cluster.rt.keys.registry_skill("weekly-review"))


def test_the_model_budget_caps_the_review_and_says_so(
    make_cluster: Callable[..., Cluster], server: ScriptedServer
) -> None:
    # Given a broken skill and a model, but no model budget
    cluster = _model_cluster(make_cluster, server, review_max_cost=0.0)
    old = _register(cluster, health(250), health_tests())
    seed_health(cluster.rt, old, *renamed_week(), tag="c")
    # When the review runs
    out = _review(cluster)
    # Then the model is never asked and the card says the budget stopped it
    [card] = out["skills"]
    assert card["decision"] == "over_budget", card["decision_reason"]
    assert "budget" in card["decision_reason"]
    assert server.requests_for("openai") == [] and _active(cluster) == old
