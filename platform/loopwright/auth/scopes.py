"""The names a platform token's scopes and authors may take (kept import-free: the CLI's
option help reads them at start-up)."""

from __future__ import annotations

SCOPES = ("read", "operate", "approve", "admin")
AUTHORS = ("person", "agent", "review")
