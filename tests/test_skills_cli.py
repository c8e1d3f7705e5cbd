"""``loopwright skills ...`` and ``loopwright sidecar`` as a person meets them: real
subprocesses, real Redis; JSON everywhere; every failure one line on stderr, non-zero exit."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import Cluster, free_port, wait_until
from loopwright.sidecar.client import SidecarClient

SOURCE = """
from loopwright.sdk import skill

@skill(name="greeter", params={"greeting": "hello"})
def main(ctx):
    who = ctx.event["data"].get("who", "world")
    return ctx.step.run("greet", lambda: f"{ctx.params['greeting']} {who}")
"""
TESTS = [
    {"name": "smoke", "event": {}, "expect": {"status": "completed"}},
    {"name": "named", "event": {"data": {"who": "ops"}}, "expect": {"output": "hello ops"}},
]


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def _write(folder: Path, name: str, source: str, tests: object = TESTS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(source)
    if tests is not None:
        (folder / f"{name}.tests.json").write_text(json.dumps(tests))
    return path


def _json(proc: subprocess.CompletedProcess[str]) -> object:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_submit_list_show_versions_diff_rollback_pause_resume(cluster: Cluster) -> None:
    path = _write(cluster.tmp / "skills", "greeter", SOURCE)
    v1 = _json(cluster.cli("skills", "submit", str(path), "--json"))
    assert isinstance(v1, dict) and v1["accepted"] and v1["registration"] == "activated"
    assert [c["name"] for c in v1["cases"]] == ["smoke", "named"]  # tests picked up beside it
    path.write_text(SOURCE.replace('"hello"', '"hi"'))
    failed = cluster.cli("skills", "submit", str(path), "--json")
    assert "[test-failed]" in _one_error_line(failed)  # "named" expects "hello ops"
    assert json.loads(failed.stdout)["cases"][1]["output"] == "hi ops"
    tests2 = cluster.tmp / "other-tests.json"
    tests2.write_text(json.dumps(TESTS[:1]))
    v2 = _json(cluster.cli("skills", "submit", str(path), "--tests", str(tests2), "--json"))
    assert isinstance(v2, dict) and v2["accepted"] and v2["previous"] == v1["version"]
    listed = _json(cluster.cli("skills", "list", "--json"))
    assert isinstance(listed, list) and listed[0]["name"] == "greeter"
    assert listed[0]["active"] == v2["version"] and listed[0]["owner"] == "person"
    shown = _json(
        cluster.cli("skills", "show", "greeter", "--version", v1["version"][:8], "--json")
    )
    assert isinstance(shown, dict) and '"hello"' in shown["source"]
    assert shown["version"]["state"] == "inactive"
    human = cluster.cli("skills", "show", "greeter")
    assert human.returncode == 0 and "greeting" in human.stdout
    versions = _json(cluster.cli("skills", "versions", "greeter", "--json"))
    assert isinstance(versions, list)
    assert [v["state"] for v in versions] == ["inactive", "active"]
    diff = _json(cluster.cli("skills", "diff", "greeter", v1["version"], v2["version"], "--json"))
    assert isinstance(diff, dict) and "params.greeting.default" in diff["manifest"]
    assert diff["tests_removed"] == ["named"]
    assert cluster.cli("skills", "diff", "greeter", v1["version"], v2["version"]).returncode == 0
    back = _json(cluster.cli("skills", "rollback", "greeter", v1["version"][:8], "--json"))
    assert isinstance(back, dict) and back["version"] == v1["version"]
    paused = _json(cluster.cli("skills", "pause", "greeter", "--json"))
    assert isinstance(paused, dict) and paused["status"] == "paused"
    assert "is paused" in _one_error_line(cluster.cli("run", "greeter"))
    assert cluster.cli("skills", "resume", "greeter").returncode == 0
    cluster.worker()
    done = _json(cluster.cli("run", "greeter", "--data", '{"who": "ops"}', "--wait", "--json"))
    assert isinstance(done, dict) and done["output"] == "hello ops"


def test_a_rejection_is_one_line_on_stderr_with_the_verdict_as_json(cluster: Cluster) -> None:
    path = _write(cluster.tmp, "bad", "import subprocess\n" + SOURCE)
    line = _one_error_line(cluster.cli("skills", "submit", str(path)))
    assert "rejected at stage policy" in line and "[import-not-allowed]" in line
    proc = cluster.cli("skills", "submit", str(path), "--json")
    assert "rejected at stage policy" in _one_error_line(proc)
    verdict = json.loads(proc.stdout)
    assert verdict["stage"] == "policy" and verdict["findings"][0]["line"] == 1
    untested = _write(cluster.tmp, "untested", SOURCE, tests=None)
    assert "[tests-missing]" in _one_error_line(cluster.cli("skills", "submit", str(untested)))


def test_every_failure_is_one_readable_line(cluster: Cluster) -> None:
    cases = [
        (("skills", "submit", str(cluster.tmp / "missing.py")), "no such file"),
        (("skills", "show", "ghost"), "unknown skill 'ghost'"),
        (("skills", "versions", "ghost", "--json"), "unknown skill 'ghost'"),
        (("skills", "pause", "ghost"), "unknown skill 'ghost'"),
        (("skills", "approve", "ghost", "abcd"), "unknown skill 'ghost'"),
        (("skills", "import", str(cluster.tmp / "nowhere")), "not a folder"),
        (("sidecar", "--once"), "--once needs --watch"),
    ]
    for args, expected in cases:
        assert expected in _one_error_line(cluster.cli(*args)), args
    path = _write(cluster.tmp, "greeter", SOURCE)
    assert cluster.cli("skills", "submit", str(path)).returncode == 0
    line = _one_error_line(cluster.cli("skills", "rollback", "greeter", "ffffffff"))
    assert "has no version 'ffffffff'" in line


def test_review_mode_and_approve(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(approval_mode="review")
    path = _write(cluster.tmp, "greeter", SOURCE)
    verdict = _json(cluster.cli("skills", "submit", str(path), "--json"))
    assert isinstance(verdict, dict) and verdict["status"] == "pending_approval"
    assert "waiting for approval" in _one_error_line(cluster.cli("run", "greeter"))
    listed = _json(cluster.cli("skills", "list", "--json"))
    assert isinstance(listed, list) and listed[0]["pending"] == [verdict["version"]]
    approved = _json(cluster.cli("skills", "approve", "greeter", verdict["version"][:10], "--json"))
    assert isinstance(approved, dict) and approved["status"] == "active"


def test_export_then_import_into_another_installation(
    cluster: Cluster, make_cluster: Callable[..., Cluster]
) -> None:
    path = _write(cluster.tmp / "src", "greeter", SOURCE)
    v = _json(cluster.cli("skills", "submit", str(path), "--json"))
    assert isinstance(v, dict)
    out = cluster.tmp / "exported"
    exported = _json(cluster.cli("skills", "export", str(out), "--json"))
    assert isinstance(exported, dict) and sorted(exported["written"]) == [
        "greeter.py",
        "greeter.tests.json",
        "registry.json",
    ]
    (out / "broken.py").write_text("def (:\n")
    other = make_cluster()
    proc = other.cli("skills", "import", str(out), "--json")
    assert "1 of 2 file(s) not imported: broken.py" in _one_error_line(proc)
    results = {r["file"]: r for r in json.loads(proc.stdout)}
    assert results["greeter.py"]["version"] == v["version"]
    assert "syntax" in results["broken.py"]["summary"]
    assert other.rt.sources.resolve("greeter") == v["version"]


def _cli_env(cluster: Cluster, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loopwright.cli", *args],
        env={**cluster.env, **env},
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cluster.tmp,
        check=False,
    )


def test_submit_goes_through_the_sidecar_service_when_configured(cluster: Cluster) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {"LOOPWRIGHT_SIDECAR_URL": url}
    path = _write(cluster.tmp, "greeter", SOURCE)
    down = _cli_env(cluster, env, "skills", "submit", str(path))
    assert "cannot reach the sidecar at" in _one_error_line(down)
    cluster.spawn("sidecar", "--port", str(port))
    wait_until(lambda: _healthy(url), timeout=30)
    proc = _cli_env(cluster, env, "skills", "submit", str(path), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["accepted"] is True
    bad = _write(cluster.tmp, "bad", SOURCE.replace("greeter", "Bad Name"))
    line = _one_error_line(_cli_env(cluster, env, "skills", "submit", str(bad)))
    assert "[invalid-name]" in line


def _healthy(url: str) -> bool:
    try:
        with SidecarClient(url, timeout=2) as client:
            return bool(client.health()["ok"])
    except Exception:
        return False


def test_sidecar_watch_once_reports_each_file(cluster: Cluster) -> None:
    folder = cluster.tmp / "drop"
    _write(folder, "greeter", SOURCE)
    _write(folder, "broken", SOURCE.replace("return", "retrun"))
    proc = cluster.cli("sidecar", "--watch", str(folder), "--once", "--json")
    assert "1 of 2 file(s) not registered: broken.py" in _one_error_line(proc)
    reports = {r["file"]: r for r in map(json.loads, proc.stdout.splitlines())}
    assert reports["greeter.py"]["accepted"] and reports["broken.py"]["stage"] == "syntax"
    assert list(cluster.rt.sources.names()) == ["greeter"]
