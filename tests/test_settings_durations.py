"""Duration settings read through the one parser: ``14d``, ``2h``, ``90s``, ``500ms`` or seconds."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from loopwright.settings import Settings


@pytest.mark.parametrize(
    ("raw", "seconds"), [("2d", 172_800), ("90s", 90), ("86400", 86_400), ("1.5h", 5400)]
)
def test_event_retention_accepts_units_and_plain_seconds(
    monkeypatch: pytest.MonkeyPatch, raw: str, seconds: int
) -> None:
    monkeypatch.setenv("LOOPWRIGHT_EVENT_RETENTION", raw)
    assert Settings().event_retention == seconds


def test_every_duration_setting_takes_units(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given durations with units in the environment, old plain numbers beside them
    monkeypatch.setenv("LOOPWRIGHT_RUN_RETENTION", "14d")
    monkeypatch.setenv("LOOPWRIGHT_LEASE_TTL", "2500ms")
    monkeypatch.setenv("LOOPWRIGHT_DEFAULT_RUN_TIMEOUT", "2h")
    monkeypatch.setenv("LOOPWRIGHT_HTTP_TIMEOUT", "10")
    st = Settings()
    # Then each is seconds, and the bounds still hold on the parsed value
    assert (st.run_retention, st.lease_ttl, st.default_run_timeout, st.http_timeout) == (
        14 * 86400,
        2.5,
        7200.0,
        10.0,
    )
    monkeypatch.setenv("LOOPWRIGHT_LEASE_TTL", "1h")  # over its 600 s limit
    with pytest.raises(ValidationError):
        Settings()


def test_the_default_run_retention_is_fourteen_days() -> None:
    assert Settings().run_retention == 14 * 86400


@pytest.mark.parametrize("raw", ["2 weeks", "-5s", "1d2h", ""])
def test_a_bad_duration_is_one_clear_line_from_the_cli(raw: str) -> None:
    env = {"LOOPWRIGHT_EVENT_RETENTION": raw, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "loopwright.cli", "runs", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert len(lines) == 1, proc.stderr
    assert "LOOPWRIGHT_EVENT_RETENTION" in lines[0] and "duration" in lines[0]
    assert "Traceback" not in proc.stderr
