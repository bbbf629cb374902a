"""Segment completeness: the SCL, computed from back-links (P17 §4.1, P18 §2.2).

Each record names the previous LSN of the volume. A segment is complete up to LSN x when the
chain of back-links from x reaches 0 with no record missing. Records that arrive above a hole
wait in `pending` (keyed by their back-link) until the hole is filled, by the writer or by
gossip from peers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sixfold.core.truncation import TruncationRange

PENDING_RECORDS_MAX = 1_000_000  # records held above a hole before the node refuses more


@dataclass(slots=True)
class _Pending:
    lsn: int
    is_cpl: bool


@dataclass(slots=True)
class SegmentCompleteness:
    scl: int = 0
    cpl_at_scl: int = 0  # the highest CPL at or below the SCL: a candidate VDL for recovery
    highest_lsn: int = 0
    pending: dict[int, _Pending] = field(default_factory=dict)  # prev_volume_lsn -> record

    def add(self, lsn: int, prev_volume_lsn: int, is_cpl: bool) -> None:
        """Note a durably stored record; advance the SCL over any chain it completes."""
        assert lsn > prev_volume_lsn >= 0
        self.highest_lsn = max(self.highest_lsn, lsn)
        if lsn <= self.scl:
            return
        self.pending[prev_volume_lsn] = _Pending(lsn, is_cpl)
        self._advance()

    def _advance(self) -> None:
        while (nxt := self.pending.pop(self.scl, None)) is not None:
            self.scl = nxt.lsn
            if nxt.is_cpl:
                self.cpl_at_scl = nxt.lsn

    def has_hole(self) -> bool:
        return bool(self.pending)

    def first_hole(self) -> tuple[int, int] | None:
        """The hole right above the SCL as (after, before): records in between are missing."""
        if not self.pending:
            return None
        return self.scl, min(p.lsn for p in self.pending.values())

    def truncate(self, rng: TruncationRange) -> None:
        """Forget records cancelled by `rng`. Its after_lsn was a VDL, hence a CPL."""
        self.pending = {
            prev: p
            for prev, p in self.pending.items()
            if not (rng.after_lsn < p.lsn <= rng.through_lsn)
            and not (rng.after_lsn < prev <= rng.through_lsn)
        }
        if self.scl > rng.after_lsn:
            # Everything up to after_lsn was present, and after_lsn is a consistency point.
            self.scl = rng.after_lsn
            self.cpl_at_scl = rng.after_lsn
        if self.highest_lsn > rng.after_lsn:
            self.highest_lsn = max(
                [self.scl, *(p.lsn for p in self.pending.values())], default=self.scl
            )
        self._advance()
