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


READ_POINTS_MAX = 64  # readers whose read points a node keeps (more are not remembered)


class ReadPointTable:
    """The read points readers report to a storage node, which hold its GC back (PGMRPL,
    P18 §3): the node keeps every version a read at or above the lowest of them needs.

    A reader that stops reporting for `ttl` (in the caller's clock units: seconds on a
    node, ticks in the simulator) no longer holds anything back; one that asks for a longer
    `hold` (a region's or a backup's agent: restarted, it must find the records it has yet
    to ship) keeps its point that long, up to `hold_max`. A point already below the GC
    horizon is too late to keep anything for: it is dropped, not kept.
    """

    def __init__(
        self, ttl: float, readers_max: int = READ_POINTS_MAX, hold_max: float | None = None
    ) -> None:
        self.ttl = ttl
        self.readers_max = readers_max
        self.hold_max = ttl if hold_max is None else hold_max
        assert self.hold_max >= ttl
        self.points: dict[str, tuple[int, float]] = {}  # reader -> (read point, expires at)

    def note(
        self, reader: str, read_point: int, now: float, gc_horizon: int, hold: float = 0
    ) -> None:
        if read_point == 0 or read_point < gc_horizon:
            self.points.pop(reader, None)
            return
        if reader in self.points or len(self.points) < self.readers_max:
            kept_for = min(max(hold, self.ttl), self.hold_max)
            self.points[reader] = (read_point, now + kept_for)

    def lowest(self, now: float, vdl: int) -> int:
        """The lowest read point still held, and never above the node's learned VDL."""
        self.points = {r: v for r, v in self.points.items() if now <= v[1]}
        return min([*(p for p, _ in self.points.values()), vdl])
