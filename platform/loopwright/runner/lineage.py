"""Run lineage: how far a run is from the event or run that started its chain, and that root.

Events sent by runs start runs, which send events; skills invoke skills. Without a bound, one
seed event can start runs forever (a self-triggering pair) or exponentially (a fan-out). Each
event and run carries its ``hop`` (0 for what a person, a cron tick or an outside sender
started) and its ``root`` (the id of that first event or run). An event a run sends, and a
child it invokes, is one hop further; a chain stops at ``max_hops`` (AWS Lambda's
recursive-loop detection stops at 16), and all runs descending from one root share a budget of
``run_budget_per_root`` starts, counted in Redis.

The lineage travels inside the event dict (``hop``, ``root``) that a run stores as its
``event``, so runs stored before this existed read as hop 0, their own root.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from loopwright.runner.runtime import Runtime

ROOT_TTL_S = 7 * 86400


@dataclass(frozen=True, slots=True)
class Sender:
    """The run sending an event: its fence token and storage quota are checked and charged."""

    run_id: str
    token: str
    quota_bytes: int


@dataclass(frozen=True, slots=True)
class Lineage:
    """A run's or an event's place in its chain."""

    hop: int
    root: str

    @classmethod
    def of_event(cls, event: dict[str, Any], default_root: str) -> Lineage:
        """The lineage an event (or a run's stored event) carries; old data has none."""
        hop, root = event.get("hop"), event.get("root")
        return cls(
            hop if isinstance(hop, int) and not isinstance(hop, bool) and hop >= 0 else 0,
            root if isinstance(root, str) and root else default_root,
        )

    def next(self) -> Lineage:
        """The lineage of an event this run sends or a child it invokes."""
        return Lineage(self.hop + 1, self.root)

    def fields(self) -> dict[str, Any]:
        """What an event dict or a stream entry stores."""
        return {"hop": self.hop, "root": self.root}


def hop_refusal(rt: Runtime, nxt: Lineage, what: str) -> str | None:
    """Why ``what`` at lineage ``nxt`` may not happen (the hop limit), or None."""
    limit = rt.settings.max_hops
    if nxt.hop <= limit:
        return None
    return (
        f"{what} refused: the chain of runs started from {nxt.root} reached the hop limit of "
        f"{limit} (an event or skill that keeps starting itself?); LOOPWRIGHT_MAX_HOPS"
    )


def budget_refusal(rt: Runtime, root: str, what: str, *, charge: bool) -> str | None:
    """Why ``what`` may not start a run for ``root`` (its run budget is spent), or None.

    ``charge`` counts one run against the budget (a run is about to be started); without it the
    budget is only read (an event is about to be sent).
    """
    budget = rt.settings.run_budget_per_root
    key = rt.keys.root_runs(root)
    if charge:
        pipe = rt.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, ROOT_TTL_S)
        used = int(pipe.execute()[0])
    else:
        used = int(rt.redis.get(key) or 0)
        used += 1
    if used <= budget:
        return None
    return (
        f"{what} refused: runs started from {root} used up their budget of {budget} runs "
        f"(a fan-out of events or invokes?); LOOPWRIGHT_RUN_BUDGET_PER_ROOT"
    )


def post_limit_notice(rt: Runtime, root: str, limit: str, message: str, run_id: str = "") -> None:
    """Tell the inbox, once per root and limit, that a chain was stopped."""
    k = rt.keys
    if rt.redis.exists(k.limit_notice(root, limit)):
        return
    # The dedupe key makes a retry after a crash before the marker post nothing twice; the
    # marker keeps it to one per root even after the inbox has dropped the notice.
    from loopwright.inbox import Inbox  # only when a chain is stopped

    Inbox(rt.redis, k, rt.settings).post(
        level="error",
        source="platform",
        title=f"chain of runs stopped ({limit})",
        body=message,
        run_id=run_id or None,
        dedupe_key=f"limit:{root}:{limit}",
    )
    rt.redis.set(k.limit_notice(root, limit), "1", ex=ROOT_TTL_S)
