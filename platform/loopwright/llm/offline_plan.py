"""Planning and rendering for the offline template model: from a request to skills.

``plan(request)`` reads a person's request with keyword and regex rules and returns the skills
to build (kind and parameters); ``render_skill(kind, **params)`` renders one skill's source and
test cases from the jinja2 templates in ``templates/``. Every value taken from a request reaches
the generated source through ``repr`` (the ``py`` filter) or JSON (``tojson``), after validation
(URLs, event names, cron expressions, skill names), so hostile request text cannot become code.
The conversation side (what to do next in a turn) is :mod:`loopwright.llm.offline`.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2

from loopwright.llm.offline_requests import event_match, since_last_run, streak_of, window_of
from loopwright.llm.offline_schedule import Schedule, read_schedule
from loopwright.sdk.errors import SkillDefinitionError
from loopwright.sdk.spec import NAME_RE
from loopwright.sdk.triggers import every
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
    r"latency\s+spikes?|\bspik(?:e|es|ing)\b|"
    r"\b(?:nobody|no\s*one|no-one)\s+notic|\boutages?\b|\bdowntime\b",
    _I,
)
EYE_RE = re.compile(r"\bkeep\s+(?:an\s+)?eyes?\s+on\b|\bkeep\s+watch\b", _I)
TRIAGE_RE = re.compile(r"\btriage\b|\binvestigate\b|\broot[\s-]+cause\b", _I)
INCIDENT_RE = re.compile(r"\bincidents?\b", _I)
DIGEST_RE = re.compile(
    r"\b(?:digests?|summary|summaries|summari[sz](?:e|ing)|reports?|recaps?|roundups?|"
    r"round-ups?|rundowns?|run-downs?|overviews?|briefings?|wrap-?ups?)\b",
    _I,
)
# A URL that names a status endpoint: a bare "look at URL every 90 minutes" is a health check.
HEALTH_PATH_RE = re.compile(
    r"https?://[^\s/]+(?:/[^\s?#]*)?/(?:health|healthz|healthcheck|status|ping|up|alive|"
    r"livez|readyz|ready|heartbeat)/?(?:[?#\s]|$)",
    _I,
)
CHECK_URL_RE = re.compile(  # "monitor https://...": a health verb aimed at the URL itself
    r"\b(?:check|ping|monitor|watch|probe|poll)(?:s|es|ed|ing)?\s+(?:on\s+)?https?://", _I
)
FETCH_RE = re.compile(
    r"\b(?:send|give|email|mail|show|bring|get)\s+me\b|\b(?:list|collect|gather)\b", _I
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
    if (
        parts.scheme.lower() not in ("http", "https")
        or not HOST_RE.fullmatch(host)
        or len(raw) > 500
    ):
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
    if not isinstance(value, str) or not NAME_RE.fullmatch(value) or len(value) > 64:
        raise ValueError(f"skill name {str(value)[:80]!r} must be kebab-case, at most 64 chars")
    return value


def _event(value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:/-]{1,128}", value):
        raise ValueError(f"event name {str(value)[:80]!r} must be letters, digits and . : / - _")
    return value


def _trigger(p: dict[str, Any], default_cron: str) -> dict[str, Any]:
    """The trigger params (``cron`` + optional ``tz``, or ``every``), validated, as template
    variables: the trigger's Python source is built from the validated values by ``repr``."""
    interval, tz, expr = p.pop("every", None), p.pop("tz", None), p.pop("cron", default_cron)
    if interval is not None:
        if not isinstance(interval, str) or not re.fullmatch(r"[1-9][0-9]{0,5}[mhd]", interval):
            raise ValueError(f"every must be like '90m', '7h' or '2d', not {str(interval)[:40]!r}")
        try:
            every(interval)
        except SkillDefinitionError as exc:
            raise ValueError(str(exc)) from None
        sched = Schedule(every=interval)
    else:
        if tz is not None:
            try:
                ZoneInfo(str(tz))
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown timezone {str(tz)[:64]!r}") from None
        sched = Schedule(_cron(expr), tz)
    return {
        "cron": sched.expr,
        "tz": sched.tz,
        "every": sched.every,
        "trigger_py": sched.trigger(),
        "trigger_fn": "every" if sched.every else "cron",
        "when": sched.describe(),
    }


def _cron(value: Any) -> str:
    from croniter import croniter

    if not isinstance(value, str) or len(value.split()) != 5 or not croniter.is_valid(value):
        raise ValueError(f"cron expression {str(value)[:80]!r} must have five valid fields")
    return value


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
    after = p.pop("alert_after", None)
    if after is not None:
        after = int(_number({"alert_after": after}, "alert_after", 2, 2, 1000))
    trigger = _trigger(p, "*/30 * * * *")
    then = f"sends the {escalate} event" if escalate else "alerts the inbox"
    if after:
        then += (
            f" once the check has not been normal {after} times in a row (a failure streak "
            "counted in the skill's state; a normal check resets it; one alert per streak)"
        )
    degraded = max(limit + 1, int(limit * 1.5))
    return {
        "name": "health-check",
        "metrics_url": url,
        "p95_ms": limit,
        "max_error_rate": rate,
        "escalate_event": _event(escalate) if escalate else None,
        "alert_after": after,
        **trigger,
        "tools": ["events", "http"] if escalate else ["http", "notify"],
        "urls": [url],
        "what": f"GET {url}, classify the service as "
        f"normal, degraded or failing (p95 limit {limit} ms, error-rate limit {rate:.1%}) and "
        f"{'then' if after else 'when it is not normal'} {then}.",
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
    match = _match(p)
    at, recent = 1_750_000_000, min(15, window // 2)
    return {
        "name": "incident-triage" if event == DEFAULT_TRIAGE_EVENT else f"triage-{slug(event)}",
        "event_name": event,
        "match": match,
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
    trigger = _trigger(p, "0 9 * * *")
    group = _field(p, "group_field", "status")
    most = int(_number(p, "max_items", 10, 1, 100))
    subject = _subject(url, "items")
    window = p.pop("window", None)
    if window not in (None, *WINDOWS):
        raise ValueError(f"window must be one of {', '.join(WINDOWS)}, not {str(window)[:40]!r}")
    span = None
    if window is not None:
        lo, hi, default = WINDOWS[window]
        span = int(_number(p, "window_span", default, lo, hi))
    zone = trigger["tz"] if window == "day" and trigger["tz"] not in (None, "UTC") else None
    return {
        "name": f"{subject}-digest",
        "source_url": url,
        **trigger,
        "group_field": group,
        "max_items": most,
        "notify_when_empty": bool(p.pop("notify_when_empty", False)),
        "title": f"{subject} digest",
        "tools": ["http", "notify"],
        "urls": [url],
        "window": window,
        "window_span": span,
        "zone": zone,
        "offsets": utc_offsets(zone) if zone else None,
        "offsets_until": f"{OFFSET_YEARS[1]}-01-01",
        "what": f"GET {url}, {_window_words(window, span, zone)}count the items per "
        f"{group} field, list the first {most} and post the digest to the inbox.",
        "t": _window_cases(window, span or 0, zone),
    }


# Digest windows: (smallest span, largest span, default span) of each window kind. The span is
# first_window_hours (since), days_ago (day) or window_hours (hours).
WINDOWS = {"since": (1, 8760, 24), "day": (0, 31, 1), "hours": (1, 8760, 24)}


OFFSET_YEARS = (2024, 2041)  # the UTC offsets a day window in a timezone carries: [from, to)


def utc_offsets(zone: str) -> list[list[int]]:
    """``zone``'s UTC offsets over :data:`OFFSET_YEARS` as ``[from epoch ms, minutes]`` rows,
    one per change: the sandbox has no timezone rules, so a skill that needs local days
    carries this table (after its last row the last offset holds)."""
    tz = ZoneInfo(zone)
    start = int(datetime(OFFSET_YEARS[0], 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(OFFSET_YEARS[1], 1, 1, tzinfo=UTC).timestamp())

    def minutes(at: int) -> int:
        delta = datetime.fromtimestamp(at, tz).utcoffset()
        return int(delta.total_seconds() // 60) if delta is not None else 0

    rows = [[start * 1000, minutes(start)]]
    for day in range(start, end, 86_400):
        if minutes(day + 86_400) == rows[-1][1]:
            continue
        lo, hi = day, day + 86_400  # the change lies in (lo, hi]: find its second
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if minutes(mid) == rows[-1][1] else (lo, mid)
        rows.append([hi * 1000, minutes(hi)])
    return rows


def _window_words(window: str | None, span: int | None, zone: str | None = None) -> str:
    """What the window keeps, said for the answer and the skill's description."""
    if window == "since":
        return (
            "keep only the items new since the last run (newer than the newest item time the "
            "previous run listed, kept in the skill's state; the first run takes the last "
            f"{span} hours), "
        )
    if window == "day":
        day = {0: "today", 1: "yesterday"}.get(span or 0, f"the day {span} days ago")
        return f"keep only the items dated {day} (a calendar day in {zone or 'UTC'}), "
    if window == "hours":
        return f"keep only the items of the last {span} hours, "
    return ""


def _window_cases(window: str | None, span: int, zone: str | None = None) -> dict[str, Any]:
    """Items inside and outside the window for the template's test cases, around a fixed run
    time (2025-06-15 15:06:40 UTC)."""
    if window is None:
        return {}
    hour, day = 3_600_000, 86_400_000
    now = 1_750_000_000_000
    if window == "day":
        tz = ZoneInfo(zone or "UTC")
        local = datetime.fromtimestamp(now / 1000, tz).date() - timedelta(days=span)
        begin = datetime(local.year, local.month, local.day, tzinfo=tz)
        start = int(begin.timestamp() * 1000)
        stop = int((begin + timedelta(days=1)).astimezone(UTC).timestamp() * 1000)
        inside, edge, outside = stop - 60_000, start, stop
    else:
        start = now - span * hour
        inside, edge, outside = now - min(span * hour // 2, hour), now, start
    rows = [
        {"id": 1, "title": "inside", "status": "open", "created_at": _iso(inside)},
        {"id": 2, "title": "edge", "status": "open", "created_at": edge // 1000},
        {"id": 3, "title": "outside", "status": "closed", "created_at": _iso(outside)},
        {"id": 4, "title": "undated", "status": "open"},
        {"id": 5, "title": "future", "status": "open", "timestamp": now + day * 40},
    ]
    return {
        "now": now,
        "rows": rows,
        "outside": [rows[2], rows[4]],
        "inside": 2,
        "titles": ["inside", "edge"],
        "start": _iso(start, "+00:00"),
    }


def _iso(ms: int, zone: str = "Z") -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")[:-6] + zone


def _match(p: dict[str, Any]) -> dict[str, str] | None:
    """An event trigger's field filter (``{"severity": "high"}``), validated."""
    value = p.pop("match", None)
    if value is None:
        return None
    ok = isinstance(value, dict) and all(
        isinstance(k, str)
        and isinstance(v, str)
        and re.fullmatch(r"[a-z][a-z0-9_]{0,31}", k)
        and re.fullmatch(r"[A-Za-z0-9_-]{1,32}", v)
        for k, v in value.items()
    )
    if not ok or not value:
        raise ValueError(f"match must map field names to plain values, not {str(value)[:80]!r}")
    return dict(value)


def _relay(p: dict[str, Any]) -> dict[str, Any]:
    event = _event(p.pop("event_name", "relay.outbound"))
    match = _match(p)
    secret = p.pop("secret_name", None)
    if secret is not None and not re.fullmatch(r"[A-Z][A-Z0-9_]{0,63}", str(secret)):
        raise ValueError("secret_name must be UPPER_SNAKE_CASE")
    url = p.pop("webhook_url", None if secret else "https://hooks.example.com/in")
    url = None if secret else _url(url, "webhook_url")
    where = f"the Slack webhook stored as secret {secret}" if secret else url
    return {
        "name": f"relay-{slug(event)}",
        "event_name": event,
        "match": match,
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
    trigger = _trigger(p, "0 * * * *")
    return {
        "name": f"sync-{_subject(src, 'records')}",
        "source_url": src,
        "target_url": dst,
        "key_field": key,
        **trigger,
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


def template_context(kind: str, params: dict[str, Any]) -> dict[str, Any]:
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
    when = f"on event {ctx['event_name']}" if "event_name" in ctx else str(ctx["when"])
    if ctx.get("match"):
        when += " where " + ", ".join(f"{k} = {v}" for k, v in ctx["match"].items())
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
    ctx = template_context(kind, params)
    stem = _FILES.get(kind, kind)
    source = _ENV.get_template(f"{stem}.py.j2").render(**ctx)
    tests = json.loads(_ENV.get_template(f"{stem}.tests.json.j2").render(**ctx))
    return source, tests


# Reading requests ----------------------------------------------------------------------------


def intent_of(request: str) -> str | None:
    """``list``, ``run``, one of :data:`INTENTS`, or None for anything else."""
    if LIST_RE.search(request):
        return "list"
    if RUN_RE.match(request) and not URL_RE.search(request) and read_schedule(request) is None:
        return "run"
    if SYNC_RE.search(request):
        return "sync"
    if RELAY_RE.search(request):
        return "relay"
    if EYE_RE.search(request):
        return "health-check"
    if SEED_RE.search(request):
        return "incident-response"
    if TRIAGE_RE.search(request):
        return "incident-triage"
    if INCIDENT_RE.search(request):
        return "incident-response"
    if DIGEST_RE.search(request):
        return "digest"
    if _windowed_list(request):
        return "digest"  # "send me yesterday's orders from URL", "... since the last check"
    if HEALTH_RE.search(request):
        return "health-check"
    if streak_of(request) is not None:  # "alert me after 3 failures in a row of URL"
        return "health-check"
    if URL_RE.search(request) is None:
        return None
    if HEALTH_PATH_RE.search(request):
        return "health-check"  # "look at https://host/healthz every 90 minutes"
    if FETCH_RE.search(request) and read_schedule(request) is not None:
        return "digest"  # "every morning, send me the orders at URL"
    return None


def _windowed_list(request: str) -> bool:
    """A list of items kept to a time window (since the last run, yesterday's...), and not a
    health check (no streak, no latency or error-rate limit, no status URL)."""
    return (
        (since_last_run(request) or window_of(request) is not None)
        and URL_RE.search(request) is not None
        and streak_of(request) is None
        and not P95_RE.search(request)
        and not RATE_RE.search(request)
        and not HEALTH_PATH_RE.search(request)
        and not CHECK_URL_RE.search(request)
    )


def _facts(request: str) -> dict[str, Any]:
    """Everything the planner reads from the request text."""
    raw_urls = [m.group(0) for m in URL_RE.finditer(request)]
    urls = [u for u in (clean_url(r) for r in raw_urls) if u]
    target_raw = next((m.group(1) for m in TO_URL_RE.finditer(request)), None)
    facts: dict[str, Any] = {"urls": urls, "target_raw": target_raw, "name": None}
    facts["target"] = clean_url(target_raw) if target_raw else None
    facts["schedule"] = read_schedule(request)
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


def _when(f: dict[str, Any], default_cron: str) -> dict[str, Any]:
    """Trigger params for the schedule the request stated (the kind's default otherwise)."""
    sched: Schedule | None = f["schedule"]
    if sched is None:
        return {"cron": default_cron}
    if sched.every is not None:
        return {"every": sched.every}
    return {"cron": sched.expr, **({"tz": sched.tz} if sched.tz else {})}


def plan(request: str) -> list[PlannedSkill]:
    """The skills the offline model would build for ``request`` (empty when it cannot)."""
    intent = intent_of(request)
    if intent not in INTENTS:
        return []
    f = _facts(request)
    urls: list[str] = f["urls"]
    named: dict[str, Any] = {"name": f["name"]} if f["name"] else {}
    limits: dict[str, Any] = {k: f[k] for k in ("p95_ms", "max_error_rate") if k in f}
    if intent in ("incident-response", "health-check"):
        url = urls[0] if urls else DEFAULT_BASE
        url = url if urlsplit(url).path.strip("/") else url.rstrip("/") + "/summary"
        health: dict[str, Any] = {"metrics_url": url, **_when(f, "*/30 * * * *")}
        health.update(limits)
        if (after := streak_of(request)) is not None:
            health["alert_after"] = after
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
        if match := event_match(request):
            triage["match"] = match
        triage.pop("max_error_rate", None)
        out = [("incident-triage", triage)]
    elif intent == "digest":
        digest = {**_when(f, "0 9 * * *"), **named}
        if urls:
            digest["source_url"] = urls[0]
        if since_last_run(request):
            digest["window"] = "since"
        elif (window := window_of(request)) is not None:
            digest["window"], digest["window_span"] = window
        out = [("digest", digest)]
    elif intent == "relay":
        relay: dict[str, Any] = {"event_name": f.get("event", "relay.outbound"), **named}
        if match := event_match(request):
            relay["match"] = match
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
        sync = {**_when(f, "0 * * * *"), **named}
        sync.update({k: v for k, v in (("source_url", source), ("target_url", target)) if v})
        out = [("sync", sync)]
    planned = []
    for kind, given in out:
        params = {"request": request, **given}
        name = template_context(kind, params)["name"]
        planned.append(PlannedSkill(name, kind, {**params, "name": name}))
    return planned


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def is_private_host(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    return _is_ip(host) and not ipaddress.ip_address(host).is_global
