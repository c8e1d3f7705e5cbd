"""A Loopwright worker: an RQ ``SimpleWorker`` on the run queue that survives Redis outages."""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from loopwright.runner.execute import install_runtime
from loopwright.runner.runtime import Runtime

log = logging.getLogger(__name__)
MAX_RECONNECT_WAIT_S = 30.0


def run_worker(runtime: Runtime, *, burst: bool = False, max_jobs: int | None = None) -> None:
    """Work the run queue until stopped (SIGTERM/SIGINT: warm shutdown) or, in burst mode, empty.

    Jobs execute in this process (no fork per job): the job is a thin dispatcher and skill
    isolation comes from the sandbox, not from RQ's work horse.
    """
    install_runtime(runtime)
    if runtime.settings.sandbox_pool_size:
        _warm_sandbox(runtime)
    stop = threading.Event()
    wait = 0.5
    while not stop.is_set():
        began = time.monotonic()
        worker: SimpleWorker | None = None
        try:
            worker = SimpleWorker(  # talks to Redis already
                [runtime.dispatcher.queue],
                connection=runtime.rq_redis,
                serializer=JSONSerializer,
                log_job_description=False,
            )
            worker.work(burst=burst, max_jobs=max_jobs, logging_level="WARNING")
            # RQ's work() also returns after swallowing an unexpected error (a Redis outage
            # during its job bookkeeping) with a "quitting" log line; only a requested stop,
            # burst mode or max_jobs may end this process.
            if burst or max_jobs is not None or _stop_requested(worker):
                return
            problem = "the RQ work loop quit unexpectedly"
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # RQ's own stop handler talks to Redis and can fail with this very error: a stop
            # request must still win over reconnecting.
            if _stop_requested(worker):
                return
            problem = f"worker lost Redis ({exc})"
        _stop_on_signals(stop)
        if time.monotonic() - began > 60:
            wait = 0.5
        log.warning("%s; restarting the work loop in %.1fs", problem, wait)
        stop.wait(wait)
        wait = min(MAX_RECONNECT_WAIT_S, wait * 2)


def _stop_requested(worker: SimpleWorker | None) -> bool:
    if worker is None:
        return False
    return bool(
        getattr(worker, "_stop_requested", False)
        or getattr(worker, "_shutdown_requested_date", None) is not None
    )


def _warm_sandbox(runtime: Runtime) -> None:
    """Start the warm pool of sandbox guests so the first untrusted run pays no start-up."""
    try:
        runtime.sandbox.refill()
    except Exception as exc:  # a broken sandbox must not stop trusted runs
        log.error("sandbox warm-up failed: %s", exc)


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
