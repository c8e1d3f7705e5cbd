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
import ipaddress
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import takewhile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2

from loopwright.llm.types import Completion, Message, ToolCall, ToolSpec, Usage
from loopwright.sdk.skill import NAME_RE
from loopwright.settings import Settings
from loopwright.sidecar.capabilities import SECRET_PATTERNS, SECRET_REF
from loopwright.skills_registry.manifest import HOST_RE

NOTE = "[loopwright]"  # prefix of the loop's own messages (corrections, summaries)
KINDS = ("health-check", "incident-triage", "digest", "relay", "sync")
INTENTS = ("incident-response", *KINDS)  # what a request can ask for; the first is two skills
DEFAULT_BASE = "https://metrics.example.com"
DEFAULT_TRIAGE_EVENT = "incident.detected"
EXAMPLES = {
    "incident-response": "Our services have latency spikes overnight and nobody notices; "
    "the metrics are at http://127.0.0.1:9100/summary",
    "health-check": "Check https://api.example.com/health every 5 minutes and alert me when "
    "p95 is above 800 ms",
    "incident-triage": "Triage incidents when incident.opened arrives, using the data at "
    "https://metrics.example.com/summary",
    "digest": "Send me a daily digest of https://api.example.com/tickets at 9",
    "relay": "Forward order.created events to https://hooks.example.com/orders",
    "sync": "Sync https://crm.example.com/contacts to https://mail.example.com/contacts every hour",
}
REAL_MODEL = (
    "For requests beyond these templates, configure a real model: set LOOPWRIGHT_MODEL "
    "(e.g. anthropic:claude-sonnet-4-5, openai:gpt-4.1 or ollama:qwen2.5-coder) and "
    "LOOPWRIGHT_ANTHROPIC_API_KEY or LOOPWRIGHT_OPENAI_API_KEY."
)

_I = re.IGNORECASE
URL_TAIL = ".,;:!?)]}'\""  # punctuation that ends a sentence, not a URL
URL_RE = re.compile(r"https?://[^\s<>\"'`\\]+", _I)
LIST_RE = re.compile(
    r"\b(?:list|show)(?:\s+(?:me|all|the|my|registered))*\s+skills\b|"
    r"\b(?:what|which)\s+skills\b",
    _I,
)
RUN_RE = re.compile(
    r"^\s*(?:please\s+)?(?:run|start|trigger|execute)\s+(?:the\s+)?(?:skill\s+)?[`'\"]?"
    r"((?!(?:a|an|my|every|each)\b)[a-z][a-z0-9-]*(?:\s+[a-z][a-z0-9-]*){0,3}?)[`'\"]?"
    r"(?:\s+(?:skill|now|once))*\s*[.!]?\s*$",
    _I,
)
SYNC_RE = re.compile(
    r"\b(?:sync(?:s|ed|ing)?|synchroni[sz](?:e|es|ed|ing)|cop(?:y|ies|ying)|mirror(?:s|ing)?|"
    r"replicat(?:e|es|ing))\b",
    _I,
)
RELAY_RE = re.compile(r"\b(?:forward|relay)(?:s|ed|ing)?\b|\bwebhooks?\b", _I)
SEED_RE = re.compile(
    r"latency\s+spikes?|\bspik(?:e|es|ing)\b|\bovernight\b|\bat\s+night\b|"
    r"\b(?:nobody|no\s*one|no-one)\s+notic|\boutages?\b|\bdowntime\b",
    _I,
)
TRIAGE_RE = re.compile(r"\btriage\b|\binvestigate\b|\broot[\s-]+cause\b", _I)
INCIDENT_RE = re.compile(r"\bincidents?\b", _I)
DIGEST_RE = re.compile(
    r"\b(?:digests?|summary|summaries|summari[sz](?:e|ing)|reports?|recaps?|roundups?)\b", _I
)
HEALTH_RE = re.compile(
    r"\b(?:check|ping|monitor|watch|probe)(?:s|es|ed|ing)?\b|\b(?:health|uptime|latency|slow)\b", _I
)
EVENT = r"([A-Za-z][A-Za-z0-9_-]+(?:[.:/][A-Za-z0-9_-]+)+)"
EVENT_RES = tuple(
    re.compile(p, _I)
    for p in (
        r"\b(?:on|when|whenever|after|for)\s+(?:an?\s+|the\s+|each\s+|every\s+)?(?:event\s+)?"
        r"[`'\"]?" + EVENT,
        r"\bevents?\s+(?:named\s+|called\s+)?[`'\"]?" + EVENT,
        r"\b(?:forward|relay)\s+(?:all\s+|every\s+|each\s+|the\s+)*(?:events?\s+)?[`'\"]?" + EVENT,
    )
)
BARE_EVENT_RE = re.compile(r"(?<![\w.@/-])" + EVENT + r"(?![\w@/-])")
NOT_EVENTS = {"com", "org", "net", "io", "dev", "app", "ai", "co", "json", "py", "yaml", "txt"}
NAME_OVERRIDE_RE = re.compile(
    r"\b(?:(?:call|name)\s+it|skill\s+named)\s+"
    r"(?:[`'\"]([^`'\"\n]{1,60})[`'\"]|([A-Za-z0-9][A-Za-z0-9_-]*))",
    _I,
)
P95_RE = re.compile(
    r"(?:above|over|exceeds?|>|more\s+than|greater\s+than|beyond)\s*"
    r"(\d+(?:\.\d+)?)\s*(ms|milliseconds?|s|secs?|seconds?)\b",
    _I,
)
RATE_RE = re.compile(
    r"errors?(?:[\s_-]*rate)?\s*(?:is\s+|goes\s+)?(?:above|over|exceeds?|>|"
    r"more\s+than|greater\s+than|of)?\s*(\d+(?:\.\d+)?)\s*%",
    _I,
)
TO_URL_RE = re.compile(
    r"\b(?:to|into|webhook(?:\s+url)?(?:\s+at)?:?)\s+(" + URL_RE.pattern + ")", _I
)
SLACK_HOOK_RE = re.compile(r"^https://hooks\.slack\.com/services/", _I)
WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
SUMMARY_HEADS = ("Earlier requests:", "Skills so far:", "Runs started:", "Continue from here")
REGISTERED_RE = re.compile(r"^- ([a-z][a-z0-9-]*): registered version (\S+)", re.M)
VERDICT_NAME_RE = re.compile(r"""name\s*=\s*["']([a-z][a-z0-9-]{0,63})["']""")


@dataclass(frozen=True, slots=True)
class PlannedSkill:
    """One skill the model intends to register: its name, template kind and template params
    (``render_skill(kind, **params)`` renders it)."""

    name: str
    kind: str
    params: dict[str, Any]


# Rendering -----------------------------------------------------------------------------------


def pyrepr(value: Any) -> str:
    """``value`` as a Python literal (strings via ``repr``); refuses anything else."""
    if isinstance(value, str):
        text = repr(value)
        if "'" not in value and '"' not in value:  # same escapes, house quote style
            text = '"' + text[1:-1] + '"'
        return text
    if value is None or isinstance(value, bool | int):
        return repr(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be a skill literal")
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(pyrepr(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{pyrepr(str(k))}: {pyrepr(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"{type(value).__name__} cannot be a skill literal")


def pywrap(text: str, width: int = 84) -> str:
    """A long string as a parenthesised run of ``repr`` literals (Python joins adjacent
    literals into one constant), so the generated source keeps short lines."""
    chunks = [""]
    for word in re.findall(r"\S*\s*", text):
        for piece in [word[i : i + width] for i in range(0, len(word), width)]:
            if len(chunks[-1]) + len(piece) > width:
                chunks.append("")
            chunks[-1] += piece
    if len(chunks) == 1:
        return pyrepr(text)
    return "(\n" + "".join(f"        {pyrepr(c)}\n" for c in chunks) + "    )"


_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=False,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    trim_blocks=True,
    lstrip_blocks=True,
)
_ENV.filters["py"] = pyrepr
_ENV.filters["pywrap"] = pywrap
_ENV.filters["tojson"] = lambda v: json.dumps(v, ensure_ascii=True)


def clean_url(raw: str) -> str | None:
    """A URL safe to declare and call: http(s), a valid host, no credentials, no fragment,
    nothing that looks like a secret; None otherwise."""
    raw = raw.rstrip(URL_TAIL)
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if parts.scheme.lower() not in ("http", "https") or not HOST_RE.match(host) or len(raw) > 500:
        return None
    url = f"{parts.scheme.lower()}://{host}{f':{port}' if port else ''}{parts.path}"
    query = f"?{parts.query}" if parts.query and not _secretish(parts.query) else ""
    return None if _secretish(url) else url + query


def _secretish(text: str) -> bool:
    return any(p.search(text) for p, _ in SECRET_PATTERNS) or bool(SECRET_REF.search(text))


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _url(value: Any, what: str) -> str:
    url = clean_url(str(value))
    if url is None or url != value:
        raise ValueError(f"{what} must be a plain http(s) URL, not {str(value)[:200]!r}")
    return url


def _base(url: str) -> str:
    """The URL's folder: ``http://h:1/api/summary`` -> ``http://h:1/api``."""
    return (
        url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[0]
        if urlsplit(url).path.strip("/")
        else url.rstrip("/")
    )


def slug(text: str, limit: int = 40) -> str:
    """Lowercase words joined by ``-`` (empty when nothing is left)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")


def _name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value) or len(value) > 64:
        raise ValueError(f"skill name {str(value)[:80]!r} must be kebab-case, at most 64 chars")
    return value


def _event(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:/-]{1,128}", value):
        raise ValueError(f"event name {str(value)[:80]!r} must be letters, digits and . : / - _")
    return value


def _cron(value: Any) -> str:
    from croniter import croniter

    if not isinstance(value, str) or len(value.split()) != 5 or not croniter.is_valid(value):
        raise ValueError(f"cron expression {str(value)[:80]!r} must have five valid fields")
    return value


def describe_cron(expr: str) -> str:
    """A readable schedule for the expressions the planner produces."""
    m, h, dom, mon, dow = expr.split()
    if (dom, mon, dow) == ("*", "*", "*") and h == "*":
        if m == "*":
            return "every minute"
        if m.startswith("*/"):
            return f"every {m[2:]} minutes"
        if m == "0":
            return "every hour"
    if (dom, mon, dow) == ("*", "*", "*") and m == "0" and h.startswith("*/"):
        return f"every {h[2:]} hours"
    if m.isdigit() and h.isdigit() and (dom, mon) == ("*", "*"):
        at = f"{int(h):02d}:{int(m):02d} UTC"
        if dow == "*":
            return f"daily at {at}"
        if dow.isdigit() and int(dow) < 7:
            return f"every {WEEKDAYS[int(dow)].capitalize()} at {at}"
    return f"on cron '{expr}'"


def _number(p: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = p.pop(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise ValueError(f"{key} must be a number from {lo:g} to {hi:g}, not {value!r}")
    return float(value)


def _field(p: dict[str, Any], key: str, default: str) -> str:
    value = p.pop(key, default)
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
        raise ValueError(f"{key} must be a field name, not {str(value)[:80]!r}")
    return value


def _subject(url: str, fallback: str) -> str:
    """A name-friendly word for what ``url`` serves: its last path segment."""
    word = slug(urlsplit(url).path.rsplit("/", 1)[-1], 30)
    return word if word and word[0].isalpha() else fallback


# Each builder pops the params it knows from ``p`` and returns the template variables, with
# ``name`` (default), ``urls`` (for http_allow), ``what`` (one sentence) and ``t`` (numbers the
# test cases use).


def _health(p: dict[str, Any]) -> dict[str, Any]:
    url = _url(p.pop("metrics_url", DEFAULT_BASE + "/summary"), "metrics_url")
    limit = int(_number(p, "p95_ms", 800, 1, 3_600_000))
    rate = _number(p, "max_error_rate", 0.05, 0.0001, 0.99)
    escalate = p.pop("escalate_event", None)
    cron = _cron(p.pop("cron", "*/30 * * * *"))
    then = f"sends the {escalate} event" if escalate else "alerts the inbox"
    degraded = max(limit + 1, int(limit * 1.5))
    return {
        "name": "health-check",
        "metrics_url": url,
        "p95_ms": limit,
        "max_error_rate": rate,
        "escalate_event": _event(escalate) if escalate else None,
        "cron": cron,
        "tools": ["events", "http"] if escalate else ["http", "notify"],
        "urls": [url],
        "what": f"GET {url}, classify the service as "
        f"normal, degraded or failing (p95 limit {limit} ms, error-rate limit {rate:.1%}) and "
        f"when it is not normal {then}.",
        "t": {
            "normal_p95": limit // 2,
            "degraded_p95": degraded,
            "low_rate": rate / 4,
            "failing_rate": min(1.0, rate * 2),
            "tuned_p95_limit": degraded * 2,
        },
    }


def _triage(p: dict[str, Any]) -> dict[str, Any]:
    base = _base(_url(p.pop("base_url", DEFAULT_BASE), "base_url"))
    breakdown = _url(p.pop("breakdown_url", base + "/breakdown"), "breakdown_url")
    deploys = _url(p.pop("deploys_url", base + "/deploys"), "deploys_url")
    limit = int(_number(p, "p95_ms", 800, 1, 3_600_000))
    window = int(_number(p, "deploy_window_min", 120, 2, 10_080))
    event = _event(p.pop("event_name", DEFAULT_TRIAGE_EVENT))
    at, recent = 1_750_000_000, min(15, window // 2)
    return {
        "name": "incident-triage" if event == DEFAULT_TRIAGE_EVENT else f"triage-{slug(event)}",
        "event_name": event,
        "breakdown_url": breakdown,
        "deploys_url": deploys,
        "p95_ms": limit,
        "deploy_window_min": window,
        "tools": ["http", "notify"],
        "urls": [breakdown, deploys],
        "what": f"GET the latency breakdown ({breakdown}) and recent deploys "
        f"({deploys}), rank suspects (endpoints over {limit} ms, deploys in the {window} min "
        f"before), derive a severity and post a triage summary to the inbox.",
        "t": {
            "incident_ms": at * 1000,
            "recent_deploy": at - recent * 60,
            "recent_minutes": recent,
            "old_deploy": at - window * 60 - 3600,
            "slow_p95": int(limit * 2.5),
            "mild_p95": int(limit * 1.2) + 1,
        },
    }


def _digest(p: dict[str, Any]) -> dict[str, Any]:
    url = _url(p.pop("source_url", "https://api.example.com/items"), "source_url")
    cron = _cron(p.pop("cron", "0 9 * * *"))
    group = _field(p, "group_field", "status")
    most = int(_number(p, "max_items", 10, 1, 100))
    subject = _subject(url, "items")
    return {
        "name": f"{subject}-digest",
        "source_url": url,
        "cron": cron,
        "group_field": group,
        "max_items": most,
        "notify_when_empty": bool(p.pop("notify_when_empty", False)),
        "title": f"{subject} digest",
        "tools": ["http", "notify"],
        "urls": [url],
        "what": f"GET {url}, count the items per "
        f"{group} field, list the first {most} and post the digest to the inbox.",
    }


def _relay(p: dict[str, Any]) -> dict[str, Any]:
    event = _event(p.pop("event_name", "relay.outbound"))
    secret = p.pop("secret_name", None)
    if secret is not None and not re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", str(secret)):
        raise ValueError("secret_name must be UPPER_SNAKE_CASE")
    url = p.pop("webhook_url", None if secret else "https://hooks.example.com/in")
    url = None if secret else _url(url, "webhook_url")
    where = f"the Slack webhook stored as secret {secret}" if secret else url
    return {
        "name": f"relay-{slug(event)}",
        "event_name": event,
        "secret_name": secret,
        "webhook_url": url,
        "tools": ["notify"] if secret else ["http"],
        "urls": [url] if url else [],
        "what": f"POST the event (name, id, data, delivery id) to {where}.",
    }


def _sync(p: dict[str, Any]) -> dict[str, Any]:
    src = _url(p.pop("source_url", "https://source.example.com/records"), "source_url")
    dst = _url(p.pop("target_url", "https://target.example.com/records"), "target_url")
    key = _field(p, "key_field", "id")
    cron = _cron(p.pop("cron", "0 * * * *"))
    return {
        "name": f"sync-{_subject(src, 'records')}",
        "source_url": src,
        "target_url": dst,
        "key_field": key,
        "cron": cron,
        "tools": ["http"],
        "urls": [src, dst],
        "what": f"GET {src} and {dst}, match records by "
        f"their {key} field and POST only new or changed ones to {dst}.",
    }


_BUILDERS = {
    "health-check": _health,
    "incident-triage": _triage,
    "digest": _digest,
    "relay": _relay,
    "sync": _sync,
}


def _context(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The template variables for ``kind``: params with defaults, validated, plus the derived
    declaration (tools, hosts), description and test-case numbers."""
    build = _BUILDERS.get(kind)
    if build is None:
        raise ValueError(f"unknown skill kind {kind!r}; kinds: {', '.join(KINDS)}")
    p = dict(params)
    request = str(p.pop("request", "") or "")
    name = p.pop("name", None)
    ctx = build(p)
    if p:
        raise ValueError(f"unknown params for {kind}: {sorted(p)}")
    ctx["name"] = _name(name or ctx["name"])
    ctx["http_allow"] = sorted({_host(u) for u in ctx["urls"]})
    excerpt = _excerpt(request)
    when = f"on event {ctx['event_name']}" if "event_name" in ctx else describe_cron(ctx["cron"])
    ctx["when"] = when
    requested = f' Requested: "{excerpt}"' if excerpt else ""
    ctx["description"] = f"{when[0].upper()}{when[1:]}: {ctx['what']}{requested}"
    return ctx


def _excerpt(request: str, limit: int = 160) -> str:
    """A short, single-line, secret-free quote of the request for the skill's description."""
    text = " ".join(request.split())
    for pattern, _ in SECRET_PATTERNS:
        text = pattern.sub("[redacted]", text)
    text = SECRET_REF.sub("[secret]", text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_FILES = {"health-check": "health_check", "incident-triage": "incident_triage"}


def render_skill(kind: str, **params: Any) -> tuple[str, list[dict[str, Any]]]:
    """The skill source and its test cases for template ``kind`` (one of :data:`KINDS`).

    ``params`` override the kind's defaults (``name``, URLs, ``cron``, thresholds, event
    names...; ``request`` quotes the person's request in the description); invalid values
    raise ``ValueError``.
    """
    ctx = _context(kind, params)
    stem = _FILES.get(kind, kind)
    source = _ENV.get_template(f"{stem}.py.j2").render(**ctx)
    tests = json.loads(_ENV.get_template(f"{stem}.tests.json.j2").render(**ctx))
    return source, tests


# Reading requests ----------------------------------------------------------------------------


def _intent(request: str) -> str | None:
    """``list``, ``run``, one of :data:`INTENTS`, or None for anything else."""
    if LIST_RE.search(request):
        return "list"
    if RUN_RE.match(request) and not URL_RE.search(request) and _schedule(request) is None:
        return "run"
    if SYNC_RE.search(request):
        return "sync"
    if RELAY_RE.search(request):
        return "relay"
    if SEED_RE.search(request):
        return "incident-response"
    if TRIAGE_RE.search(request):
        return "incident-triage"
    if INCIDENT_RE.search(request):
        return "incident-response"
    if DIGEST_RE.search(request):
        return "digest"
    if HEALTH_RE.search(request):
        return "health-check"
    return None


def _schedule(text: str) -> str | None:
    """A cron expression for the first schedule phrase in ``text``."""
    t = text.lower()
    if m := re.search(r"\bevery\s+(\d+)\s*(?:minutes?|mins?|m)\b", t):
        n = min(max(int(m.group(1)), 1), 1440)
        if n < 60:
            return f"*/{n} * * * *"
        return "0 * * * *" if n < 120 else f"0 */{min(n // 60, 23)} * * *"
    if m := re.search(r"\bevery\s+(\d+)\s*(?:hours?|hrs?|h)\b", t):
        n = min(max(int(m.group(1)), 1), 23)
        return "0 * * * *" if n == 1 else f"0 */{n} * * *"
    if re.search(r"\bevery\s+(?:\d+\s*)?(?:seconds?|secs?)\b|\bevery\s+minute\b", t):
        return "* * * * *"
    if re.search(r"\bevery\s+half[\s-]+(?:an\s+)?hour\b|\bhalf[\s-]hourly\b", t):
        return "*/30 * * * *"
    if re.search(r"\bhourly\b|\bevery\s+hour\b", t):
        return "0 * * * *"
    hour, minute = None, 0
    if m := re.search(r"\bat\s+(\d{1,2})(?::(\d{2}))?\s*(am|pm|h|o'?clock)?\b", t):
        hour, minute = int(m.group(1)), int(m.group(2) or 0)
        hour = hour + 12 if m.group(3) == "pm" and hour < 12 else hour
        hour = 0 if m.group(3) == "am" and hour == 12 else hour
        if hour > 23 or minute > 59:
            hour, minute = None, 0
    for day, name in enumerate(WEEKDAYS):
        if re.search(rf"\b(?:every|on)\s+{name}s?\b", t):
            return f"{minute} {9 if hour is None else hour} * * {day}"
    if re.search(r"\bweekly\b|\bevery\s+week\b", t):
        return f"{minute} {9 if hour is None else hour} * * 1"
    defaults = (
        ("morning", 8),
        ("evening", 18),
        ("night", 2),
        ("nightly", 2),
        ("daily", 9),
        ("day", 9),
    )
    for word, default_hour in defaults:
        if re.search(
            rf"\b(?:every|each)\s+{word}\b" if word not in ("daily", "nightly") else rf"\b{word}\b",
            t,
        ):
            return f"{minute} {default_hour if hour is None else hour} * * *"
    return None if hour is None else f"{minute} {hour} * * *"


def _facts(request: str) -> dict[str, Any]:
    """Everything the planner reads from the request text."""
    raw_urls = [m.group(0) for m in URL_RE.finditer(request)]
    urls = [u for u in (clean_url(r) for r in raw_urls) if u]
    target_raw = next((m.group(1) for m in TO_URL_RE.finditer(request)), None)
    facts: dict[str, Any] = {"urls": urls, "target_raw": target_raw, "name": None}
    facts["target"] = clean_url(target_raw) if target_raw else None
    facts["cron"] = _schedule(request)
    if m := P95_RE.search(request):
        value = float(m.group(1)) * (1 if m.group(2).lower().startswith("m") else 1000)
        facts["p95_ms"] = max(1, min(int(value), 3_600_000))
    if m := RATE_RE.search(request):
        facts["max_error_rate"] = max(0.0001, min(float(m.group(1)) / 100, 0.99))
    no_urls = URL_RE.sub(" ", request)
    for pattern in EVENT_RES:
        if m := pattern.search(no_urls):
            facts["event"] = m.group(1)[:128]
            break
    else:
        for m in BARE_EVENT_RE.finditer(no_urls):
            parts = re.split(r"[.:/]", m.group(1).lower())
            if len(parts[0]) > 1 and parts[-1] not in NOT_EVENTS:
                facts["event"] = m.group(1)[:128]
                break
    if m := NAME_OVERRIDE_RE.search(request):
        name = slug(m.group(1) or m.group(2), 48)
        facts["name"] = name if name and name[0].isalpha() else None
    return facts


def plan(request: str) -> list[PlannedSkill]:
    """The skills the offline model would build for ``request`` (empty when it cannot)."""
    intent = _intent(request)
    if intent not in INTENTS:
        return []
    f = _facts(request)
    urls: list[str] = f["urls"]
    named: dict[str, Any] = {"name": f["name"]} if f["name"] else {}
    limits: dict[str, Any] = {k: f[k] for k in ("p95_ms", "max_error_rate") if k in f}
    if intent in ("incident-response", "health-check"):
        url = urls[0] if urls else DEFAULT_BASE
        url = url if urlsplit(url).path.strip("/") else url.rstrip("/") + "/summary"
        health: dict[str, Any] = {"metrics_url": url, "cron": f["cron"] or "*/30 * * * *"}
        health.update(limits)
        if intent == "health-check":
            host = _host(url)
            label = slug(host if _is_ip(host) else host.rsplit(".", 1)[0])
            out = [("health-check", {**health, "name": f"health-check-{label}", **named})]
        else:
            triage = {"base_url": url, "p95_ms": limits.get("p95_ms", 800)}
            if f["name"]:
                triage["name"] = f"{f['name']}-triage"
            health["escalate_event"] = DEFAULT_TRIAGE_EVENT
            out = [("health-check", {**health, **named}), ("incident-triage", triage)]
    elif intent == "incident-triage":
        triage = {"base_url": urls[0] if urls else DEFAULT_BASE, **named}
        triage.update(event_name=f.get("event", DEFAULT_TRIAGE_EVENT), **limits)
        triage.pop("max_error_rate", None)
        out = [("incident-triage", triage)]
    elif intent == "digest":
        digest = {"cron": f["cron"] or "0 9 * * *", **named}
        if urls:
            digest["source_url"] = urls[0]
        out = [("digest", digest)]
    elif intent == "relay":
        relay: dict[str, Any] = {"event_name": f.get("event", "relay.outbound"), **named}
        raw = f["target_raw"] or next((m.group(0) for m in URL_RE.finditer(request)), "")
        if SLACK_HOOK_RE.match(raw):  # a secret: stored by the operator, never in the source
            secret = slug(relay["event_name"], 50).upper().replace("-", "_") or "RELAY"
            relay["secret_name"] = secret + "_WEBHOOK"
        elif f["target"] or urls:
            relay["webhook_url"] = f["target"] or urls[-1]
        out = [("relay", relay)]
    else:
        target = f["target"] or (urls[1] if len(urls) > 1 else None)
        source = next((u for u in urls if u != target), None)
        sync = {"cron": f["cron"] or "0 * * * *", **named}
        sync.update({k: v for k, v in (("source_url", source), ("target_url", target)) if v})
        out = [("sync", sync)]
    planned = []
    for kind, given in out:
        params = {"request": request, **given}
        name = _context(kind, params)["name"]
        planned.append(PlannedSkill(name, kind, {**params, "name": name}))
    return planned


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _private(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    return _is_ip(host) and not ipaddress.ip_address(host).is_global


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
        'I can also list the registered skills ("list skills") and run one ("run health-check").',
        REAL_MODEL,
    ]
    return "\n".join(lines)


def _done_text(planned: list[PlannedSkill], turn: _Turn, settings: Settings | None) -> str:
    built = [(p, _context(p.kind, p.params)) for p in planned]
    lines = [f"Registered {len(planned)} skill{'s' if len(planned) > 1 else ''}:"]
    for p, ctx in built:
        view = turn.accepted.get(p.name, {})
        version = str(view.get("version") or "?")[:12]
        cron = f" (cron `{ctx['cron']}`)" if "cron" in ctx else ""
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
    private = sorted(h for h in hosts if _private(h))
    if private and not (settings and settings.http_allow_private):
        lines.append(
            f"- {', '.join(private)}: a private address; runs reach it only with "
            "LOOPWRIGHT_HTTP_ALLOW_PRIVATE=true"
        )
    request = str(planned[0].params.get("request", ""))
    raws = [m.group(0).rstrip(URL_TAIL) for m in URL_RE.finditer(request)]
    changed = [r for r in raws if (clean_url(r) or "").lower() != r.lower()]
    if changed:
        lines.append(
            f"- {len(changed)} URL(s) in the request had credentials, a secret-looking query or "
            "an invalid host and were trimmed or left out; credentials belong in platform "
            "secrets (LOOPWRIGHT_SECRETS), never in a skill"
        )
    lines += ["", "These came from the offline template model. " + REAL_MODEL]
    return "\n".join(lines)


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
        when = (
            f"cron {trig.get('expr')}"
            if trig.get("type") == "cron"
            else f"event {trig.get('name')}"
            if trig.get("type") == "event"
            else "manual"
        )
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
        intent = _intent(request)
        if intent is None:
            return help_text(), []
        summary = messages[index].content if from_summary else None
        turn = _read_turn(since, summary)
        call_n = 1 + sum(len(m.tool_calls) for m in messages if m.role == "assistant")

        def call(tool: str, args: dict[str, Any]) -> tuple[str, list[ToolCall]]:
            blob = json.dumps([request, tool, args], sort_keys=True)
            tag = hashlib.sha256(blob.encode()).hexdigest()[:8]
            return "", [ToolCall(id=f"offline-{call_n}-{tag}", name=tool, arguments=args)]

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
        if "write_skill" not in tools:
            return _no_tool_text(planned), []
        if turn.error is not None:
            return _error_text(turn.error, turn), []
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
            return call("write_skill", {"source": source, "tests": tests})
        return _done_text(planned, turn, self.settings), []


def _spec(t: ToolSpec) -> dict[str, Any]:
    return {"name": t.name, "description": t.description, "parameters": t.parameters}
