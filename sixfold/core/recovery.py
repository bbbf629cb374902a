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

from sixfold.core.membership import Membership
from sixfold.core.quorum import READ_QUORUM
from sixfold.core.truncation import TruncationRange


@dataclass(frozen=True, slots=True)
class SegmentReport:
    """What the core needs of one node's state (recovery, quorum reads)."""

    name: str
    epoch: int
    scl: int
    cpl_at_scl: int
    highest_lsn: int
    truncations: tuple[TruncationRange, ...]
    truncations_version: int = 0
    epoch_owner: str = ""  # the writer that sealed `epoch`
    serving: bool = True  # it answers reads (not still restoring its state)
    repair_floor: int = 0  # the lowest LSN it must fetch back from a peer (0: none)
    coalesced_through: int = 0  # peers collect no garbage above it (sixfold/core/log_cleanup.py)
    gc_horizon: int = 0  # it builds no page below it; records at or below it may be gone
    membership: Membership | None = None  # the newest it knows (None: not reported)
    records_stored: int = 0  # an empty spare holds neither (sixfold/core/replacement.py)
    page_versions_stored: int = 0


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


def newest_truncations(reports: list[SegmentReport]) -> SegmentReport:
    """The report holding the newest truncation set: the one recovery must build on.

    Not the union of all sets: a set written by a recovery that died before it reached a
    write quorum is superseded by any later recovery that did not see it. A set that did
    reach a write quorum is seen by every later recovery (4 + 4 > 6), so it is never lost.
    """
    return max(reports, key=lambda r: r.truncations_version)


def plan_recovery(epoch: int, reports: list[SegmentReport], lal: int) -> RecoveryPlan:
    """Durable points and the truncation from the states of the sealed nodes.

    Every report must already hold the newest truncation set (the writer pushes it first): a
    node that missed an earlier truncation could report an SCL inside a cancelled range.
    """
    assert len(reports) >= READ_QUORUM, "recovery needs at least a read quorum of states"
    assert all(r.epoch == epoch for r in reports), "plan only from nodes sealed at epoch"
    newest = newest_truncations(reports)
    known = newest.truncations
    assert all(
        r.truncations_version == newest.truncations_version and set(r.truncations) == set(known)
        for r in reports
    ), "truncation sets not synced"
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
