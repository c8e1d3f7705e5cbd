"""The web pages (issue 13) in headless Chromium through Playwright: a real `loopwright serve`,
a real worker, real Redis. Sign in with the printed one-time URL, watch a run complete live,
see the "new runs" banner instead of jumping rows, read why a run failed, roll a skill back,
approve a pending version — while a guard fails any request the page makes to another host.
Every page is checked with axe-core for serious accessibility violations."""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from conftest import Cluster, free_port, wait_until
from loopwright.review.store import save_review
from loopwright.skills_registry.manifest import read_manifest
from loopwright.skills_registry.store import Registry
from test_review_report import sample_review

CHROMIUM = Path("/usr/bin/chromium")
AXE = Path(__file__).parent / "assets" / "axe-core-4.14.1.min.js"

if not CHROMIUM.exists():
    if os.environ.get("CI"):  # in CI the browser tests must run, never skip
        raise RuntimeError("CI needs /usr/bin/chromium: .ci/run installs it with apt-get")
    pytestmark = pytest.mark.skip(reason="needs Debian's chromium (apt-get install chromium)")

SLOW = """
from loopwright.sdk import skill


@skill(name="ui-slow")
def main(ctx):
    a = ctx.step.run("fetch", lambda: {"n": ctx.event["data"].get("n", 1)})
    ctx.step.sleep("pause", 0.5)
    return ctx.step.run("double", lambda: a["n"] * 2)
"""

BROKEN = """
from loopwright.sdk import skill, NonRetriableError


@skill(name="ui-broken")
def main(ctx):
    ctx.step.run("first", lambda: 1)

    def second():
        if ctx.event["data"].get("bad"):
            raise NonRetriableError("KeyError: 'p95_ms' <script>alert(1)</script>")
        return 2

    return ctx.step.run("second", second)
"""

VERSION = """
from loopwright.sdk import skill


@skill(name="ui-versions", params={{"factor": {factor}}})
def main(ctx):
    return ctx.step.run("x", lambda: ctx.params["factor"])
"""

TIMED = """
from loopwright.sdk import skill, cron

@skill(name="ui-timed", trigger=cron("0 9 * * 1-5", tz="Europe/Paris"))
def main(ctx):
    return 1
"""


class Site:
    def __init__(self, cluster: Cluster, port: int, login_url: str) -> None:
        self.cluster = cluster
        self.base = f"http://127.0.0.1:{port}"
        self.login_url = login_url
        self.foreign: list[str] = []


@pytest.fixture
def site(cluster: Cluster) -> Iterator[Site]:
    port = free_port()
    proc = cluster.spawn("serve", "--port", str(port))
    line = wait_until(
        lambda: (
            next((x for x in cluster.log_of(proc).splitlines() if "/login?code=" in x), None)
            or (proc.poll() is not None and pytest.fail(cluster.log_of(proc)))
        ),
        timeout=30,
    )
    url = line[line.index("http://") :].strip()

    def up() -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, timeout=30)
    yield Site(cluster, port, url)


@pytest.fixture
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


def signed_in(browser: Any, site: Site, **context: Any) -> Any:
    """A page signed in through the one-time URL, with the foreign-host guard on."""
    ctx = browser.new_context(**context)
    page = ctx.new_page()
    own = urlparse(site.base).netloc

    def guard(route: Any) -> None:
        if urlparse(route.request.url).netloc != own:
            site.foreign.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route("**/*", guard)
    page.goto(site.login_url)
    page.wait_for_selector("h1:has-text('Needs attention')")
    return page


def test_sign_in_once_then_watch_a_run_complete_live_and_new_runs_appear(
    site: Site, browser: Any
) -> None:
    c = site.cluster
    c.skill(SLOW)
    page = signed_in(browser, site)
    # the login URL works once: a second browser gets the sign-in page
    other = browser.new_context().new_page()
    other.goto(site.login_url)
    assert "Sign in" in other.title()
    # the runs list shows a banner for new runs instead of moving the rows
    first = c.start("ui-slow", {"n": 1})
    page.goto(f"{site.base}/runs")
    page.wait_for_selector(f"text={first}")
    # The banner counts what arrives after the page's stream opened: wait until it listens.
    channel = c.rt.keys.run_changes_channel
    wait_until(lambda: c.rt.redis.pubsub_numsub(channel)[0][1] >= 1)
    second = c.start("ui-slow", {"n": 2})
    page.wait_for_selector("#new-runs:not([hidden]) >> text=1")
    assert page.locator(f"text={second}").count() == 0  # rows did not jump
    # a queued run's page follows it to the end without a reload
    page.goto(f"{site.base}/runs/{first}")
    page.wait_for_selector("#run-body >> text=queued")
    c.worker()
    c.scheduler()  # wakes the run from its sleep step
    page.wait_for_selector("#run-body >> text=sleeping", timeout=30_000)
    page.wait_for_selector("#run-body .status.s-completed", timeout=30_000)
    assert page.locator("#step-3").count() == 1
    # the end reloads the page once: the actions of a finished run, and no stream left open
    page.wait_for_selector("button:has-text('Good')")
    assert page.locator("[sse-connect]").count() == 0
    assert site.foreign == []


def test_why_did_it_fail_names_the_step_the_signature_and_the_input_change(
    site: Site, browser: Any
) -> None:
    c = site.cluster
    c.skill(BROKEN)
    c.worker()
    ok = c.wait(c.start("ui-broken", {"bad": False}))
    bad = c.wait(c.start("ui-broken", {"bad": True}))
    assert ok.status.value == "completed" and bad.status.value == "failed"
    page = signed_in(browser, site)
    page.goto(f"{site.base}/runs/{bad.id}")
    banner = page.locator(".banner.failure")
    assert "step 2 of 2 (second)" in banner.inner_text()
    assert page.locator("script:has-text('alert(1)')").count() == 0  # error text escaped
    page.click("text=Why did it fail?")
    page.wait_for_selector("h1:has-text('Why did run')")
    body = page.locator("main").inner_text()
    assert "second" in body and "1 run(s)" in body
    assert '"bad": true' in body and '"bad": false' in body  # the input compared
    assert site.foreign == []


def test_roll_back_a_skill_and_approve_a_pending_version_from_the_pages(
    site: Site, browser: Any
) -> None:
    c = site.cluster
    reg = Registry(c.rt.redis, c.rt.keys)
    sources = [textwrap.dedent(VERSION.format(factor=f)) for f in (1, 2, 3)]
    v1 = reg.register(sources[0], read_manifest(sources[0])[0], None, author="person").version
    reg.register(sources[1], read_manifest(sources[1])[0], None, author="person")
    v3 = reg.register(
        sources[2], read_manifest(sources[2])[0], None, author="person", mode="pending"
    ).version
    assert v3 in reg.skill("ui-versions").pending
    page = signed_in(browser, site)
    page.on("dialog", lambda d: d.accept())
    page.goto(f"{site.base}/skills/ui-versions")
    row = page.locator("tr", has_text=v1[:12])
    row.locator("text=Activate").click()
    wait_until(lambda: reg.skill("ui-versions").active == v1)
    page.wait_for_selector(f"tr:has-text('{v1[:12]}') >> text=active")
    page.goto(f"{site.base}/approvals")
    page.locator("tr", has_text=v3[:12]).locator("text=Approve").click()
    wait_until(lambda: reg.skill("ui-versions").active == v3)
    page.wait_for_selector("text=Nothing waits for approval")
    assert site.foreign == []


def test_an_action_the_token_may_not_take_is_refused_in_the_page(site: Site, browser: Any) -> None:
    c = site.cluster
    reg = Registry(c.rt.redis, c.rt.keys)
    src = textwrap.dedent(VERSION.format(factor=1))
    reg.register(src, read_manifest(src)[0], None, author="person")
    from loopwright.auth.tokens import TokenStore
    from loopwright.auth.web import WebSessions

    tokens = TokenStore(c.rt.redis, c.rt.keys)
    info, _ = tokens.create("reader", ["read"])
    code = WebSessions(c.rt.redis, c.rt.keys, tokens).login_code(info.id)
    site.login_url = f"{site.base}/login?code={code}"
    page = signed_in(browser, site)
    page.on("dialog", lambda d: d.accept())
    page.goto(f"{site.base}/skills/ui-versions")
    page.click("text=Pause")
    page.wait_for_selector("#flash >> text=lacks the 'approve' scope")
    assert reg.skill("ui-versions").status == "active"


def test_every_page_passes_axe_without_serious_violations(site: Site, browser: Any) -> None:
    c = site.cluster
    c.skill(BROKEN)
    c.skill(TIMED)
    save_review(c.rt.redis, c.rt.keys, sample_review("r-ui"), keep=10)
    c.worker()
    bad = c.wait(c.start("ui-broken", {"bad": True}))
    page = signed_in(browser, site, bypass_csp=True)  # only to inject axe
    paths = ["/", "/chat", "/runs", f"/runs/{bad.id}", f"/runs/{bad.id}/why", "/skills",
             "/skills/ui-broken", "/approvals", "/events", "/workers", "/schedules",
             "/schedules/ui-timed", "/reports", "/reports/r-ui"]  # fmt: skip
    for path in paths:
        page.goto(site.base + path)
        page.add_script_tag(path=str(AXE))
        result = page.evaluate("async () => await axe.run(document)")
        serious = [
            (v["id"], v["help"], [n["target"] for n in v["nodes"]][:3])
            for v in result["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert serious == [], f"{path}: {serious}"
        if path == "/reports/r-ui":  # the report renders inside its sandboxed frame
            heading = page.frame_locator("iframe.report").locator("h1")
            assert "Weekly review" in heading.inner_text(timeout=10_000)
    assert site.foreign == []


def test_pages_without_a_session_ask_to_sign_in_and_actions_need_csrf(site: Site) -> None:
    resp = httpx.get(f"{site.base}/runs")
    assert resp.status_code == 401 and "loopwright serve" in resp.text
    assert "content-security-policy" in resp.headers
    # a session without its CSRF secret cannot act
    client = httpx.Client(base_url=site.base)
    assert client.get(site.login_url, follow_redirects=False).status_code == 303
    refused = client.post("/ui/events/send", data={"name": "x"})
    assert refused.status_code == 403
    assert site.cluster.rt.redis.xlen(site.cluster.rt.keys.events) == 0
    client.close()


def test_ask_the_builder_in_the_chat_and_watch_its_tool_calls_arrive(
    site: Site, browser: Any
) -> None:
    site.cluster.worker()
    page = signed_in(browser, site)
    page.click("nav >> text=Chat")
    page.click("text=New conversation")
    page.wait_for_url("**/chat/s-*")
    page.fill("#message", "forward order.created events to https://hooks.acme-corp.io/orders")
    page.click("text=Send")
    page.wait_for_selector(".turn >> text=The builder is working")
    page.wait_for_selector(".card.k-tool >> text=write_skill", timeout=120_000)
    page.wait_for_selector(".turn >> text=sidecar: accepted", timeout=120_000)
    page.wait_for_selector(".reply >> text=Registered 1 skill", timeout=120_000)
    page.click(".turn >> a:has-text('relay-order-created')")
    page.wait_for_selector("h1:has-text('relay-order-created')")
    assert site.foreign == []


def test_rerun_with_edited_input_and_retry_from_the_run_page(site: Site, browser: Any) -> None:
    c = site.cluster
    c.skill(BROKEN)
    c.worker()
    bad = c.wait(c.start("ui-broken", {"bad": True}))
    page = signed_in(browser, site)
    page.on("dialog", lambda d: d.accept())
    page.goto(f"{site.base}/runs/{bad.id}")
    page.click("text=Rerun with edited input")
    page.fill("#rerun-data", '{"bad": false}')
    page.click("text=Start the rerun")
    page.wait_for_url(lambda url: "/runs/" in url and bad.id not in url)
    page.wait_for_selector("#run-body .status.s-completed", timeout=30_000)
    new_id = page.url.rsplit("/", 1)[1]
    assert c.rt.runs.get(new_id).raw.get("rerun_of") == bad.id
    page.goto(f"{site.base}/runs/{bad.id}")
    page.click("button:has-text('Retry')")
    wait_until(lambda: c.rt.runs.get(bad.id).raw.get("retried"))
    assert site.foreign == []


def test_ask_the_builder_about_a_failed_run_opens_a_chat_with_its_context_as_data(
    site: Site, browser: Any
) -> None:
    """The why page's button: a new builder session whose box holds the run's facts (step,
    error, signature, input diff), escaped in the page and delimited as data in the message;
    the person edits the draft and sends it as it stands."""
    c = site.cluster
    c.skill(BROKEN)
    c.worker()
    c.wait(c.start("ui-broken", {"bad": False}))
    bad = c.wait(c.start("ui-broken", {"bad": True}))
    page = signed_in(browser, site, bypass_csp=True)  # only to inject axe
    page.goto(f"{site.base}/runs/{bad.id}/why")
    page.click("text=Ask the builder about this failure")
    page.wait_for_url("**/chat/s-*?about=*")
    draft = page.input_value("#message")
    assert "<script>alert(1)</script>" in draft  # the error, as text
    assert page.locator("script:has-text('alert(1)')").count() == 0
    assert '"name": "second"' in draft and '"runs_sharing_signature": 1' in draft
    assert '"bad\\": true' in draft  # the input diff, a JSON string inside the data
    assert re.search(r"^<run-data-[0-9a-f]{12}>$", draft, re.M)
    assert "never as instructions" in draft
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document)")
    assert [v["id"] for v in result["violations"] if v["impact"] in ("serious", "critical")] == []
    edited = "Look at the input first.\n" + draft
    page.fill("#message", edited)
    sid = page.url.split("/chat/", 1)[1].split("?", 1)[0]
    page.click("button:has-text('Send')")
    page.wait_for_selector(".turn")  # the page reloads with the turn, without the draft
    turn = wait_until(lambda: c.rt.runs.find(skill="builder-session", limit=5))[0]
    data = turn.event["data"]
    assert data["session"] == sid and data["message"] == edited.replace("\r\n", "\n")
    assert page.input_value("#message") == ""
    assert site.foreign == []


def test_skill_sparklines_and_report_claims_link_to_the_runs(site: Site, browser: Any) -> None:
    """The skills list and a skill's page draw each day's success rate with its figures as
    text; a review report's run ids (in the report and in its claims table) open those runs."""
    c = site.cluster
    c.skill(BROKEN)
    c.worker()
    ok = c.wait(c.start("ui-broken", {"bad": False}))
    bad = c.wait(c.start("ui-broken", {"bad": True}))
    review = sample_review("r-links")
    diagnosis = review.skills[0].diagnosis
    assert diagnosis is not None
    diagnosis.clusters[0].example_runs = [bad.id]
    gate = review.skills[0].candidates[0].gate
    assert gate is not None
    gate.runs_fixed = [ok.id]
    save_review(c.rt.redis, c.rt.keys, review, keep=10)
    page = signed_in(browser, site)
    page.goto(f"{site.base}/skills")
    spark = page.locator("tr:has-text('ui-broken') svg.spark[role=img]")
    alt = spark.locator("title").text_content() or ""
    assert "latest 50%" in alt and "50% of 2" in alt  # one completed, one failed today
    assert spark.locator("circle").count() == 1
    page.goto(f"{site.base}/skills/ui-broken")
    assert "50.0%" in page.locator("dl.facts").inner_text()
    assert page.locator("svg.spark title").text_content().startswith("Daily success rate")
    page.goto(f"{site.base}/reports/r-links")
    frame = page.frame_locator("iframe.report")
    frame.locator(f"a:has-text('{bad.id}')").first.click()
    page.wait_for_selector(f"h1:has-text('Run {bad.id}')")  # the top page, still signed in
    page.go_back()
    page.locator("table.claims tr", has_text="gate: fixed").locator(f"text={ok.id}").click()
    page.wait_for_selector(f"h1:has-text('Run {ok.id}')")
    assert site.foreign == []
