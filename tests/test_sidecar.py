"""The sidecar: every pipeline stage rejects its own kind of bad input with the right rule and
line; accepted skills run on workers that were up before they existed; the HTTP service and its
client; the folder watch."""

from __future__ import annotations

import json
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Cluster, free_port, wait_until
from loopwright.errors import NotFoundError, UserError
from loopwright.sidecar.client import SidecarClient
from loopwright.sidecar.pipeline import Sidecar
from loopwright.sidecar.verdict import Verdict
from loopwright.sidecar.watch import Watcher
from loopwright.skills_registry.store import Registry

SMOKE = [{"name": "smoke", "event": {}, "expect": {"status": "completed"}}]

GOOD = """
from loopwright.sdk import skill


@skill(name="{name}", description="doubles n", params={{"factor": 2}})
def main(ctx):
    n = ctx.event["data"].get("n", 1)
    return ctx.step.run("double", lambda: n * ctx.params["factor"])
"""


def good(name: str = "doubler") -> str:
    return GOOD.format(name=name)


def submit(cluster: Cluster, source: str, tests: Any = SMOKE, **kw: Any) -> Verdict:
    return Sidecar(cluster.rt).submit(textwrap.dedent(source), tests, **kw)


def test_a_valid_skill_is_accepted_and_runs_on_a_worker_started_before_it(
    cluster: Cluster,
) -> None:
    cluster.worker()  # up before the skill exists
    verdict = submit(cluster, good())
    assert verdict.accepted, verdict.findings
    assert verdict.name == "doubler" and verdict.status == "active"
    assert verdict.registration == "activated" and verdict.version
    assert verdict.cases[0].passed and verdict.cases[0].output == 2
    assert verdict.timings_ms["registration"] < 1000
    run = cluster.wait(cluster.start("doubler", {"n": 21}, trusted=False))
    assert run.status.value == "completed" and run.output == 42
    assert run.version == verdict.version


def test_dry_run_checks_every_stage_but_registers_nothing(cluster: Cluster) -> None:
    registry = Registry(cluster.rt.redis, cluster.rt.keys)
    verdict = submit(cluster, good(), dry_run=True)
    assert verdict.accepted and verdict.registration == "dry-run", verdict.findings
    assert verdict.cases[0].passed and verdict.cases[0].output == 2
    assert registry.names() == []
    real = submit(cluster, good())
    assert real.accepted and real.version == verdict.version  # the same content, the same id
    bad = submit(cluster, good().replace("n * ctx", "n / 0 * ctx"), dry_run=True)
    assert not bad.accepted and bad.stage == "tests"
    assert registry.version("doubler").version == real.version


TOOL_SKILL = """
from loopwright.sdk import skill

@skill(name="tooler", tools=["http"], http_allow=["api.example.com"])
def main(ctx):
    data = ctx.step.run("get", ctx.tools.http.get_json, "https://api.example.com/x")
    ctx.step.run("tell", lambda: ctx.tools.notify(str(data)))
    return data
"""

CASES: list[tuple[str, str, Any, str, str, int]] = [
    # (id, source, tests, stage, rule, line)
    (
        "syntax-error",
        'from loopwright.sdk import skill\n\n@skill(name="x")\ndef main(ctx):\n    return (1\n',
        SMOKE,
        "syntax",
        "syntax-error",
        5,
    ),
    (
        "forbidden-import",
        "import os\n" + good(),
        SMOKE,
        "policy",
        "import-not-allowed",
        1,
    ),
    ("undeclared-tool", TOOL_SKILL, SMOKE, "capabilities", "undeclared-tool", 7),
    (
        "undeclared-host",
        TOOL_SKILL.replace('"http"]', '"http", "notify"]').replace(
            "api.example.com/x", "evil.test/x"
        ),
        SMOKE,
        "capabilities",
        "undeclared-host",
        6,
    ),
    (
        "bad-cron",
        good()
        .replace('description="doubles n"', 'trigger=cron("61 * * * *")')
        .replace("import skill", "import cron, skill"),
        SMOKE,
        "manifest",
        "invalid-cron",
        5,
    ),
    ("invalid-name", good("Not_Kebab"), SMOKE, "manifest", "invalid-name", 5),
    (
        "non-literal-argument",
        good().replace('description="doubles n"', "description=DESCRIPTION")
        + '\nDESCRIPTION = "x"\n',
        SMOKE,
        "manifest",
        "manifest-not-literal",
        5,
    ),
    (
        "failing-test-case",
        good().replace('lambda: n * ctx.params["factor"]', "lambda: n / 0"),
        SMOKE,
        "tests",
        "test-failed",
        8,
    ),
    ("missing-tests", good(), None, "tests", "tests-missing", 0),
    ("empty-tests", good(), "[]", "tests", "tests-missing", 1),
    (
        "secret-literal",
        TOOL_SKILL.replace('"http"]', '"http", "notify"]').replace(
            '"https://api.example.com/x"',
            '"https://api.example.com/x", None, {"Authorization": "Bearer s3cr3t-t0ken-value"}',
        ),
        SMOKE,
        "capabilities",
        "secret-literal",
        6,
    ),
]


@pytest.mark.parametrize(
    ("source", "tests", "stage", "rule", "line"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_each_stage_rejects_its_own_kind_of_bad_input(
    cluster: Cluster, source: str, tests: Any, stage: str, rule: str, line: int
) -> None:
    verdict = submit(cluster, source, tests)
    assert not verdict.accepted
    assert verdict.stage == stage, verdict.findings
    assert verdict.findings[0].rule == rule, verdict.findings
    assert verdict.findings[0].line == line, verdict.findings
    assert verdict.findings[0].message and verdict.findings[0].hint
    assert "rejected at stage" in verdict.summary
    assert Registry(cluster.rt.redis, cluster.rt.keys).names() == []


def test_missing_tests_hint_shows_the_format(cluster: Cluster) -> None:
    verdict = submit(cluster, good(), None)
    hint = verdict.findings[0].hint
    assert '"name": "smoke"' in hint and '"expect"' in hint and "tests.json" in hint


def test_oversized_source_is_refused_before_parsing(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(skill_source_max_bytes=2048)
    verdict = submit(cluster, good() + "# padding\n" * 300)
    assert verdict.stage == "syntax" and verdict.findings[0].rule == "source-too-large"
    assert "2048" in verdict.findings[0].message


def test_every_finding_of_the_failing_stage_is_reported(cluster: Cluster) -> None:
    source = """
    from loopwright.sdk import skill

    @skill(name="greedy")
    def main(ctx):
        a = ctx.step.run("a", lambda: ctx.tools.notify("hi"))
        b = ctx.step.run("b", ctx.tools.http.get_json, "https://x.example.com/")
        return ctx.step.llm("c", "summarise")
    """
    verdict = submit(cluster, source)
    assert verdict.stage == "capabilities"
    found = {(f.rule, f.line) for f in verdict.findings}
    assert ("undeclared-tool", 6) in found and ("undeclared-tool", 7) in found
    assert ("undeclared-tool", 8) in found and ("undeclared-host", 7) in found


def test_a_name_owned_by_a_person_cannot_be_taken_by_the_agent(cluster: Cluster) -> None:
    assert submit(cluster, good(), author="person").accepted
    changed = good().replace('"factor": 2', '"factor": 3')
    verdict = submit(cluster, changed, author="agent")
    assert not verdict.accepted and verdict.stage == "registration"
    assert verdict.findings[0].rule == "name-owned" and verdict.findings[0].line == 6
    # and the person's version stays active
    reg = Registry(cluster.rt.redis, cluster.rt.keys)
    assert reg.skill("doubler").active != verdict.version and reg.skill("doubler").versions == 1


def test_mocked_http_llm_and_retries_in_the_sandboxed_cases(cluster: Cluster) -> None:
    source = """
    from loopwright.sdk import skill

    @skill(name="fetcher", retries=2, tools=["http", "llm", "notify"],
           http_allow=["metrics.example.com"], secrets=["METRICS_TOKEN"])
    def main(ctx):
        hdr = {"Authorization": "Bearer {{secret:METRICS_TOKEN}}"}
        url = "https://metrics.example.com/p95"
        m = ctx.step.run("get", ctx.tools.http.get_json, url, None, hdr)
        label = ctx.step.llm("label", f"classify {m['p95']}")
        ctx.step.run("tell", lambda: ctx.tools.notify(f"{label}: {m['p95']}"))
        return {"p95": m["p95"], "label": label}
    """
    tests = [
        {
            "name": "flaky-then-ok",
            "event": {},
            "mocks": {
                "http": [
                    {"url": "https://metrics.example.com/p95", "error": "connection reset"},
                    {"url": "https://metrics.example.com/p95", "status": 503},
                    {"url": "https://metrics.example.com/p95", "response": {"p95": 900}},
                ],
                "llm": ["slow"],
            },
            "expect": {
                "output": {"p95": 900, "label": "slow"},
                "output_contains": {"label": "slow"},
                "steps": ["get", "label", "tell"],
                "notify_count": 1,
            },
        },
        {
            "name": "gives-up",
            "event": {},
            "mocks": {"http": [{"url": "https://metrics.example.com/*", "status": 500}]},
            "expect": {"status": "failed", "error_contains": "answered 500"},
        },
    ]
    verdict = submit(cluster, source, json.dumps(tests))
    assert verdict.accepted, [c.problems for c in verdict.cases] or verdict.findings
    first = verdict.cases[0]
    assert first.steps[0]["attempts"] == 3 and first.notifications[0]["message"] == "slow: 900"


def test_a_case_whose_mock_is_missing_fails_with_a_clear_problem(cluster: Cluster) -> None:
    source = TOOL_SKILL.replace('"http"]', '"http", "notify"]')
    verdict = submit(cluster, source)
    assert verdict.stage == "tests" and verdict.findings[0].rule == "test-failed"
    assert "no mocked response for GET https://api.example.com/x" in verdict.findings[0].message


def test_invalid_test_files_point_at_the_case(cluster: Cluster) -> None:
    tests = '[\n  {"name": "ok", "event": {}},\n  {"name": "bad", "expect": {"status": "odd"}}\n]'
    verdict = submit(cluster, good(), tests)
    assert verdict.stage == "tests" and verdict.findings[0].rule == "tests-invalid"
    assert verdict.findings[0].file == "tests" and verdict.findings[0].line == 3
    broken = submit(cluster, good(), "[{")
    assert broken.findings[0].rule == "tests-invalid" and "not JSON" in broken.findings[0].message
    wrong_param = submit(cluster, good(), [{"name": "p", "params": {"factor": "x"}}])
    assert "expected int, got str" in wrong_param.findings[0].message


def test_review_mode_keeps_new_versions_pending_until_approved(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(approval_mode="review")
    verdict = submit(cluster, good())
    assert verdict.accepted and verdict.registration == "pending"
    assert verdict.status == "pending_approval" and "approve" in verdict.summary
    with pytest.raises(UserError, match="waiting for approval"):
        cluster.rt.sources.resolve("doubler")
    reg = Registry(cluster.rt.redis, cluster.rt.keys)
    assert reg.skill("doubler").pending == [verdict.version]
    assert verdict.version is not None
    reg.approve("doubler", verdict.version[:8])
    assert cluster.rt.sources.resolve("doubler") == verdict.version


# The HTTP service, a real uvicorn server started by the CLI ---------------------------------


def _serve(cluster: Cluster, *args: str, env: dict[str, str] | None = None) -> str:
    port = free_port()
    cluster.spawn("sidecar", "--port", str(port), *args, env=env)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            with SidecarClient(url) as c:
                return bool(c.health()["ok"])
        except Exception:
            return False

    wait_until(up, timeout=30)
    return url


def _token(cluster: Cluster, role: str = "person") -> str:
    """The local token the CLI (person) or the builder (agent) presents."""
    from loopwright.auth.local import local_token

    return local_token(cluster.rt.redis, cluster.rt.keys, cluster.settings, role)  # type: ignore[arg-type]


def test_service_and_client_submit_and_manage_skills(cluster: Cluster) -> None:
    url = _serve(cluster)
    with SidecarClient(url, token=_token(cluster)) as client:
        assert client.health()["approval_mode"] == "auto"
        accepted = client.submit(good(), json.dumps(SMOKE))
        assert accepted.accepted and accepted.version
        dry = client.submit(good("dry"), SMOKE, dry_run=True)
        assert dry.accepted and dry.registration == "dry-run"
        rejected = client.submit("import os\n" + good(), SMOKE)
        assert not rejected.accepted and rejected.findings[0].rule == "import-not-allowed"
        v2 = client.submit(good().replace('"factor": 2', '"factor": 3'), SMOKE)
        assert v2.changes and v2.changes["manifest"]["params.factor.default"] == {
            "from": 2,
            "to": 3,
        }
        assert [s["name"] for s in client.skills()] == ["doubler"]
        assert client.skill("doubler")["version"]["version"] == v2.version
        assert len(client.versions("doubler")) == 2
        assert v2.version is not None
        diff = client.diff("doubler", accepted.version, v2.version)
        assert "params.factor.default" in diff["summary"]
        assert client.pause("doubler")["status"] == "paused"
        assert client.resume("doubler")["status"] == "active"
        assert client.rollback("doubler", accepted.version[:8])["version"] == accepted.version
        with pytest.raises(NotFoundError, match="unknown skill 'ghost'"):
            client.skill("ghost")
        with pytest.raises(UserError):
            client.approve("doubler", "zzzzzzzz")


def test_service_requires_a_platform_token(cluster: Cluster) -> None:
    url = _serve(cluster)
    with SidecarClient(url) as anonymous, pytest.raises(UserError, match="refused"):
        anonymous.skills()
    with SidecarClient(url, token="t0ken-for-tests") as wrong, pytest.raises(UserError):
        wrong.skills()
    with SidecarClient(url, token=_token(cluster)) as client:
        assert client.skills() == []


def test_ten_concurrent_submissions_over_http_all_register(cluster: Cluster) -> None:
    url = _serve(cluster)
    verdicts: dict[str, Verdict] = {}

    token = _token(cluster, "agent")

    def one(i: int) -> None:
        with SidecarClient(url, token=token) as client:
            verdicts[f"skill-{i}"] = client.submit(good(f"skill-{i}"), SMOKE)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(verdicts) == 10 and all(v.accepted for v in verdicts.values())
    index = cluster.rt.sources.names()
    assert index == {name: v.version for name, v in verdicts.items()}


# Folder watch -------------------------------------------------------------------------------


def _drop(folder: Path, name: str, source: str, tests: Any = SMOKE) -> None:
    if tests is not None:
        (folder / f"{name}.tests.json").write_text(json.dumps(tests))
    (folder / f"{name}.py").write_text(textwrap.dedent(source))


def test_watch_reports_broken_files_and_registers_the_others(cluster: Cluster) -> None:
    folder = cluster.tmp / "watched"
    folder.mkdir()
    _drop(folder, "good", good("watched-good"))
    _drop(folder, "broken", good("watched-broken").replace("return", "retrun"))
    _drop(folder, "untested", good("watched-untested"), tests=None)
    (folder / "binary.py").write_bytes(b"\xff\xfe\x00")
    reports: list[dict[str, Any]] = []
    watcher = Watcher(Sidecar(cluster.rt), folder, on_report=reports.append)
    out = watcher.scan(settle=False)
    by_file = {r["file"]: r for r in out}
    assert by_file["good.py"]["accepted"] is True
    assert by_file["broken.py"]["stage"] == "syntax"
    assert by_file["untested.py"]["findings"][0]["rule"] == "tests-missing"
    assert by_file["binary.py"]["event"] == "unreadable"
    assert reports == out and set(cluster.rt.sources.names()) == {"watched-good"}
    # Nothing changed: nothing is submitted again; a change is picked up once it settles
    assert watcher.scan() == []
    _drop(folder, "good", good("watched-good").replace('"factor": 2', '"factor": 5'))
    assert watcher.scan() == []  # changed since the last pass: wait one pass
    (changed,) = watcher.scan()
    assert changed["accepted"] and changed["version"] != by_file["good.py"]["version"]
    (folder / "broken.py").unlink()
    assert watcher.scan()[0]["event"] == "removed"


def test_watching_sidecar_makes_a_dropped_file_runnable(cluster: Cluster) -> None:
    folder = cluster.tmp / "drop"
    folder.mkdir()
    url = _serve(cluster, "--watch", str(folder))
    cluster.worker()
    _drop(folder, "bad", "import os\n" + good("dropped-bad"))
    _drop(folder, "dropped", good("dropped"))
    wait_until(lambda: "dropped" in cluster.rt.sources.names(), timeout=30)
    run = cluster.wait(cluster.start("dropped", {"n": 4}, trusted=False))
    assert run.output == 8
    with SidecarClient(url, token=_token(cluster)) as client:
        files = {f["file"]: f for f in client.watch()["files"]}
    assert files["dropped.py"]["accepted"] and not files["bad.py"]["accepted"]
    assert files["bad.py"]["stage"] == "policy"


def test_registration_notice_reaches_subscribers_fast(cluster: Cluster) -> None:
    pubsub = cluster.rt.redis.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(cluster.rt.keys.registry_channel)
    pubsub.get_message(timeout=1)  # the subscribe confirmation
    began = time.monotonic()
    verdict = submit(cluster, good())
    msg = pubsub.get_message(timeout=5)
    assert msg is not None and time.monotonic() - began < 5
    notice = json.loads(msg["data"])
    assert notice["name"] == "doubler" and notice["version"] == verdict.version
    assert notice["action"] == "activated" and notice["status"] == "active"
    pubsub.close()
