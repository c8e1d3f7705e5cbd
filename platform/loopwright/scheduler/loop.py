"""The scheduler loop.

Every transition it applies (wake, reap, redispatch) is one Lua script that re-checks
the state it expects, so several schedulers can run at once without doubling anything: the
second one to reach a run finds nothing to do. Cron ticks are fired by the leader only
(``cron.py``); every scheduler also consumes the event stream in the router group.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from redis.exceptions import RedisError

from loopwright.history.retention import Retention
from loopwright.runner.execute import child_outcome, wake_parent
from loopwright.runner.runtime import Runtime
from loopwright.scheduler.alerts import Alerts, Deliverer
from loopwright.scheduler.catalog import Catalog
from loopwright.scheduler.cron import CronFirer
from loopwright.scheduler.router import Router

log = logging.getLogger(__name__)
BATCH = 500
LEGACY_PAGE = 200


@dataclass(slots=True)
class TickStats:
    """What one tick did."""

    woken: int = 0
    reaped: int = 0
    failed: int = 0
    redispatched: int = 0
    cron: int = 0
    resolved: int = 0
    debounced: int = 0
    purged: int = 0
    alerted: int = 0


class Scheduler:
    """Timers, the lease reaper, the lost-dispatch check and cron on one loop, and the event
    router on a thread of its own."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        self.catalog = Catalog(runtime)
        self.cron = CronFirer(runtime, self.catalog)
        self.alerts = Alerts(runtime)
        # ZSCAN cursor of the pass over runs parked by earlier versions; None once done.
        self._legacy_cursor: int | None = 0
        st = runtime.settings
        self.retention = Retention(
            runtime.redis,
            runtime.keys,
            st.run_retention,
            st.event_retention,
            st.retention_batch_runs,
        )

    def _server_ms(self) -> int:
        sec, usec = self.rt.redis.time()
        return int(sec) * 1000 + int(usec) // 1000

    def tick(self) -> TickStats:
        """One pass over due timers, expired leases and stale dispatches."""
        rt, k, stats = self.rt, self.rt.keys, TickStats()
        now = self._server_ms()
        beat_ms = max(2000, int(rt.settings.reaper_interval * 10_000))
        rt.redis.set(k.scheduler_heartbeat, rt.instance_id, px=beat_ms)
        for run_id in rt.redis.zrangebyscore(k.timers, "-inf", now, start=0, num=BATCH):
            jid = rt.transitions.wake(str(run_id))
            if jid:
                rt.dispatcher.enqueue(str(run_id), jid)
                stats.woken += 1
        for run_id in rt.redis.zrangebyscore(k.leases, "-inf", now, start=0, num=BATCH):
            res = rt.transitions.reap(str(run_id))
            if res.job_id:
                log.warning("run %s: lease expired, re-queued", run_id)
                rt.dispatcher.enqueue(str(run_id), res.job_id, at_front=True)
                stats.reaped += 1
            elif res.failed:
                stats.failed += 1
                if res.parent_job:  # the give-up resolved a waiting parent: resume it
                    parent = rt.redis.hget(k.run(str(run_id)), "parent")
                    if parent:
                        rt.dispatcher.enqueue(str(parent), res.parent_job)
        stale_before = now - int(rt.settings.dispatch_grace * 1000)
        for run_id in rt.redis.zrangebyscore(k.queued, "-inf", stale_before, start=0, num=100):
            rid = str(run_id)
            jid = str(rt.redis.hget(k.run(rid), "dispatch") or "")
            status = rt.dispatcher.job_status(jid) if jid else None
            waiting = status in ("deferred", "scheduled") or (
                status == "queued" and rt.dispatcher.waiting_in_queue(jid)
            )
            if waiting:
                rt.redis.zadd(k.queued, {rid: now}, xx=True)  # still waiting in line: look later
                continue
            new = rt.transitions.redispatch(rid, jid)
            if new:
                log.warning("run %s: dispatch %s vanished, re-dispatched", rid, jid)
                rt.dispatcher.enqueue(rid, new, at_front=True)
                stats.redispatched += 1
        stats.cron = self.cron.tick(now)
        if rt.redis.zcard(k.debounce_due):
            entries = {e.name: e for e in self.catalog.entries()}
            stats.debounced = self.cron.admission.fire_debounced(entries)
        if self._legacy_cursor is not None:
            stats.resolved = self.adopt_parked_parents()
        if self.cron.epoch > 0:  # the leader (cron.tick just renewed it) keeps history bounded
            stats.purged = self.retention.tick().deleted
            stats.alerted = self._alert()  # and tells the inbox about failures
        return stats

    def _alert(self) -> int:
        """Failure alerts (``scheduler/alerts.py``); their failure never stops timers, the
        reaper or cron: it is logged and the same runs are tried again next tick."""
        try:
            return self.alerts.tick()
        except Exception:  # a bug here must not stop the scheduler's other duties
            log.exception("failure alerts failed; trying again next tick")
            return 0

    def adopt_parked_parents(self, count: int = LEGACY_PAGE) -> int:
        """One page of a single pass (per scheduler process) over every waiting run, resolving
        parents whose child had already ended when this version started.

        Every terminal path now resolves a waiting parent in its own script and a parent that
        parks after its child ended resolves itself, so nothing new needs a sweep; runs parked
        by an earlier version (whose cancelled or reaped children never told them) are found
        here. ZSCAN visits every member present for the whole pass, at any size."""
        rt, resolved = self.rt, 0
        cursor, members = rt.redis.zscan(rt.keys.waiting, self._legacy_cursor or 0, count=count)
        self._legacy_cursor = None if int(cursor) == 0 else int(cursor)
        for run_id, _score in members:
            for rec in rt.checkpoints.read_all(str(run_id)):
                if rec.kind != "invoke" or rec.status != "pending" or not rec.child:
                    continue
                if not rt.runs.exists(rec.child):
                    continue
                child = rt.runs.get(rec.child)
                if child.status.terminal:
                    wake_parent(rt, child, *child_outcome(child))
                    resolved += 1
        return resolved

    def run(self, stop: threading.Event | None = None) -> None:
        """Tick every ``reaper_interval`` until ``stop`` is set; ride out Redis outages."""
        stop = stop or threading.Event()
        router = Router(self.rt, self.catalog, self.rt.instance_id)
        threading.Thread(
            target=router.run, args=(stop,), name="loopwright-router", daemon=True
        ).start()
        threading.Thread(
            target=Deliverer(self.rt).run, args=(stop,), name="loopwright-alerts", daemon=True
        ).start()
        interval = self.rt.settings.reaper_interval
        wait = interval
        while not stop.is_set():
            try:
                self.tick()
                wait = interval
            except RedisError as exc:
                wait = min(30.0, max(0.5, wait * 2))
                log.warning("scheduler tick failed (%s); retrying in %.1fs", exc, wait)
            stop.wait(wait)


def run_until_signalled(runtime: Runtime) -> None:
    """Run the scheduler in the foreground; SIGTERM/SIGINT stop it after the current tick."""
    import signal

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    Scheduler(runtime).run(stop)
