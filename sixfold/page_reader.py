"""Reading a page at a read point from the storage nodes: the asyncio shell around
sixfold.core.page_read, which decides which nodes to ask and when a read quorum is needed."""

from __future__ import annotations

from collections.abc import Sequence

from sixfold.clients import NodeClient
from sixfold.core.membership import Membership
from sixfold.core.page_read import NodeChoice, read_page
from sixfold.node_calls import CallTimeouts, drive

READ_TIMEOUT_S = 2.0
READ_CALL_TIMEOUTS = CallTimeouts(quick_s=READ_TIMEOUT_S, bulk_s=READ_TIMEOUT_S)


class PageReader:
    def __init__(self, clients: Sequence[NodeClient]) -> None:
        self.clients = list(clients)
        self.by_name = {c.name: c for c in self.clients}
        self.choice = NodeChoice([c.name for c in self.clients])

    def note_scl(self, node: str, scl: int) -> None:
        self.choice.note_scl(node, scl)

    def note_membership(self, membership: Membership) -> None:
        """Count quorum reads by the newest membership heard of (never an older one)."""
        if membership.is_newer_than(self.choice.membership):
            self.choice.membership = membership

    async def read(self, page_no: int, lsn: int, min_epoch: int) -> tuple[bytes, int]:
        """The page at `lsn` and the LSN of its newest change."""
        reading = read_page(self.choice, page_no, lsn, min_epoch)
        return await drive(reading, self.by_name, READ_CALL_TIMEOUTS)

    def covering_nodes(self, lsn: int) -> list[NodeClient]:
        """Nodes believed complete to `lsn`, in turn so that reads spread over them."""
        return [self.by_name[n] for n in self.choice.covering(lsn)]
