"""Publishing a finished review: store it, write its report files, tell the inbox.

One call for the ``weekly-review`` skill's last step. Every part is idempotent — the store
replaces a review saved under its id, the files are rewritten with the same bytes (through a
temporary file renamed into place), the inbox post is keyed by the review id — so the step
re-run after a crash repeats nothing a person would see twice.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from loopwright.review.notify import post_summary
from loopwright.review.report import render_html, render_markdown
from loopwright.review.store import check_id, save_review
from loopwright.review.types import Review
from loopwright.runner.runtime import Runtime


@dataclass(frozen=True, slots=True)
class Published:
    """Where a review went: its report files and whether the inbox was told just now."""

    markdown: Path
    html: Path
    posted: bool


def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a reader sees the old file or the whole new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def publish(rt: Runtime, review: Review, *, notify: bool = True) -> Published:
    """Store ``review`` (capped at ``LOOPWRIGHT_REVIEW_KEEP``), write ``DATA_DIR/reviews/ID.md``
    and ``ID.html``, and post its summary to the inbox once (unless ``notify`` is False)."""
    s = rt.settings
    save_review(rt.redis, rt.keys, review, s.review_keep)
    folder = Path(s.data_dir) / "reviews"
    base = folder / check_id(review.id)
    md, html = base.with_suffix(".md"), base.with_suffix(".html")
    write_atomic(md, render_markdown(review, s.review_min_success))
    write_atomic(html, render_html(review, s.review_min_success))
    posted = post_summary(rt, review) if notify else False
    return Published(md, html, posted)
