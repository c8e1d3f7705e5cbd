"""The browser assets are vendored with their version and checksum (no CDN at run time): every
file VENDOR.md lists is present with its sha256, and every page loads scripts from this origin
only."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from loopwright.api import pages

STATIC = Path(pages.HERE) / "static"
TEMPLATES = Path(pages.HERE) / "templates"
TESTS = Path(__file__).parent


def test_vendored_files_match_the_checksums_in_vendor_md() -> None:
    table = (STATIC / "vendor" / "VENDOR.md").read_text()
    rows = re.findall(r"\| `([^`]+\.js)` \|[^|]+\|[^|]+\|[^|]+\| `([0-9a-f]{64})` \|", table)
    assert len(rows) == 2
    for name, digest in rows:
        assert hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest() == digest
    axe = re.search(r"`tests/assets/(axe-core-[\d.]+\.min\.js)`.*?`([0-9a-f]{64})`", table, re.S)
    assert axe is not None
    assert hashlib.sha256((TESTS / "assets" / axe.group(1)).read_bytes()).hexdigest() == axe.group(
        2
    )


def test_templates_load_scripts_from_this_origin_only_and_mark_nothing_safe() -> None:
    for path in TEMPLATES.glob("*.html"):
        text = path.read_text()
        for src in re.findall(r"<script[^>]*src=\"([^\"]+)\"", text):
            assert src.startswith("/static/"), (path.name, src)
        assert "| safe" not in text and "|safe" not in text, path.name
        assert "<script>" not in text, f"{path.name}: inline script (the CSP forbids it)"
