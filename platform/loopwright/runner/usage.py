"""Model usage of the step being executed, handed from the model call to its checkpoint.

``ctx.step.llm`` runs on the host (``llm.skill_calls``, above the runner): after each model
call it adds the call's tokens and cost here; the execution takes the total when it writes the
record that ends the ``llm`` step (``Execution.succeed``/``fail``), and the checkpoint commit
script adds it to the run's counters (``c_tokens_in``, ``c_tokens_out``, ``c_cost_micros``),
which the run's rollup folds in when it ends. Per thread: a step's body and its commit run on
the executor's thread. Attempts that were retried count with the attempt that ends the step.
"""

from __future__ import annotations

import threading

_local = threading.local()


def add_usage(tokens_in: int, tokens_out: int, cost_micros: int) -> None:
    """Add one model call's usage to the current step's."""
    cur = getattr(_local, "usage", (0, 0, 0))
    _local.usage = (cur[0] + tokens_in, cur[1] + tokens_out, cur[2] + cost_micros)


def take_usage() -> tuple[int, int, int]:
    """The usage added since the last take (tokens in, tokens out, micro-dollars), reset."""
    cur: tuple[int, int, int] = getattr(_local, "usage", (0, 0, 0))
    _local.usage = (0, 0, 0)
    return cur


def peek_usage() -> tuple[int, int, int]:
    """The usage added since the last take, left in place (a recorded call's share is the
    difference of two peeks around it, ``Execution.recorded_call``)."""
    cur: tuple[int, int, int] = getattr(_local, "usage", (0, 0, 0))
    return cur
