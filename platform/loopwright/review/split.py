"""Which recorded runs the candidate generator may see, and which only the gate sees.

A run belongs to the *search* split or the *held-out* split by a hash of its id (sha256 of a
fixed salt and the id; the first byte's low bit decides), **stratified by outcome class**: the
runs of each class (:func:`outcome_class`: how the run ended and how a person labelled it —
the distinctions the gate's rules make) are split on their own, and when a class's hash sides
are uneven by more than one run, the runs with the highest digests move from the larger side to
the smaller until they are even. So every class with at least two runs has runs on both sides
(an incident labelled good can no longer hide wholly on the search side), and the split is a
pure function of the runs and their classes: the same history gives the same split on every
machine and in every review, with no stored state. A run keeps its hash side unless its class
needed rebalancing.

A class with a single run goes to the held-out side: the gate needs evidence of every class
more than the search needs one more example. When the held-out split still lacks a class the
window has (a recording that would not load, a caller's own split), the gate says so
(``inconclusive``), never passes (``review/gate.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

SALT = b"loopwright-review-split:1:"

Side = Literal["search", "held-out"]
T = TypeVar("T")


def _digest(run_id: str) -> bytes:
    return hashlib.sha256(SALT + run_id.encode("utf-8", "surrogatepass")).digest()


def side_of(run_id: str) -> Side:
    """The hash side of ``run_id`` (deterministic, stateless): where the run goes unless its
    outcome class needed rebalancing (:func:`split_runs`)."""
    return "search" if _digest(run_id)[0] & 1 == 0 else "held-out"


def outcome_class(status: str | None, feedback: str | None) -> str:
    """The class a run is split and judged by: its ending (``completed``, ``failed``,
    ``cancelled``) and its label (``good``, ``bad`` or ``unlabelled``), e.g.
    ``completed/good`` (an incident's alarm people confirmed) or ``failed/unlabelled``."""
    ending = status if status in ("completed", "failed", "cancelled") else "failed"
    label = feedback if feedback in ("good", "bad") else "unlabelled"
    return f"{ending}/{label}"


@dataclass
class Split(Generic[T]):
    """Items (run ids or recordings) on each side, in the order given."""

    search: list[T] = field(default_factory=list)
    held_out: list[T] = field(default_factory=list)


def split_runs(
    items: Iterable[T],
    run_id_of: Callable[[T], str],
    class_of: Callable[[T], str] | None = None,
) -> Split[T]:
    """Partition ``items`` by the hash side of their run id, stratified by ``class_of`` (one
    class for all when None); each side keeps the order given."""
    given = list(items)
    by_class: dict[str, list[int]] = {}
    for i, item in enumerate(given):
        by_class.setdefault(class_of(item) if class_of else "", []).append(i)
    held: set[int] = set()
    for members in by_class.values():
        digests = {i: _digest(run_id_of(given[i])) for i in members}
        sides: dict[bool, list[int]] = {True: [], False: []}  # True: held out
        for i in members:
            sides[bool(digests[i][0] & 1)].append(i)
        if len(members) == 1:
            held.update(members)
            continue
        while abs(len(sides[True]) - len(sides[False])) > 1:
            big = len(sides[True]) > len(sides[False])
            moved = max(sides[big], key=lambda i: (digests[i], i))
            sides[big].remove(moved)
            sides[not big].append(moved)
        held.update(sides[True])
    out: Split[T] = Split()
    for i, item in enumerate(given):
        (out.held_out if i in held else out.search).append(item)
    return out
