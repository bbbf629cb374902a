"""A reader's read point: the newest VDL the storage nodes have learned (P18 §3).

Pure: the reader (and the simulator) feed it the (epoch, VDL) pairs nodes report.
"""

from __future__ import annotations

from collections.abc import Iterable


def advance_read_point(
    current: tuple[int, int], learned: Iterable[tuple[int, int]]
) -> tuple[int, int]:
    """The next (epoch, read point) from the (vdl_epoch, vdl) pairs nodes report.

    The newest epoch wins (its writer's VDL is at least every VDL an older writer announced,
    P17 §4.3), and the read point never goes back.
    """
    known = [(epoch, vdl) for epoch, vdl in learned if epoch > 0]
    if not known:
        return current
    newest = max(known)
    if newest <= current:
        return current
    return newest[0], max(current[1], newest[1])
