"""Who is the writer, and where: read from the storage tier itself (issue 6).

There is no coordination service. The writer is whoever owns the newest volume epoch: a
writer seals its epoch on at least 4 nodes with an owner id that says where it serves, and
two writers cannot both seal one epoch (2 x 4 > 6, P17 §2). Instances report themselves to
the nodes with their read points. Pure: no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

OWNER_SEPARATOR = "@"
NONCE_SEPARATOR = "#"
INSTANCE_SEEN_TTL_S = 10.0  # an instance not heard from this long is left out


class Role(enum.StrEnum):
    """What an instance is now, as it reports itself to the nodes and to GetWriterState (the
    wire carries the value)."""

    READER = "reader"
    WRITER = "writer"
    STARTING = "starting"  # started as the writer: deciding whether another one answers
    TAKING_OVER = "taking-over"  # a reader recovering to become the writer


@dataclass(frozen=True, slots=True)
class Owner:
    name: str
    address: str  # "" for owners that did not say (older writers)


def owner_id(name: str, address: str, nonce: str) -> str:
    """The epoch owner id of an instance: NAME@HOST:PORT#NONCE (the nonce tells restarts apart)."""
    assert OWNER_SEPARATOR not in name and NONCE_SEPARATOR not in name, name
    return f"{name}{OWNER_SEPARATOR}{address}{NONCE_SEPARATOR}{nonce}"


def parse_owner(owner: str) -> Owner:
    name, sep, rest = owner.partition(OWNER_SEPARATOR)
    if not sep:
        return Owner(owner, "")
    return Owner(name, rest.partition(NONCE_SEPARATOR)[0])


@dataclass(frozen=True, slots=True)
class EpochView:
    epoch: int
    owner: str


def newest_epoch(views: Iterable[EpochView]) -> EpochView:
    """The newest epoch any node reports, and its owner: the current writer, as far as known.

    A node that missed a seal reports an older epoch; one that took a seal of a recovery that
    then failed may report an epoch nobody won. Either way the newest epoch is the one to
    try: a writer that lost it is fenced, and one that won it is the writer.
    """
    # A node that learnt the epoch from a truncation rather than a seal may not know its
    # owner: among views of the newest epoch, one that names it.
    return newest(views, lambda v: v.epoch, lambda v: bool(v.owner), EpochView(0, ""))


def newest(
    answers: Iterable[T], epoch: Callable[[T], int], complete: Callable[[T], bool], default: T
) -> T:
    """The answer of the newest epoch: the one rule every topology resolver follows (nodes,
    instances, clients). Among answers of that epoch, a `complete` one (it names the owner,
    or where clients reach it); `default` when there is none."""
    return max(answers, key=lambda a: (epoch(a), complete(a)), default=default)


def promotion_order(candidates: Sequence[str], preferred: str = "") -> list[str]:
    """Readers in the order they try to take over: the preferred one first, then by name."""
    ordered = sorted(candidates)
    if preferred in ordered:
        ordered.remove(preferred)
        ordered.insert(0, preferred)
    return ordered
