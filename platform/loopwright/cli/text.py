"""Untrusted text made safe to print: literal, no markup, no terminal control sequences.

Everything a skill or a model controls (errors, outputs, log lines, notices, names, event data,
chat text) reaches the terminal through ``literal``. Rich would read ``[/]`` or ``[link=...]``
in it as markup (a crash, or a clickable link the skill chose) and the terminal would obey raw
ESC/OSC sequences (clear the screen, set the title, hyperlinks) and bidi overrides (text that
reads differently than it is). Control characters are shown as visible escapes, so nothing is
hidden and nothing is interpreted.
"""

from __future__ import annotations

import re

# C0 (except tab and newline), DEL, C1, and the Unicode bidi controls and isolates.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile(r"[\r\n\u2028\u2029]+")


def _visible(match: re.Match[str]) -> str:
    ch = match.group(0)
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def plain(text: object) -> str:
    """``text`` with every control character shown as a visible escape (``\\x1b``...)."""
    return _CONTROL.sub(_visible, str(text))


def literal(text: object) -> str:
    """``text`` for rich: control characters made visible and markup escaped."""
    from rich.markup import escape

    return escape(plain(text))


def one_line(text: object) -> str:
    """``text`` as one plain line (for stderr error lines, which rich does not render)."""
    return plain(_LINE_BREAKS.sub(" ", str(text)).strip())
