"""The platform inbox: notices from skills (``ctx.tools.notify``), the platform (stopped
chains, failure alerts, recoveries), the weekly review and security checks, kept bounded,
filterable and acknowledgeable. It imports only the foundation so every layer can post.

``Inbox(redis, keys, settings).post(level=..., title=..., ...)`` returns the notice's id; see
``inbox/store.py`` for the storage and ``docs/inbox.md`` for the model.
"""

from loopwright.inbox.model import LEVELS, SOURCES, Draft, Notice, normal_level
from loopwright.inbox.store import Inbox, InboxQuotaError

__all__ = ["LEVELS", "SOURCES", "Draft", "Inbox", "InboxQuotaError", "Notice", "normal_level"]
