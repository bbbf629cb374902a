"""LSN allocation under the LSN allocation limit, LAL (P17 §4.2.1).

The writer may not allocate an LSN more than LAL above VDL: back-pressure when storage falls
behind. After recovery LSNs restart above the truncation range, so the limit counts from
the start of the epoch's LSNs (`epoch_base`) when that is above VDL.
"""

from __future__ import annotations

LAL_DEFAULT = 10_000_000  # the figure in P17 §4.2.1


class LsnAllocator:
    def __init__(self, *, last_lsn: int, epoch_base: int, lal: int) -> None:
        assert lal >= 1 and epoch_base >= last_lsn >= 0
        self.prev_lsn = last_lsn  # back-link for the next record: the volume's previous LSN
        self.next_lsn = epoch_base + 1
        self.epoch_base = epoch_base
        self.lal = lal

    def limit(self, vdl: int) -> int:
        return max(vdl, self.epoch_base) + self.lal

    def available(self, vdl: int) -> int:
        return max(0, self.limit(vdl) - self.next_lsn + 1)

    def allocate(self, vdl: int) -> tuple[int, int]:
        """One LSN and its volume back-link. The caller checks `available` first."""
        assert self.next_lsn <= self.limit(vdl), "LSN allocation past the LAL"
        lsn, prev = self.next_lsn, self.prev_lsn
        self.next_lsn += 1
        self.prev_lsn = lsn
        return lsn, prev

    @property
    def last_allocated(self) -> int:
        return self.next_lsn - 1
