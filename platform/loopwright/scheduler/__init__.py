"""The scheduler: wakes parked runs, reaps expired leases, re-dispatches lost dispatches, fires
cron ticks and routes events (:mod:`loopwright.scheduler.router`)."""

from loopwright.scheduler.loop import Scheduler, TickStats

__all__ = ["Scheduler", "TickStats"]
