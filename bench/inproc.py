"""In-process measurements: Redis round trip, durable step overhead and memoized replay.

Every run is executed with ``Executor(rt).execute(run_id)`` in this process, exactly what the
RQ job does in a worker, so the numbers contain no queueing and no worker loop.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.common import CHAIN_SKILL, summary
from redis import Redis

from loopwright.runner.execute import Executor
from loopwright.runner.lease import Acquired
from loopwright.runner.records import RunStatus, StepRecord
from loopwright.runner.runtime import Runtime
from loopwright.runner.sources import load_skill
from loopwright.sdk.steps import StepKind


def measure_ping(redis_url: str, count: int) -> dict[str, Any]:
    """``count`` redis-py PING round trips on one connection; microseconds per round trip."""
    client = Redis.from_url(redis_url)
    try:
        for _ in range(50):
            client.ping()
        samples: list[float] = []
        for _ in range(count):
            t0 = time.perf_counter()
            client.ping()
            samples.append((time.perf_counter() - t0) * 1e6)
    finally:
        client.close()
    return {"us": summary(samples), "count": count}


@dataclass
class Chain:
    """The N-step skill stored in one runtime, plus its ``work`` function for the baseline."""

    rt: Runtime
    version: str
    work: Callable[[int], Any]

    @classmethod
    def install(cls, rt: Runtime) -> Chain:
        """Store the chain skill and load its module once to get the step function."""
        version = rt.sources.put(CHAIN_SKILL, "bench-chain")
        loaded = load_skill(CHAIN_SKILL, "<bench-chain>", version)
        return cls(rt, version, loaded.fn.__globals__["work"])

    def create(self, n: int) -> str:
        """A queued run of ``n`` steps (its RQ job is never worked; we execute directly)."""
        return self.rt.runs.create(
            skill="bench-chain", version=self.version, data={"n": n}, trusted=True
        )

    def execute(self, run_id: str) -> float:
        """Execute ``run_id`` in-process; seconds taken. Fails loudly if it did not complete."""
        executor = Executor(self.rt)
        t0 = time.perf_counter()
        outcome = executor.execute(run_id)
        elapsed = time.perf_counter() - t0
        if outcome != "completed":
            raise RuntimeError(f"bench run {run_id} ended {outcome!r}, expected 'completed'")
        return elapsed

    def requeue(self, run_id: str) -> None:
        """Bench-only: mark a completed run queued again so ``execute`` replays it.

        The checkpoints in ``<prefix>:run:<id>:steps`` stay, so every step is memoized.
        """
        self.rt.redis.hset(self.rt.keys.run(run_id), "status", "queued")

    def plain(self, n: int) -> float:
        """Seconds for ``n`` plain calls of the step function (the non-durable baseline)."""
        fn = self.work
        t0 = time.perf_counter()
        for i in range(n):
            fn(i)
        return time.perf_counter() - t0


class CommitProbe:
    """Direct calls of the checkpoint commit script on a held run: the Redis part of a step."""

    def __init__(self, chain: Chain) -> None:
        self.rt = chain.rt
        self.run_id = chain.create(0)
        acq = self.rt.leases.acquire(self.run_id, self.rt.instance_id)
        if not isinstance(acq, Acquired):
            raise RuntimeError(f"commit probe: could not take run {self.run_id}: {acq}")
        self.token = acq.token
        self.seq = 0

    def per_commit(self, count: int) -> float:
        """Mean seconds of one ``Checkpoints.commit`` (one EVALSHA round trip)."""
        commit = self.rt.checkpoints.commit
        t0 = time.perf_counter()
        for _ in range(count):
            self.seq += 1
            rec = StepRecord(self.seq, f"s{self.seq}", StepKind.RUN, "done", 1, 0, 0)
            commit(self.run_id, self.token, rec, '{"i":1,"ok":true}')
        return (time.perf_counter() - t0) / count

    def per_ping(self, count: int) -> float:
        """Mean seconds of one PING on the runtime's own client."""
        ping = self.rt.redis.ping
        t0 = time.perf_counter()
        for _ in range(count):
            ping()
        return (time.perf_counter() - t0) / count

    def close(self) -> None:
        """Finish the probe run so it does not linger as running."""
        self.rt.transitions.finish(self.run_id, self.token, RunStatus.COMPLETED.value, "", "", 0)


def measure_steps(rt: Runtime, n: int, runs: int, warmup: int = 3) -> dict[str, Any]:
    """Fresh-commit overhead and memoized replay cost per step.

    For each repetition, in interleaved order: a 0-step, an N-step and a 2N-step run are
    executed fresh, then each is re-queued and executed again with all checkpoints present.

    * fresh overhead per step = (T_fresh(N) - T_plain(N)) / N, per run (the brief's
      definition: the run's fixed cost - acquire, skill lookup, finish - is amortized over N);
      the marginal cost (T_fresh(N) - median T_fresh(0)) / N is reported alongside.
    * replay per step = (T_replay(N) - median T_replay(0)) / N per run: the 0-step replay has
      the same acquire/load/finish as the N-step one, so the difference is what the N
      memoized steps cost (including moving their checkpoints in the acquire reply). The slope
      (median T_replay(2N) - median T_replay(N)) / N is an independent cross-check.

    Each repetition also times N direct commit-script calls and N PINGs on the same client, so
    the fresh overhead can be split into its Redis round trip and the Python around it.
    """
    chain = Chain.install(rt)
    for _ in range(warmup):  # load the skill into the cache, load the Lua scripts, warm pools
        rid = chain.create(n)
        chain.execute(rid)
        chain.requeue(rid)
        chain.execute(rid)
    fresh: dict[int, list[float]] = {0: [], n: [], 2 * n: []}
    replay: dict[int, list[float]] = {0: [], n: [], 2 * n: []}
    plain: list[float] = []
    commit_us: list[float] = []
    ping_us: list[float] = []
    probe = CommitProbe(chain)
    gc.collect()
    for _ in range(runs):
        commit_us.append(probe.per_commit(n) * 1e6)
        ping_us.append(probe.per_ping(n) * 1e6)
        for size in (0, n, 2 * n):
            rid = chain.create(size)
            if size == n:
                plain.append(chain.plain(n))
            fresh[size].append(chain.execute(rid))
            chain.requeue(rid)
            replay[size].append(chain.execute(rid))
    probe.close()
    fresh0 = summary(fresh[0])["median"]
    replay0 = summary(replay[0])["median"]
    per_step_fresh = [
        (t - p) / n * 1e3 for t, p in zip(fresh[n], plain, strict=True)
    ]  # ms per step
    marginal_fresh = [(t - fresh0) / n * 1e3 for t in fresh[n]]
    per_step_replay = [(t - replay0) / n * 1e6 for t in replay[n]]  # us per step
    slope = (summary(replay[2 * n])["median"] - summary(replay[n])["median"]) / n * 1e6
    fresh_slope = (summary(fresh[2 * n])["median"] - summary(fresh[n])["median"]) / n * 1e3
    return {
        "n": n,
        "runs": runs,
        "fresh_overhead_ms": summary(per_step_fresh),
        "fresh_marginal_ms": summary(marginal_fresh),
        "fresh_slope_ms": fresh_slope,
        "commit_rtt_us": summary(commit_us),
        "ping_rtt_us": summary(ping_us),
        "fresh_run_ms": {str(k): summary([x * 1e3 for x in v]) for k, v in fresh.items()},
        "plain_calls_us_per_step": summary([p / n * 1e6 for p in plain]),
        "replay_us": summary(per_step_replay),
        "replay_slope_us": slope,
        "replay_run_ms": {str(k): summary([x * 1e3 for x in v]) for k, v in replay.items()},
    }


def measure_fresh_fsync_always(rt: Runtime, n: int, runs: int) -> dict[str, Any]:
    """Fresh overhead per step with ``appendfsync always`` (SQLite-like durability).

    Informational: lets the DBOS/SQLite comparison be read at equal durability. The server's
    setting is restored to ``everysec`` before returning.
    """
    chain = Chain.install(rt)
    rt.redis.config_set("appendfsync", "always")
    try:
        chain.execute(chain.create(n))
        samples: list[float] = []
        for _ in range(runs):
            rid = chain.create(n)
            p = chain.plain(n)
            samples.append((chain.execute(rid) - p) / n * 1e3)
    finally:
        rt.redis.config_set("appendfsync", "everysec")
    return {"n": n, "runs": runs, "fresh_overhead_ms": summary(samples)}
