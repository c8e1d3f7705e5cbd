"""Status and error-signature indexes of runs (issue 13): every terminal path writes them in
its own script, a retry and retention take runs out of them, a filtered list reads only the
matches (rare and old ones included: a full, complete page), and runs written before the
indexes existed (today's format: no index keys) are found completely after an upgrade."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from conftest import Cluster, wait_until
from loopwright.history.retention import Retention
from loopwright.history.signature import signature
from loopwright.runner.indexes import DONE, TERMINAL, IndexBackfill
from loopwright.runner.lease import Acquired
from loopwright.runner.records import StepRecord, now_ms
from loopwright.runner.rollup import Ending
from loopwright.runner.runtime import Runtime
from loopwright.sdk.steps import StepKind
from loopwright.service.queries import RunFilter, RunPage, find_runs

SKILL = "idx"
ERR = "KeyError: 'p95' (skill line 7)"


@pytest.fixture
def cluster_(make_cluster: Callable[..., Cluster]) -> Cluster:
    """Short leases, one lost executor allowed, 1 s retention; nothing in the background."""
    return make_cluster(lease_ttl=0.3, max_run_reaps=1, run_retention="1s")


def create(rt: Runtime, skill: str = SKILL, **kw: Any) -> str:
    return rt.runs.create_if_absent(skill=skill, version="v1", dispatch=False, **kw).run_id


def take(rt: Runtime, run_id: str) -> Acquired:
    acq = rt.leases.acquire(run_id, "test-owner")
    assert isinstance(acq, Acquired), acq
    return acq


def fail(rt: Runtime, run_id: str, error: str = ERR) -> None:
    acq = take(rt, run_id)
    rec = StepRecord(1, "s1", StepKind.RUN, "failed", 1, now_ms(), now_ms())
    rt.checkpoints.commit(run_id, acq.token, rec, None)
    ending = Ending("skill", error, "s1")
    assert rt.transitions.finish(run_id, acq.token, "failed", "", error, 5, None, ending)


def complete(rt: Runtime, run_id: str) -> None:
    acq = take(rt, run_id)
    assert rt.transitions.finish(run_id, acq.token, "completed", '"ok"', "", 5)


def indexed(rt: Runtime) -> dict[str, set[str]]:
    """Every status and signature index, by name (``status:<s>``, ``sig:<sig>``)."""
    k = rt.keys

    def members(key: str) -> set[str]:
        return {str(m) for m in rt.redis.zrange(key, 0, -1)}

    out = {f"status:{s}": members(k.runs_by_status(s)) for s in TERMINAL}
    for sig in members(k.runs_sigs):
        out[f"sig:{sig}"] = members(k.runs_by_sig(sig))
    return {name: ids for name, ids in out.items() if ids}


def expected(rt: Runtime) -> dict[str, set[str]]:
    """What the indexes must hold, recounted from the run records (and scored right)."""
    out: dict[str, set[str]] = {}
    for rid in [str(x) for x in rt.redis.zrange(rt.keys.runs, 0, -1)]:
        h: dict[str, str] = rt.redis.hgetall(rt.keys.run(rid))  # type: ignore[assignment]
        if h["status"] in TERMINAL:
            out.setdefault(f"status:{h['status']}", set()).add(rid)
            score = rt.redis.zscore(rt.keys.runs_by_status(h["status"]), str(rid))
            assert score == float(h["created_at"]), (rid, score)
        if h.get("sig"):
            out.setdefault(f"sig:{h['sig']}", set()).add(rid)
    return out


def expire_lease(rt: Runtime, run_id: str) -> None:
    until = int(rt.redis.hget(rt.keys.run(run_id), "lease_until") or 0)
    wait_until(lambda: rt.redis.time()[0] * 1000 + rt.redis.time()[1] // 1000 > until, 5)


def test_every_terminal_path_retry_and_retention_keep_the_indexes_exact(
    cluster_: Cluster,
) -> None:
    rt, k = cluster_.rt, cluster_.rt.keys
    # Given a run of every terminal path: finish ok, fail, cancel, reaper give-up, skipped
    done = create(rt)
    complete(rt, done)
    failed = create(rt)
    fail(rt, failed)
    cancelled = create(rt)
    assert rt.transitions.cancel(cancelled, "stopped by ops")[0] == 1
    reaped = create(rt)
    for _ in range(2):
        take(rt, reaped)
        expire_lease(rt, reaped)
        res = rt.transitions.reap(reaped)
    assert res.failed
    skipped = create(rt, skipped="concurrency limit 1 reached")
    active = create(rt)  # and one still queued: in no terminal index
    lost = signature("the worker executing this run was lost 2 times; giving up")
    # Then each sits in its status's index, and in its signature's when it has one
    assert indexed(rt) == {
        "status:completed": {done},
        "status:failed": {failed, reaped},
        "status:cancelled": {cancelled},
        "status:skipped": {skipped},
        f"sig:{signature(ERR)}": {failed},
        f"sig:{lost}": {reaped},
        f"sig:{signature('stopped by ops')}": {cancelled},
    }
    assert indexed(rt) == expected(rt)
    assert active not in set().union(*indexed(rt).values())

    # When the failed run is retried it leaves failed and its signature (it is queued) ...
    rt.runs.retry(failed)
    assert failed not in indexed(rt)["status:failed"]
    assert f"sig:{signature(ERR)}" not in indexed(rt)
    assert indexed(rt) == expected(rt)
    # ... and when it then succeeds it is in completed, once
    complete(rt, failed)
    assert indexed(rt)["status:completed"] == {done, failed}
    # And a cancelled run retried and failing again moves from cancelled to failed
    rt.runs.retry(cancelled)
    assert "status:cancelled" not in indexed(rt)
    fail(rt, cancelled, "ValueError: bad input 7")
    assert indexed(rt)["status:failed"] == {reaped, cancelled}
    assert indexed(rt) == expected(rt)

    # When retention deletes every ended run
    ret = Retention(rt.redis, k, rt.settings.run_retention, rt.settings.event_retention)
    wait_until(lambda: ret.tick() is not None and int(rt.redis.zcard(k.runs)) == 1, 20)
    # Then no index keeps a deleted run, and no signature without runs is listed
    assert indexed(rt) == {}
    assert rt.redis.zcard(k.runs_sigs) == 0
    assert rt.runs.exists(active)


def page_all(rt: Runtime, flt: RunFilter, limit: int) -> tuple[list[str], list[RunPage]]:
    """Every page of a filtered list, following cursors to the end."""
    ids: list[str] = []
    pages: list[RunPage] = []
    after = None
    for _ in range(1000):
        pg = find_runs(rt.redis, rt.keys, flt, limit=limit, after=after)
        pages.append(pg)
        ids += [r.id for r in pg.runs]
        if pg.next_cursor is None:
            assert pg.exhausted
            return ids, pages
        after = pg.next_cursor
    raise AssertionError("no end")


def history(rt: Runtime, rare: int, common: int) -> tuple[list[str], str]:
    """``rare`` old failed runs of skill ``idx``, then ``common`` newer skipped runs of two
    skills, and one old queued run; returns the failed ids newest first and the old queued
    run's id."""
    t0 = now_ms() - 3_600_000
    failed = []
    for i in range(rare):
        rid = create(rt, at_ms=t0 + i)
        fail(rt, rid)
        failed.append(rid)
    old_queued = create(rt, at_ms=t0 + rare)
    for i in range(common):
        create(rt, skill=("idx", "other")[i % 2], at_ms=t0 + 1000 + i, skipped="rate limit")
    return failed[::-1], old_queued


def test_rare_old_matches_fill_a_complete_page_reading_only_them(cluster_: Cluster) -> None:
    rt = cluster_.rt
    # Given 30 failed runs behind 6,000 newer runs (more than one call's scan limit)
    failed, _ = history(rt, rare=30, common=6000)
    # When the failed runs are listed, by status, by signature prefix, with and without skill
    for flt in (
        RunFilter(status="failed"),
        RunFilter(signature=signature(ERR)[:5]),
        RunFilter(signature=signature(ERR)),
        RunFilter(skill=SKILL, status="failed"),
        RunFilter(status="failed", signature=signature(ERR)[:8]),
    ):
        first = find_runs(rt.redis, rt.keys, flt, limit=30)
        # Then the first page holds all of them, says it is complete, and read only them
        assert [r.id for r in first.runs] == failed, flt
        assert first.exhausted and first.next_cursor is None, flt
        assert first.scanned <= 30, (flt, first.scanned)
        # And pages of 7 give the same runs in the same order, the last one complete
        ids, pages = page_all(rt, flt, 7)
        assert ids == failed and pages[-1].exhausted
    # And a time range cuts the index like the time index
    lo = rt.runs.get(failed[19]).created_at
    pg = find_runs(rt.redis, rt.keys, RunFilter(status="failed", since_ms=lo), limit=50)
    assert [r.id for r in pg.runs] == failed[:20] and pg.exhausted
    # And an active status is answered from the runner's own sets
    pg = find_runs(rt.redis, rt.keys, RunFilter(status="queued"), limit=50)
    assert len(pg.runs) == 1 and pg.exhausted and pg.scanned == 1
    # And a signature nobody has gives an empty, complete page at once
    pg = find_runs(rt.redis, rt.keys, RunFilter(signature="zzzz"), limit=50)
    assert pg.runs == [] and pg.exhausted


def test_runs_written_before_the_indexes_are_found_completely_after_the_upgrade(
    cluster_: Cluster,
) -> None:
    rt, k = cluster_.rt, cluster_.rt.keys
    # Given history in today's format: the same records, and no status/signature index key
    failed, old_queued = history(rt, rare=30, common=3000)
    gone = [str(x) for x in rt.redis.scan_iter(f"{k.prefix}:runs:*", count=1000)]
    gone = [x for x in gone if not x.startswith(f"{k.prefix}:runs:skill:")]
    assert k.runs_by_status("failed") in gone and k.runs_sigs in gone
    rt.redis.delete(*gone)
    assert rt.redis.get(k.runs_indexed) is None
    # And after the upgrade, an old queued run fails (new code: indexed as it ends)
    fail(rt, old_queued)
    want = [old_queued, *failed]
    # When the failed runs are paged through while the backfill is still walking (each
    # filtered call walks one page of it)
    ids, pages = page_all(rt, RunFilter(status="failed"), 7)
    # Then every one is listed once, in order, and the list ends complete
    assert ids == want and pages[-1].exhausted
    ids, _ = page_all(rt, RunFilter(signature=signature(ERR)[:6]), 11)
    assert ids == want
    # When the scheduler's retention ticks have finished the backfill
    ret = Retention(rt.redis, k, rt.settings.run_retention, rt.settings.event_retention)
    wait_until(lambda: ret.tick() is not None and IndexBackfill(rt.redis, k).done(), 30)
    assert rt.redis.get(k.runs_indexed) == DONE
    # Then the indexes hold exactly what the records say, and one page answers in full
    assert indexed(rt) == expected(rt)
    pg = find_runs(rt.redis, rt.keys, RunFilter(status="failed"), limit=50)
    assert [r.id for r in pg.runs] == want and pg.exhausted and pg.scanned <= 31
    assert json.loads(rt.redis.hget(k.run(old_queued), "trigger") or "{}")["type"] == "manual"
