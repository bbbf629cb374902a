"""Writer recovery: new epoch, durable points from a quorum, truncation (P17 §4.3, P18 §2.4).

1. Seal a new volume epoch on at least a write quorum: two recoveries cannot both win it
   (2 * 4 > 6), and the old writer can no longer collect 4 acknowledgements.
2. From the sealed nodes' states compute VCL and VDL. Any record acknowledged to a client
   was complete on 4 nodes, so every read quorum (3) holds a node whose SCL covers it
   (4 + 3 > 6): the highest SCL among the states is at or above every acknowledged LSN.
3. Truncate (VDL, VDL + LAL]: everything the old writer could have allocated above VDL.
There is no redo replay: the work depends on the number of nodes, not the length of the log.
"""

from __future__ import annotations

from dataclasses import dataclass

from sixfold.quorum import READ_QUORUM
from sixfold.truncation import TruncationRange, merge


@dataclass(frozen=True, slots=True)
class SegmentReport:
    """What recovery needs from one node's state."""

    name: str
    epoch: int
    scl: int
    cpl_at_scl: int
    highest_lsn: int
    truncations: tuple[TruncationRange, ...]


@dataclass(frozen=True, slots=True)
class RecoveryPlan:
    epoch: int
    vdl: int
    truncation: TruncationRange
    next_lsn: int
    source: str  # the node with the highest SCL, from which lagging nodes are repaired
    lagging: tuple[str, ...]  # sealed nodes whose SCL is below the VDL


def next_epoch(reports: list[SegmentReport]) -> int:
    return max((r.epoch for r in reports), default=0) + 1


def known_truncations(reports: list[SegmentReport]) -> tuple[TruncationRange, ...]:
    return merge(*(r.truncations for r in reports))


def plan_recovery(epoch: int, reports: list[SegmentReport], lal: int) -> RecoveryPlan:
    """Durable points and the truncation from the states of the sealed nodes.

    Every report must already know every truncation the others know (the writer pushes them
    first): a node that missed an earlier truncation could report an SCL inside it.
    """
    assert len(reports) >= READ_QUORUM, "recovery needs at least a read quorum of states"
    assert all(r.epoch == epoch for r in reports), "plan only from nodes sealed at epoch"
    known = known_truncations(reports)
    assert all(set(r.truncations) == set(known) for r in reports), "truncations not synced"
    best = max(reports, key=lambda r: r.scl)
    vdl = max(r.cpl_at_scl for r in reports)
    prior_through = max((r.through_lsn for r in known), default=0)
    through = max(max(vdl, prior_through) + lal, max(r.highest_lsn for r in reports))
    return RecoveryPlan(
        epoch=epoch,
        vdl=vdl,
        truncation=TruncationRange(epoch, vdl, through),
        next_lsn=through + 1,
        source=best.name,
        lagging=tuple(r.name for r in reports if r.scl < vdl),
    )
