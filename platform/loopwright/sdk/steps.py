"""The step vocabulary: what kind of step a ``ctx.step.*`` call is.

One enum, whose values are the SDK's method names, shared by the checkpoints (``kind`` of a
step record), the guest protocol and the sidecar's test harness. Replay checks the kind as well
as the name: ``run("x")`` replayed over a recorded ``sleep "x"`` is non-determinism, not a step
that silently returns ``None``. It lives in the SDK because the guest imports nothing but
``loopwright.sdk`` and ``loopwright.sandbox``.

``sleep_until`` is recorded as ``sleep``: both are the same durable timer (the record stores the
absolute wake time either way, so a replay behaves the same whichever call wrote it), the guest
sends both as one ``step.sleep`` request, and records written before kinds were checked already
call both ``sleep``, so the two could not be told apart in old runs anyway.
"""

from __future__ import annotations

from enum import StrEnum

from loopwright.sdk.errors import NonRetriableError


class StepKind(StrEnum):
    """A step's kind: the name of the ``ctx.step`` method that made it."""

    RUN = "run"
    SLEEP = "sleep"  # also sleep_until (see the module docstring)
    WAIT_FOR_EVENT = "wait_for_event"
    INVOKE = "invoke"
    SEND_EVENT = "send_event"
    LLM = "llm"


HOST_KINDS = frozenset(
    {StepKind.LLM, StepKind.INVOKE, StepKind.SEND_EVENT, StepKind.WAIT_FOR_EVENT}
)
"""Steps the host performs for a sandboxed skill (the guest's ``step.other`` request)."""

# Records written before kinds were checked (they carry no format version): ``wait_for_event``
# was recorded as ``wait``; ``llm``, ``send_event`` and a failed ``invoke`` as ``run``.
_LEGACY_NAMES = {"wait": StepKind.WAIT_FOR_EVENT}
_LEGACY_RUN = frozenset({StepKind.RUN, StepKind.LLM, StepKind.SEND_EVENT, StepKind.INVOKE})


def read_kind(raw: object) -> StepKind:
    """The kind stored in a step record, old names included (``ValueError`` if unknown)."""
    value = "run" if raw is None else str(raw)
    legacy = _LEGACY_NAMES.get(value)
    if legacy is not None:
        return legacy
    try:
        return StepKind(value)
    except ValueError:
        raise ValueError(f"unknown step kind {value!r} in a step record") from None


def kind_matches(recorded: StepKind, requested: StepKind, *, legacy: bool) -> bool:
    """True when a step of kind ``requested`` may replay a record of kind ``recorded``.

    A legacy record's ``run`` may be any step that old code recorded as ``run``.
    """
    if recorded is requested:
        return True
    return legacy and recorded is StepKind.RUN and requested in _LEGACY_RUN


def host_kind(value: object) -> StepKind:
    """The kind of a guest's ``step.other`` request; ``NonRetriableError`` for anything else."""
    try:
        kind = StepKind(str(value))
    except ValueError:
        kind = None
    if kind is None or kind not in HOST_KINDS:
        raise NonRetriableError(f"unknown step kind {value!r}")
    return kind
