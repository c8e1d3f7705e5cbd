"""Error signatures: equal for messages that differ only in numbers, ids, URLs, quotes, paths
and timestamps; different for different exception types or wording."""

from __future__ import annotations

import pytest

from loopwright.history.signature import normalise, sample, signature

SAME = [
    (
        "TimeoutError: no answer after 30s from https://metrics.local:8080/p95?id=7",
        "TimeoutError: no answer after 12.5s from http://10.0.0.3/api/v2/p95",
    ),
    ("KeyError: 'p95_ms'", "KeyError: 'latency'"),
    (
        "ValueError: run 0190a3b4c5d6e7f8 not found",
        "ValueError: run 0190a3b4ffffe7f9 not found",
    ),
    (
        "RuntimeError: job 123e4567-e89b-12d3-a456-426614174000 failed",
        "RuntimeError: job 9b2f0c1e-0000-4000-8000-000000000001 failed",
    ),
    (
        "OSError: cannot open /var/lib/app/data/2024.json",
        "OSError: cannot open /tmp/x/y.json",
    ),
    (
        "ValueError: stale at 2026-12-01T03:04:05Z",
        "ValueError: stale at 2025-01-31 23:59:59.123+02:00",
    ),
    ('HTTPError: status 503 for "GET /a"', 'HTTPError: status 500 for "POST /b/c"'),
    (
        "the worker executing this run was lost 4 times; giving up",
        "the worker executing this run was lost 11 times; giving up",
    ),
    ("ValueError: bad   value 3", "ValueError: bad value 4"),
]

DIFFERENT = [
    ("KeyError: 'x'", "IndexError: 'x'"),
    ("ValueError: threshold exceeded", "ValueError: field missing"),
    ("TimeoutError: after 3s", "ValueError: after 3s"),
]


@pytest.mark.parametrize(("a", "b"), SAME)
def test_same_signature_when_only_variable_parts_differ(a: str, b: str) -> None:
    assert signature(a) == signature(b), (normalise(a), normalise(b))


@pytest.mark.parametrize(("a", "b"), DIFFERENT)
def test_different_signature_for_a_different_type_or_wording(a: str, b: str) -> None:
    assert signature(a) != signature(b)


def test_signature_is_short_stable_hex() -> None:
    sig = signature("KeyError: 'x'")
    assert len(sig) == 12 and int(sig, 16) >= 0
    assert sig == signature("KeyError: 'x'")
    assert (
        normalise("TimeoutError: after 30s at https://x.y/z") == "TimeoutError: after <n>s at <url>"
    )


def test_sample_is_capped() -> None:
    assert sample("x" * 10) == "x" * 10
    assert len(sample("x" * 1000)) == 300
