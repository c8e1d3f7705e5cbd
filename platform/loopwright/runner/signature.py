"""Error signatures: the same failure gives the same short hash, whatever its numbers and ids.

An error text (``Type: message``) is normalised before hashing: URLs, UUIDs, quoted strings,
paths, timestamps, hex ids and numbers become placeholders, so ``timeout after 30s calling
https://a/b?id=7`` and ``timeout after 12s calling https://c/d`` share one signature while a
different exception type never does. The rollups count failures per signature and the weekly
review clusters on it. It lives in the runner (which computes it where an error is produced,
``runner/execute.py``, the reaper and cancel); ``loopwright.history.signature`` re-exports it.
"""

from __future__ import annotations

import hashlib
import re

SIG_HEX = 12  # characters of the SHA-256 kept: short, and collisions stay negligible per skill
SAMPLE_CHARS = 300  # a signature's sample message is capped (already redacted by the caller)

# Order matters: a URL or a UUID is replaced before its digits would be.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>)]+", re.I), "<url>"),
    (
        re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I),
        "<uuid>",
    ),
    (re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?"), "<ts>"),
    (re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\""), "<str>"),
    (re.compile(r"(?<![\w<])(?:/[\w.@%+-]+){2,}/?"), "<path>"),
    (re.compile(r"\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{6,}\b", re.I), "<hex>"),
    (re.compile(r"\b0x[0-9a-f]+\b", re.I), "<hex>"),
    (re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?", re.I), "<n>"),
    (re.compile(r"\s+"), " "),
)


def split_type(error: str) -> tuple[str, str]:
    """``("KeyError", "'x'")`` from ``"KeyError: 'x'"``; ``("", text)`` when there is no type."""
    head, sep, rest = error.partition(": ")
    if sep and re.fullmatch(r"[A-Za-z_][\w.]*", head):
        return head, rest
    return "", error


def normalise(error: str) -> str:
    """The error text with its variable parts replaced (type kept, message normalised)."""
    kind, message = split_type(error.strip())
    for pattern, placeholder in _RULES:
        message = pattern.sub(placeholder, message)
    message = message.strip()
    return f"{kind}: {message}" if kind else message


def signature(error: str) -> str:
    """The short stable hash of an error text (``SIG_HEX`` hex digits of SHA-256)."""
    return hashlib.sha256(normalise(error).encode("utf-8", "backslashreplace")).hexdigest()[
        :SIG_HEX
    ]


def sample(error: str) -> str:
    """The message kept with a signature: capped at ``SAMPLE_CHARS``."""
    return error if len(error) <= SAMPLE_CHARS else error[: SAMPLE_CHARS - 1] + "…"
