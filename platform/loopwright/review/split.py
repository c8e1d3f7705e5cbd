"""Which recorded runs the candidate generator may see, and which only the gate sees.

A run belongs to the *search* split or the *held-out* split by a hash of its id (sha256 of a
fixed salt and the id; the first byte's low bit decides), so the split is the same on every
machine and every review, needs no stored state, and a run never changes sides: a candidate
tuned on the search split is judged on runs it never saw. The two halves are about equal
(50/50 in expectation); with very few runs one half may be empty, and the gate then says it has
nothing to judge on (inconclusive), never passes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

SALT = b"loopwright-review-split:1:"

Side = Literal["search", "held-out"]
T = TypeVar("T")


def side_of(run_id: str) -> Side:
    """The split ``run_id`` belongs to (deterministic, stateless)."""
    digest = hashlib.sha256(SALT + run_id.encode("utf-8", "surrogatepass")).digest()
    return "search" if digest[0] & 1 == 0 else "held-out"


@dataclass
class Split(Generic[T]):
    """Items (run ids or recordings) on each side, in the order given."""

    search: list[T] = field(default_factory=list)
    held_out: list[T] = field(default_factory=list)


def split_runs(items: Iterable[T], run_id_of: Callable[[T], str]) -> Split[T]:
    """Partition ``items`` by the side of their run id."""
    out: Split[T] = Split()
    for item in items:
        (out.search if side_of(run_id_of(item)) == "search" else out.held_out).append(item)
    return out
