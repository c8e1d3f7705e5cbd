"""Creating, dispatching, listing, cancelling and awaiting runs."""

from __future__ import annotations

import json
import secrets
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from redis import Redis

from loopwright.errors import NotFoundError, UserError
from loopwright.keys import Keys
from loopwright.runner.checkpoint import Checkpoints
from loopwright.runner.flow import concurrency_fields
from loopwright.runner.records import Run, RunStatus, StepRecord, encode_json, now_ms
from loopwright.runner.transitions import Transitions
from loopwright.sdk.errors import StepOutputError
from loopwright.sdk.skill import SkillSpec

if TYPE_CHECKING:
    from rq import Queue

JOB_FUNC = "loopwright.runner.execute.execute"


def new_run_id() -> str:
    """Time-ordered, unguessable run id (12 hex digits of ms + 8 random)."""
    return f"{now_ms():012x}{secrets.token_hex(4)}"


class Dispatcher:
    """Enqueues ``execute(run_id)`` on RQ: the job is only the vehicle, the run is data."""

    def __init__(self, rq_redis: Redis, queue_name: str) -> None:
        self._queue_name = queue_name
        self._rq_redis = rq_redis

    @cached_property
    def queue(self) -> Queue:
        """The RQ queue; RQ loads on first use (reading runs needs none: a fast CLI)."""
        from rq import Queue
        from rq.serializers import JSONSerializer

        return Queue(self._queue_name, connection=self._rq_redis, serializer=JSONSerializer)

    def enqueue(
        self, run_id: str, job_id: str, pipeline: Any = None, *, at_front: bool = False
    ) -> None:
        """Enqueue one dispatch of ``run_id`` as RQ job ``job_id``.

        ``at_front`` is for runs that were already executing (reaped, lost dispatch): they
        resume ahead of the backlog instead of waiting behind every new run.
        """
        self.queue.enqueue_call(
            JOB_FUNC,
            args=(run_id,),
            job_id=job_id,
            timeout=-1,  # the runner enforces run timeouts itself (active time, not wall time)
            result_ttl=0,
            failure_ttl=24 * 3600,
            description=f"loopwright run {run_id}",
            pipeline=pipeline,
            at_front=at_front,
        )

    def job_status(self, job_id: str) -> str | None:
        """RQ's status of a dispatch job, or None when the job is gone."""
        from rq.job import Job

        raw = self._rq_redis.hget(Job.key_for(job_id), "status")
        return raw.decode() if isinstance(raw, bytes) else None

    def waiting_in_queue(self, job_id: str) -> bool:
        """Whether the job really waits in the queue list. RQ's job hash says ``queued`` until
        a worker marks it started, so a worker killed right after popping the id leaves a
        ``queued`` job that no list holds any more: only the list tells the truth."""
        return self._rq_redis.lpos(self.queue.key, job_id) is not None


class RunStore:
    """The run history and the entry points that create or change runs."""

    def __init__(
        self,
        redis: Redis,
        rq_redis: Redis,
        keys: Keys,
        dispatcher: Dispatcher,
        transitions: Transitions,
        checkpoints: Checkpoints,
        input_max_bytes: int,
    ) -> None:
        self._redis = redis
        self._rq_redis = rq_redis
        self._keys = keys
        self.dispatcher = dispatcher
        self._transitions = transitions
        self._checkpoints = checkpoints
        self._input_max = input_max_bytes

    def create(
        self,
        *,
        skill: str,
        version: str,
        data: Any = None,
        event_name: str = "loopwright/manual",
        params: dict[str, Any] | None = None,
        trigger: dict[str, Any] | None = None,
        parent: str | None = None,
        timeout: float | None = None,
        trusted: bool = False,
        run_id: str | None = None,
        event: dict[str, Any] | None = None,
        parent_seq: int | None = None,
        spec: SkillSpec | None = None,
        skipped: str | None = None,
        wake_at: int | None = None,
        admitted_at: int | None = None,
    ) -> str:
        """Record a new queued run and dispatch it, in one round trip. Returns the run id.

        Runs execute in the sandbox unless ``trusted`` (built-in skills, ``--trusted``).
        ``spec`` brings the skill's concurrency limit; ``skipped`` records a start that flow
        control refused (a terminal run, never dispatched); ``wake_at`` creates it parked.
        """
        run_id = run_id or new_run_id()
        ts = now_ms()
        if event is None:
            event = {
                "name": event_name,
                "data": data if data is not None else {},
                "id": run_id,
                "ts": ts,
            }
        try:
            event_json = encode_json(event, what="run input", max_bytes=self._input_max)
            params_json = encode_json(params or {}, what="run params", max_bytes=self._input_max)
        except StepOutputError as exc:
            raise UserError(str(exc)) from None
        job_id = f"{self._transitions.job_prefix(run_id)}1"
        mapping: dict[Any, Any] = {
            "id": run_id,
            "skill": skill,
            "version": version,
            "status": RunStatus.QUEUED.value,
            "trigger": json.dumps(trigger or {"type": "manual"}),
            "event": event_json,
            "params": params_json,
            "attempts": 0,
            "created_at": ts,
            "updated_at": ts,
            "fence": 0,
            "dispatches": 1,
            "dispatch": job_id,
        }
        if parent:
            mapping["parent"] = parent
            if parent_seq is not None:
                mapping["parent_seq"] = parent_seq
        if trusted:
            mapping["trusted"] = "1"
        if spec is not None:
            mapping.update(concurrency_fields(self._keys, spec, event))
        if timeout is not None:
            mapping["timeout"] = timeout
        k = self._keys
        if skipped is not None:
            mapping.update(status=RunStatus.SKIPPED.value, error=skipped, finished_at=ts)
        elif wake_at is not None:
            mapping.update(status=RunStatus.SLEEPING.value, wake_at=wake_at)
        if admitted_at is not None:
            mapping["admitted_at"] = admitted_at  # the rate limiter's own time for this start
        pipe = self._rq_redis.pipeline(transaction=True)
        pipe.multi()  # RQ joins an explicit transaction instead of starting its own
        pipe.hset(k.run(run_id), mapping=mapping)
        pipe.zadd(k.runs, {run_id: ts})
        pipe.zadd(k.runs_by_skill(skill), {run_id: ts})
        if parent:
            pipe.sadd(k.children(parent), run_id)
        if skipped is None and wake_at is not None:
            pipe.zadd(k.timers, {run_id: wake_at})
        elif skipped is None:
            pipe.zadd(k.queued, {run_id: ts})
            self.dispatcher.enqueue(run_id, job_id, pipeline=pipe)
        pipe.execute()
        return run_id

    def exists(self, run_id: str) -> bool:
        """Whether a run record exists."""
        return bool(self._redis.exists(self._keys.run(run_id)))

    def get(self, run_id: str) -> Run:
        """One run, or ``NotFoundError``."""
        h: dict[str, str] = self._redis.hgetall(self._keys.run(run_id))  # type: ignore[assignment]
        if not h:
            raise NotFoundError(f"unknown run id {run_id!r} (list runs with: loopwright runs list)")
        return Run.from_hash(h)

    def steps(self, run_id: str) -> list[StepRecord]:
        """The run's step timeline."""
        return self._checkpoints.read_all(run_id)

    def logs(self, run_id: str) -> list[dict[str, Any]]:
        """The run's log lines, oldest first."""
        lines: list[str] = self._redis.lrange(self._keys.logs(run_id), 0, -1)  # type: ignore[assignment]
        return [json.loads(x) for x in lines]

    def find(
        self,
        *,
        skill: str | None = None,
        status: str | None = None,
        since_ms: int | None = None,
        limit: int = 50,
    ) -> list[Run]:
        """Newest runs first, filtered by skill, status and creation time."""
        if status is not None and status not in {s.value for s in RunStatus}:
            raise UserError(
                f"unknown status {status!r}; one of: {', '.join(s.value for s in RunStatus)}"
            )
        index = self._keys.runs_by_skill(skill) if skill else self._keys.runs
        lo: float | str = since_ms if since_ms is not None else "-inf"
        out: list[Run] = []
        offset, page, scanned = 0, 200, 0
        while len(out) < limit and scanned < 20_000:
            ids = self._redis.zrevrangebyscore(index, "+inf", lo, start=offset, num=page)
            if not ids:
                break
            offset += len(ids)
            scanned += len(ids)
            pipe = self._redis.pipeline(transaction=False)
            for run_id in ids:
                pipe.hgetall(self._keys.run(str(run_id)))
            for h in pipe.execute():
                if h and (status is None or h.get("status") == status):
                    out.append(Run.from_hash(h))
                    if len(out) >= limit:
                        break
        return out

    def cancel(self, run_id: str, reason: str = "cancelled by user") -> list[str]:
        """Cancel a run and, recursively, its unfinished children. Returns the ids cancelled."""
        res = self._transitions.cancel(run_id, reason)
        if res < 0:
            raise NotFoundError(f"unknown run id {run_id!r}")
        cancelled = [run_id] if res == 1 else []
        children: set[str] = self._redis.smembers(self._keys.children(run_id))  # type: ignore[assignment]
        for child in sorted(children):
            cancelled += self.cancel(str(child), f"parent run {run_id} was cancelled")
        return cancelled

    def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """Block until the run ends (or ``timeout`` seconds pass) and return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        pubsub.subscribe(self._keys.notify_channel)
        try:
            while True:
                run = self.get(run_id)
                if run.status.terminal:
                    return run
                left = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
                if left <= 0:
                    return run
                # Notices only shorten the wait; the poll above is the source of truth.
                end = time.monotonic() + left
                while (remaining := end - time.monotonic()) > 0:
                    msg = pubsub.get_message(timeout=remaining)
                    if msg and str(msg.get("data", "")).startswith(run_id + " "):
                        break
        finally:
            pubsub.close()
