"""The one retry policy (``loopwright.sdk.retry``) and the places that used to disagree on it."""

from __future__ import annotations

import math

from conftest import Cluster, wait_until
from loopwright.runner.records import now_ms
from loopwright.sdk.errors import NonRetriableError, RetryAfterError, StepOutputError
from loopwright.sdk.retry import MAX_BACKOFF_S, MAX_DELAY_S, Failure, RetryPolicy


def test_backoff_doubles_per_attempt_and_is_capped_at_five_minutes() -> None:
    policy = RetryPolicy(retries=20, backoff=1.5)
    assert [policy.backoff_delay(a) for a in (1, 2, 3, 4)] == [1.5, 3.0, 6.0, 12.0]
    assert policy.backoff_delay(12) == MAX_BACKOFF_S == 300.0


def test_retries_count_re_tries_so_the_last_attempt_fails_the_step() -> None:
    policy = RetryPolicy(retries=2, backoff=0.1)
    failure = Failure.of(ConnectionError("down"))
    assert [policy.decide(a, failure).retry for a in (1, 2, 3)] == [True, True, False]


def test_non_retriable_errors_fail_at_once_whatever_the_retries() -> None:
    policy = RetryPolicy(retries=5, backoff=0.1)
    for exc in (NonRetriableError("no"), StepOutputError("not JSON")):
        assert policy.decide(1, Failure.of(exc)).retry is False


def test_retry_after_overrides_the_backoff_and_long_delays_park() -> None:
    policy = RetryPolicy(retries=3, backoff=0.1, inline_max_delay=1.0)
    short = policy.decide(1, Failure.of(RetryAfterError("429", seconds=0.5)))
    long = policy.decide(1, Failure.of(RetryAfterError("429", seconds=30)))
    backoff = policy.decide(1, Failure.of(ValueError("x")))
    assert (short.delay, short.park) == (0.5, False)
    assert (long.delay, long.park) == (30.0, True)
    assert (backoff.delay, backoff.park) == (0.1, False)


def test_unusable_delays_are_clamped() -> None:
    assert Failure.of(RetryAfterError("x", seconds=math.inf)).delay == MAX_BACKOFF_S
    assert Failure.of(RetryAfterError("x", seconds=math.nan)).delay == 0.0
    assert Failure.of(RetryAfterError("x", seconds=10**12)).delay == MAX_DELAY_S


def test_a_guest_failure_is_read_defensively() -> None:
    assert Failure.from_wire(True, 2) == Failure(True, 2.0)
    assert Failure.from_wire(True, -1) == Failure(True, None)  # the policy's backoff
    assert Failure.from_wire(True, "5") == Failure(True, None)
    assert Failure.from_wire(True, True) == Failure(True, None)
    assert Failure.from_wire(1, math.inf) == Failure(True, MAX_BACKOFF_S)
    assert Failure.from_wire(None, None) == Failure(False, None)
    assert Failure.from_wire(*Failure(True, 3.0).to_wire().values()) == Failure(True, 3.0)


INFINITE_RETRY_AFTER = """
from loopwright.sdk import skill, RetryAfterError

@skill(name="retry-forever-later", retries=2)
def main(ctx):
    def call():
        raise RetryAfterError("upstream says: not before the heat death", seconds=float("inf"))
    return ctx.step.run("call", call)
"""


def _parks_for_the_cap(cluster: Cluster, trusted: bool) -> None:
    name = cluster.skill(INFINITE_RETRY_AFTER)
    before = now_ms()
    run_id = cluster.start(name, trusted=trusted)
    wait_until(lambda: cluster.rt.runs.get(run_id).status.value in ("sleeping", "failed"))
    run = cluster.rt.runs.get(run_id)
    assert run.status.value == "sleeping", run.error
    (step,) = cluster.rt.runs.steps(run_id)
    assert (step.status, step.attempts) == ("retrying", 1)
    assert step.until is not None
    assert before + 299_000 <= step.until <= now_ms() + 300_000


def test_infinite_retry_after_parks_for_the_cap_in_process(cluster: Cluster) -> None:
    # Given a trusted skill whose step asks to be retried after an infinite delay
    cluster.worker()
    # Then the run parks with the step retrying in 5 minutes (the cap)
    _parks_for_the_cap(cluster, trusted=True)


def test_infinite_retry_after_parks_for_the_cap_in_the_sandbox(sandbox_cluster: Cluster) -> None:
    # Given the same skill sandboxed (the guest used to die encoding the delay as JSON)
    sandbox_cluster.worker()
    # Then it retries exactly as in-process: parked for the cap
    _parks_for_the_cap(sandbox_cluster, trusted=False)
