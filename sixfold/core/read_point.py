"""A reader's read point: the newest VDL the storage nodes have learned (P18 §3).

Pure: the reader (and the simulator) feed it the (epoch, VDL) pairs nodes report.
"""

from __future__ import annotations

from collections.abc import Iterable

from sixfold.core.quorum import READ_QUORUM


def advance_read_point(
    current: tuple[int, int], learned: Iterable[tuple[int, int]]
) -> tuple[int, int]:
    """The next (epoch, read point) from the (vdl_epoch, vdl) pairs nodes report, one per
    node.

    The newest epoch wins (its writer's VDL is at least every VDL an older writer announced,
    P17 §4.3), and the read point never goes back. Only a point that a read quorum of nodes
    has learned is taken: the writer sends its VDL to every node, and one node alone, faulty
    or fed a bogus VDL by anyone who can reach its port, cannot move a reader (issue 19).
    """
    known = sorted(((epoch, vdl) for epoch, vdl in learned if epoch > 0), reverse=True)
    if len(known) < READ_QUORUM:
        return current
    agreed = known[READ_QUORUM - 1]
    if agreed <= current:
        return current
    return agreed[0], max(current[1], agreed[1])
