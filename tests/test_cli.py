"""The CLI as a user meets it: real subprocesses, real Redis, wrong and hostile input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Cluster, free_port, wait_until

GOOD = """
from loopwright.sdk import skill

@skill(name="greeter")
def main(ctx):
    who = ctx.step.run("who", lambda: ctx.event["data"].get("who", "world"))
    return ctx.step.run("greet", lambda: f"hello {who}")
"""


def _one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def _write(cluster: Cluster, name: str, text: str) -> str:
    path = cluster.tmp / name
    path.write_text(text)
    return str(path)


def test_run_file_with_wait_prints_the_completed_run_as_json(cluster: Cluster) -> None:
    cluster.worker()
    proc = cluster.cli(
        "run", _write(cluster, "g.py", GOOD), "--data", '{"who": "ops"}', "--wait", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    run = json.loads(proc.stdout)
    assert run["status"] == "completed" and run["output"] == "hello ops"


def test_a_file_run_is_a_draft_so_run_by_name_says_to_submit_it(cluster: Cluster) -> None:
    cluster.worker()
    assert cluster.cli("run", _write(cluster, "g.py", GOOD), "--wait").returncode == 0
    proc = cluster.cli("run", "greeter", "--wait", "--json")
    assert proc.returncode == 1 and "is a draft" in proc.stderr
    assert "loopwright skills submit FILE" in proc.stderr


def test_data_from_a_file_and_from_stdin(cluster: Cluster) -> None:
    cluster.worker()
    skill = _write(cluster, "g.py", GOOD)
    (cluster.tmp / "in.json").write_text('{"who": "file"}')
    a = cluster.cli("run", skill, "--data", f"@{cluster.tmp / 'in.json'}", "--wait", "--json")
    b = cluster.cli("run", skill, "--data", "-", "--wait", "--json", input='{"who": "stdin"}')
    assert json.loads(a.stdout)["output"] == "hello file"
    assert json.loads(b.stdout)["output"] == "hello stdin"


@pytest.mark.parametrize(
    ("source", "trusted", "expected"),
    [
        ("import not_a_module\n" + GOOD, False, "import-not-allowed"),
        ("import not_a_module\n" + GOOD, True, "No module named 'not_a_module'"),
        ("import os\n" + GOOD, False, "refused by the sandbox policy: line 1"),
        ("def broken(:\n", False, "syntax error"),
        ("def broken(:\n", True, "syntax error"),
        ("x = 1\n", False, "no @skill-decorated function"),
        (
            GOOD + "\n@skill(name='second')\ndef other(ctx):\n    pass\n",
            False,
            "2 @skill functions",
        ),
        (GOOD.replace('"greeter"', '"Not A Name"'), False, "must be kebab-case"),
        (GOOD.replace('name="greeter"', 'name="greeter", retries=-1'), False, "retries must be"),
        (GOOD.replace('name="greeter"', 'name="greeter", tools=["shell"]'), False, "unknown tools"),
        (GOOD.replace('name="greeter"', "name=NAME"), False, "'name' is not a literal"),
        ("import sys\nsys.exit(3)\n", True, "SystemExit: 3"),
    ],
    ids=[
        "bad-import",
        "bad-import-trusted",
        "os-import",
        "syntax",
        "syntax-trusted",
        "no-skill",
        "two-skills",
        "bad-name",
        "bad-retries",
        "unknown-tool",
        "non-literal",
        "sys-exit-trusted",
    ],
)
def test_bad_skill_files_get_one_readable_line_and_create_no_run(
    cluster: Cluster, source: str, trusted: bool, expected: str
) -> None:
    args = ["run", _write(cluster, "bad.py", source)] + (["--trusted"] if trusted else [])
    line = _one_error_line(cluster.cli(*args))
    assert expected in line
    assert cluster.rt.runs.find() == []


def test_unreadable_skill_paths_are_refused(cluster: Cluster) -> None:
    binary = cluster.tmp / "bin.py"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    assert "not UTF-8" in _one_error_line(cluster.cli("run", str(binary)))
    assert "no such file" in _one_error_line(cluster.cli("run", str(cluster.tmp / "missing.py")))
    (cluster.tmp / "dir.py").mkdir()
    assert "not a regular file" in _one_error_line(cluster.cli("run", str(cluster.tmp / "dir.py")))


def test_oversized_skill_source_is_refused(make_cluster: Callable[..., Cluster]) -> None:
    cluster = make_cluster(skill_source_max_bytes=2048)
    big = GOOD + "\n" + "# padding\n" * 500
    assert "skill source cap" in _one_error_line(cluster.cli("run", _write(cluster, "big.py", big)))


def test_bad_data_is_refused_before_anything_is_recorded(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(run_input_max_bytes=4096)
    skill = _write(cluster, "g.py", GOOD)
    assert "not valid JSON" in _one_error_line(cluster.cli("run", skill, "--data", "{nope"))
    assert "over the 4096-byte" in _one_error_line(
        cluster.cli("run", skill, "--data", '"' + "x" * 5000 + '"')
    )
    huge = cluster.tmp / "huge.json"
    with huge.open("wb") as fh:  # 50 MB: refused after reading at most cap+1 bytes
        fh.write(b'{"k": "' + b"x" * (50 * 1024 * 1024) + b'"}')
    started = time.monotonic()
    assert "over the 4096-byte" in _one_error_line(cluster.cli("run", skill, "--data", f"@{huge}"))
    assert time.monotonic() - started < 10
    assert "No such file" in _one_error_line(
        cluster.cli("run", skill, "--data", "@/nonexistent.json")
    )
    assert cluster.rt.runs.find() == []


def test_unknown_names_and_ids_are_reported(cluster: Cluster) -> None:
    assert "unknown skill 'ghost'" in _one_error_line(cluster.cli("run", "ghost"))
    assert "unknown run id 'nope'" in _one_error_line(cluster.cli("runs", "show", "nope"))
    assert "unknown run id 'nope'" in _one_error_line(cluster.cli("runs", "cancel", "nope"))
    assert "unknown status 'bogus'" in _one_error_line(
        cluster.cli("runs", "list", "--status", "bogus")
    )
    assert "--since" in _one_error_line(cluster.cli("runs", "list", "--since", "yesterday"))


def test_unreachable_redis_is_one_line_with_what_to_do(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    line = _one_error_line(cluster.cli("runs", "list"))
    assert "cannot reach Redis at redis://127.0.0.1:" in line
    assert "unset LOOPWRIGHT_REDIS_URL" in line


def test_invalid_setting_names_the_variable(cluster: Cluster) -> None:
    env = {**cluster.env, "LOOPWRIGHT_LEASE_TTL": "soon"}
    proc = subprocess.run(
        [sys.executable, "-m", "loopwright.cli", "runs", "list"],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "invalid setting LOOPWRIGHT_LEASE_TTL" in _one_error_line(proc)


def test_runs_list_show_and_cancel_report_history(cluster: Cluster) -> None:
    cluster.worker()
    done = json.loads(cluster.cli("run", _write(cluster, "g.py", GOOD), "--wait", "--json").stdout)
    listed = json.loads(cluster.cli("runs", "list", "--skill", "greeter", "--json").stdout)
    assert [r["id"] for r in listed] == [done["id"]]
    assert json.loads(cluster.cli("runs", "list", "--status", "failed", "--json").stdout) == []
    shown = json.loads(cluster.cli("runs", "show", done["id"], "--json").stdout)
    assert [(s["name"], s["status"]) for s in shown["steps"]] == [
        ("who", "done"),
        ("greet", "done"),
    ]
    table = cluster.cli("runs", "show", done["id"])
    assert table.returncode == 0 and "greet" in table.stdout and "completed" in table.stdout
    cancel = json.loads(cluster.cli("runs", "cancel", done["id"], "--json").stdout)
    assert cancel == {"run_id": done["id"], "status": "completed", "cancelled": []}


def test_failed_run_with_wait_exits_non_zero_and_prints_the_error(cluster: Cluster) -> None:
    cluster.worker()
    bad = GOOD.replace('lambda: f"hello {who}"', "lambda: 1 / 0").replace(
        'name="greeter"', 'name="divider", retries=0'
    )
    proc = cluster.cli("run", _write(cluster, "d.py", bad), "--wait")
    assert proc.returncode == 1
    assert "ZeroDivisionError" in proc.stderr


def test_inbox_and_doctor_report_as_json(cluster: Cluster) -> None:
    cluster.worker()
    cluster.scheduler()
    notifier = """
from loopwright.sdk import skill

@skill(name="notifier", tools=["notify"])
def main(ctx):
    ctx.step.run("tell", lambda: ctx.tools.notify("disk almost full", title="ops"))
"""
    assert cluster.cli("run", _write(cluster, "n.py", notifier), "--wait").returncode == 0
    inbox = json.loads(cluster.cli("inbox", "--json").stdout)
    assert [(e["skill"], e["title"], e["message"]) for e in inbox] == [
        ("notifier", "ops", "disk almost full")
    ]
    wait_until(lambda: cluster.rt.redis.exists(cluster.rt.keys.scheduler_heartbeat))
    doctor = cluster.cli("doctor", "--json")
    checks = json.loads(doctor.stdout)
    assert doctor.returncode == 0, checks
    assert checks["redis"]["ok"] and "1 live on queue" in checks["workers"]["detail"]
    assert "offline template model" in checks["builder model"]["detail"]
    broken = {**cluster.env, "LOOPWRIGHT_MODEL": "openai:gpt-4.1"}  # no key configured
    proc = subprocess.run(
        [sys.executable, "-m", "loopwright.cli", "doctor", "--json"],
        env=broken, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    model = json.loads(proc.stdout)["builder model"]
    assert proc.returncode == 1 and not model["ok"]
    assert "LOOPWRIGHT_OPENAI_API_KEY" in model["detail"]


def _get_or_none(httpx: Any, url: str) -> Any:
    try:
        return httpx.get(url, timeout=5)
    except httpx.TransportError:
        return None


def test_up_with_managed_redis_runs_skills_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    # Given no LOOPWRIGHT_REDIS_URL: the CLI must start and reuse a managed redis-server
    from loopwright.redis_server import ManagedRedis

    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOOPWRIGHT_")}
    api_port = free_port()
    env.update(
        {"LOOPWRIGHT_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1",
         "LOOPWRIGHT_API_PORT": str(api_port)}
    )  # fmt: skip
    skill = tmp_path / "g.py"
    skill.write_text(GOOD)
    up = subprocess.Popen(
        [sys.executable, "-m", "loopwright.cli", "up", "-n", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "loopwright.cli",
                "run",
                str(skill),
                "--wait",
                "--json",
                "--wait-timeout",
                "60",
            ],
            env=env,
            check=False,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["output"] == "hello world"
        assert ManagedRedis(data).is_running()
        # and it serves the API on the configured port
        import httpx

        health = wait_until(
            lambda: _get_or_none(httpx, f"http://127.0.0.1:{api_port}/healthz"), timeout=30
        )
        assert health.json() == {"ok": True}
        # When Ctrl-C reaches `up`
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=30)
        # Then it stops its children and exits 0
        assert up.returncode == 0, out
        assert "stopped" in out
        assert f"http://127.0.0.1:{api_port}/login?code=" in out
    finally:
        if up.poll() is None:
            up.kill()
        ManagedRedis(data).stop()


def test_worker_keeps_serving_after_a_redis_outage(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    from conftest import RedisProc

    server = RedisProc(free_port(), tmp_path / "r", appendonly=True)
    server.dir.mkdir()
    server.start()
    try:
        cluster = make_cluster(redis_url=server.url)
        worker = cluster.worker()
        server.stop()
        time.sleep(3)  # the worker sees connection errors and backs off
        assert worker.poll() is None
        server.start()
        cluster.skill(GOOD)
        run = cluster.wait(cluster.start("greeter"), timeout=60)
        assert run.status.value == "completed"
    finally:
        server.stop()


def test_worker_stops_on_sigterm_while_redis_is_down(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    from conftest import RedisProc

    server = RedisProc(free_port(), tmp_path / "r", appendonly=False)
    server.dir.mkdir()
    server.start()
    cluster = make_cluster(redis_url=server.url)
    worker = cluster.worker()
    server.stop()
    time.sleep(2)  # the worker is now retrying its connection
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=15) is not None


def test_run_wait_warns_when_no_scheduler_wakes_a_parked_run(cluster: Cluster) -> None:
    cluster.worker()
    napper = GOOD.replace(
        "who = ctx.step.run", 'ctx.step.sleep("nap", 0.1)\n    who = ctx.step.run'
    )
    proc = cluster.cli("run", _write(cluster, "n.py", napper), "--wait", "--wait-timeout", "6")
    assert proc.returncode == 1
    assert "no scheduler is running" in proc.stderr


def test_run_wait_warns_when_no_worker_is_consuming(cluster: Cluster) -> None:
    proc = cluster.cli("run", _write(cluster, "g.py", GOOD), "--wait", "--wait-timeout", "5")
    assert proc.returncode == 1
    assert "no worker is consuming queue" in proc.stderr
    wait_until(lambda: cluster.rt.runs.find(status="queued"), timeout=1)


def test_worker_and_scheduler_started_during_an_outage_come_up_with_redis(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    from conftest import RedisProc

    server = RedisProc(free_port(), tmp_path / "r", appendonly=True)
    server.dir.mkdir()
    server.start()
    cluster = make_cluster(redis_url=server.url)
    cluster.skill(GOOD)
    server.stop()
    try:
        # Given a worker and a scheduler started while Redis is down
        worker = cluster.spawn("worker")
        scheduler = cluster.spawn("scheduler")
        time.sleep(2.5)
        assert worker.poll() is None and scheduler.poll() is None, "services must wait"
        # When Redis comes back, they serve runs
        server.start()
        run = cluster.wait(cluster.start("greeter"), timeout=60)
        assert run.status.value == "completed"
        heartbeat = cluster.rt.keys.scheduler_heartbeat
        wait_until(lambda: cluster.rt.redis.exists(heartbeat), timeout=45)  # its backoff ends
    finally:
        server.stop()
