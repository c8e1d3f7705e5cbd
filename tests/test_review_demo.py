"""``loopwright demo --review``: the weekly review on five weeks of seeded, recorded history,
run as the CLI runs it (a subprocess against the test Redis, real sandbox replays)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from conftest import Cluster


def test_the_review_demo_fixes_the_false_alarms_and_says_the_broken_skill_needs_a_model(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster()
    res = cluster.cli("demo", "--review", "--workdir", str(tmp_path / "demo"), timeout=300)
    out = re.sub(r"\s+", " ", res.stdout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "3 skills reviewed: 1 improved, 1 needs a model, 1 healthy" in out
    assert "health-check: improved" in out and "threshold 250 -> " in out
    assert "regressed 0" in out
    assert "field-reader: needs_model" in out and "KeyError: 'p95_ms'" in out
    [report] = (tmp_path / "demo" / "reviews").glob("*.md")
    assert "report:" in out and report.read_text().startswith("# Weekly review")
