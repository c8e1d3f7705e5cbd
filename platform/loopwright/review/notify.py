"""Telling people a review is done: its summary in the platform inbox, once per review.

The notice goes through the inbox's own posting script (``loopwright.inbox``) with the review
id as its dedupe key, so a review step re-run after a crash never posts twice; with
``LOOPWRIGHT_ALERT_WEBHOOK_SECRET`` set, the inbox also delivers it to the Slack-compatible
webhook.
"""

from __future__ import annotations

from loopwright.inbox import Inbox
from loopwright.review.report import clean, decision_words, summary_line
from loopwright.review.types import Decision, Review
from loopwright.runner.runtime import Runtime

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
    inbox = Inbox(rt.redis, rt.keys, rt.settings)
    draft = inbox.draft(
        level="warning" if acted else "info",
        title=f"weekly review: {summary_line(review)}",
        body=summary_message(review),
        source="review",
        dedupe_key=f"review:{review.id}",
    )
    status, _ = inbox.post_draft(draft)
    return status == 1
