"""Events: accepted into a Redis Stream before the sender gets an answer, routed to triggers
and waiting runs by a consumer group."""

from loopwright.events.bus import EventBus, SentEvent

__all__ = ["EventBus", "SentEvent"]
