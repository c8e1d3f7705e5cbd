"""The benchmark must keep working: run its quick profile and check every item is reported.

This asserts no speed (benchmarks measure speed; tests assert behaviour), only that each
measurement ran and produced a number.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from conftest import REPO


def quick(script: str, out: Path) -> dict[str, object]:
    """Run ``bench/SCRIPT --quick`` and return the JSON results it wrote."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / script), "--quick", "--json", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def test_bench_quick_profile_reports_every_measurement(tmp_path: Path) -> None:
    results = quick("run.py", tmp_path / "results.json")
    text = json.dumps(results)
    for key in ("ping", "fresh", "replay", "dbos", "throughput", "resume", "memory"):
        assert key in text, f"benchmark item {key!r} missing from {sorted(results)}"


def test_agent_bench_quick_profile_reports_every_measurement(tmp_path: Path) -> None:
    results: Any = quick("agent.py", tmp_path / "agent.json")
    for protocol in ("anthropic", "openai"):
        for mode in ("reanchor", "no-reanchor"):
            item = results["plain"][protocol][mode]
            assert item["steps"] == 2 * results["model_calls"] + 1  # + the final answer
            assert item["prompt_tokens"] > 0 and item["overhead_ms_per_step"] > 0
            for session in ("parallel", "pauses"):
                assert results[session][protocol][mode]["prompt_tokens"] > 0, session
    assert results["durable"]["checkpoints"] >= results["durable"]["steps"]


def test_cli_bench_quick_profile_reports_every_measurement(tmp_path: Path) -> None:
    results: Any = quick("cli.py", tmp_path / "cli.json")
    for name in ("rq info", "loopwright --help", "runs list", "runs show", "events send"):
        assert results["startup_ms"][name]["median"] > 0, name
        assert results["startup_cpu_ms"][name]["median"] > 0, name
    assert results["ping"]["python_us"] > 0


def test_replay_bench_quick_profile_reports_every_measurement(tmp_path: Path) -> None:
    results: Any = quick("replay.py", tmp_path / "replay.json")
    assert results["run_recorded"]["median"] > 0 and results["run_unrecorded"]["median"] > 0
    assert results["recorder"]["us_per_call"] > 0
    assert results["replay"]["per_run"]["median"] > 0
    assert results["replay"]["batched"]["median"] > 0


def test_rollups_bench_quick_profile_reports_every_measurement(tmp_path: Path) -> None:
    results: Any = quick("rollups.py", tmp_path / "rollups.json")
    for key in ("ping_p50_us", "rollup_server_us", "share_of_ping", "signature_us"):
        assert isinstance(results[key], float), key
    assert results["finish_server_us"]["with_rollup"] > 0


def test_history_bench_quick_profile_reports_every_measurement(tmp_path: Path) -> None:
    results: Any = quick("history.py", tmp_path / "history.json")
    assert results["without_retention"]["bytes_per_run"] > 0
    assert results["with_retention"]["deleted"] > 0
    assert results["retention_pass"]["deleted"] == results["without_retention"]["runs"]
    assert results["retention_pass"]["left"] == 0 and results["runs_per_gb"] > 0
    assert results["ping_us"]["median"] > 0


def test_review_loop_bench_quick_profile_reports_every_figure(tmp_path: Path) -> None:
    results: Any = quick("review_loop.py", tmp_path / "review_loop.json")
    off, mod = results["offline"], results["model"]
    # one skill of each fault and a healthy one, reviewed offline and with the model
    assert sorted(set(off["kinds"].values())) == [
        "bad_version", "false_alarms", "healthy", "renamed_field", "transient_timeouts"
    ]  # fmt: skip
    for r in (off, mod):
        assert set(r["decisions"]) == set(off["kinds"]) and r["wall_s"] > 0
        assert r["replayed_runs"] > 0 and r["replay_calls"] > 0 and r["replay_s"] > 0
        assert isinstance(r["false_promotions"], list) and isinstance(r["platform_blamed"], list)
    assert off["worse"]["tried"] >= 5 and off["worse"]["replay_ms"]
    assert results["model_requests"] >= 1
