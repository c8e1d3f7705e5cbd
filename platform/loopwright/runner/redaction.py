"""Secret values never leave the host: one redactor per execution, applied where strings exit.

An execution's ``Redactor`` knows the value of every secret its skill declares (and the
platform holds), whether or not this attempt resolved it: a run replayed on another worker
redacts what an earlier attempt's tools used. The exits that call it are few on purpose:
replies to a guest (``GuestHost.handle``), checkpoints (``Execution.commit``: step outputs and
errors), the run's end (``Executor``: output and error), run logs (``RunLogger``), notices and
host-tool results (``tools``).

Each secret is matched in the forms an error message or an upstream echo commonly shows it:
as is, inside a ``str`` or ``bytes`` repr (``b'sk-…\\n'`` from httpx), JSON-escaped,
URL-encoded, and base64-encoded at any offset (``Basic`` credentials carry ``user:secret``).
Numbers whose text contains a secret are redacted too (a numeric secret echoed as a JSON
number). A match becomes ``[secret:NAME]``. What this cannot catch: a secret split across
several strings (log lines, list items), or transformed any other way (reversed, hashed,
encrypted) by an upstream that colludes with the skill; operators bind secrets to hosts for
that (``LOOPWRIGHT_SECRET_GRANTS``).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

if TYPE_CHECKING:
    from loopwright.sdk.spec import SkillSpec
    from loopwright.settings import Settings

# Below this many bytes a base64 fragment of a secret is too short to be told from noise.
MIN_BASE64_BYTES = 6


def marker(name: str) -> str:
    """What replaces a secret's value: it names the secret, never shows it."""
    return f"[secret:{name}]"


def _base64_fragments(raw: bytes) -> set[str]:
    """The base64 characters that depend only on ``raw``, for each of the three alignments
    ``raw`` can have inside a longer encoded text (``user:`` + secret, for instance)."""
    found: set[str] = set()
    if len(raw) < MIN_BASE64_BYTES:
        return found
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw).decode()
        start = -(-8 * pad // 6)  # the first character with no padding bits in it
        end = 8 * (pad + len(raw)) // 6  # one past the last character made of ``raw`` only
        fragment = encoded[start:end]
        found.add(fragment)
        found.add(fragment.replace("+", "-").replace("/", "_"))
    return found


def encodings(value: str) -> set[str]:
    """The spellings of ``value`` that redaction looks for."""
    reprs = {repr(value)[1:-1], repr(value.encode("utf-8"))[2:-1]}
    # A repr quotes with ' unless the text holds ' and no ", so inside a longer text a ' in
    # the secret may also appear escaped.
    reprs |= {form.replace("'", "\\'") for form in reprs if "\\'" not in form}
    forms = {
        value,
        *reprs,
        json.dumps(value)[1:-1],
        json.dumps(value, ensure_ascii=False)[1:-1],
        quote(value, safe=""),
        quote(value),
        quote_plus(value),
    }
    forms |= _base64_fragments(value.encode("utf-8"))
    return {form for form in forms if form}


class Redactor:
    """Replaces the values of known secrets in strings, numbers and JSON structures."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        spellings: dict[str, str] = {}
        for name in sorted(secrets):
            for form in encodings(secrets[name]):
                spellings.setdefault(form, marker(name))
        self._spellings = spellings
        # Longest first, so a secret that contains another is replaced whole.
        ordered = sorted(spellings, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    @classmethod
    def for_skill(cls, settings: Settings, spec: SkillSpec) -> Redactor:
        """The redactor for runs of ``spec``: every secret it declares that the platform holds."""
        held = settings.secrets
        return cls({n: held[n].get_secret_value() for n in spec.secrets if n in held})

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, value: str) -> str:
        """``value`` with every spelling of every secret replaced."""
        if self._pattern is None:
            return value
        return self._pattern.sub(lambda m: self._spellings[m.group(0)], value)

    def found(self, value: str) -> bool:
        """True when ``value`` holds a spelling of a secret."""
        return self._pattern is not None and self._pattern.search(value) is not None

    def value(self, value: Any) -> Any:
        """A JSON-like ``value`` (dicts, lists, strings, numbers) with secrets replaced; a
        number whose text holds a secret becomes the secret's marker (a string)."""
        if self._pattern is None:
            return value
        try:
            return self._walk(value)
        except RecursionError:
            return "[redacted: a value too deeply nested to check for secrets]"

    def _walk(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bool) or value is None:
            return value
        if isinstance(value, int | float):
            shown = json.dumps(value) if isinstance(value, int) else repr(value)
            hit = self._pattern.search(shown) if self._pattern is not None else None
            return self._spellings[hit.group(0)] if hit is not None else value
        if isinstance(value, dict):
            return {self._walk(k): self._walk(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._walk(v) for v in value]
        return value

    def json_text(self, encoded: str) -> str:
        """Encoded JSON with secrets replaced; still valid JSON (it is decoded, redacted and
        encoded again, and only when it holds a secret)."""
        if not self.found(encoded):
            return encoded
        try:
            decoded = json.loads(encoded)
        except (ValueError, RecursionError):
            return json.dumps(self.text(encoded))
        return json.dumps(self.value(decoded), separators=(",", ":"))


NO_SECRETS = Redactor({})
