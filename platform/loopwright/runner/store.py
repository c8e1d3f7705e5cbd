"""Creating, dispatching, listing, cancelling and awaiting runs."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from redis import Redis

from loopwright.errors import NotFoundError, UserError
from loopwright.keys import Keys
from loopwright.runner.records import Run, RunStatus, StepRecord, encode_json, now_ms
from loopwright.sdk.errors import StepOutputError

if TYPE_CHECKING:
    from redis.commands.core import Script
    from rq import Queue

    from loopwright.runner.checkpoint import Checkpoints
    from loopwright.runner.transitions import Transitions
    from loopwright.sdk.spec import SkillSpec

JOB_FUNC = "loopwright.runner.execute.execute"


# Atomically: create a run unless one with this id exists. An existing run is never touched
# (not its record, not an index, and the caller does not dispatch it): a second create of a
# run that is executing would otherwise reset its fence and re-issue its token. The new
# record goes into the history indexes, its parent's children set, and then by ``place``:
# ``queued`` (the caller enqueues the RQ job after this script; the lost-dispatch check covers
# a crash in between), ``timers`` (created parked until ``score``) or ``ended`` (a start that
# flow control skipped: the shared terminal bookkeeping ``run_ended`` runs here too).
# A fork (``rerun --from-step``, issue 15) also copies the old run's checkpoints ``A.copy``
# (seqs) from ``K.from_steps`` to ``K.steps`` in the same script, large outputs from
# ``K.f<seq>`` to ``K.o<seq>``, with their counters and stored bytes: the new run replays them
# and never executes those steps. They are read before anything is written (``LW-STALE`` when
# the old run lost one meanwhile, e.g. a retry dropped it).
# KEYS (named): run, runs, runs_by_skill, queued, timers, ended, waiting; children (of the
#   parent, when there is one); parent_run, parent_steps (a skipped child resolves its parent);
# With ``runnable`` (a trigger's start) the skill must still be in the runnable index: a cron
# tick or event that read the catalog before the skill was deleted or paused starts nothing.
# KEYS (named): run, runs, runs_by_skill, queued, timers, ended, waiting; children (of the
#   parent, when there is one); parent_run, parent_steps (a skipped child resolves its parent);
#   steps, from_steps, f<seq>, o<seq> (a fork); runnable (``{p}:skills``, trigger starts only);
#   indexed (``Keys.runs_indexed``)
# ARGV (named): run_id, fields (the record: name -> string), place, score (ms), channel;
#   parent, parent_seq, parent_job_prefix (with parent_run); a skipped run's rollup keys and
#   arguments (``runner/rollup.py``)
# Returns {1, parent job id or ''} when created, {0, ''} when the run existed, {-1, ''} when
# ``runnable`` was given and the skill is not in it.
def create_lua() -> str:
    """The script's text (built on first use: the runner's shared Lua pieces are imported only
    by commands that write runs, not by ``runs list``/``show``)."""
    from loopwright.runner.lua import ENDED, NOW
    from loopwright.scripts import NAMED

    return (
        NOW
        + NAMED
        + ENDED
        + """
if redis.call('EXISTS', K.run) == 1 then return {0, ''} end
local copied = {}
if K.from_steps then
  for _, seq in ipairs(A.copy) do
    local raw = redis.call('HGET', K.from_steps, tostring(seq))
    if not raw then
      return redis.error_reply('LW-STALE fork: step ' .. seq .. ' of the old run is gone')
    end
    copied[#copied + 1] = {seq, raw}
  end
end
if K.runnable and redis.call('HEXISTS', K.runnable, A.fields.skill) == 0 then return {-1, ''} end
local flat = {}
for name, value in pairs(A.fields) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
redis.call('HSET', K.run, unpack(flat))
if K.from_steps then
  local stored, n, tries, retries = 0, 0, 0, 0
  for _, c in ipairs(copied) do
    local seq, raw = c[1], c[2]
    redis.call('HSET', K.steps, tostring(seq), raw)
    stored = stored + string.len(raw)
    local big = K['f' .. seq] and redis.call('GET', K['f' .. seq])
    if big then
      redis.call('SET', K['o' .. seq], big)
      stored = stored + string.len(big)
    end
    local rec = cjson.decode(raw)
    if rec['status'] == 'done' or rec['status'] == 'failed' then
      local t = tonumber(rec['attempts'] or 1) or 1
      n, tries, retries = n + 1, tries + t, retries + t - 1
    end
  end
  redis.call('HSET', K.run, 'stored', stored, 'c_steps', n, 'c_attempts', tries, 'c_retries',
    retries)
end
local ts = tonumber(A.fields.created_at)
-- A store whose first run is created here has no run from before the status/signature
-- indexes: nothing to backfill (issue 13, ``runner/indexes.py``).
if K.indexed and redis.call('ZCARD', K.runs) == 0 then
  redis.call('SET', K.indexed, 'done', 'NX')
end
redis.call('ZADD', K.runs, ts, A.run_id)
redis.call('ZADD', K.runs_by_skill, ts, A.run_id)
if K.children then redis.call('SADD', K.children, A.run_id) end
if A.place == 'queued' then
  redis.call('ZADD', K.queued, A.score, A.run_id)
elseif A.place == 'timers' then
  redis.call('ZADD', K.timers, A.score, A.run_id)
else
  return {1, run_ended(A.run_id, A.fields.status, tonumber(A.fields.finished_at))}
end
return {1, ''}
"""
    )


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


@dataclass(frozen=True, slots=True)
class Created:
    """What :meth:`RunStore.create_if_absent` did: ``created`` is False when the run existed
    (then nothing was written and nothing dispatched)."""

    run_id: str
    created: bool
    inactive: bool = False  # ``require_active`` and the skill was no longer active: not created


@dataclass(frozen=True, slots=True)
class Fork:
    """Checkpoints a new run takes over from an old one (``rerun --from-step``): the old run's
    ``seqs``, of which ``big`` keep their output in their own key."""

    from_run: str
    seqs: tuple[int, ...]
    big: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Retried:
    """What :meth:`RunStore.retry` did: the run's new dispatch job, the first step it executes
    again (``from_seq``, None when every checkpoint was finished) and how many checkpoints
    were dropped."""

    run_id: str
    job_id: str
    from_seq: int | None
    dropped: int


# Git's rule for abbreviated ids: at least this many characters.
MIN_PREFIX = 4
RUN_ID_HEX = 12  # the leading hex digits of a run id are its creation time in ms
PREFIX_SLACK_MS = 60_000  # an id's time and its index score (creation) may differ a little
PREFIX_SHOWN = 10


class RunStore:
    """The run history and the entry points that create or change runs."""

    def __init__(
        self,
        redis: Redis,
        rq_redis: Redis,
        keys: Keys,
        dispatcher: Dispatcher,
        transitions: Callable[[], Transitions],
        checkpoints: Callable[[], Checkpoints],
        input_max_bytes: int,
    ) -> None:
        # ``transitions`` and ``checkpoints`` are the runtime's, asked for when first needed:
        # reading history (``runs list``/``show``) imports neither (bench/cli.py).
        self._redis = redis
        self._rq_redis = rq_redis
        self._keys = keys
        self.dispatcher = dispatcher
        self._transitions_of = transitions
        self._checkpoints_of = checkpoints
        self._input_max = input_max_bytes

    @property
    def _transitions(self) -> Transitions:
        return self._transitions_of()

    @property
    def _checkpoints(self) -> Checkpoints:
        return self._checkpoints_of()

    @cached_property
    def _create(self) -> Script:
        return self._redis.register_script(create_lua())

    @cached_property
    def _retry(self) -> Script:
        from loopwright.runner.lua import RETRY_LUA

        return self._redis.register_script(RETRY_LUA)

    def create(self, **kw: Any) -> str:
        """Create a run with a new id (or one nobody used): see :meth:`create_if_absent`.
        Returns the run id; ``UserError`` when a run with the given ``run_id`` exists."""
        res = self.create_if_absent(**kw)
        if not res.created:
            raise UserError(f"run {res.run_id} already exists")
        return res.run_id

    def create_if_absent(
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
        at_ms: int | None = None,
        dispatch: bool = True,
        fields: dict[str, str] | None = None,
        fork: Fork | None = None,
        require_active: bool = False,
    ) -> Created:
        """Record a new queued run and dispatch it, unless a run with this id exists.

        One script creates the record and its indexes only when the id is free and never
        touches an existing run (a second create of an executing run would reset its fence);
        ``created`` says which happened, and only the creator dispatches.

        Runs execute in the sandbox unless ``trusted`` (built-in skills, ``--trusted``).
        ``spec`` brings the skill's concurrency limit; ``skipped`` records a start that flow
        control refused (a terminal run, never dispatched, with the terminal bookkeeping of
        every ended run); ``wake_at`` creates it parked. ``at_ms`` is an explicit creation time
        (the history seeder only; default now); ``dispatch=False`` leaves a queued run
        without its RQ job (the seeder takes it itself; the lost-dispatch check would otherwise
        dispatch it after its grace). ``fields`` adds record fields (``rerun_of``...);
        ``fork`` copies an old run's checkpoints in the same script (a rerun from a step).
        ``require_active`` (trigger starts) creates the run only
        while the skill is in the runnable index, checked in the creating script: a start
        racing a ``skills delete`` or ``pause`` creates nothing (``inactive``).
        """
        run_id = run_id or new_run_id()
        ts = now_ms() if at_ms is None else at_ms
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
        mapping: dict[str, Any] = {
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
            from loopwright.runner.flow import concurrency_fields

            mapping.update(concurrency_fields(self._keys, spec, event))
        if timeout is not None:
            mapping["timeout"] = timeout
        if skipped is not None:
            mapping.update(status=RunStatus.SKIPPED.value, error=skipped, finished_at=ts)
        elif wake_at is not None:
            mapping.update(status=RunStatus.SLEEPING.value, wake_at=wake_at)
        if admitted_at is not None:
            mapping["admitted_at"] = admitted_at  # the rate limiter's own time for this start
        mapping.update(fields or {})
        place = "ended" if skipped is not None else "timers" if wake_at is not None else "queued"
        created, parent_job = self._create_script(
            run_id, skill, mapping, place, ts, fork, require_active
        )
        if created < 0:
            return Created(run_id, False, inactive=True)
        if created and place == "queued" and dispatch:
            # After the script: a crash before this line leaves a queued run with a vanished
            # job, which the scheduler's lost-dispatch check re-dispatches.
            self.dispatcher.enqueue(run_id, job_id)
        if parent_job and parent:
            self.dispatcher.enqueue(parent, parent_job)
        return Created(run_id, created > 0)

    def _create_script(
        self,
        run_id: str,
        skill: str,
        mapping: dict[str, Any],
        place: str,
        ts: int,
        fork: Fork | None = None,
        require_active: bool = False,
    ) -> tuple[int, str | None]:
        from loopwright.runner.lua import call_named
        from loopwright.runner.rollup import Ending, rollup_declaration
        from loopwright.runner.transitions import Declared

        k = self._keys
        parent = str(mapping.get("parent", "")) or None
        d = Declared.of({key: str(mapping.get(key, "")) for key in ("parent", "parent_seq")})
        resolves = place == "ended" and d.parent is not None
        keys: dict[str, str | None] = {
            "run": k.run(run_id),
            "runs": k.runs,
            "runs_by_skill": k.runs_by_skill(skill),
            "queued": k.queued,
            "timers": k.timers,
            "ended": k.ended,
            "waiting": k.waiting,
            "children": k.children(parent) if parent else None,
            "parent_run": k.run(d.parent) if resolves and d.parent else None,
            "parent_steps": k.steps(d.parent) if resolves and d.parent else None,
            "runnable": k.skills if require_active else None,
            "indexed": k.runs_indexed,  # the index backfill's marker (first run only)
        }
        args: dict[str, Any] = {
            "run_id": run_id,
            "fields": {name: str(value) for name, value in mapping.items()},
            "place": place,
            "score": int(mapping.get("wake_at", ts)),
            "channel": k.run_changes_channel,
        }
        if resolves and d.parent:
            args.update(
                parent=d.parent,
                parent_seq=d.parent_seq,
                parent_job_prefix=self._transitions.job_prefix(d.parent),
            )
        if fork is not None:
            keys.update(steps=k.steps(run_id), from_steps=k.steps(fork.from_run))
            for seq in fork.big:
                keys[f"f{seq}"] = k.step_output(fork.from_run, seq)
                keys[f"o{seq}"] = k.step_output(run_id, seq)
            args["copy"] = list(fork.seqs)
        if place == "ended":
            end = Ending(origin="skill", now_ms=ts)  # flow control's refusal is no error
            rk, ra = rollup_declaration(k, skill, str(mapping["version"]), end, ts)
            # ``run_ended`` indexes the skipped run by status (issue 13, ``runner/indexes.py``)
            from loopwright.runner.indexes import ended_index_keys

            ik = ended_index_keys(k, str(mapping["status"]), ra.get("sig"))
            keys, args = {**keys, **rk, **ik}, {**args, **ra}
        created, parent_job = call_named(self._create, keys, args)
        return int(created), str(parent_job) or None

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
        res, parent_job = self._transitions.cancel(run_id, reason)
        if res < 0:
            raise NotFoundError(f"unknown run id {run_id!r}")
        parent = self._redis.hget(self._keys.run(run_id), "parent") if parent_job else None
        if parent_job and parent:
            self.dispatcher.enqueue(str(parent), parent_job)  # its waiting parent resumes
        cancelled = [run_id] if res == 1 else []
        children: set[str] = self._redis.smembers(self._keys.children(run_id))  # type: ignore[assignment]
        for child in sorted(children):
            cancelled += self.cancel(str(child), f"parent run {run_id} was cancelled")
        return cancelled

    def retry(self, run_id: str) -> Retried:
        """Run a failed or cancelled run again from its first unfinished step, keeping its
        finished checkpoints (``RETRY_LUA``: one script moves it out of its rollup, drops the
        unfinished checkpoints, advances the fence and queues it), then dispatch it the way
        every queued run is dispatched. A crash before the enqueue leaves a queued run whose
        job is missing: the scheduler's lost-dispatch check dispatches it.

        ``UserError`` when the run is not failed or cancelled, or is a child whose parent has
        stopped waiting for it; ``NotFoundError`` when it does not exist."""
        from loopwright.runner.lua import StaleDeclarationError, call_named

        k = self._keys
        for attempt in range(3):
            d = self._transitions.declared(run_id)
            day, sig = self._redis.hmget(k.run(run_id), ["rolled", "sig"])
            raw: dict[str, str] = self._redis.hgetall(k.steps(run_id))  # type: ignore[assignment]
            big = [int(seq) for seq, rec in raw.items() if '"ref":true' in rec]
            keys: dict[str, str | None] = {
                "run": k.run(run_id),
                "steps": k.steps(run_id),
                "queued": k.queued,
                "ended": k.ended,
                "timers": k.timers,
                "waiting": k.waiting,
                "leases": k.leases,
                "rollup": k.rollup(d.skill, d.version, str(day)) if day else None,
                "parent_run": k.run(d.parent) if d.parent else None,
                "parent_steps": k.steps(d.parent) if d.parent else None,
                **{f"o{seq}": k.step_output(run_id, seq) for seq in big},
                # it leaves its status and signature indexes (issue 13, runner/indexes.py)
                "st_failed": k.runs_by_status("failed"),
                "st_cancelled": k.runs_by_status("cancelled"),
                "by_sig": k.runs_by_sig(str(sig)) if sig else None,
                "sigs": k.runs_sigs if sig else None,
            }
            args = {
                "run_id": run_id,
                "job_prefix": self._transitions.job_prefix(run_id),
                "skill": d.skill,
                "version": d.version,
                "day": str(day) if day else None,
                "channel": k.run_changes_channel,
                "parent": d.parent,
                "parent_seq": d.parent_seq,
                "sig": str(sig) if sig else None,
            }
            try:
                res = call_named(self._retry, keys, args)
            except StaleDeclarationError:
                if attempt < 2:
                    continue  # the run changed between the reads and the script: read again
                raise
            break
        what, detail = str(res[0]), str(res[1])
        if what == "missing":
            raise NotFoundError(f"unknown run id {run_id!r} (list runs with: loopwright runs list)")
        if what == "status":
            raise UserError(
                f"run {run_id} is {detail}: only a failed or cancelled run can be retried"
                + ("" if detail in ("completed", "skipped") else " (cancel it first)")
                + f"; to run it again as a new run: loopwright runs rerun {run_id}"
            )
        if what == "parent":
            raise UserError(
                f"run {run_id} is a child of run {d.parent}, which has already seen it end "
                f"(the parent is {detail}); retry the parent instead: "
                f"loopwright runs retry {d.parent}"
            )
        job_id = str(res[1])
        self.dispatcher.enqueue(run_id, job_id)
        first = int(res[2])
        return Retried(run_id, job_id, first or None, int(res[3]))

    def resolve_prefix(self, prefix: str) -> str:
        """The full run id that ``prefix`` abbreviates, as git resolves commits: an existing
        id as is, else the one run whose id starts with ``prefix`` (at least
        ``MIN_PREFIX`` characters). ``UserError`` for an ambiguous prefix (listing
        candidates), ``NotFoundError`` for none.

        A run id starts with its creation time in hex (``new_run_id``), so the ids a prefix can
        match lie in one score range of the ``runs`` index: that range is read, not the index.
        A run created with another time (the history seeder's) is found by a server-side scan
        when the range holds no match. Nothing is stripped or case-folded: a look-alike of an
        id is not that id."""
        if prefix and self._redis.exists(self._keys.run(prefix)):
            return prefix
        shown = prefix[:40]
        if len(prefix) < MIN_PREFIX:
            raise UserError(
                f"run id {shown!r} is too short: give the full id or at least {MIN_PREFIX} "
                "characters"
            )
        hits = self._prefix_range(prefix) if _is_hex(prefix) else []
        if not hits:
            hits = self._prefix_scan(prefix)
        if len(hits) == 1:
            return hits[0]
        if not hits and self._redis.exists(self._keys.tombstone(prefix)):
            raise NotFoundError(
                f"run {shown!r} was deleted by retention (LOOPWRIGHT_RUN_RETENTION); its history "
                "lives on in the skill's rollups (loopwright skills stats)"
            )
        if not hits:
            raise NotFoundError(f"unknown run id {shown!r} (list runs with: loopwright runs list)")
        more = f" and {len(hits) - PREFIX_SHOWN} more" if len(hits) > PREFIX_SHOWN else ""
        raise UserError(
            f"run id prefix {shown!r} is ambiguous: {', '.join(hits[:PREFIX_SHOWN])}{more}"
        )

    def _prefix_range(self, prefix: str) -> list[str]:
        head = prefix[:RUN_ID_HEX].lower()
        lo = int(head.ljust(RUN_ID_HEX, "0"), 16) - PREFIX_SLACK_MS
        hi = int(head.ljust(RUN_ID_HEX, "f"), 16) + PREFIX_SLACK_MS
        ids = self._redis.zrangebyscore(self._keys.runs, lo, hi, start=0, num=10_000)
        return sorted(str(x) for x in ids if str(x).startswith(prefix))

    def _prefix_scan(self, prefix: str) -> list[str]:
        pattern = "".join("\\" + c if c in "*?[]\\" else c for c in prefix) + "*"
        scan = self._redis.zscan_iter(self._keys.runs, match=pattern, count=1000)
        return sorted({str(member) for member, _ in scan})

    def wait(self, run_id: str, timeout: float | None = None) -> Run:
        """Block until the run ends (or ``timeout`` seconds pass) and return it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        pubsub.subscribe(self._keys.run_changes_channel)
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


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)
