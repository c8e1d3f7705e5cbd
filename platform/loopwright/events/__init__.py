"""Events: accepted into a Redis Stream before the sender gets an answer (the bus) and matched
against triggers and waiters. Routing them is scheduling: :mod:`loopwright.scheduler.router`."""

from loopwright.events.bus import EventBus, SentEvent

__all__ = ["EventBus", "SentEvent"]
