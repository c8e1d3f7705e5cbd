"""Declared capabilities hold at run time (issue 9 item 12) and events have access control
(item 13): an alias that static reading cannot see (``s = ctx.step``) is refused by the host,
in process, in both sandbox backends and in the sidecar's test harness; a skill sends and waits
only for the event names it declares (``*`` one segment; an event trigger implies receiving);
a version registered before declarations existed keeps running until it is resubmitted."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from typing import Any

from conftest import Cluster
from loopwright.sdk.capabilities import allowed_events, undeclared_event
from loopwright.sdk.names import event_matches
from loopwright.sidecar.pipeline import Sidecar
from loopwright.skills_registry.store import Registry

SMOKE = [{"name": "smoke", "event": {}, "expect": {"status": "completed"}}]

ALIAS_LLM = """
from loopwright.sdk import skill

@skill(name="alias-llm", retries=0)
def main(ctx):
    s = ctx.step
    return s.llm("ask", "hello")
"""

ALIAS_SEND = """
from loopwright.sdk import skill

@skill(name="alias-send", retries=0)
def main(ctx):
    s = ctx.step
    return s.send_event("emit", "order.created", {"n": 1})
"""

SENDER = """
from loopwright.sdk import skill

@skill(name="sender", retries=0, tools=["events"]{decl})
def main(ctx):
    s = ctx.step
    return s.send_event("emit", ctx.event["data"]["event"], {{"card": "4242"}})
"""

RECEIVER = """
from loopwright.sdk import skill

@skill(name="receiver", retries=0{decl})
def main(ctx):
    w = ctx.step
    return w.wait_for_event("wait", ctx.event["data"]["event"], timeout=60)
"""


def _skill(cluster: Cluster, source: str) -> str:
    return cluster.skill(textwrap.dedent(source))


def _run(cluster: Cluster, skill: str, data: Any = None, *, trusted: bool) -> Any:
    return cluster.wait(cluster.start(skill, data, trusted=trusted))


def _events(cluster: Cluster) -> list[str]:
    entries: Any = cluster.rt.redis.xrange(cluster.rt.keys.events)
    return [str(fields["name"]) for _, fields in entries]


# The rules on their own ----------------------------------------------------------------


def test_wildcards_match_one_whole_segment() -> None:
    assert event_matches("order.*", "order.created")
    assert not event_matches("order.*", "order")
    assert not event_matches("order.*", "order.item.added")
    assert event_matches("*.completed", "payment.completed")
    assert not event_matches("payment.completed", "payment.completed.x")
    allowed = allowed_events(
        {"send": [], "receive": ["approval.*"]}, {"type": "event", "name": "x"}
    )
    assert allowed["receive"] == ["approval.*", "x"]
    why = undeclared_event("receive", "payment.completed", allowed)
    assert why is not None and "'receive': ['approval.*', 'x', 'payment.completed']" in why


# In process ----------------------------------------------------------------------------


def test_alias_tricks_are_refused_in_process(cluster: Cluster) -> None:
    cluster.worker()
    run = _run(cluster, _skill(cluster, ALIAS_LLM), trusted=True)
    assert run.status.value == "failed"
    assert "ctx.step.llm uses the 'llm' tool" in run.error and "tools=['llm']" in run.error
    run = _run(cluster, _skill(cluster, ALIAS_SEND), trusted=True)
    assert run.status.value == "failed" and "tools=['events']" in run.error
    assert _events(cluster) == []


# In the sandbox, both backends ---------------------------------------------------------


def test_alias_tricks_and_undeclared_events_are_refused_in_the_sandbox(
    sandbox_cluster: Cluster,
) -> None:
    c = sandbox_cluster
    c.worker()
    run = _run(c, _skill(c, ALIAS_LLM), trusted=False)
    assert run.status.value == "failed" and "tools=['llm']" in run.error
    run = _run(c, _skill(c, ALIAS_SEND), trusted=False)
    assert run.status.value == "failed" and "tools=['events']" in run.error
    # tools=["events"] but no events declared: a new registration must declare the name.
    sender = _skill(c, SENDER.format(decl=""))
    run = _run(c, sender, {"event": "payment.completed"}, trusted=False)
    assert run.status.value == "failed"
    assert "may not send event 'payment.completed'" in run.error
    assert "events={'send': ['payment.completed'], 'receive': []}" in run.error
    receiver = _skill(c, RECEIVER.format(decl=""))
    run = _run(c, receiver, {"event": "payment.completed"}, trusted=False)
    assert (
        run.status.value == "failed" and "may not wait for event 'payment.completed'" in run.error
    )
    assert _events(c) == []
    # Declared with a wildcard: allowed; a name the wildcard does not cover: refused.
    sender = _skill(c, SENDER.format(decl=', events={"send": ["order.*"]}'))
    run = _run(c, sender, {"event": "order.created"}, trusted=False)
    assert run.status.value == "completed", run.error
    run = _run(c, sender, {"event": "order.item.added"}, trusted=False)
    assert run.status.value == "failed" and "order.item.added" in run.error
    assert _events(c) == ["order.created"]


# Stored before declarations existed ----------------------------------------------------

# The manifest exactly as the registry stored it before ``events`` existed (no "events" key).
OLD_MANIFEST: dict[str, Any] = {
    "name": "sender",
    "description": "",
    "trigger": None,
    "retries": 0,
    "backoff": 1.0,
    "timeout": None,
    "concurrency": None,
    "concurrency_key": None,
    "rate_limit": None,
    "debounce": None,
    "idempotency": None,
    "tools": ["events"],
    "http_allow": [],
    "secrets": [],
    "params": {},
}


def test_a_legacy_stored_manifest_keeps_running_until_resubmitted(
    make_cluster: Callable[..., Cluster],
) -> None:
    c = make_cluster(sandbox_backend="process")  # the rule is host-side: one backend suffices
    c.worker()
    sender = _skill(c, SENDER.format(decl=""))
    version = c.rt.sources.resolve(sender)
    c.rt.redis.hset(c.rt.keys.registry_version(version), "manifest", json.dumps(OLD_MANIFEST))
    run = _run(c, sender, {"event": "payment.completed"}, trusted=False)
    assert run.status.value == "completed", run.error
    # Resubmitted through the sidecar: the new manifest has "events", the name is refused.
    verdict = Sidecar(c.rt).submit(
        textwrap.dedent(SENDER.format(decl="")),
        [{"name": "s", "event": {"data": {"event": "payment.completed"}},
          "expect": {"status": "failed"}}],
        author="person",
    )  # fmt: skip
    assert verdict.accepted, verdict.findings
    stored = Registry(c.rt.redis, c.rt.keys).version("sender").manifest or {}
    assert stored["events"] == {"send": [], "receive": []}
    run = _run(c, sender, {"event": "payment.completed"}, trusted=False)
    assert run.status.value == "failed" and "declare it" in run.error


# The sidecar: statically and in its harness --------------------------------------------


def test_the_sidecar_refuses_undeclared_literal_event_names(cluster: Cluster) -> None:
    src = """
    from loopwright.sdk import skill, event

    @skill(name="relay", tools=["events"], trigger=event("approval.given"),
           events={"send": ["order.*"]})
    def main(ctx):
        ctx.step.wait_for_event("w1", "approval.given")
        ctx.step.wait_for_event("w2", "payment.completed")
        ctx.step.send_event("s1", "order.created", {})
        ctx.step.send_event("s2", event="invoice.sent", data={})
        return 1
    """
    v = Sidecar(cluster.rt).submit(textwrap.dedent(src), SMOKE)
    assert not v.accepted and v.stage == "capabilities"
    assert [(f.rule, f.line) for f in v.findings] == [
        ("undeclared-event", 8),
        ("undeclared-event", 10),
    ]
    assert "payment.completed" in v.findings[0].message
    assert v.findings[0].hint.startswith("declare it: @skill(..., events=")


def test_the_sidecars_harness_refuses_what_static_reading_missed(cluster: Cluster) -> None:
    llm_case = [{"name": "c", "event": {}, "mocks": {"llm": ["x"]},
                 "expect": {"status": "completed"}}]  # fmt: skip
    v = Sidecar(cluster.rt).submit(textwrap.dedent(ALIAS_LLM), llm_case)
    assert not v.accepted and v.stage == "tests"
    assert "tools=['llm']" in v.findings[0].message
    dynamic = SENDER.format(decl=', events={"send": ["order.*"]}')
    case = [{"name": "c", "event": {"data": {"event": "payment.completed"}},
             "expect": {"status": "completed"}}]  # fmt: skip
    v = Sidecar(cluster.rt).submit(textwrap.dedent(dynamic), case)
    assert not v.accepted and v.stage == "tests"
    assert "may not send event 'payment.completed'" in v.findings[0].message
    case[0]["event"] = {"data": {"event": "order.created"}}
    v = Sidecar(cluster.rt).submit(textwrap.dedent(dynamic), case)
    assert v.accepted, v.findings
    assert "dynamic-event" in [w.rule for w in v.warnings]
