"""A Loopwright worker: an RQ ``SimpleWorker`` on the run queue that survives Redis outages."""

from __future__ import annotations

import logging
import signal
import threading
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
    stop = threading.Event()
    wait = 0.5
    while not stop.is_set():
        worker = SimpleWorker(
            [runtime.dispatcher.queue],
            connection=runtime.rq_redis,
            serializer=JSONSerializer,
            log_job_description=False,
        )
        try:
            worker.work(burst=burst, max_jobs=max_jobs, logging_level="WARNING")
            return
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # RQ's own stop handler talks to Redis and can fail with this very error: a stop
            # request must still win over reconnecting.
            if getattr(worker, "_shutdown_requested_date", None) is not None:
                return
            _stop_on_signals(stop)
            log.warning("worker lost Redis (%s); reconnecting in %.1fs", exc, wait)
            stop.wait(wait)
            wait = min(MAX_RECONNECT_WAIT_S, wait * 2)


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
