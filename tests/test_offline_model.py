"""The offline template model: it plans skills from a request, submits them with write_skill
until the real sidecar accepts them, and answers in text; hostile requests stay data."""

from __future__ import annotations

import ast
import io
import json
import re
import tokenize
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from conftest import Cluster
from loopwright.agent.tools import verdict_view
from loopwright.llm.offline import (
    EXAMPLES,
    KINDS,
    OfflineModel,
    PlannedSkill,
    _private_advice,
    find_request,
    plan,
    pyrepr,
    pywrap,
    render_skill,
)
from loopwright.llm.offline_schedule import read_schedule
from loopwright.llm.types import Completion, Message, ToolCall, ToolSpec
from loopwright.runner.addresses import PrivateAllow
from loopwright.sidecar.pipeline import Sidecar
from loopwright.skills_registry.manifest import read_manifest

TOOL_NAMES = [
    "sdk_reference",
    "list_skills",
    "read_skill",
    "write_skill",
    "test_skill",
    "run_skill",
    "list_runs",
    "get_run",
    "send_event",
    "pause_skill",
    "rollback_skill",
]
TOOLS = [ToolSpec(n, f"the {n} tool", {"type": "object", "properties": {}}) for n in TOOL_NAMES]
NOTE = "[loopwright]"
# The agent loop nudges an answer that announces an action without calling a tool
# (loopwright.agent.detect.ANNOUNCES_ACTION); final answers must not read like one.
ANNOUNCES_ACTION = re.compile(
    r"\b(i('| wi)ll|i am going to|i'm going to|let me|next,? i|now,? i|i will now|going to)\b",
    re.IGNORECASE,
)
SLACK_RELAY = "Relay payment.failed events to https://hooks.slack.com/services/T0000/B0000/XXXX"


def user(text: str) -> Message:
    return Message("user", text)


def tool_result(call: ToolCall, content: Any, is_error: bool = False) -> Message:
    text = content if isinstance(content, str) else json.dumps(content)
    return Message("tool", text, tool_call_id=call.id, name=call.name, is_error=is_error)


def accepted(name: str, version: str = "0123456789abcdef") -> dict[str, Any]:
    return {
        "accepted": True,
        "name": name,
        "version": version,
        "summary": f"accepted {name}",
        "status": "active",
        "registration": "activated",
        "next_fires": [],
    }


def rejected(name: str) -> dict[str, Any]:
    finding = {
        "rule": "test-failed",
        "line": 7,
        "col": 0,
        "message": "case 'x' failed",
        "hint": "fix it",
        "file": "source",
    }
    return {
        "accepted": False,
        "name": name,
        "version": None,
        "stage": "tests",
        "summary": "rejected at stage tests",
        "findings": [finding],
    }


def drive(
    request: str, answer: Callable[[ToolCall], Message], model: OfflineModel | None = None
) -> tuple[list[ToolCall], Completion]:
    """Run the tool-calling loop the agent runs: every call answered by ``answer``."""
    model = model or OfflineModel()
    messages = [user(request)]
    calls: list[ToolCall] = []
    for _ in range(10):
        comp = model.complete("system", messages, TOOLS)
        messages.append(comp.message())
        if not comp.tool_calls:
            return calls, comp
        for call in comp.tool_calls:
            calls.append(call)
            messages.append(answer(call))
    raise AssertionError("the model did not finish within 10 completions")


def sidecar_answer(cluster: Cluster) -> Callable[[ToolCall], Message]:
    sidecar = Sidecar(cluster.rt)

    def answer(call: ToolCall) -> Message:
        assert call.name == "write_skill", call
        verdict = sidecar.submit(call.arguments["source"], call.arguments["tests"])
        assert verdict.accepted, verdict.first_line() + json.dumps(verdict_view(verdict))[:3000]
        return tool_result(call, verdict_view(verdict))

    return answer


# Every kind through the real sidecar ---------------------------------------------------------


EXPECTED_KINDS = {intent: [intent] for intent in KINDS} | {
    "incident-response": ["health-check", "incident-triage"],
    "slack-relay": ["relay"],
}
# The agent loop reads a submission's skill name with this pattern (first match wins).
LOOP_SKILL_NAME = re.compile(r"""name\s*=\s*["']([a-z][a-z0-9-]{0,63})["']""")


@pytest.mark.parametrize(
    ("intent", "request_text"), [*EXAMPLES.items(), ("slack-relay", SLACK_RELAY)]
)
def test_every_kind_is_accepted_by_the_real_sidecar(
    cluster: Cluster, intent: str, request_text: str
) -> None:
    # Given an example request of each kind
    planned = plan(request_text)
    assert [p.kind for p in planned] == EXPECTED_KINDS[intent]
    # When the model drives the loop against the real sidecar (sandboxed test cases)
    calls, final = drive(request_text, sidecar_answer(cluster))
    # Then every skill it writes is accepted and the final answer names each one
    assert [c.name for c in calls] == ["write_skill"] * len(planned)
    for p, call in zip(planned, calls, strict=True):
        source, tests = call.arguments["source"], call.arguments["tests"]
        assert read_manifest(source)[0].name == p.name
        assert LOOP_SKILL_NAME.search(source).group(1) == p.name  # type: ignore[union-attr]
        assert len(tests) >= 3 and p.name in final.text
    assert "LOOPWRIGHT_MODEL" in final.text and not final.tool_calls
    assert not ANNOUNCES_ACTION.search(final.text)


def test_the_seed_scenario_registers_health_check_then_triage_then_answers() -> None:
    # Given the seed request, when each write_skill is answered with an accepted verdict
    request = EXAMPLES["incident-response"]
    model = OfflineModel()
    messages = [user(request)]
    first = model.complete("system", messages, TOOLS)
    assert [c.name for c in first.tool_calls] == ["write_skill"]
    source = first.tool_calls[0].arguments["source"]
    manifest, _ = read_manifest(source)
    assert manifest.name == "health-check" and manifest.trigger is not None
    assert manifest.trigger.type == "cron" and manifest.trigger.expr == "*/30 * * * *"
    assert manifest.http_allow == ["127.0.0.1"]
    assert manifest.params["metrics_url"].default == "http://127.0.0.1:9100/summary"
    assert 'send_event("report-incident", "incident.detected"' in source
    messages += [first.message(), tool_result(first.tool_calls[0], accepted("health-check"))]
    second = model.complete("system", messages, TOOLS)
    triage = read_manifest(second.tool_calls[0].arguments["source"])[0]
    assert triage.name == "incident-triage" and triage.trigger is not None
    assert triage.trigger.type == "event" and triage.trigger.name == "incident.detected"
    assert triage.params["breakdown_url"].default == "http://127.0.0.1:9100/breakdown"
    assert triage.params["deploys_url"].default == "http://127.0.0.1:9100/deploys"
    messages += [second.message(), tool_result(second.tool_calls[0], accepted("incident-triage"))]
    # Then the final answer names both, how to run them and how to configure a real model
    final = model.complete("system", messages, TOOLS)
    assert not final.tool_calls and final.stop_reason == "end_turn"
    for text in (
        "health-check@0123456789ab",
        "incident-triage@0123456789ab",
        "loopwright run health-check",
        "loopwright runs list",
        "incident.detected",
        "LOOPWRIGHT_MODEL",
        "LOOPWRIGHT_ANTHROPIC_API_KEY",
        "LOOPWRIGHT_OPENAI_API_KEY",
        "127.0.0.1: loopback (loopback, 127.0.0.0/8); the http tool refuses it",
    ):
        assert text in final.text, text
    assert "ALLOW_PRIVATE" not in final.text  # never advice to turn a protection off
    assert not ANNOUNCES_ACTION.search(final.text)
    assert "ALLOW_PRIVATE" not in final.text and "PRIVATE_ALLOW" not in final.text


def test_private_host_advice_never_suggests_opening_a_protection() -> None:
    nothing = PrivateAllow()
    # A private address of one's own network: the allow-list, naming that address
    advice = _private_advice("10.1.2.3", nothing) or ""
    assert "LOOPWRIGHT_HTTP_PRIVATE_ALLOW=10.1.2.3" in advice
    # Metadata, link-local, loopback: no setting is suggested at all
    for host in ("169.254.169.254", "100.100.100.200", "169.254.1.1", "127.0.0.1", "localhost"):
        advice = _private_advice(host, nothing) or ""
        assert advice and "LOOPWRIGHT_" not in advice, host
    # A host the operator already admits needs no advice
    assert _private_advice("10.1.2.3", PrivateAllow.parse("10.1.0.0/16")) is None
    assert _private_advice("127.0.0.1", PrivateAllow.parse("127.0.0.1")) is None


def test_the_same_conversation_gets_the_same_completion() -> None:
    messages = [user(EXAMPLES["sync"])]
    a = OfflineModel().complete("system", messages, TOOLS).to_dict()
    b = OfflineModel().complete("system", list(messages), TOOLS).to_dict()
    assert a == b and a["tool_calls"][0]["id"].startswith("offline-")
    assert a["usage"]["input_tokens"] > 0 and a["usage"]["output_tokens"] > 0
    assert a["usage"]["cached_tokens"] == 0 and a["model"] == "offline"


# Hostile requests ----------------------------------------------------------------------------

HOSTILE = (
    "Check https://api.example.com/health every 5 minutes\n"
    "\"\"\"'); __import__('os').system('id') #\n'''\\\"{{ 7*7 }}{% raw %}\u2028"
    'name="pwned" {{secret:TOKEN}} sk-ant-abcdefghijklmnopqrstuvwxyz012345\n'
    "call it x\"); __import__('os')\n" + "A" * 50_000
)


def test_hostile_request_text_stays_inside_string_literals(cluster: Cluster) -> None:
    # Given a request full of quotes, newlines, template syntax, code and 50 KB of text
    [planned] = plan(HOSTILE)
    source, tests = render_skill(planned.kind, **planned.params)
    # Then it renders a source the real sidecar accepts
    verdict = Sidecar(cluster.rt).submit(source, tests)
    assert verdict.accepted, verdict.first_line()
    # And the hostile parts appear only inside string tokens, never as code
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type != tokenize.STRING:
            assert "__import__" not in tok.string and "pwned" not in tok.string, tok
    tree = ast.parse(source)
    assert not any(isinstance(n, ast.Name) and n.id.startswith("_") for n in ast.walk(tree))
    manifest, _ = read_manifest(source)
    assert "__import__('os').system('id')" in manifest.description
    assert "{{ 7*7 }}" in manifest.description and "49" not in manifest.description
    assert "sk-ant-" not in source and "{{secret:" not in source
    assert manifest.name == "x" and len(source) < 20_000


ODD_STRINGS = [
    "plain",
    "it's",
    'say "hi"',
    "both ' and \"",
    '"""',
    "'''",
    "back\\slash\\",
    "new\nline",
    "\u2028\ud800\U0001f600",
    "x" * 300,
    "word " * 60 + "\"'\\" * 40,
]


@pytest.mark.parametrize("text", ODD_STRINGS)
def test_string_literals_round_trip_exactly(text: str) -> None:
    for literal in (pyrepr(text), pywrap(text)):
        tree = ast.parse(literal, mode="eval")
        assert isinstance(tree.body, ast.Constant) and tree.body.value == text


def test_hostile_values_cannot_reach_the_templates_unvalidated() -> None:
    with pytest.raises(ValueError):
        render_skill("relay", event_name="x'); import os #")
    with pytest.raises(ValueError):
        render_skill("sync", source_url="https://a.example.com/x'+__import__('os')+'")
    with pytest.raises(ValueError):
        render_skill("digest", name="Bad Name")
    with pytest.raises(ValueError):
        render_skill("health-check", cron="* * *")
    with pytest.raises(ValueError):
        render_skill("nope")


# Conversation rules --------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["hello!", "What can you do?", "Write me a poem about cats"])
def test_an_unrecognised_request_gets_text_with_the_menu_and_no_tool_call(text: str) -> None:
    comp = OfflineModel().complete("system", [user(text)], TOOLS)
    assert not comp.tool_calls and "LOOPWRIGHT_MODEL" in comp.text
    assert all(example in comp.text for example in EXAMPLES.values())
    assert not ANNOUNCES_ACTION.search(comp.text)


def test_without_write_skill_the_answer_is_text_with_the_sources() -> None:
    tools = [t for t in TOOLS if t.name != "write_skill"]
    comp = OfflineModel().complete("system", [user(EXAMPLES["digest"])], tools)
    assert not comp.tool_calls and "write_skill tool is not available" in comp.text
    assert "tickets-digest.py" in comp.text and "@skill(" in comp.text


def test_loop_notes_are_not_requests_and_a_final_note_ends_the_turn() -> None:
    person = user(EXAMPLES["digest"])
    note = user(f"{NOTE} Loop detected (repeat): forward order.created to https://x.example.com")
    assert find_request([person, note]) == (0, EXAMPLES["digest"], False)
    comp = OfflineModel().complete("system", [person, note], TOOLS)
    assert not comp.tool_calls and "Loop detected" in comp.text
    only_note = OfflineModel().complete("system", [note], TOOLS)
    assert not only_note.tool_calls and "LOOPWRIGHT_MODEL" in only_note.text


def test_a_compaction_summary_carries_the_request_and_what_was_registered() -> None:
    summary = user(
        f"{NOTE} Context re-anchored: earlier messages were compacted into this summary.\n"
        f"Current request: {EXAMPLES['incident-response']}\n"
        "Skills so far:\n- health-check: registered version 0123456789ab\n"
        "Continue from here; the most recent exchanges follow."
    )
    comp = OfflineModel().complete("system", [summary], TOOLS)
    [call] = comp.tool_calls
    assert read_manifest(call.arguments["source"])[0].name == "incident-triage"


def test_one_rejection_is_resubmitted_and_a_second_is_reported() -> None:
    model = OfflineModel()
    messages = [user(EXAMPLES["relay"])]
    first = model.complete("system", messages, TOOLS)
    messages += [
        first.message(),
        tool_result(first.tool_calls[0], rejected("relay-order-created"), True),
    ]
    messages.append(
        user(
            f"{NOTE} Submission 1 of 3 for skill 'relay-order-created' was rejected "
            "at stage tests. Then call write_skill with the fix."
        )
    )
    second = model.complete("system", messages, TOOLS)
    assert [c.name for c in second.tool_calls] == ["write_skill"]
    assert second.tool_calls[0].id != first.tool_calls[0].id
    messages += [
        second.message(),
        tool_result(second.tool_calls[0], rejected("relay-order-created"), True),
    ]
    final = model.complete("system", messages, TOOLS)
    assert not final.tool_calls
    assert "rejected skill 'relay-order-created' 2 times" in final.text
    assert "case 'x' failed" in final.text and "Nothing was registered" in final.text
    assert not ANNOUNCES_ACTION.search(final.text)


def test_a_tool_error_it_cannot_act_on_ends_the_turn_with_an_explanation() -> None:
    model = OfflineModel()
    messages = [user(EXAMPLES["sync"])]
    first = model.complete("system", messages, TOOLS)
    messages += [
        first.message(),
        tool_result(first.tool_calls[0], "write_skill failed: sidecar unreachable", True),
    ]
    final = model.complete("system", messages, TOOLS)
    assert not final.tool_calls and "sidecar unreachable" in final.text
    assert not ANNOUNCES_ACTION.search(final.text)


def test_a_truncated_verdict_still_counts_as_accepted() -> None:
    # Given a tool result the loop cut to its size cap in the middle of the JSON
    model = OfflineModel()
    messages = [user(EXAMPLES["digest"])]
    first = model.complete("system", messages, TOOLS)
    text = json.dumps(accepted("tickets-digest") | {"padding": "x" * 500})[:300] + "... [truncated]"
    messages += [first.message(), tool_result(first.tool_calls[0], text)]
    # Then the model does not submit again: the skill is registered
    final = model.complete("system", messages, TOOLS)
    assert not final.tool_calls and "tickets-digest@0123456789ab" in final.text


def test_list_skills_and_run_are_one_call_then_a_summary() -> None:
    listed, text = drive(
        "list skills",
        lambda c: tool_result(
            c,
            [
                {
                    "name": "health-check",
                    "status": "active",
                    "active": "ab" * 20,
                    "description": "checks",
                    "trigger": {"type": "cron", "expr": "*/30 * * * *"},
                }
            ],
        ),
    )
    assert [c.name for c in listed] == ["list_skills"] and "health-check" in text.text
    ran, text = drive(
        "please run the health check now",
        lambda c: tool_result(c, {"run_id": "r1", "status": "completed", "output": {"v": 1}}),
    )
    assert ran[0].name == "run_skill"
    assert ran[0].arguments == {"name": "health-check", "data": {}, "wait": True}
    assert "r1" in text.text and "completed" in text.text


# Planning ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_text", "kind", "expected"),
    [
        (
            "monitor https://api.example.com/status every 5 min, error rate above 2%",
            "health-check",
            {"cron": "*/5 * * * *", "max_error_rate": 0.02},
        ),
        (
            "ping http://10.0.0.5:8080/health hourly, alert over 1.5 s",
            "health-check",
            {"cron": "0 * * * *", "p95_ms": 1500, "metrics_url": "http://10.0.0.5:8080/health"},
        ),
        (
            "daily summary of https://shop.example.com/api/orders at 7:30pm",
            "digest",
            {"cron": "30 19 * * *", "source_url": "https://shop.example.com/api/orders"},
        ),
        (
            "a report of https://x.example.com/bugs every morning, call it bug-report",
            "digest",
            {"cron": "0 8 * * *", "name": "bug-report"},
        ),
        (
            "when invoice.paid happens forward it to https://hooks.example.com/pay",
            "relay",
            {"event_name": "invoice.paid", "webhook_url": "https://hooks.example.com/pay"},
        ),
        (
            "copy from https://a.example.com/users to https://b.example.com/import every 2 hours",
            "sync",
            {
                "cron": "0 */2 * * *",
                "source_url": "https://a.example.com/users",
                "target_url": "https://b.example.com/import",
            },
        ),
        ("investigate incidents on alert.fired", "incident-triage", {"event_name": "alert.fired"}),
    ],
)
def test_parameters_are_read_from_the_request(
    request_text: str, kind: str, expected: dict[str, Any]
) -> None:
    [planned] = plan(request_text)
    assert isinstance(planned, PlannedSkill) and planned.kind == kind
    assert {k: planned.params.get(k) for k in expected} == expected


def test_every_template_kind_renders_with_defaults_only() -> None:
    for kind in KINDS:
        source, tests = render_skill(kind)
        manifest, _ = read_manifest(source)
        assert manifest.retries >= 3 and manifest.timeout and manifest.description
        assert len(tests) >= 3 and any(
            t["expect"].get("status") == "failed"
            or "500" in json.dumps(t)
            or "503" in json.dumps(t)
            for t in tests
        )


def test_credentials_in_urls_never_reach_the_source_and_the_answer_says_so() -> None:
    # Given a request whose URL carries a password and a token
    request = (
        "monitor https://ops:hunter2@api.example.com/health?key=sk-abcdefghijklmnopqrstuvwxyz "
        "every 5 min"
    )
    [planned] = plan(request)
    assert planned.params["metrics_url"] == "https://api.example.com/health"
    source, _ = render_skill(planned.kind, **planned.params)
    assert "hunter2" not in source and "sk-abc" not in source
    # When it is registered, then the answer says the URL was trimmed and where secrets go
    _, final = drive(request, lambda c: tool_result(c, accepted(planned.name)))
    assert "LOOPWRIGHT_SECRETS" in final.text and "hunter2" not in final.text


# State between runs and time windows --------------------------------------------------------


@pytest.mark.parametrize(
    ("request_text", "kind", "expected"),
    [
        (
            "hit http://10.1.2.3/healthz every 4 minutes; tell me when it has been down 5 times "
            "running",
            "health-check",
            {"cron": "*/4 * * * *", "alert_after": 5},
        ),
        (
            "monitor https://api.acme-corp.io/v1/health, complain after 6 successive timeouts",
            "health-check",
            {"cron": "*/30 * * * *", "alert_after": 6},
        ),
        (
            "ping https://api.acme-corp.io/up hourly; one failure in a row is enough to alert",
            "health-check",
            {"cron": "0 * * * *", "alert_after": None},
        ),
        (
            "what's new at https://news.acme-corp.io/api/posts since the last poll, every 20 "
            "minutes",
            "digest",
            {"cron": "*/20 * * * *", "window": "since", "window_span": None},
        ),
        (
            "every morning, the previous 2 days of https://x.acme-corp.io/api/bugs",
            "digest",
            {"cron": "0 8 * * *", "window": "hours", "window_span": 48},
        ),
        (
            "6pm Tokyo time daily: today's orders at https://jp.acme-corp.io/api/orders",
            "digest",
            {"cron": "0 18 * * *", "tz": "Asia/Tokyo", "window": "day", "window_span": 0},
        ),
        (
            "watch https://api.acme-corp.io/v2 and flag errors from the past hour",
            "health-check",
            {"cron": "*/30 * * * *", "alert_after": None, "window": None},
        ),
        (
            "a digest of https://x.acme-corp.io/api/bugs for the last month, on Fridays",
            "digest",
            {"cron": "0 9 * * 5", "window": None},
        ),
    ],
)
def test_streaks_windows_and_since_are_read_from_words(
    request_text: str, kind: str, expected: dict[str, Any]
) -> None:
    [planned] = plan(request_text)
    assert planned.kind == kind
    assert {k: planned.params.get(k) for k in expected} == expected


STATEFUL = {
    "streak": "probe https://api.acme-corp.io/healthz every 10 minutes, alert on 2 consecutive "
    "failures",
    "since": "every hour, list the tickets at https://desk.acme-corp.io/api/tickets that are "
    "new since the last run",
    "local-day": "at 7:15 Sydney time, the signups of yesterday from "
    "https://au.acme-corp.io/api/signups",
}


@pytest.mark.parametrize("request_text", STATEFUL.values(), ids=list(STATEFUL))
def test_skills_that_keep_state_or_windows_are_accepted_by_the_real_sidecar(
    cluster: Cluster, request_text: str
) -> None:
    # When the model drives the loop against the real sidecar (cases run in the sandbox)
    calls, final = drive(request_text, sidecar_answer(cluster))
    # Then it writes one skill, accepted first time, and says what it keeps and how
    assert [c.name for c in calls] == ["write_skill"]
    assert "Not done" not in final.text, final.text
    assert re.search(r"in its state|calendar day in Australia/Sydney", final.text), final.text


@pytest.mark.parametrize("zone", ["America/New_York", "Australia/Sydney"])
def test_a_local_day_window_matches_the_timezone_rules_across_changes(zone: str) -> None:
    # Given the digest the template writes for "yesterday's" items in a timezone
    source, _ = render_skill(
        "digest", source_url="https://x.acme-corp.io/a", window="day", cron="0 7 * * *", tz=zone
    )
    skill_globals: dict[str, Any] = {}
    exec(compile(source, "digest.py", "exec"), skill_globals)  # our own template, not a request
    tz = ZoneInfo(zone)
    # When it picks the day for runs around every offset change from 2024 to 2040
    for at, _minutes in skill_globals["UTC_OFFSETS"][1:]:
        for shift_h in (-30, -1, 0, 1, 30):
            now = at + shift_h * 3_600_000
            got = skill_globals["select"]({"ts": now}, [], 1)
            # Then the window is exactly yesterday's local midnight to today's
            day = datetime.fromtimestamp(now / 1000, tz).date() - timedelta(days=1)
            begin = datetime(day.year, day.month, day.day, tzinfo=tz)
            end = begin + timedelta(days=1)
            assert (got["from"], got["to"]) == (
                begin.astimezone(UTC).isoformat(timespec="seconds"),
                end.astimezone(UTC).isoformat(timespec="seconds"),
            ), now


@pytest.mark.parametrize(
    ("words", "expr", "every"),
    [
        ("probe it every hour and a half", None, "90m"),
        ("every 2.5 hrs please", None, "150m"),
        ("every three and a half hours", None, "210m"),
        ("every ninety minutes", None, "90m"),
        ("every two hours", "0 */2 * * *", None),
        ("each day at 7.45", "45 7 * * *", None),
        ("every day around 5.15pm", "15 17 * * *", None),
    ],
)
def test_intervals_and_clock_times_in_words_are_kept_not_rounded(
    words: str, expr: str | None, every: str | None
) -> None:
    sched = read_schedule(words)
    assert sched is not None and (sched.expr, sched.every) == (expr, every)
