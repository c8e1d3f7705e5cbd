"""Review reports over the API and the pages (issue 13): listed newest first, one as JSON or
Markdown, the report page showing the self-contained HTML report in a sandboxed frame with
every attacker-controlled string escaped. A real `loopwright serve`, raw HTTP."""

from __future__ import annotations

import html
import re

from loopwright.review.store import save_review
from test_api import Api, api  # noqa: F401  (the served-API fixture)
from test_review_report import DAY0, EVIL, sample_review


def test_reports_api_and_pages_list_show_and_escape(api: Api) -> None:  # noqa: F811
    rt = api.cluster.rt
    save_review(rt.redis, rt.keys, sample_review("r-old", DAY0), keep=10)
    save_review(rt.redis, rt.keys, sample_review("r-new", DAY0 + 7 * 86_400_000), keep=10)
    read = api.token("read")
    for path in ("/api/v1/reports", "/api/v1/reports/r-new", "/reports", "/reports/r-new"):
        assert api.call("GET", path).status_code == 401, path
        assert api.call("GET", path, "wrong").status_code == 401, path
    listed = api.call("GET", "/api/v1/reports", read)
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()] == ["r-new", "r-old"]
    assert listed.json()[0]["summary"].startswith("7 skills reviewed")
    one = api.call("GET", "/api/v1/reports/r-new", read).json()
    assert one["id"] == "r-new" and len(one["skills"]) == 7
    md = api.call("GET", "/api/v1/reports/r-new", read, params={"format": "md"})
    assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
    # Markdown is text (the attacker's string only inside code fences), never sniffed as HTML
    assert (
        md.text.startswith("# Weekly review") and md.headers["x-content-type-options"] == "nosniff"
    )
    assert api.call("GET", "/api/v1/reports/r-new", read, params={"format": "x"}).status_code == 422
    missing = api.call("GET", "/api/v1/reports/nope", read)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    bad_id = api.call("GET", "/api/v1/reports/%3Cscript%3E", read)
    assert bad_id.status_code == 400 and "<script>" not in bad_id.text
    page = api.call("GET", "/reports", read)
    assert page.status_code == 200 and 'href="/reports/r-new"' in page.text
    shown = api.call("GET", "/reports/r-new", read)
    assert shown.status_code == 200
    # The report sits, escaped, in a sandboxed frame: no tag of it is live in the page, and
    # inside the frame the attacker's text is escaped once more by the report itself.
    assert EVIL not in shown.text and "<script>alert" not in shown.text
    frame = re.search(r'<iframe[^>]*\bsandbox\b[^>]*srcdoc="([^"]*)"', shown.text)
    assert frame is not None
    doc = html.unescape(frame.group(1))
    assert doc.startswith("<!DOCTYPE html>") and "Content-Security-Policy" in doc
    assert "<script" not in doc and "&lt;script&gt;alert(" in doc
    assert api.call("GET", "/reports/nope", read).status_code == 404
