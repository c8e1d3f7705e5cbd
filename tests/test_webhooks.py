"""Webhooks (issue 13, "Events from the outside world"): deliveries signed the way GitHub,
Stripe and a generic HMAC sender sign, refused when unsigned, badly signed, replayed, stale or
oversized, and turned into deduplicated events — unit checks of the verifier plus a real
`loopwright serve` receiving raw HTTP on 127.0.0.1 and a real scheduler starting the skill the
event triggers."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from conftest import Cluster, free_port, wait_until
from loopwright.errors import UserError
from loopwright.events.webhooks import Source, WebhookError, parse_sources, verify

SECRET = "s3cret-for-tests"
GITHUB = Source("github", "github", "GH")
STRIPE = Source("stripe", "stripe", "ST", tolerance_s=300)
GENERIC = Source("acme", "hmac", "AC")


def sign(payload: bytes) -> str:
    return hmac.new(SECRET.encode(), payload, hashlib.sha256).hexdigest()


def github_headers(body: bytes, delivery: str = "d-1", event: str = "push") -> dict[str, str]:
    return {
        "X-Hub-Signature-256": "sha256=" + sign(body),
        "X-GitHub-Delivery": delivery,
        "X-GitHub-Event": event,
        "Content-Type": "application/json",
    }


def stripe_headers(body: bytes, ts: int) -> dict[str, str]:
    return {"Stripe-Signature": f"t={ts},v1={sign(f'{ts}.'.encode() + body)}"}


def test_github_signature_is_checked_over_the_exact_body() -> None:
    body = b'{"ref": "refs/heads/main"}'
    d = verify(GITHUB, SECRET, github_headers(body), body)
    assert (d.event_name, d.event_id, d.data) == (
        "github.push",
        "github:d-1",
        {"ref": "refs/heads/main"},
    )
    with pytest.raises(WebhookError, match="bad signature"):
        verify(GITHUB, SECRET, github_headers(body), body + b" ")
    with pytest.raises(WebhookError, match="bad signature"):
        verify(GITHUB, "another-secret", github_headers(body), body)
    unsigned = {k: v for k, v in github_headers(body).items() if k != "X-Hub-Signature-256"}
    with pytest.raises(WebhookError, match="unsigned"):
        verify(GITHUB, SECRET, unsigned, body)
    with pytest.raises(WebhookError) as no_type:
        verify(GITHUB, SECRET, {**github_headers(body), "X-GitHub-Event": ""}, body)
    assert no_type.value.status == 400
    hostile = github_headers(body, delivery="../../x y", event="push\n<script>")
    d = verify(GITHUB, SECRET, hostile, body)
    assert d.event_id == "github:../../x_y" and d.event_name == "github.push__script_"


def test_stripe_signature_needs_a_fresh_timestamp() -> None:
    now = 1_800_000_000
    body = json.dumps({"id": "evt_1", "type": "invoice.paid", "data": {}}).encode()
    d = verify(STRIPE, SECRET, stripe_headers(body, now - 10), body, now=now)
    assert (d.event_name, d.event_id) == ("stripe.invoice.paid", "stripe:evt_1")
    with pytest.raises(WebhookError, match="tolerance"):
        verify(STRIPE, SECRET, stripe_headers(body, now - 301), body, now=now)  # replayed later
    with pytest.raises(WebhookError, match="bad signature"):
        tampered = body.replace(b"invoice.paid", b"invoice.void")
        verify(STRIPE, SECRET, stripe_headers(body, now), tampered, now=now)
    rotated = {"Stripe-Signature": f"t={now},v1=00ff,v1={sign(f'{now}.'.encode() + body)}"}
    assert verify(STRIPE, SECRET, rotated, body, now=now).event_id == "stripe:evt_1"
    with pytest.raises(WebhookError, match="timestamp"):
        verify(STRIPE, SECRET, {"Stripe-Signature": "v1=abc"}, body, now=now)


def test_generic_hmac_signs_timestamp_and_body_and_wants_json() -> None:
    now = 1_800_000_000
    body = b'{"type": "job.done", "id": "42"}'
    headers = {
        "X-Loopwright-Signature": "sha256=" + sign(f"{now}.".encode() + body),
        "X-Loopwright-Timestamp": str(now),
    }
    d = verify(GENERIC, SECRET, headers, body, now=now)
    assert (d.event_name, d.event_id) == ("acme.job.done", "acme:42")
    text = b"not json"
    headers_text = {
        "X-Loopwright-Signature": "sha256=" + sign(f"{now}.".encode() + text),
        "X-Loopwright-Timestamp": str(now),
    }
    with pytest.raises(WebhookError) as exc:
        verify(GENERIC, SECRET, headers_text, text, now=now)
    assert exc.value.status == 415


def test_bad_source_configuration_is_named() -> None:
    with pytest.raises(UserError, match="kind"):
        parse_sources({"gh": {"kind": "gitlab", "secret": "X"}})
    with pytest.raises(UserError, match="secret"):
        parse_sources({"gh": {"kind": "github"}})
    with pytest.raises(UserError, match="source name"):
        parse_sources({"Bad Name": {"kind": "github", "secret": "X"}})


RELAY = """
from loopwright.sdk import skill, event


@skill(name="push-relay", trigger=event("github.push"))
def main(ctx):
    return ctx.step.run("ref", lambda: ctx.event["data"]["ref"])
"""


def test_served_hooks_start_the_triggered_skill_once_and_refuse_forgeries(
    make_cluster: Callable[..., Cluster],
) -> None:
    cluster = make_cluster(
        webhooks={"github": {"kind": "github", "secret": "GH"}},
        secrets={"GH": SECRET},
        webhook_max_bytes=4096,
    )
    cluster.skill(RELAY)
    cluster.worker()
    cluster.scheduler()
    port = free_port()
    proc = cluster.spawn("serve", "--port", str(port))
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)

    def up() -> bool:
        assert proc.poll() is None, cluster.log_of(proc)
        try:
            return http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, timeout=30)
    body = json.dumps({"ref": "refs/heads/main"}).encode()

    def post(b: bytes, headers: dict[str, str], source: str = "github") -> httpx.Response:
        return http.post(f"/hooks/{source}", content=b, headers=headers)

    assert post(body, {"Content-Type": "application/json"}).status_code == 401
    assert (
        post(body, {**github_headers(body), "X-Hub-Signature-256": "sha256=00"}).status_code == 401
    )
    assert post(body, github_headers(body), source="nope").status_code == 404
    big = b'{"x": "' + b"a" * 5000 + b'"}'
    assert post(big, github_headers(big)).status_code == 413
    assert cluster.rt.redis.xlen(cluster.rt.keys.events) == 0  # nothing refused was stored
    first = post(body, github_headers(body, delivery="abc"))
    assert first.status_code == 202 and first.json()["accepted"] is True
    again = post(body, github_headers(body, delivery="abc"))  # a redelivery
    assert again.status_code == 200 and again.json()["accepted"] is False

    def started() -> Any:
        runs = cluster.rt.runs.find(skill="push-relay")
        return runs if runs and runs[0].status.terminal else None

    runs = wait_until(started, timeout=30)
    assert len(runs) == 1 and runs[0].output == "refs/heads/main"
    http.close()
