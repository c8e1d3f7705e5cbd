"""Reading what a request asks beyond "build a skill", for the offline template model.

- ``harm_reason``: requests no skill may serve (host files, secrets, cloud metadata,
  exfiltration), refused in one sentence without advice to weaken anything;
- ``lifecycle_actions``: pause, resume, delete, a new schedule or new param values for skills
  that exist, routed to the lifecycle tools, with "it"/"that" resolved against the skills the
  session wrote or named (``session_skills``);
- ``missing_fact``: the clarifying question when a required fact (which URL, where to send)
  is missing, instead of a placeholder;
- ``not_done``: the parts of a request the templates cannot build, said plainly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from loopwright.llm.offline_schedule import Schedule, read_schedule
from loopwright.llm.types import Message

_I = re.IGNORECASE
URL_RE = re.compile(r"https?://[^\s<>\"'`\\]+", _I)
SKILL_RE = r"[a-z][a-z0-9]*(?:-[a-z0-9]+)+"  # a kebab-case name with at least one dash
PRONOUN_RE = r"it|that(?:\s+one)?|this(?:\s+one)?|them|the\s+(?:skill|check|digest|relay|sync)"
HARM = (
    (
        re.compile(
            r"/etc/(?:passwd|shadow|sudoers|hosts)|~/\.ssh|\bid_rsa\b|\.aws/credentials|"
            r"/proc/|/var/run/secrets|\bhost(?:'s)?\s+(?:file\s*system|files|disk)|"
            r"\blocal\s+files?\b|\.env\s+file",
            _I,
        ),
        "it reads files on the host, and skills run sandboxed with no access to the host's files",
    ),
    (
        re.compile(
            r"169\.254\.169\.254|metadata\.google\.internal|\binstance\s+metadata\b|"
            r"security-credentials|\bmetadata\s+(?:service|endpoint)\b|fd00:ec2::254",
            _I,
        ),
        "it reaches the cloud metadata service, which hands out the machine's own "
        "credentials; no skill may reach it",
    ),
    (
        re.compile(
            r"\b(?:print|dump|send|post|leak|email|upload|copy|export|forward)\b[^.]{0,12}?\b"
            r"(?:all\s+)?(?:the\s+|our\s+|my\s+)?(?:secrets|api\s+keys|passwords|credentials|"
            r"(?:api|access|auth|bearer)\s+tokens|environment\s+variables|env\s+vars)\b|"
            r"\bexfiltrat",
            _I,
        ),
        "it would expose secrets or send data where it should not go; skills only use the "
        "secrets they declare, inside the platform's tools, and never hand them out",
    ),
)
VERBS = {
    "pause_skill": r"pause|stop|disable|suspend|halt|mute|turn\s+off|switch\s+off",
    "resume_skill": r"resume|unpause|un-pause|re-?enable|restart|turn\s+(?:back\s+)?on|"
    r"switch\s+(?:back\s+)?on|start\s+(?:it\s+)?again",
    "delete_skill": r"delete|remove|get\s+rid\s+of|retire|drop",
}
CLAUSE_SPLIT = re.compile(r"\s*(?:;|,|\.\s|\band\s+(?:then\s+)?|\bthen\b)\s*", _I)
RESCHEDULE_RE = re.compile(
    rf"^(?:please\s+)?(?:(?:make|run|change|set|move|reschedule|switch|update|have)\s+)"
    rf"(?:the\s+schedule\s+(?:of|for)\s+)?(?P<target>{PRONOUN_RE}|{SKILL_RE})\b",
    _I,
)
INSTEAD_RE = re.compile(r"\binstead\b|\brather\b|\bfrom\s+now\s+on\b", _I)
PARAM_RE = re.compile(
    rf"^(?:please\s+)?(?:set|change|make|raise|lower|increase|decrease|update)\s+"
    rf"(?:(?P<t1>{SKILL_RE})(?:'s)?\s+|(?:the\s+|its\s+))?(?P<param>[a-z][a-z0-9_ %-]{{1,30}}?)\s+"
    rf"(?:(?:of|for|on)\s+(?P<t2>{PRONOUN_RE}|{SKILL_RE})\s+)?to\s+(?P<value>[0-9.]+\s*"
    rf"(?:%|ms|milliseconds?|s|seconds?)?)\s*$",
    _I,
)
PARAM_WORDS = {
    "p95_ms": r"p95(?:_ms)?|threshold|latency(?:\s+limit|\s+threshold)?|limit",
    "max_error_rate": r"(?:max_)?error(?:[\s_]rate)?(?:\s+limit|\s+threshold)?",
    "max_items": r"max(?:_|\s+)items|items|item\s+count",
    "deploy_window_min": r"deploy(?:_|\s+)window(?:_min)?",
    "alert_after": r"alert_after|(?:failure\s+)?streak(?:\s+length)?|failures\s+in\s+a\s+row",
    "window_hours": r"window_hours|window",
    "first_window_hours": r"first_window_hours|first\s+window",
}
STREAK_FOLLOW_RE = re.compile(
    rf"^(?:please\s+)?(?:make|have|set|change|update|let)\s+(?P<target>{PRONOUN_RE}|{SKILL_RE})\s+"
    r"(?:only\s+)?(?:alert|act|notify|warn|page|tell|report|shout|escalate)\b",
    _I,
)
_COUNT = r"(\d{1,4}|two|three|four|five|six|seven|eight|nine|ten|twice|thrice)"
_ROW = r"(?:in\s+a\s+row|running|consecutively|back[\s-]+to[\s-]+back|straight|on\s+the\s+trot)"
_MISSES = (
    r"(?:failures?|fails|failed\s+(?:checks?|pings?|probes?|runs?|attempts?)|errors?|times?|"
    r"checks?|misses|outages?|timeouts?)"
)
STREAK_COUNT_RES = (
    re.compile(rf"\b{_COUNT}\s+{_MISSES}\s+{_ROW}\b", _I),
    re.compile(rf"\b{_COUNT}\s+(?:consecutive|successive|straight|sequential)\s+{_MISSES}", _I),
    re.compile(
        rf"\b(?:fails?|failed|failing|errors?|errored|is\s+down|goes\s+down|breaks?)\s+"
        rf"{_COUNT}(?:\s+times)?\s+{_ROW}\b",
        _I,
    ),
)
STREAK_RE = re.compile(
    r"\b(\d+|two|three|four|five)\s+(?:failures?|errors?|times?|failed\s+checks?|checks?)\s+"
    r"(?:in\s+a\s+row|running|consecutively)\b|\bconsecutive\b|\bstreak\b|\bin\s+a\s+row\b",
    _I,
)
_NUMBERS = {
    "two": 2, "twice": 2, "three": 3, "thrice": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip
SINCE_RE = re.compile(
    r"\bsince\s+(?:the\s+|my\s+|our\s+|your\s+)?(?:last|previous|prior|latest)\s+"
    r"(?:run|time|check|digest|one|report|update|summary|poll|execution|pass)\b|"
    r"\bsince\s+last\s+time\b|\bnew\s+since\s+last\b|"
    r"\bsince\s+(?:it|you|this|the\s+skill)\s+last\s+(?:ran|run|checked|looked|polled)\b",
    _I,
)
WINDOW_RE = re.compile(
    r"\byesterday(?:'s)?\b|\b(?:last|past|previous)\s+(?:\d+\s+)?(?:24\s+hours|hours?|days?|"
    r"weeks?|months?)\b|\bthis\s+week's\b|\btoday's\b",
    _I,
)
HOURS_RE = re.compile(
    r"\b(?:last|past|previous|preceding)\s+(?:(\d{1,4})\s+)?(hours?|days?|week|7\s+days)\b", _I
)
CHANNEL_RE = re.compile(
    r"\b(slack|e-?mail|sms|text\s+me|pagerduty|page\s+me|teams|discord|telegram|whatsapp|"
    r"phone|call\s+me)\b",
    _I,
)
_FIELD = r"(severity|priority|level|env(?:ironment)?|region|status)"
_VALUE = r"[`'\"]?([A-Za-z0-9_-]{1,32})[`'\"]?"
MATCH_RES = (
    re.compile(
        rf"\b(?:with|where|whose|having)\s+(?:a\s+|the\s+)?{_FIELD}\s*(?:is\s+|=\s*|:\s*|of\s+)?{_VALUE}",
        _I,
    ),
    re.compile(rf"\b{_FIELD}\s*(?:=|:|==)\s*{_VALUE}", _I),
)
ADJ_MATCH_RE = re.compile(
    r"\b(critical|high|medium|low|sev[0-4]|p[0-4])[\s-]+(severity|priority)\b", _I
)
BEYOND_RE = (
    (re.compile(r"\bcrm\b|\bsalesforce\b|\bhubspot\b", _I), "a lookup in your CRM"),
    (re.compile(r"\bvip\b", _I), "the VIP condition"),
    (re.compile(r"\brotat\w*\s+(?:the\s+)?(?:api\s+)?(?:keys?|secrets?|credentials)", _I),
     "rotating keys (a skill cannot change platform secrets)"),
    (re.compile(r"\bsummari[sz]e\s+with\s+(?:an?\s+)?(?:llm|ai|gpt|claude)\b|\bsentiment\b", _I),
     "the model-written summary"),
    (re.compile(r"\bdeduplicat\w*|\bde-dup\w*", _I), "deduplication across runs"),
)  # fmt: skip


def harm_reason(request: str) -> str | None:
    """Why no skill may serve ``request``, or None."""
    for pattern, why in HARM:
        if pattern.search(request):
            return why
    return None


@dataclass(frozen=True, slots=True)
class Action:
    """One lifecycle tool call the request asks for."""

    tool: str
    args: dict[str, Any]

    def key(self) -> str:
        return json.dumps([self.tool, self.args], sort_keys=True)


def session_skills(messages: Sequence[Message]) -> list[str]:
    """Skills the conversation wrote or named with a tool, most recent last (also read from a
    re-anchoring summary)."""
    out: list[str] = []

    def add(name: Any) -> None:
        if isinstance(name, str) and re.fullmatch(r"[a-z][a-z0-9-]{0,63}", name):
            if name in out:
                out.remove(name)
            out.append(name)

    calls = {c.id: c for m in messages if m.role == "assistant" for c in m.tool_calls}
    for m in messages:
        if m.role == "user" and "Skills this session wrote or named" in m.content:
            line = m.content.split("Skills this session wrote or named", 1)[1].splitlines()[0]
            for name in line.split(":", 1)[-1].split(","):
                add(name.strip())
        if m.role == "user":
            for found in re.finditer(r"^- ([a-z][a-z0-9-]*): registered version", m.content, re.M):
                add(found.group(1))
        if m.role != "tool" or m.is_error:
            continue
        call = calls.get(m.tool_call_id or "")
        if call is None:
            continue
        if call.name in ("write_skill", "set_schedule", "set_params"):
            try:
                view = json.loads(m.content)
            except ValueError:
                continue
            if isinstance(view, dict) and view.get("accepted"):
                add(view.get("name"))
        elif call.name != "run_skill":
            add(call.arguments.get("name"))
    return out


def _target(word: str, session: list[str]) -> str | None:
    word = word.strip().lower()
    if re.fullmatch(PRONOUN_RE, word, _I):
        return session[-1] if session else None
    return word


def schedule_args(sched: Schedule) -> dict[str, Any]:
    """set_schedule arguments for a schedule read from words."""
    if sched.every is not None:
        return {"every": sched.every}
    return {"cron": sched.expr, **({"tz": sched.tz} if sched.tz else {})}


def _param_value(name: str, raw: str) -> float | int | None:
    m = re.fullmatch(r"([0-9.]+)\s*(%|ms|milliseconds?|s|seconds?)?", raw.strip(), _I)
    if m is None:
        return None
    try:
        value = float(m.group(1))
    except ValueError:
        return None
    unit = (m.group(2) or "").lower()
    if name == "p95_ms":
        return int(value * 1000) if unit.startswith("s") else int(value)
    if name == "max_error_rate":
        return value / 100 if unit == "%" or value > 1 else value
    return int(value)


def lifecycle_actions(request: str, session: list[str]) -> list[Action] | str | None:
    """The lifecycle calls ``request`` asks for; a clarifying question when it names none it
    can resolve; None when it is not a lifecycle request."""
    if URL_RE.search(request):
        return None
    text = request.strip().rstrip(".!")
    if m := PARAM_RE.match(text):
        target = m.group("t1") or m.group("t2") or "it"
        name = _target(target, session)
        param = next(
            (p for p, words in PARAM_WORDS.items() if re.fullmatch(words, m.group("param"), _I)),
            None,
        )
        if name is None:
            return "Which skill do you mean? This session has not written or named one yet."
        if param is None:
            return (
                f"Which parameter of {name} is {m.group('param')!r}? `loopwright skills show "
                f"{name}` lists its params."
            )
        value = _param_value(param, m.group("value"))
        if value is not None:
            return [Action("set_params", {"name": name, "params": {param: value}})]
    if (m := STREAK_FOLLOW_RE.match(text)) and (after := streak_of(text)) is not None:
        name = _target(m.group("target"), session)
        if name is None:
            return "Which skill do you mean? This session has not written or named one yet."
        return [Action("set_params", {"name": name, "params": {"alert_after": after}})]
    sched = read_schedule(text)
    if sched is not None:
        m = RESCHEDULE_RE.match(text)
        bare = INSTEAD_RE.search(text) and not re.search(r"\b(?:check|monitor|digest|sync)\b", text)
        if m is not None or bare:
            name = _target(m.group("target") if m else "it", session)
            if name is None:
                return (
                    "Which skill should run on the new schedule? This session has not "
                    "written or named one yet; `list skills` shows them."
                )
            return [Action("set_schedule", {"name": name, **schedule_args(sched)})]
    actions: list[Action] = []
    for clause in CLAUSE_SPLIT.split(text):
        for tool, verbs in VERBS.items():
            m = re.match(
                rf"^(?:please\s+)?(?:{verbs})\s+(?:the\s+skill\s+|skill\s+)?"
                rf"(?P<target>{PRONOUN_RE}|{SKILL_RE}|[a-z][a-z0-9]{{2,40}}(?=\s*$))\s*"
                r"(?:skill|for\s+now|now|please|for\s+a\s+while)?\s*$",
                clause.strip(),
                _I,
            )
            if m is None:
                continue
            name = _target(m.group("target"), session)
            if name is None:
                return (
                    "Which skill do you mean? This session has not written or named one yet; "
                    "`list skills` shows them."
                )
            actions.append(Action(tool, {"name": name}))
            break
    return actions or None


def missing_fact(kind: str, params: dict[str, Any], request: str) -> str | None:
    """The clarifying question when the request lacks a fact the skill needs."""
    given = bool(URL_RE.search(request))
    if kind in ("health-check", "incident-triage") and not given:
        return (
            "Which URL should I check? Give the full address of the service's status or "
            "metrics endpoint (and how often, if not every 30 minutes)."
        )
    if kind == "digest" and "source_url" not in params:
        return (
            "Which URL returns the items for the digest? Give its full address (and when to "
            "send it, if not daily at 09:00 UTC)."
        )
    if kind == "sync" and not ("source_url" in params and "target_url" in params):
        return (
            "Which two URLs should I sync: where do the records come from, and where do they "
            "go? Give both full addresses."
        )
    if kind == "relay":
        if "webhook_url" not in params and "secret_name" not in params:
            return (
                "Where should I forward the events: a webhook URL, or a Slack incoming "
                "webhook (stored as a platform secret)?"
            )
        if params.get("event_name") == "relay.outbound":
            return "Which event should I forward? Give its name, e.g. order.created."
    return None


def event_match(request: str) -> dict[str, str]:
    """Event filters stated in words: "with severity high" -> {"severity": "high"}."""
    out: dict[str, str] = {}
    text = URL_RE.sub(" ", request)
    found = [(m.group(1), m.group(2)) for p in MATCH_RES for m in p.finditer(text)]
    found += [(m.group(2), m.group(1)) for m in ADJ_MATCH_RE.finditer(text)]
    for field, value in found:
        key = "environment" if field.lower().startswith("env") else field.lower()
        if value.lower() in ("is", "of", "to", "and", "the", "a", "an", "above", "below"):
            continue
        out.setdefault(key, value.lower())
    return out


def streak_of(request: str) -> int | None:
    """N of "after N failures in a row" (2 to 1000), or None when no counted streak is stated."""
    text = URL_RE.sub(" ", request)
    for pattern in STREAK_COUNT_RES:
        if m := pattern.search(text):
            word = m.group(1).lower()
            n = int(word) if word.isdigit() else _NUMBERS[word]
            return n if 2 <= n <= 1000 else None
    return None


def since_last_run(request: str) -> bool:
    """True when the request asks for only what is new since the previous run."""
    return bool(SINCE_RE.search(URL_RE.sub(" ", request)))


def window_of(request: str) -> tuple[str, int] | None:
    """A digest's time window in words: ("day", days ago) for yesterday's or today's items,
    ("hours", N) for the last N hours or days (a week is 168 hours); None otherwise."""
    text = URL_RE.sub(" ", request)
    if re.search(r"\byesterday(?:'s)?\b", text, _I):
        return "day", 1
    if re.search(r"\btoday's\b", text, _I):
        return "day", 0
    if m := HOURS_RE.search(text):
        n = int(m.group(1) or 1)
        unit = m.group(2).lower()
        hours = n * (168 if unit.startswith(("week", "7")) else 24 if unit.startswith("d") else 1)
        return ("hours", hours) if 1 <= hours <= 8760 else None
    return None


def not_done(
    request: str,
    kind: str,
    sched: Schedule | None,
    matched: bool,
    handled: Collection[str] = (),
) -> list[str]:
    """The parts of ``request`` the skill built from template ``kind`` does not do, and why;
    ``handled`` names what the built skill does keep ("streak", "since", "window")."""
    out: list[str] = []
    if "streak" not in handled and (m := STREAK_RE.search(request)):
        how = (
            "say how many failed checks in a row, e.g. 'after 3 failures in a row'"
            if kind == "health-check"
            else "only the health-check template counts failures between runs"
        )
        out.append(
            f"alerting only after a streak ({m.group(0)}): {how}; this skill acts every time"
        )
    if "since" not in handled and SINCE_RE.search(request):
        out.append(
            "only what is new since the last run: only the digest template keeps a mark "
            "between runs; this skill handles the current data every time"
        )
    if "window" not in handled and (m := WINDOW_RE.search(request)):
        out.append(
            f"the time window ({m.group(0)}): the template reads the whole list the URL "
            "returns; filter it at the source (a query parameter) or ask a real model"
        )
    for m in CHANNEL_RE.finditer(request):
        channel = m.group(1).lower()
        if kind == "relay" and channel == "slack":
            continue
        out.append(
            f"delivery by {channel}: this skill posts to the Loopwright inbox (`loopwright "
            "inbox`); a relay can forward events to a Slack-compatible webhook stored as a "
            "platform secret"
        )
        break
    if event_match(request) and not matched:
        out.append(
            f"the filter {event_match(request)}: the {kind} template has no such filter "
            "(only event triggers can match event fields)"
        )
    for pattern, what in BEYOND_RE:
        if pattern.search(request):
            out.append(
                f"{what}: the templates cannot build it; a real model (LOOPWRIGHT_MODEL) or a "
                "hand-written skill (`loopwright skills submit`) can"
            )
    if sched is not None:
        out += list(sched.dropped)
    return out
