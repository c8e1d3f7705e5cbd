"""Telling people a review is done: its summary in the platform inbox, once per review.

One function, :func:`post_summary`, so the inbox's own posting API (``loopwright.inbox``,
another branch) replaces its body in one place when it lands. Until then it appends to the
existing ``{p}:inbox`` list in the format the ``notify`` tool writes, with the same
idempotency marker, in one Lua script: a review re-run after a crash never posts twice.
"""

from __future__ import annotations

import json

from loopwright.review.report import clean, decision_words, summary_line
from loopwright.review.types import Decision, Review
from loopwright.runner.records import now_ms
from loopwright.runner.runtime import Runtime
from loopwright.runner.tools import INBOX_MAX
from loopwright.scripts import NAMED, named

MARKER_TTL_S = 30 * 86_400
# Atomically: append the entry to the inbox (capped) unless the review's marker says it was
# posted already. KEYS (named): sent, inbox   ARGV (named): entry, ttl (s), cap
POST_LUA = (
    NAMED
    + """
if not redis.call('SET', K.sent, '1', 'NX', 'EX', A.ttl) then return 0 end
redis.call('RPUSH', K.inbox, A.entry)
redis.call('LTRIM', K.inbox, -tonumber(A.cap), -1)
return 1
"""
)
QUIET = {Decision.HEALTHY.value, Decision.INSUFFICIENT_DATA.value, Decision.PLATFORM_ONLY.value}


def summary_message(review: Review) -> str:
    """The inbox body: the summary line, then one line per skill the review acted on."""
    lines = [summary_line(review)]
    for s in review.skills:
        if str(s.decision) in QUIET:
            continue
        reason = f": {clean(s.decision_reason, 300)}" if s.decision_reason else ""
        lines.append(f"- {clean(s.skill, 100)}: {decision_words(str(s.decision))}{reason}")
    lines.append(f"loopwright review show {review.id}")
    return "\n".join(lines)


def post_summary(rt: Runtime, review: Review) -> bool:
    """Post the review's summary to the inbox once (keyed by the review id); False when it was
    posted already."""
    acted = any(str(s.decision) not in QUIET for s in review.skills)
    key = f"review:{review.id}"
    entry = {
        "ts": now_ms(),
        "run_id": "",
        "skill": "",
        "level": "warning" if acted else "info",
        "title": f"weekly review: {summary_line(review)}",
        "message": summary_message(review)[:8000],
        "idempotency_key": key,
        "source": "review",
    }
    ks, args = named(
        {"sent": rt.keys.inbox_sent(key), "inbox": rt.keys.inbox},
        {"entry": json.dumps(entry), "ttl": MARKER_TTL_S, "cap": INBOX_MAX},
    )
    return int(rt.redis.eval(POST_LUA, len(ks), *ks, *args)) == 1
