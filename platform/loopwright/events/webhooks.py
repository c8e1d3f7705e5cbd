"""Webhooks: deliveries from other systems, verified the way each sender signs, become events.

Sources are configured in one setting, ``LOOPWRIGHT_WEBHOOKS`` (JSON), each naming how it signs
and the *name* of its signing secret in ``LOOPWRIGHT_SECRETS``::

    {"github": {"kind": "github", "secret": "GITHUB_HOOK"},
     "stripe": {"kind": "stripe", "secret": "STRIPE_HOOK", "tolerance": 300},
     "acme":   {"kind": "hmac",   "secret": "ACME_HOOK"}}

* ``github``: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``; the delivery id
  is ``X-GitHub-Delivery``, the type ``X-GitHub-Event``.
* ``stripe``: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`` (any of
  several ``v1``), refused outside ``tolerance`` seconds (default 300) of now; id and type come
  from the JSON body (``id``, ``type``).
* ``hmac`` (generic): ``X-Loopwright-Signature: sha256=<hex HMAC-SHA256(secret, "<ts>.<body>")>``
  with ``X-Loopwright-Timestamp: <unix>`` (tolerance as above), ``X-Loopwright-Delivery`` and
  ``X-Loopwright-Event`` headers (or ``id``/``type`` in the body). Header names can be
  changed per source (``signature_header``, ``timestamp_header``, ``id_header``,
  ``type_header``).

A verified delivery becomes the event ``{source}.{type}`` with id ``{source}:{delivery id}``,
so a redelivery (or a replay of a captured request) is recognised by the event bus and starts
nothing twice; a timestamped scheme also refuses an old capture outright. Comparisons are
constant-time. Nothing here touches HTTP frameworks: the API route passes headers and body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loopwright.errors import UserError

KINDS = ("github", "stripe", "hmac")
SOURCE_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_TYPE_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/-]")
DEFAULT_TOLERANCE_S = 300


class WebhookError(UserError):
    """A delivery refused: ``status`` is the HTTP answer (401 signature, 400 malformed ...)."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Source:
    """One configured sender."""

    name: str
    kind: str
    secret: str  # the secret's name in LOOPWRIGHT_SECRETS
    tolerance_s: int = DEFAULT_TOLERANCE_S
    signature_header: str = ""
    timestamp_header: str = ""
    id_header: str = ""
    type_header: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """A verified delivery, ready to send as an event."""

    event_name: str
    event_id: str
    data: Any


def parse_sources(raw: Mapping[str, Any]) -> dict[str, Source]:
    """The configured sources, or :class:`UserError` naming the first bad entry."""
    out: dict[str, Source] = {}
    for name, spec in raw.items():
        where = f"LOOPWRIGHT_WEBHOOKS[{name!r}]"
        if not isinstance(name, str) or not SOURCE_RE.fullmatch(name):
            raise UserError(f"{where}: a source name is 1-32 of a-z, 0-9, _ and -")
        if not isinstance(spec, Mapping):
            raise UserError(f"{where}: must be an object with 'kind' and 'secret'")
        kind, secret = spec.get("kind"), spec.get("secret")
        if kind not in KINDS:
            raise UserError(f"{where}.kind: one of {', '.join(KINDS)}")
        if not isinstance(secret, str) or not secret:
            raise UserError(f"{where}.secret: the name of a secret in LOOPWRIGHT_SECRETS")
        tolerance = spec.get("tolerance", DEFAULT_TOLERANCE_S)
        if not isinstance(tolerance, int) or not 1 <= tolerance <= 3600:
            raise UserError(f"{where}.tolerance: whole seconds between 1 and 3600")
        headers = {
            h: spec.get(h, "")
            for h in ("signature_header", "timestamp_header", "id_header", "type_header")
        }
        for h, value in headers.items():
            if not isinstance(value, str) or len(value) > 64:
                raise UserError(f"{where}.{h}: a header name")
        out[name] = Source(name, kind, secret, tolerance, **headers)
    return out


def _header(headers: Mapping[str, str], name: str) -> str | None:
    want = name.lower()
    for k, v in headers.items():
        if k.lower() == want:
            return v
    return None


def _hex_hmac(secret: bytes, payload: bytes) -> str:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


def _same(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.strip().lower().encode())


def _fresh(ts_text: str | None, tolerance_s: int, now: float) -> int:
    if ts_text is None or not ts_text.strip().isdigit() or len(ts_text.strip()) > 12:
        raise WebhookError("missing or malformed signature timestamp")
    ts = int(ts_text.strip())
    if abs(now - ts) > tolerance_s:
        raise WebhookError(
            f"signature timestamp is {int(now - ts)} s from now, outside the {tolerance_s} s "
            "tolerance (a replayed or delayed delivery)"
        )
    return ts


def _json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookError("the body must be JSON", status=415) from None


def _event_type(text: Any) -> str:
    if not isinstance(text, str) or not text:
        raise WebhookError("the delivery names no event type", status=400)
    clean = _TYPE_UNSAFE.sub("_", text)[:95]  # "{source}.{type}" fits an event name
    return clean


def _delivery_id(text: Any) -> str:
    if not isinstance(text, str) or not text or len(text) > 150:
        raise WebhookError("the delivery has no usable id (1-150 characters)", status=400)
    return _TYPE_UNSAFE.sub("_", text)


def verify(
    source: Source,
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
) -> Delivery:
    """Check ``body``'s signature the way ``source`` signs; the event it becomes, or
    :class:`WebhookError` (nothing is sent for a refused delivery)."""
    now = time.time() if now is None else now
    key = secret.encode()
    if source.kind == "github":
        given = _header(headers, source.signature_header or "X-Hub-Signature-256")
        if not given or not given.startswith("sha256="):
            raise WebhookError("unsigned delivery: X-Hub-Signature-256 is missing")
        if not _same(_hex_hmac(key, body), given[len("sha256=") :]):
            raise WebhookError("bad signature")
        data = _json_body(body)
        kind = _event_type(_header(headers, source.type_header or "X-GitHub-Event"))
        delivery = _delivery_id(_header(headers, source.id_header or "X-GitHub-Delivery"))
    elif source.kind == "stripe":
        given = _header(headers, source.signature_header or "Stripe-Signature")
        if not given:
            raise WebhookError("unsigned delivery: Stripe-Signature is missing")
        parts = [p.partition("=") for p in given.split(",")]
        ts_text = next((v for k, _, v in parts if k.strip() == "t"), None)
        sigs = [v for k, _, v in parts if k.strip() == "v1"]
        ts = _fresh(ts_text, source.tolerance_s, now)
        expected = _hex_hmac(key, f"{ts}.".encode() + body)
        if not sigs or not any(_same(expected, s) for s in sigs[:8]):
            raise WebhookError("bad signature")
        data = _json_body(body)
        obj = data if isinstance(data, dict) else {}
        kind = _event_type(obj.get("type"))
        delivery = _delivery_id(obj.get("id"))
    else:
        given = _header(headers, source.signature_header or "X-Loopwright-Signature")
        if not given or not given.startswith("sha256="):
            raise WebhookError("unsigned delivery: X-Loopwright-Signature is missing")
        ts_text = _header(headers, source.timestamp_header or "X-Loopwright-Timestamp")
        ts = _fresh(ts_text, source.tolerance_s, now)
        expected = _hex_hmac(key, f"{ts}.".encode() + body)
        if not _same(expected, given[len("sha256=") :]):
            raise WebhookError("bad signature")
        data = _json_body(body)
        obj = data if isinstance(data, dict) else {}
        kind = _event_type(
            _header(headers, source.type_header or "X-Loopwright-Event") or obj.get("type")
        )
        delivery = _delivery_id(
            _header(headers, source.id_header or "X-Loopwright-Delivery") or obj.get("id")
        )
    return Delivery(f"{source.name}.{kind}", f"{source.name}:{delivery}", data)
