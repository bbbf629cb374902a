"""The writer's durable points: VCL and VDL from per-node SCLs (P17 §4.1, P18 §2.3).

VCL is the highest LSN that a write quorum (4 of 6, of both sets while the membership
changes: sixfold/core/membership.py) of nodes has completed. VDL is the highest CPL at or
below VCL. A commit is acknowledged once VDL has reached its LSN; no consensus
round is needed because each node's SCL already says what it holds without holes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from sixfold.core.membership import Membership


class VolumeDurability:
    def __init__(
        self,
        node_names: Iterable[str],
        vdl: int,
        node_scls: dict[str, int],
        membership: Membership | None = None,
    ) -> None:
        self.node_scl = {name: node_scls.get(name, 0) for name in node_names}
        self.membership = membership or Membership.initial()
        self.vdl = vdl
        self.vcl = max(vdl, self.membership.write_quorum_lsn(self.node_scl))
        self._cpls: deque[int] = deque()  # CPLs allocated above VDL, ascending

    def note_cpl(self, lsn: int) -> None:
        assert lsn > self.vdl and (not self._cpls or lsn > self._cpls[-1]), lsn
        self._cpls.append(lsn)

    def on_scl(self, node: str, scl: int) -> int:
        """Record a node's SCL from an append ack; return the (possibly advanced) VDL."""
        if scl > self.node_scl[node]:
            self.node_scl[node] = scl
            self.vcl = max(self.vcl, self.membership.write_quorum_lsn(self.node_scl))
            while self._cpls and self._cpls[0] <= self.vcl:
                self.vdl = self._cpls.popleft()
        return self.vdl

    def recompute(self) -> int:
        """After a membership change: the VCL by the new rules (never lower: what was durable
        stays durable) and the VDL it allows; returns the VDL."""
        self.vcl = max(self.vcl, self.membership.write_quorum_lsn(self.node_scl))
        while self._cpls and self._cpls[0] <= self.vcl:
            self.vdl = self._cpls.popleft()
        return self.vdl

    def nodes_at_or_above(self, lsn: int) -> int:
        return sum(1 for scl in self.node_scl.values() if scl >= lsn)
