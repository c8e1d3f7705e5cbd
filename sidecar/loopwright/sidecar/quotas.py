"""What one submission may cost the sidecar: recorded bytes per case and per submission, and
guest slots shared by every submission in the process.

The harness keeps what a case's guest sends (step outputs, logs, notifications) to build the
verdict. Each piece is small (the protocol caps a message), but a loop makes many: one case of
400 steps of 1 MB took a sidecar from 71 MB to 2.4 GB. Every recorded byte is charged to the
case and to its submission before it is kept; a charge over either quota ends the case at once
(the guest is killed, the case fails with the quota named) instead of growing.

Guest slots: every case runs in its own guest, and parallel submissions multiply them (six
POSTs started 24 spinning guests). A case takes a slot from a process-wide semaphore before it
gets a guest and gives it back when the guest is gone; a case that waits longer than the
configured bound fails the whole submission with :class:`SidecarBusyError` (HTTP 503).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from loopwright.errors import InfrastructureError, SkillAuthorError
from loopwright.settings import Settings

RECORD_OVERHEAD = 64  # bytes charged per kept record besides its text (dict, ints, keys)


class QuotaExceeded(SkillAuthorError):  # noqa: N818 - reads as what happened, like StopIteration
    """A case recorded more than its quota (or its submission's); ends the case's session."""


class SidecarBusyError(InfrastructureError):
    """No guest slot came free in time: the submission is refused, retry later."""


@dataclass
class Quotas:
    """The limits of one submission (from settings; defaults are the settings' defaults)."""

    case_max_bytes: int = 4 * 1024 * 1024
    submission_max_bytes: int = 8 * 1024 * 1024
    max_guests: int = 4
    guest_wait: float = 60.0


@dataclass
class SubmissionBudget:
    """Bytes recorded by all cases of one submission (cases run in parallel threads)."""

    max_bytes: int
    used: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self, nbytes: int) -> None:
        """Charge ``nbytes`` or raise :class:`QuotaExceeded` without charging."""
        with self._lock:
            if self.used + nbytes > self.max_bytes:
                raise QuotaExceeded(
                    f"the submission's test cases recorded more than {self.max_bytes} bytes "
                    "together (step outputs, logs, notifications; "
                    "LOOPWRIGHT_SIDECAR_SUBMISSION_MAX_BYTES): make the cases' data smaller"
                )
            self.used += nbytes


@dataclass
class CaseBudget:
    """Bytes one case recorded, charged to its submission too."""

    max_bytes: int
    submission: SubmissionBudget | None = None
    used: int = 0
    exceeded: str | None = None

    def take(self, nbytes: int) -> None:
        """Charge ``nbytes`` (plus the record overhead) or raise :class:`QuotaExceeded`."""
        nbytes += RECORD_OVERHEAD
        try:
            if self.exceeded is not None:
                raise QuotaExceeded(self.exceeded)
            if self.used + nbytes > self.max_bytes:
                raise QuotaExceeded(
                    f"the test case recorded more than {self.max_bytes} bytes of step outputs, "
                    "logs and notifications (LOOPWRIGHT_SIDECAR_CASE_MAX_BYTES): make the "
                    "case's data smaller or its loop shorter"
                )
            if self.submission is not None:
                self.submission.take(nbytes)
        except QuotaExceeded as exc:
            self.exceeded = str(exc)
            raise
        self.used += nbytes


class GuestSlots:
    """A counting semaphore over running test-case guests, with numbers for ``/v1/health``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._sem = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.running = 0
        self.waiting = 0
        self.peak = 0

    @contextlib.contextmanager
    def slot(self, wait: float) -> Iterator[None]:
        """Hold one slot for the body; :class:`SidecarBusyError` after ``wait`` seconds."""
        with self._lock:
            self.waiting += 1
        try:
            got = self._sem.acquire(timeout=wait)
        finally:
            with self._lock:
                self.waiting -= 1
        if not got:
            raise SidecarBusyError(
                f"the sidecar is busy: {self.limit} test guests are running and none came free "
                f"within {wait:g}s (LOOPWRIGHT_SIDECAR_MAX_GUESTS); retry later"
            )
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1
            self._sem.release()

    def stats(self) -> dict[str, int]:
        """Running, waiting, the peak since start, and the limit."""
        with self._lock:
            return {
                "running": self.running,
                "waiting": self.waiting,
                "peak": self.peak,
                "limit": self.limit,
            }


_SLOTS: dict[int, GuestSlots] = {}
_SLOTS_LOCK = threading.Lock()


def guest_slots(limit: int) -> GuestSlots:
    """The process-wide slots for ``limit``: every submission in this process shares them
    (the service's endpoint, its folder watch, an in-process pipeline)."""
    with _SLOTS_LOCK:
        slots = _SLOTS.get(limit)
        if slots is None:
            slots = _SLOTS[limit] = GuestSlots(limit)
        return slots


def quotas_of(settings: Settings) -> Quotas:
    """The quotas the settings configure."""
    return Quotas(
        case_max_bytes=settings.sidecar_case_max_bytes,
        submission_max_bytes=settings.sidecar_submission_max_bytes,
        max_guests=settings.sidecar_max_guests,
        guest_wait=settings.sidecar_guest_wait,
    )
