"""A Loopwright worker: an RQ ``SimpleWorker`` on the run queue that survives Redis outages."""

from __future__ import annotations

import logging
import time

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
    wait = 0.5
    while True:
        try:
            worker = SimpleWorker(
                [runtime.dispatcher.queue],
                connection=runtime.rq_redis,
                serializer=JSONSerializer,
                log_job_description=False,
            )
            worker.work(burst=burst, max_jobs=max_jobs, logging_level="WARNING")
            return
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("worker lost Redis (%s); reconnecting in %.1fs", exc, wait)
            time.sleep(wait)
            wait = min(MAX_RECONNECT_WAIT_S, wait * 2)
