"""The offline template model: the default builder model when no API key is configured.

It drives the same tool-calling loop a real model does, deterministically: it reads the
person's request with keyword and regex rules, plans one or two skills from a small set of
templates (``templates/*.py.j2`` sources with ``*.tests.json.j2`` test cases), submits each
with ``write_skill`` until the sidecar accepts it, then answers in text. Requests outside the
templates get a text answer saying what it can build and how to configure a real model.

Every value taken from a request reaches the generated source through ``repr`` (the ``py``
filter) or JSON (``tojson``), after validation (URLs, event names, cron expressions, skill
names), so hostile request text cannot become code.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import takewhile
from typing import Any
from urllib.parse import urlsplit

from loopwright.llm.offline_plan import (
    EXAMPLES,
    INTENTS,
    KINDS,
    NOTE,
    REAL_MODEL,
    REGISTERED_RE,
    RUN_RE,
    SUMMARY_HEADS,
    URL_RE,
    URL_TAIL,
    VERDICT_NAME_RE,
    PlannedSkill,
    clean_url,
    intent_of,
    is_private_host,
    plan,
    pyrepr,
    pywrap,
    render_skill,
    slug,
    template_context,
)
from loopwright.llm.offline_requests import (
    Action,
    harm_reason,
    lifecycle_actions,
    missing_fact,
    not_done,
    session_skills,
)
from loopwright.llm.offline_schedule import Schedule, read_schedule
from loopwright.llm.types import Completion, Message, ToolCall, ToolSpec, Usage
from loopwright.runner.addresses import (
    NAMEABLE,
    AddressKind,
    PrivateAllow,
    classify,
    is_placeholder,
    private_allow,
)
from loopwright.sdk.schedule_words import describe_cron
from loopwright.settings import Settings

__all__ = [
    "EXAMPLES",
    "INTENTS",
    "KINDS",
    "OfflineModel",
    "PlannedSkill",
    "clean_url",
    "describe_cron",
    "find_request",
    "help_text",
    "plan",
    "pyrepr",
    "pywrap",
    "render_skill",
    "slug",
]


# Reading the conversation --------------------------------------------------------------------


def find_request(messages: Sequence[Message]) -> tuple[int, str, bool] | None:
    """(index, text, from_summary) of the person's current request: the last user message that
    is not a loop note, else the ``Current request:`` of the last compaction summary."""
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if m.role == "user" and not m.content.lstrip().startswith(NOTE) and m.content.strip():
            return i, m.content, False
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if m.role == "user" and "Current request:" in m.content:
            text = m.content.split("Current request:", 1)[1]
            first, *rest = text.splitlines() or [""]
            rest = list(takewhile(lambda line: not line.startswith(SUMMARY_HEADS), rest))
            return i, "\n".join([first, *rest]).strip(), True
    return None


@dataclass(slots=True)
class _Turn:
    """What happened since the request: write_skill outcomes per skill and the last tool
    failure that is not a verdict."""

    accepted: dict[str, dict[str, Any]]
    rejected: dict[str, list[dict[str, Any]]]
    submissions: int
    error: Message | None
    results: dict[str, Message]  # last result per tool name
    taken: set[str] = field(default_factory=set)  # names refused as someone else's skill


def _read_turn(since: Sequence[Message], summary: str | None) -> _Turn:
    turn = _Turn({}, {}, 0, None, {})
    if summary:
        for name, version in REGISTERED_RE.findall(summary):
            turn.accepted[name] = {"name": name, "version": version, "accepted": True}
    calls = {c.id: c for m in since if m.role == "assistant" for c in m.tool_calls}
    for m in since:
        if m.role != "tool":
            continue
        turn.results[m.name or ""] = m
        view = _verdict(m.content) if m.name == "write_skill" else None
        if view is None and m.name == "write_skill" and "already exists" in m.content:
            call = calls.get(m.tool_call_id or "")
            found = VERDICT_NAME_RE.search(str(call.arguments.get("source", ""))) if call else None
            if found:
                turn.taken.add(found.group(1))
                turn.error = None
                continue
        if view is None:
            turn.error = m if m.is_error else None
            continue
        turn.error = None
        turn.submissions += 1
        call = calls.get(m.tool_call_id or "")
        found = VERDICT_NAME_RE.search(str(call.arguments.get("source", ""))) if call else None
        name = str(view.get("name") or (found.group(1) if found else "?"))
        if view["accepted"]:
            turn.accepted[name] = view
            turn.rejected.pop(name, None)
        else:
            turn.rejected.setdefault(name, []).append(view)
    return turn


def _verdict(content: str) -> dict[str, Any] | None:
    """A write_skill result as a dict with ``accepted``; tolerates truncated JSON."""
    try:
        view = json.loads(content)
    except ValueError:
        m = re.search(r'"accepted"\s*:\s*(true|false)', content)
        if m is None:
            return None
        name = re.search(r'"name"\s*:\s*"([a-z][a-z0-9-]*)"', content)
        version = re.search(r'"version"\s*:\s*"([0-9a-f]+)"', content)
        return {
            "accepted": m.group(1) == "true",
            "name": name.group(1) if name else None,
            "version": version.group(1) if version else None,
            "summary": content[:500],
        }
    return view if isinstance(view, dict) and "accepted" in view else None


def _json(content: str) -> Any:
    try:
        return json.loads(content)
    except ValueError:
        return None


# Answers -------------------------------------------------------------------------------------


def help_text() -> str:
    """What the offline model can build, with one example request per kind."""
    lines = [
        "I am Loopwright's offline template model: no model API key is configured, so I build "
        "skills from a fixed set of tested templates. I can build:",
        f"- incident response (two skills: a health check every 30 minutes and an incident "
        f'triage), e.g. "{EXAMPLES["incident-response"]}"',
        f'- a scheduled HTTP health check, e.g. "{EXAMPLES["health-check"]}"',
        f'- incident triage on an event, e.g. "{EXAMPLES["incident-triage"]}"',
        f'- a periodic digest of a JSON list, e.g. "{EXAMPLES["digest"]}"',
        f'- an event-to-webhook relay, e.g. "{EXAMPLES["relay"]}"',
        f'- a scheduled sync between two HTTP endpoints, e.g. "{EXAMPLES["sync"]}"',
        "Health checks can act only after N failed checks in a row (kept between runs); "
        "digests can keep to yesterday's or today's items, the last N hours, or what is new "
        "since the last run.",
        'I can also list the registered skills ("list skills") and run one ("run health-check").',
        REAL_MODEL,
    ]
    return "\n".join(lines)


def _done_text(
    planned: list[PlannedSkill],
    turn: _Turn,
    settings: Settings | None,
    renamed: dict[str, str] | None = None,
) -> str:
    built = [(p, template_context(p.kind, p.params)) for p in planned]
    lines = [f"Registered {len(planned)} skill{'s' if len(planned) > 1 else ''}:"]
    for p, ctx in built:
        view = turn.accepted.get(p.name, {})
        version = str(view.get("version") or "?")[:12]
        cron = f" (cron `{ctx['cron']}`)" if ctx.get("cron") else ""
        lines.append(f"- {p.name}@{version}, {ctx['when']}{cron}: {ctx['what']}")
        if view.get("status") not in (None, "active"):
            lines.append(f"  status {view['status']}: {str(view.get('summary', ''))[:300]}")
        if view.get("next_fires"):
            lines.append(f"  next run: {view['next_fires'][0]}")
    lines += [
        "",
        "How to use them:",
        f"- run one now: `loopwright run {planned[0].name} --wait`; see runs with `loopwright "
        "runs list` and one run's steps with `loopwright runs show RUN_ID`; notices with "
        "`loopwright inbox`",
        "- triggers fire while workers and the scheduler run (`loopwright up`)",
    ]
    for _, ctx in built:
        if "event_name" in ctx:
            event = ctx["event_name"]
            lines.append(
                f"- send its event by hand: `loopwright events send {event} --data '{{}}'`"
            )
        if ctx.get("secret_name"):
            lines.append(
                f"- store the Slack webhook URL as the platform secret {ctx['secret_name']} "
                "(LOOPWRIGHT_SECRETS) before the first event"
            )
    hosts = {h for _, ctx in built for h in ctx["http_allow"]}
    allowed = private_allow(settings.http_private_allow if settings else "")
    for host in sorted(h for h in hosts if is_private_host(h)):
        advice = _private_advice(host, allowed)
        if advice:
            lines.append(f"- {host}: {advice}")
    request = str(planned[0].params.get("request", ""))
    raws = [m.group(0).rstrip(URL_TAIL) for m in URL_RE.finditer(request)]
    changed = [r for r in raws if (clean_url(r) or "").lower() != r.lower()]
    if changed:
        lines.append(
            f"- {len(changed)} URL(s) in the request had credentials, a secret-looking query or "
            "an invalid host and were trimmed or left out; credentials belong in platform "
            "secrets (LOOPWRIGHT_SECRETS), never in a skill"
        )
    lines += _honesty(planned, built, request, renamed or {})
    lines += ["", "These came from the offline template model. " + REAL_MODEL]
    return "\n".join(lines)


def _private_advice(host: str, allowed: PrivateAllow) -> str | None:
    """What to say about a declared non-public host, or None when runs may reach it. Never
    suggests opening a protection: only a private range of the person's own network is worth
    naming in the allow-list."""
    try:
        found = classify(host)
    except ValueError:  # a name such as localhost: it resolves to loopback
        return (
            "a loopback name; the http tool refuses loopback, so runs cannot reach it; serve "
            "it on an address the workers can reach"
        )
    if allowed.refusal(found) is None:
        return None
    inner = found.embedded or found
    if inner.kind in NAMEABLE:
        return (
            "a private address; if it is on your own network, an operator can let runs reach "
            f"it with LOOPWRIGHT_HTTP_PRIVATE_ALLOW={inner.address} (or its range)"
        )
    if inner.kind is AddressKind.METADATA:
        return "a cloud metadata address; the http tool always refuses it"
    return (
        f"{found.summary()}; the http tool refuses it, so runs cannot reach it; serve it on "
        "an address the workers can reach"
    )


def _honesty(
    planned: list[PlannedSkill],
    built: list[tuple[PlannedSkill, dict[str, Any]]],
    request: str,
    renamed: dict[str, str],
) -> list[str]:
    """What was assumed, renamed or left out, and placeholders, said plainly."""
    notes: list[str] = []
    sched = read_schedule(request)
    for p, ctx in built:
        if p.name in renamed:
            notes.append(
                f"- {renamed[p.name]} already exists and this session did not write it, so "
                f"this skill is {p.name}; nothing was overwritten (to change "
                f"{renamed[p.name]} itself, name it and say what to change)"
            )
        if "event_name" not in ctx and sched is None:
            notes.append(f"- no schedule was stated, so {p.name} runs {ctx['when']} (assumed)")
    if sched is not None and sched.frequent:
        notes.append(f"- 'keep an eye on' was read as a frequent check: {sched.describe()}")
    hosts = sorted({h for _, ctx in built for h in ctx["http_allow"] if is_placeholder(h)})
    if hosts:
        notes.append(
            f"- WARNING: {', '.join(hosts)} is a placeholder host (taken from your request); "
            "the skill fails until it points at a real service"
        )
    notes += _state_notes(built)
    missing: list[str] = []
    for p, ctx in built:
        handled = {"streak"} if ctx.get("alert_after") else set()
        if ctx.get("window") == "since":
            handled.add("since")
        elif ctx.get("window"):
            handled.add("window")
        for item in not_done(request, p.kind, sched, bool(ctx.get("match")), handled):
            if item not in missing:
                missing.append(item)
    if missing:
        notes += ["", "Not done:"] + [f"- {m}" for m in missing]
    return notes


def _state_notes(built: list[tuple[PlannedSkill, dict[str, Any]]]) -> list[str]:
    """What the skills keep between runs and how their windows are read, said plainly."""
    notes: list[str] = []
    for p, ctx in built:
        name = p.name
        if ctx.get("alert_after"):
            notes.append(
                f"- {name} counts failed checks (not normal: degraded or failing) in a row in "
                f"its state (key consecutive_failures) and acts when the count reaches "
                f"{ctx['alert_after']}, once per streak; a normal check resets it (param "
                f"alert_after; `loopwright skills state {name}` shows the count)"
            )
        window = ctx.get("window")
        if window:
            notes.append(
                f"- {name} dates items by their first field of created_at, createdAt, created, "
                "timestamp, time, date or updated_at (ISO 8601 or epoch seconds/ms); items "
                "without one are counted, not listed"
            )
        if ctx.get("zone"):
            notes.append(
                f"- {name} takes the calendar day in {ctx['zone']}: the sandbox has no timezone "
                f"rules, so the skill carries {ctx['zone']}'s UTC offsets until "
                f"{ctx['offsets_until']} (a later version of the template renews them)"
            )
        if window == "since":
            notes.append(
                f"- {name} keeps the newest item time it listed in its state (key high_water); "
                f"its first run, with nothing kept yet, lists the last {ctx['window_span']} hours "
                "(param first_window_hours); an item that appears later with an older time is "
                f"not listed; `loopwright skills state {name} --reset` starts over"
            )
    return notes


def _registered(turn: _Turn) -> str:
    if not turn.accepted:
        return "Nothing was registered in this turn."
    names = ", ".join(f"{n}@{str(v.get('version') or '?')[:12]}" for n, v in turn.accepted.items())
    return f"Registered so far: {names}."


def _rejected_text(name: str, views: list[dict[str, Any]], turn: _Turn) -> str:
    last = views[-1]
    lines = [
        f"The sidecar rejected skill {name!r} {len(views)} times, so I stopped; the templates "
        f"are tested and should not be rejected, so this needs a look. Last rejection (stage "
        f"{last.get('stage', '?')}): {str(last.get('summary', ''))[:300]}"
    ]
    for f in (last.get("findings") or [])[:5]:
        if isinstance(f, dict):
            where = f"line {f.get('line')}: " if f.get("line") else ""
            hint = f" (hint: {f.get('hint')})" if f.get("hint") else ""
            lines.append(f"- {where}{f.get('message', '')} [{f.get('rule', '')}]{hint}")
    for case in (last.get("failing_cases") or [])[:3]:
        if isinstance(case, dict):
            lines.append(f"- test case {case.get('name')}: {case.get('problems')}")
    lines += [_registered(turn), REAL_MODEL]
    return "\n".join(lines)


def _error_text(m: Message, turn: _Turn) -> str:
    if m.content.startswith("refused: "):
        why = m.content.removeprefix("refused: ")
        for cut in (" Tell the person", " Use the URL", " If the person asked"):
            why = why.split(cut, 1)[0]
        return f"I did not register it: {why}\n{_registered(turn)}"
    return (
        f"The {m.name or 'tool'} tool failed and the offline model cannot work around it: "
        f"{m.content[:600]}\n{_registered(turn)} Check the platform (`loopwright doctor`) and "
        f"ask again. {REAL_MODEL}"
    )


def _note_text(note: str, turn: _Turn) -> str:
    first = note.strip().splitlines()[0][:400]
    return f"Stopping here as the loop asked: {first}\n{_registered(turn)}"


def _skills_text(m: Message) -> str:
    if m.is_error:
        return f"Listing the skills failed: {m.content[:600]}"
    data = _json(m.content)
    if not isinstance(data, list):
        return f"The registry answered: {m.content[:1500]}"
    if not data:
        return "No skills are registered yet. " + help_text()
    lines = [f"{len(data)} registered skill{'s' if len(data) > 1 else ''}:"]
    for s in data[:50]:
        if not isinstance(s, dict):
            continue
        trig = s.get("trigger") or {}
        when = {
            "cron": f"cron {trig.get('expr')}" + (f" {trig.get('tz')}" if trig.get("tz") else ""),
            "every": f"every {trig.get('every')}",
            "event": f"event {trig.get('name')}",
        }.get(str(trig.get("type")), "manual")
        active = str(s.get("active") or "-")[:12]
        lines.append(
            f"- {s.get('name')} ({s.get('status')}, {when}, version {active}): "
            f"{str(s.get('description') or '')[:160]}"
        )
    return "\n".join(lines)


def _run_text(name: str, m: Message) -> str:
    if m.is_error:
        return f"Running {name} failed: {m.content[:600]}"
    data = _json(m.content)
    if not isinstance(data, dict):
        return f"Run of {name}: {m.content[:1500]}"
    lines = [f"Run {data.get('run_id')} of {name}: {data.get('status')}."]
    if "output" in data:
        lines.append("Output: " + json.dumps(data["output"])[:1500])
    if data.get("error"):
        lines.append(f"Error: {str(data['error'])[:600]}")
    if data.get("note"):
        lines.append(str(data["note"]))
    lines.append(f"Details: `loopwright runs show {data.get('run_id')}`.")
    return "\n".join(lines)


def _no_tool_text(planned: list[PlannedSkill]) -> str:
    lines = [
        "The write_skill tool is not available in this session, so nothing was registered. "
        "These are the skills the offline template model would submit; save each as NAME.py "
        "with its cases as NAME.tests.json and submit with `loopwright skills submit NAME.py`."
    ]
    for p in planned:
        source, tests = render_skill(p.kind, **p.params)
        lines += [
            f"\n{p.name}.py:",
            "```python",
            source.rstrip(),
            "```",
            f"{p.name}.tests.json:",
            "```json",
            json.dumps(tests, indent=1),
            "```",
        ]
    return "\n".join(lines)


def _lifecycle_text(done: list[tuple[Action, Message]]) -> str:
    """What the lifecycle calls did, from their results."""
    lines: list[str] = []
    for a, m in done:
        name = a.args.get("name")
        data = _json(m.content)
        view = data if isinstance(data, dict) else {}
        if m.is_error:
            if "accepted" in view:
                lines.append(
                    f"- {name}: the derived version was rejected ({str(view.get('summary'))[:300]}"
                    "); nothing changed"
                )
            else:
                lines.append(f"- {name}: not done: {m.content[:400]}")
            continue
        if a.tool == "pause_skill":
            lines.append(f"- {name}: paused; its triggers start no runs (say 'resume {name}')")
        elif a.tool == "resume_skill":
            lines.append(f"- {name}: resumed; its triggers start runs again")
        elif a.tool == "delete_skill":
            lines.append(f"- {name}: deleted (versions and triggers gone; run history kept)")
        else:
            if a.tool == "set_schedule":
                sched = Schedule(a.args.get("cron"), a.args.get("tz"), a.args.get("every"))
                what = f"now runs {sched.describe()}"
            else:
                what = f"params set to {json.dumps(a.args.get('params'))}"
            wait = " (waits for approval)" if view.get("registration") == "pending" else ""
            lines.append(
                f"- {name}: {what}: version {str(view.get('version'))[:12]}{wait}, derived from "
                "the active one with nothing else changed"
            )
    return "Done:\n" + "\n".join(lines)


def _rename(p: PlannedSkill, taken: set[str]) -> PlannedSkill:
    """``p`` under the first free name when its name belongs to a skill from elsewhere."""
    if p.name not in taken:
        return p
    for i in range(2, 10):
        name = f"{p.name[:60]}-{i}"
        if name not in taken:
            return replace(p, name=name, params={**p.params, "name": name})
    return p


def _hosts(request: str) -> list[str]:
    return [h for h in (urlsplit(u).hostname for u in URL_RE.findall(request)) if h]


# The model -----------------------------------------------------------------------------------


class OfflineModel:
    """The deterministic template model (``offline``): see the module docstring."""

    name = "offline"

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings

    def complete(
        self,
        system: str,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        *,
        max_tokens: int = 4096,
    ) -> Completion:
        """The next step of the conversation: tool calls, or the final text. ``max_tokens`` is
        not applied: a template is submitted whole or not at all."""
        text, calls = self._decide(messages, {t.name for t in tools})
        prompt = len(system) + sum(len(json.dumps(_spec(t))) for t in tools)
        prompt += sum(
            len(m.content) + len(json.dumps([c.to_dict() for c in m.tool_calls])) for m in messages
        )
        answer = len(text) + len(json.dumps([c.to_dict() for c in calls]))
        usage = Usage(math.ceil(prompt / 4), math.ceil(answer / 4), 0)
        stop = "tool_use" if calls else "end_turn"
        return Completion(
            text=text, tool_calls=calls, usage=usage, model=self.name, stop_reason=stop
        )

    def _decide(self, messages: Sequence[Message], tools: set[str]) -> tuple[str, list[ToolCall]]:
        found = find_request(messages)
        if found is None:
            return help_text(), []
        index, request, from_summary = found
        since = messages[index + 1 :]
        last = messages[-1] if messages else None
        note = None
        if (
            last is not None
            and index < len(messages) - 1
            and last.role == "user"
            and "Current request:" not in last.content
        ):
            note = last.content
        call_n = 1 + sum(len(m.tool_calls) for m in messages if m.role == "assistant")

        def call(tool: str, args: dict[str, Any]) -> tuple[str, list[ToolCall]]:
            blob = json.dumps([request, tool, args], sort_keys=True)
            tag = hashlib.sha256(blob.encode()).hexdigest()[:8]
            return "", [ToolCall(id=f"offline-{call_n}-{tag}", name=tool, arguments=args)]

        why = harm_reason(request)
        if why is not None:
            return f"I will not build that: {why}. Nothing was registered.", []
        session = session_skills(messages[: index + 1])  # earlier turns and any summary
        actions = lifecycle_actions(request, session)
        if isinstance(actions, str):
            return actions, []
        if actions:
            return self._lifecycle(actions, since, tools, note, call)
        intent = intent_of(request)
        if intent is None:
            if session and re.search(r"\b(?:it|that|this)\b", request, re.I):
                return (
                    f"I cannot change what {session[-1]} does with the offline templates; I "
                    "can pause, resume, delete or reschedule it, or set its params. "
                    + "".join(f"Not done: {m}. " for m in not_done(request, "", None, False))
                    + REAL_MODEL
                ), []
            return help_text(), []
        summary = messages[index].content if from_summary else None
        turn = _read_turn(since, summary)

        if intent in ("list", "run"):
            tool = "list_skills" if intent == "list" else "run_skill"
            run = RUN_RE.match(request)
            target = slug(run.group(1), 64) if run else ""
            if tool not in tools:
                return f"The {tool} tool is not available in this session. " + help_text(), []
            result = turn.results.get(tool)
            if result is not None:
                return (_skills_text(result) if intent == "list" else _run_text(target, result)), []
            if note is not None:
                return _note_text(note, turn), []
            return call(
                tool, {} if intent == "list" else {"name": target, "data": {}, "wait": True}
            )
        planned = plan(request)
        for p in planned:
            question = missing_fact(p.kind, p.params, request)
            if question is not None:
                return question + " Nothing was registered yet.", []
        if "write_skill" not in tools:
            return _no_tool_text(planned), []
        if turn.error is not None:
            return _error_text(turn.error, turn), []
        original = {p.name: p for p in planned}
        planned = [_rename(p, turn.taken) for p in planned]
        renamed = {p.name: o for o, p in zip(original, planned, strict=True) if p.name != o}
        placeholder_ok = any(is_placeholder(h) for h in _hosts(request))
        for p in planned:
            if p.name in turn.accepted:
                continue
            rejections = turn.rejected.get(p.name, [])
            if len(rejections) >= 2:
                return _rejected_text(p.name, rejections, turn), []
            reflexion = note is not None and rejections and "reject" in note.lower()
            if note is not None and not reflexion:
                return _note_text(note, turn), []
            if turn.submissions >= 2 * len(planned) + 1:
                return _note_text("too many submissions without progress", turn), []
            source, tests = render_skill(p.kind, **p.params)
            args: dict[str, Any] = {"source": source, "tests": tests}
            if placeholder_ok:  # the person's own URL: say so loudly in the answer
                args["placeholder_ok"] = True
            return call("write_skill", args)
        return _done_text(planned, turn, self.settings, renamed), []

    def _lifecycle(
        self,
        actions: list[Action],
        since: Sequence[Message],
        tools: set[str],
        note: str | None,
        call: Callable[[str, dict[str, Any]], tuple[str, list[ToolCall]]],
    ) -> tuple[str, list[ToolCall]]:
        """One lifecycle call per step, in order, then what they did."""
        calls = {c.id: c for m in since if m.role == "assistant" for c in m.tool_calls}
        results: dict[str, Message] = {}
        for m in since:
            c = calls.get(m.tool_call_id or "") if m.role == "tool" else None
            if c is not None:
                results[Action(c.name, c.arguments).key()] = m
        for a in actions:
            if a.key() in results:
                continue
            if a.tool not in tools:
                return f"The {a.tool} tool is not available in this session.", []
            if note is not None:
                return f"Stopping here as the loop asked: {note.strip().splitlines()[0][:400]}", []
            return call(a.tool, a.args)
        return _lifecycle_text([(a, results[a.key()]) for a in actions]), []


def _spec(t: ToolSpec) -> dict[str, Any]:
    return {"name": t.name, "description": t.description, "parameters": t.parameters}
