"""The benchmark must keep working: run its quick profile and check every item is reported.

This asserts no speed (benchmarks measure speed; tests assert behaviour), only that each
measurement ran and produced a number.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_bench_quick_profile_reports_every_measurement(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick", "--json", str(out)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    results = json.loads(out.read_text())
    text = json.dumps(results)
    for key in ("ping", "fresh", "replay", "dbos", "throughput", "resume", "memory"):
        assert key in text, f"benchmark item {key!r} missing from {sorted(results)}"
