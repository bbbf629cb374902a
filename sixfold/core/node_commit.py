"""A storage node's commit step, sans I/O: which queued appends go into the next write.

Appends queue while the previous write syncs; one commit takes them all (P17 §3.2 steps 1-2:
the log is hardened in one write and one fsync). Each is checked against the node's epoch at
commit time: a seal may have come in meanwhile. Records already held, cancelled by a
truncation, or from a future epoch are dropped; the rest are stored with the completeness
they give, so the SCL stored is exactly what those records complete (start-up rescans only
what lies above it). The node (storage_node/node.py) and the simulator both run this.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from sixfold.core.completeness import SegmentCompleteness
from sixfold.core.errors import SixfoldError
from sixfold.core.record import RedoRecord
from sixfold.core.segment import SegmentState

T = TypeVar("T")


@dataclass(slots=True)
class QueuedAppend(Generic[T]):
    """Records waiting for the next commit. `epoch` None: fetched by gossip, checked
    against the node's own epoch instead. `token` is the shell's handle on the caller."""

    epoch: int | None
    records: Sequence[RedoRecord]
    vdl: int
    token: T


@dataclass(slots=True)
class CommitPlan(Generic[T]):
    accepted: list[QueuedAppend[T]]  # answered with the SCL once the write is durable
    refused: list[tuple[QueuedAppend[T], SixfoldError]]  # a stale or future epoch
    records: list[RedoRecord]  # to store, in LSN order of arrival: unique and admitted
    after: SegmentCompleteness  # the completeness once they are durable: store its SCL


def plan_commit(st: SegmentState, batch: list[QueuedAppend[T]]) -> CommitPlan[T]:
    """The next commit of `batch`. The VDLs the accepted appends carry are learned now:
    durable on a write quorum whatever this node holds."""
    accepted: list[QueuedAppend[T]] = []
    refused: list[tuple[QueuedAppend[T], SixfoldError]] = []
    for queued in batch:
        try:
            if queued.epoch is not None:
                st.check_current(queued.epoch, "append")
        except SixfoldError as exc:
            refused.append((queued, exc))
            continue
        accepted.append(queued)
    records = _unique_admitted(st, accepted)
    for queued in accepted:
        if queued.epoch is not None:
            st.learn_vdl(queued.epoch, queued.vdl)
    return CommitPlan(accepted, refused, records, completeness_after(st, records))


def completeness_after(st: SegmentState, records: list[RedoRecord]) -> SegmentCompleteness:
    """What the node's completeness will be once `records` are stored (pending is small)."""
    if not records:
        return st.completeness
    trial = dataclasses.replace(st.completeness, pending=dict(st.completeness.pending))
    for record in records:
        trial.add(record.lsn, record.prev_volume_lsn, record.is_cpl)
    return trial


def _unique_admitted(st: SegmentState, accepted: list[QueuedAppend[T]]) -> list[RedoRecord]:
    seen: set[int] = set()
    out = []
    for queued in accepted:
        for record in queued.records:
            if record.lsn not in seen and st.admits(record):
                seen.add(record.lsn)
                out.append(record)
    return out
