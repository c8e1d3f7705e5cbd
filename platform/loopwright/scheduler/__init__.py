"""The scheduler: wakes parked runs, reaps expired leases, re-dispatches lost dispatches."""

from loopwright.scheduler.loop import Scheduler, TickStats

__all__ = ["Scheduler", "TickStats"]
