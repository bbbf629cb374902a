"""A storage node's restart, sans I/O: its segment state from what its disk kept.

Only records above the last stored SCL are scanned: start-up does not grow with the log. A
corrupt record found there is dropped; gossip fetches it again from a peer. If the record at
the stored SCL itself is gone (a disk that lost writes), the stored SCL is not believed:
completeness restarts from the GC horizon. The node (storage_node/node.py) and the simulator
both restart this way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from sixfold.core.errors import CorruptRecordError
from sixfold.core.record import RedoRecord
from sixfold.core.segment import SegmentState
from sixfold.core.truncation import TruncationRange


class StoredState(Protocol):
    """What a node's metadata holds across a crash (storage_node/store.py StoredMeta)."""

    @property
    def epoch(self) -> int: ...
    @property
    def epoch_owner(self) -> str: ...
    @property
    def truncations(self) -> tuple[TruncationRange, ...]: ...
    @property
    def truncations_version(self) -> int: ...
    @property
    def scl(self) -> int: ...
    @property
    def cpl_at_scl(self) -> int: ...
    @property
    def vdl(self) -> int: ...
    @property
    def vdl_epoch(self) -> int: ...
    @property
    def gc_horizon(self) -> int | None: ...  # None: a directory from before it was stored


def complete_from(meta: StoredState, holds_record: Callable[[int], bool]) -> tuple[int, int]:
    """The (SCL, CPL) start-up may trust: the stored ones, unless the log lost its tail.

    The record at the stored SCL is still there unless GC collected it (only ever at or
    below the stored GC horizon). If it is gone, the disk lost writes that this node had
    acknowledged, so only the GC horizon is known complete; the records above it that
    survived are re-chained, gossip fetches the rest, and the node serves no read above
    what it holds. The CPL restarts at 0: recovery takes the highest over a quorum, so a
    node reporting too low a CPL is safe, and one reporting too high is not.
    """
    horizon = meta.gc_horizon
    if horizon is None or meta.scl <= horizon or holds_record(meta.scl):
        return meta.scl, meta.cpl_at_scl
    return horizon, 0


def restore(
    st: SegmentState,
    meta: StoredState,
    start: tuple[int, int],
    records_after: Iterable[tuple[int, RedoRecord | CorruptRecordError]],
) -> list[int]:
    """Rebuild `st` from `meta` and the records stored above `start` = (SCL, CPL) from
    `complete_from`; return the LSNs of corrupt records found there, to drop."""
    st.epoch, st.epoch_owner, st.truncations = meta.epoch, meta.epoch_owner, meta.truncations
    st.truncations_version = meta.truncations_version
    st.vdl, st.vdl_epoch = meta.vdl, meta.vdl_epoch
    scl, cpl = start
    st.completeness.scl = scl
    st.completeness.cpl_at_scl = cpl
    st.completeness.highest_lsn = scl
    corrupt: list[int] = []
    for lsn, item in records_after:
        if isinstance(item, CorruptRecordError):
            corrupt.append(lsn)
        elif st.admits(item):
            # No record lies between a back-link below `scl` and this one, and all up to
            # `scl` is complete: the link counts as reaching `scl`.
            st.completeness.add(item.lsn, max(item.prev_volume_lsn, scl), item.is_cpl)
    return corrupt
