"""Flow-control keys: which bucket an event falls in for concurrency, rate limits, debounce and
idempotency (a dotted path into the event, e.g. ``data.customer_id``)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from loopwright.keys import Keys
from loopwright.sdk.spec import SkillSpec

NO_KEY = "-"


def key_value(expr: str | None, event: dict[str, Any]) -> str:
    """The bucket of ``event`` under ``expr``: ``-`` for no key; a short hash for long values."""
    if not expr:
        return NO_KEY
    value: Any = event
    for part in expr.split("."):
        if not isinstance(value, dict) or part not in value:
            return "missing"
        value = value[part]
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if len(text) <= 64 and text.replace("-", "").replace("_", "").replace(".", "").isalnum():
        return text
    return "h" + hashlib.sha256(text.encode()).hexdigest()[:24]


def concurrency_fields(keys: Keys, spec: SkillSpec, event: dict[str, Any]) -> dict[str, Any]:
    """Run-record fields that make the acquire script enforce the skill's concurrency."""
    if not spec.concurrency:
        return {}
    slot = keys.concurrency_slots(spec.name, key_value(spec.concurrency_key, event))
    return {"conc_limit": spec.concurrency, "conc_slot": slot}
