"""Resource limits of one guest, built from the platform settings at the edge."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GuestLimits:
    """What one guest may use. Every limit is enforced outside the guest process."""

    memory_bytes: int = 512 * 1024 * 1024
    cpu_seconds: int = 120
    max_processes: int = 32
    file_size_bytes: int = 16 * 1024 * 1024
    open_files: int = 64
    message_max_bytes: int = 4 * 1024 * 1024
    stderr_max_bytes: int = 64 * 1024
    start_timeout: float = 10.0
