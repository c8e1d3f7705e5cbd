"""Starting runs from triggers exactly once per (source, skill)."""

from __future__ import annotations

from typing import Any

from loopwright.runner.runtime import Runtime
from loopwright.runner.store import new_run_id
from loopwright.scheduler.catalog import Entry
from loopwright.sdk.names import is_reserved


def start_once(
    rt: Runtime,
    entry: Entry,
    source_id: str,
    event: dict[str, Any],
    trigger: dict[str, Any],
    *,
    skipped: str | None = None,
    wake_at: int | None = None,
    admitted_at: int | None = None,
) -> tuple[str, bool]:
    """Create the run for (``source_id``, skill) unless it exists; (run id, created now).

    The run id is claimed first (SET NX) and the run created second, so a router or scheduler
    that dies between the two leaves a claim whose run the next attempt creates: a trigger
    source starts exactly one run per skill however often it is processed.
    """
    k = rt.keys
    claim = k.trigger_done(source_id, entry.name)
    run_id = new_run_id()
    if not rt.redis.set(claim, run_id, nx=True, ex=rt.settings.event_retention):
        run_id = str(rt.redis.get(claim) or run_id)
        # The run exists, or retention deleted it (its tombstone): either way it was started.
        if rt.redis.exists(k.run(run_id), k.tombstone(run_id)):
            return run_id, False
    res = rt.runs.create_if_absent(
        skill=entry.name,
        version=entry.version,
        run_id=run_id,
        event=event,
        trigger=trigger,
        spec=entry.spec,
        skipped=skipped,
        wake_at=wake_at,
        admitted_at=admitted_at,
        require_active=True,  # a start racing a delete or a pause creates nothing
        trusted=is_reserved(entry.name),  # only the built-in installer registers these names
    )
    return run_id, res.created
