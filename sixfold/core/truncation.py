"""Truncation ranges: how recovery cancels records above the new VDL (P17 §4.3).

Recovery writes a range (after_lsn, through_lsn] tagged with its new epoch. A record inside it
written under an older epoch is gone for good: a node deletes it, refuses it from gossip or a
late append, and never serves it. The new writer allocates LSNs above through_lsn, so a
cancelled LSN is never reused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class TruncationRange:
    epoch: int
    after_lsn: int
    through_lsn: int

    def __post_init__(self) -> None:
        assert self.epoch >= 1 and self.through_lsn >= self.after_lsn >= 0, self

    def cancels(self, lsn: int, record_epoch: int) -> bool:
        return record_epoch < self.epoch and self.after_lsn < lsn <= self.through_lsn


def is_cancelled(ranges: Iterable[TruncationRange], lsn: int, record_epoch: int) -> bool:
    return any(r.cancels(lsn, record_epoch) for r in ranges)


def merge(*range_lists: Iterable[TruncationRange]) -> tuple[TruncationRange, ...]:
    """The union of known ranges, sorted, without duplicates."""
    return tuple(sorted({r for ranges in range_lists for r in ranges}))
