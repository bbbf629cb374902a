"""A reader instance: pages at a consistent read point, learned from storage alone.

The read point is the newest VDL the storage nodes have learned from the writer (piggybacked
on its appends), taken from nodes at the newest epoch seen. It never runs ahead of what is
durable, and it never goes back. Readers never talk to the writer (P18 §3). While polling,
a reader reports its read point so nodes keep the page versions it may still need.
"""

from __future__ import annotations

import asyncio
import logging

from sixfold.clients import NodeClient
from sixfold.errors import NotServingError
from sixfold.page_reader import PageReader
from sixfold.read_point import advance_read_point
from sixfold.rpc import sixfold_pb2 as pb

log = logging.getLogger("sixfold.reader")

READ_POINT_POLL_S = 0.1  # how often a reader asks the nodes for a newer VDL
POLL_TIMEOUT_S = 1.0


class Reader:
    def __init__(self, name: str, nodes: dict[str, str]) -> None:
        self.name = name
        self.clients = [NodeClient(n, address) for n, address in nodes.items()]
        self.pages = PageReader(self.clients)
        self.read_point = 0
        self.epoch = 0
        self.node_states: dict[str, pb.NodeState | None] = {c.name: None for c in self.clients}

    async def poll_once(self) -> None:
        request = pb.GetStateRequest(reader=self.name, read_point=self.read_point)
        results = await asyncio.gather(
            *(c.get_state(request, timeout=POLL_TIMEOUT_S) for c in self.clients),
            return_exceptions=True,
        )
        states = []
        for client, result in zip(self.clients, results, strict=True):
            state = result if isinstance(result, pb.NodeState) else None
            self.node_states[client.name] = state
            if state is not None:
                self.pages.note_scl(client.name, state.scl if state.serving else 0)
                states.append(state)
        self.advance(states)

    def advance(self, states: list[pb.NodeState]) -> None:
        """Move the read point to the newest VDL learned at the newest epoch (never back)."""
        learned = ((s.vdl_epoch, s.vdl) for s in states)
        self.epoch, self.read_point = advance_read_point((self.epoch, self.read_point), learned)

    async def run_polling(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("reader %s: polling storage failed", self.name)
            await asyncio.sleep(READ_POINT_POLL_S)

    async def read_page(self, page_no: int) -> tuple[bytes, int, int]:
        if self.epoch == 0:
            raise NotServingError(
                f"reader {self.name} has no read point yet: no storage node has reported a "
                "durable point (is the writer up and recovered?)"
            )
        read_point, epoch = self.read_point, self.epoch
        image, page_lsn = await self.pages.read(page_no, read_point, epoch)
        return image, page_lsn, read_point

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
