"""Cursor pagination over a sorted set, newest first, stable while rows are added.

A cursor names the last row a page returned (its score and member), so the next page starts
right after it however many rows arrive meanwhile: lists do not jump. It is opaque to clients
(URL-safe base64 of JSON) and checked on the way in.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass

from loopwright.errors import UserError


@dataclass(frozen=True, slots=True)
class Cursor:
    """The position after a row: its score and member in the index."""

    score: float
    member: str

    def encode(self) -> str:
        """The opaque form clients pass back."""
        raw = json.dumps([self.score, self.member], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """A cursor from its opaque form, or :class:`UserError`."""
        if len(text) > 512:
            raise UserError("cursor: too long; pass back the next_cursor a page returned")
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
            score, member = json.loads(raw)
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
            raise UserError(
                "cursor: not one this API returned; pass back next_cursor unchanged"
            ) from None
        if not isinstance(score, int | float) or not isinstance(member, str):
            raise UserError("cursor: not one this API returned; pass back next_cursor unchanged")
        return cls(float(score), member)
