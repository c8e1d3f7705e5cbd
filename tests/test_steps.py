"""Step semantics with real Redis and real worker processes: exactly-once bodies, retries,
replay, output caps, sleeps, timeouts, cancellation, host tools."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import Cluster, effects, wait_until
from loopwright.inbox import Inbox

FX_SKILL = """
from loopwright.sdk import skill

def effect(path, tag):
    with open(path, "a") as f:
        f.write(tag + "\\n")
    return tag

@skill(name="five-steps")
def main(ctx):
    fx = ctx.event["data"]["fx"]
    return [ctx.step.run(f"s{i}", effect, fx, f"s{i}") for i in range(1, 6)]
"""


def test_five_step_skill_runs_each_step_body_exactly_once(cluster: Cluster) -> None:
    # Given a worker and a 5-step skill whose steps append to a file
    cluster.worker()
    fx = cluster.tmp / "fx.txt"
    name = cluster.skill(FX_SKILL)
    # When the run completes
    run = cluster.wait(cluster.start(name, {"fx": str(fx)}))
    # Then every step body ran exactly once and the timeline records all five
    assert run.status.value == "completed"
    assert run.output == ["s1", "s2", "s3", "s4", "s5"]
    assert [line[0] for line in effects(fx)] == ["s1", "s2", "s3", "s4", "s5"]
    steps = cluster.rt.runs.steps(run.id)
    assert [(s.seq, s.name, s.status, s.attempts) for s in steps] == [
        (i, f"s{i}", "done", 1) for i in range(1, 6)
    ]


def test_failing_step_is_retried_with_backoff_and_attempts_recorded(cluster: Cluster) -> None:
    cluster.worker()
    name = cluster.skill("""
        from loopwright.sdk import skill
        import os

        def flaky(path):
            n = len(open(path).read()) if os.path.exists(path) else 0
            with open(path, "a") as f:
                f.write("x")
            if n < 2:
                raise ConnectionError(f"upstream down (attempt {n + 1})")
            return n + 1

        @skill(name="flaky", retries=3, backoff=0.05)
        def main(ctx):
            return ctx.step.run("call", flaky, ctx.event["data"]["fx"])
    """)
    run = cluster.wait(cluster.start(name, {"fx": str(cluster.tmp / "fx")}))
    assert run.status.value == "completed" and run.output == 3
    (step,) = cluster.rt.runs.steps(run.id)
    assert step.status == "done" and step.attempts == 3


def test_exhausted_retries_fail_the_run_with_the_step_error(cluster: Cluster) -> None:
    cluster.worker()
    name = cluster.skill("""
        from loopwright.sdk import skill

        def boom():
            raise ValueError("bad upstream payload")

        @skill(name="always-fails", retries=2, backoff=0.01)
        def main(ctx):
            ctx.step.run("boom", boom)
    """)
    run = cluster.wait(cluster.start(name))
    assert run.status.value == "failed"
    assert "step 'boom' failed: ValueError: bad upstream payload" in (run.error or "")
    (step,) = cluster.rt.runs.steps(run.id)
    assert step.status == "failed" and step.attempts == 3


def test_non_retriable_error_fails_the_step_at_once(cluster: Cluster) -> None:
    cluster.worker()
    name = cluster.skill("""
        from loopwright.sdk import skill, NonRetriableError

        def refuse():
            raise NonRetriableError("credentials revoked")

        @skill(name="no-retry", retries=5, backoff=0.01)
        def main(ctx):
            ctx.step.run("refuse", refuse)
    """)
    run = cluster.wait(cluster.start(name))
    assert run.status.value == "failed" and "credentials revoked" in (run.error or "")
    (step,) = cluster.rt.runs.steps(run.id)
    assert step.attempts == 1


def test_step_failure_can_be_caught_for_a_fallback_and_replays_the_same(cluster: Cluster) -> None:
    cluster.worker()
    cluster.scheduler()
    name = cluster.skill("""
        from loopwright.sdk import skill, StepFailedError

        def boom():
            raise RuntimeError("primary down")

        @skill(name="fallback", retries=0)
        def main(ctx):
            try:
                value = ctx.step.run("primary", boom)
            except StepFailedError as exc:
                value = ctx.step.run("secondary", lambda: "from-secondary")
            ctx.step.sleep("nap", 0.3)  # forces a replay through the failed step
            return value
    """)
    run = cluster.wait(cluster.start(name))
    assert run.status.value == "completed" and run.output == "from-secondary"
    assert [s.status for s in cluster.rt.runs.steps(run.id)] == ["failed", "done", "done"]
    assert run.attempts == 2


def test_retry_after_longer_than_inline_wait_parks_the_run(cluster: Cluster) -> None:
    cluster.worker()
    cluster.scheduler()
    name = cluster.skill("""
        from loopwright.sdk import skill, RetryAfterError
        import os

        def limited(path):
            if not os.path.exists(path):
                open(path, "w").close()
                raise RetryAfterError("429 from upstream", seconds=1.5)
            return "ok"

        @skill(name="rate-limited")
        def main(ctx):
            return ctx.step.run("call", limited, ctx.event["data"]["fx"])
    """)
    run_id = cluster.start(name, {"fx": str(cluster.tmp / "fx")})
    wait_until(lambda: cluster.rt.runs.get(run_id).status.value == "sleeping", timeout=10)
    (pending,) = cluster.rt.runs.steps(run_id)
    assert pending.status == "retrying" and "429" in (pending.error or "")
    run = cluster.wait(run_id)
    assert run.status.value == "completed" and run.output == "ok"
    assert run.finished_at is not None and run.started_at is not None
    assert run.finished_at - run.started_at >= 1400


def test_non_json_step_output_fails_the_run_with_a_clear_message(cluster: Cluster) -> None:
    cluster.worker()
    name = cluster.skill("""
        from loopwright.sdk import skill

        @skill(name="not-json")
        def main(ctx):
            return ctx.step.run("make-set", lambda: {1, 2, 3})
    """)
    run = cluster.wait(cluster.start(name))
    assert run.status.value == "failed"
    assert "step 'make-set' output is not JSON" in (run.error or "")
    (step,) = cluster.rt.runs.steps(run.id)
    assert step.status == "failed" and step.attempts == 1


def test_oversized_step_output_fails_with_the_cap_in_the_error(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(step_output_max_bytes=4096)
    cluster.worker()
    name = cluster.skill("""
        from loopwright.sdk import skill

        @skill(name="too-big")
        def main(ctx):
            return ctx.step.run("blob", lambda: "x" * 10000)
    """)
    run = cluster.wait(cluster.start(name))
    assert run.status.value == "failed"
    assert "over the 4096-byte cap" in (run.error or "")


def test_large_output_is_stored_in_its_own_key_and_replays(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(step_output_inline_bytes=1024)
    cluster.worker()
    cluster.scheduler()
    name = cluster.skill("""
        from loopwright.sdk import skill

        @skill(name="big-output")
        def main(ctx):
            blob = ctx.step.run("blob", lambda: ["row"] * 2000)
            more = ctx.step.run("more", lambda: {"cells": list(range(3000))})
            ctx.step.sleep("nap", 0.2)
            return len(blob) + len(more["cells"])
    """)
    run = cluster.wait(cluster.start(name))
    assert run.status.value == "completed" and run.output == 5000
    assert cluster.rt.redis.exists(cluster.rt.keys.step_output(run.id, 1)) == 1
    assert cluster.rt.redis.exists(cluster.rt.keys.step_output(run.id, 2)) == 1
    steps = cluster.rt.runs.steps(run.id)
    assert steps[0].output == ["row"] * 2000 and steps[1].output == {"cells": list(range(3000))}


HOARDER = """
from loopwright.sdk import skill


@skill(name="hoarder", retries=0)
def main(ctx):
    kept = 0
    for i in range(1000):
        try:
            ctx.step.run(f"chunk-{i}", lambda: "x" * 10000)
            kept += 1
        except Exception:  # a skill cannot swallow the quota: it is not an Exception
            pass
    return kept
"""


@pytest.mark.parametrize("trusted", [True, False], ids=["in-process", "sandboxed"])
def test_a_run_cannot_store_more_checkpoints_than_its_quota(
    make_cluster: Callable[..., Cluster], trusted: bool
) -> None:
    cluster = make_cluster(run_storage_max_bytes=64 * 1024, step_output_inline_bytes=4096)
    cluster.worker()
    name = cluster.skill(HOARDER)
    run = cluster.wait(cluster.start(name, trusted=trusted), timeout=60)
    assert run.status.value == "failed"
    assert "checkpoint storage quota of 65536 bytes" in (run.error or "")
    assert "RUN_STORAGE_MAX_BYTES" in (run.error or "")
    steps = cluster.rt.runs.steps(run.id)
    assert 4 <= len(steps) <= 7  # ~10 KB each under a 64 KB quota
    stored = int(cluster.rt.redis.hget(cluster.rt.keys.run(run.id), "stored") or 0)
    assert stored <= 64 * 1024


def test_stored_bytes_count_each_checkpoint_once_across_retries(cluster: Cluster) -> None:
    cluster.worker()
    name = cluster.skill("""
        from loopwright.sdk import skill

        seen = {"n": 0}

        def flaky():
            seen["n"] += 1
            if seen["n"] < 3:
                raise ValueError("not yet")
            return "y" * 20000

        @skill(name="flaky-big", retries=3, backoff=0.01)
        def main(ctx):
            return len(ctx.step.run("flaky", flaky)) + len(ctx.step.run("small", lambda: "ok"))
    """)
    run = cluster.wait(cluster.start(name))
    assert run.status.value == "completed" and run.output == 20002
    r, k = cluster.rt.redis, cluster.rt.keys
    on_disk = sum(r.hstrlen(k.steps(run.id), str(seq)) for seq in (1, 2))
    on_disk += sum(r.strlen(k.step_output(run.id, seq)) for seq in (1, 2))
    assert int(r.hget(k.run(run.id), "stored") or 0) == on_disk


def test_replay_divergence_fails_with_a_non_determinism_error(cluster: Cluster) -> None:
    cluster.worker()
    cluster.scheduler()
    flag = cluster.tmp / "flag"
    flag.write_text("first")
    name = cluster.skill("""
        from loopwright.sdk import skill

        @skill(name="diverges")
        def main(ctx):
            label = open(ctx.event["data"]["flag"]).read()  # non-deterministic: outside a step
            ctx.step.run(f"fetch-{label}", lambda: 1)
            ctx.step.sleep("nap", 1)
            return "done"
    """)
    run_id = cluster.start(name, {"flag": str(flag)})
    wait_until(lambda: cluster.rt.runs.get(run_id).status.value == "sleeping", timeout=10)
    flag.write_text("second")
    run = cluster.wait(run_id)
    assert run.status.value == "failed"
    assert "non-determinism at step #1" in (run.error or "")
    assert "'fetch-first'" in (run.error or "") and "'fetch-second'" in (run.error or "")


def test_sleep_parks_the_run_and_frees_the_worker(cluster: Cluster) -> None:
    # Given one worker and a skill that sleeps 2 seconds between two steps
    cluster.worker()
    cluster.scheduler()
    sleeper = cluster.skill(
        """
        from loopwright.sdk import skill

        @skill(name="sleeper")
        def main(ctx):
            a = ctx.step.run("before", lambda: 1)
            ctx.step.sleep("nap", "2s")
            b = ctx.step.run("after", lambda: 2)
            return a + b
    """,
        "sleeper.py",
    )
    quick = cluster.skill(
        """
        from loopwright.sdk import skill

        @skill(name="quick")
        def main(ctx):
            return ctx.step.run("only", lambda: "quick")
    """,
        "quick.py",
    )
    run_id = cluster.start(sleeper)
    # When it parks, the single worker is free to run something else meanwhile
    wait_until(lambda: cluster.rt.runs.get(run_id).status.value == "sleeping", timeout=10)
    other = cluster.wait(cluster.start(quick), timeout=5)
    assert other.status.value == "completed"
    assert cluster.rt.runs.get(run_id).status.value == "sleeping"
    # Then the sleeper resumes after its wake time and completes
    run = cluster.wait(run_id)
    assert run.status.value == "completed" and run.output == 3
    nap = cluster.rt.runs.steps(run_id)[1]
    assert nap.kind == "sleep" and nap.until is not None
    assert run.finished_at is not None and run.finished_at >= nap.until
    assert run.attempts == 2  # two executions: before the sleep and after


def test_run_timeout_stops_a_stuck_step(cluster: Cluster) -> None:
    cluster.worker()
    name = cluster.skill("""
        from loopwright.sdk import skill
        import time

        @skill(name="stuck", timeout="1s")
        def main(ctx):
            ctx.step.run("hang", time.sleep, 30)
    """)
    started = time.monotonic()
    run = cluster.wait(cluster.start(name), timeout=15)
    assert time.monotonic() - started < 10
    assert run.status.value == "failed" and "exceeded its 1s timeout" in (run.error or "")


def test_cancel_of_a_sleeping_run_stops_it_for_good(cluster: Cluster) -> None:
    cluster.worker()
    cluster.scheduler()
    name = cluster.skill("""
        from loopwright.sdk import skill

        @skill(name="long-sleep")
        def main(ctx):
            ctx.step.sleep("nap", "1s")
            ctx.step.run("after", lambda: open(ctx.event["data"]["fx"], "a").write("ran"))
    """)
    fx, witness_fx = cluster.tmp / "fx", cluster.tmp / "witness"
    run_id = cluster.start(name, {"fx": str(fx)})
    wait_until(lambda: cluster.rt.runs.get(run_id).status.value == "sleeping", timeout=10)
    assert cluster.rt.runs.cancel(run_id) == [run_id]
    # A witness run started after the cancel sleeps as long and completes: the scheduler has
    # woken timers and the worker run jobs past the moment the cancelled run would have woken.
    witness = cluster.wait(cluster.start(name, {"fx": str(witness_fx)}), timeout=20)
    assert witness.status.value == "completed" and witness_fx.exists()
    run = cluster.rt.runs.get(run_id)
    assert run.status.value == "cancelled" and run.error == "cancelled by user"
    assert not fx.exists()
    assert cluster.rt.redis.zscore(cluster.rt.keys.timers, run_id) is None


def test_cancel_of_a_running_run_refuses_its_later_checkpoints(cluster: Cluster) -> None:
    worker = cluster.worker(verbose=True)
    marker = cluster.tmp / "in-step"
    name = cluster.skill("""
        from loopwright.sdk import skill
        import time

        def slow(marker):
            open(marker, "w").close()
            time.sleep(1.0)
            return "slow-done"

        @skill(name="cancel-me")
        def main(ctx):
            ctx.step.run("slow", slow, ctx.event["data"]["marker"])
            ctx.step.run("next", lambda: "should-not-run")
    """)
    run_id = cluster.start(name, {"marker": str(marker)})
    wait_until(marker.exists, timeout=10)
    cluster.rt.runs.cancel(run_id)
    # The executor's step ends, its commit is refused and it stops: it says so in its log
    wait_until(lambda: f"run {run_id}: lease lost" in cluster.log_of(worker), timeout=15)
    run = cluster.rt.runs.get(run_id)
    assert run.status.value == "cancelled"
    assert cluster.rt.runs.steps(run_id) == []  # the in-flight step's commit was fenced out


def test_notify_effect_is_not_repeated_when_a_step_body_runs_again(cluster: Cluster) -> None:
    cluster.worker()
    name = cluster.skill("""
        from loopwright.sdk import skill
        import os

        def alert(ctx, path):
            ctx.tools.notify("latency spike", title="p95 over budget")
            ctx.tools.notify("second notice in the same step")
            if not os.path.exists(path):
                open(path, "w").close()
                raise ConnectionError("crash after the effect")
            return "sent"

        @skill(name="alerter", tools=["notify"], backoff=0.01)
        def main(ctx):
            return ctx.step.run("alert", alert, ctx, ctx.event["data"]["fx"])
    """)
    run = cluster.wait(cluster.start(name, {"fx": str(cluster.tmp / "fx")}))
    assert run.status.value == "completed"
    rt = cluster.rt
    entries = list(reversed(Inbox(rt.redis, rt.keys, rt.settings).list()))
    assert [e.body for e in entries] == ["latency spike", "second notice in the same step"]
    assert [e.dedupe_key for e in entries] == [f"{run.id}:1", f"{run.id}:1:2"]


def test_host_tools_are_refused_outside_steps_and_when_undeclared(cluster: Cluster) -> None:
    cluster.worker()
    outside = cluster.skill(
        """
        from loopwright.sdk import skill

        @skill(name="outside", tools=["notify"])
        def main(ctx):
            ctx.tools.notify("not in a step")
    """,
        "outside.py",
    )
    undeclared = cluster.skill(
        """
        from loopwright.sdk import skill

        @skill(name="undeclared")
        def main(ctx):
            ctx.step.run("s", lambda: ctx.tools.notify("hi"))
    """,
        "undeclared.py",
    )
    a = cluster.wait(cluster.start(outside))
    b = cluster.wait(cluster.start(undeclared))
    assert a.status.value == "failed" and "only be called inside a step" in (a.error or "")
    assert b.status.value == "failed" and "tool 'notify' is not declared" in (b.error or "")
    from loopwright.inbox import Inbox

    assert Inbox(cluster.rt.redis, cluster.rt.keys, cluster.rt.settings).list() == []


def test_error_outside_steps_names_the_skill_line(cluster: Cluster) -> None:
    cluster.worker()
    name = cluster.skill("""
        from loopwright.sdk import skill

        @skill(name="buggy")
        def main(ctx):
            data = ctx.step.run("load", lambda: {"count": 0})
            return 10 / data["count"]
    """)
    run = cluster.wait(cluster.start(name))
    assert run.status.value == "failed"
    assert run.error is not None
    assert run.error.startswith("ZeroDivisionError: division by zero (skill line 7)")


def test_logs_are_recorded_once_even_across_replays(cluster: Cluster) -> None:
    cluster.worker()
    cluster.scheduler()
    name = cluster.skill("""
        from loopwright.sdk import skill

        @skill(name="logger")
        def main(ctx):
            ctx.log.info("starting")
            ctx.step.run("a", lambda: 1)
            ctx.step.sleep("nap", 0.2)
            ctx.log.warning("after the nap")
            return "ok"
    """)
    run = cluster.wait(cluster.start(name))
    assert run.status.value == "completed"
    assert [(x["level"], x["message"]) for x in cluster.rt.runs.logs(run.id)] == [
        ("info", "starting"),
        ("warning", "after the nap"),
    ]


def test_http_tool_sends_the_step_idempotency_key(
    make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    cluster = make_cluster(http_private_allow="127.0.0.1")  # the test server listens on loopback
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Idempotency-Key", ""))
            body = json.dumps({"p95_ms": 950}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cluster.worker()
        name = cluster.skill("""
            from loopwright.sdk import skill

            @skill(name="fetcher", tools=["http"], http_allow=["127.0.0.1"])
            def main(ctx):
                m = ctx.step.run("fetch", ctx.tools.http.get_json, ctx.event["data"]["url"])
                return m["p95_ms"]
        """)
        url = f"http://127.0.0.1:{server.server_address[1]}/summary"
        run = cluster.wait(cluster.start(name, {"url": url}))
        assert run.status.value == "completed" and run.output == 950
        assert seen == [f"{run.id}:1"]
    finally:
        server.shutdown()
