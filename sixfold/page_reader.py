"""Reading a page at a read point from the storage nodes (P18 §3).

A normal read needs no quorum: one node whose SCL covers the read point materialises the
page. Only when no single node does is a read quorum used: the base version from the most
complete node, plus the page's records above it gathered from 3 nodes. Every record at or
below the read point (<= VDL) reached 4 nodes, so any 3 include one that holds it (4 + 3 > 6).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sixfold.clients import NodeClient
from sixfold.errors import CorruptRecordError, QuorumUnavailableError, SixfoldError
from sixfold.page import apply_records
from sixfold.quorum import COPIES, READ_QUORUM
from sixfold.record import RedoRecord, decode_record
from sixfold.rpc import sixfold_pb2 as pb

READ_TIMEOUT_S = 2.0


class PageReader:
    def __init__(self, clients: Sequence[NodeClient]) -> None:
        self.clients = list(clients)
        self.scl_hint: dict[str, int] = {c.name: 0 for c in self.clients}
        self._turn = 0

    def note_scl(self, node: str, scl: int) -> None:
        self.scl_hint[node] = scl

    async def read(self, page_no: int, lsn: int, min_epoch: int) -> tuple[bytes, int]:
        """The page at `lsn` and the LSN of its newest change."""
        for client in self._single_node_candidates(lsn):
            try:
                response = await client.get_page(
                    pb.GetPageRequest(page_no=page_no, lsn=lsn, min_epoch=min_epoch),
                    timeout=READ_TIMEOUT_S,
                )
            except SixfoldError:
                self.scl_hint[client.name] = 0
                continue
            self.scl_hint[client.name] = response.scl
            return response.image, response.page_lsn
        return await self._quorum_read(page_no, lsn, min_epoch)

    def covering_nodes(self, lsn: int) -> list[NodeClient]:
        """Nodes believed complete to `lsn`, in turn so that reads spread over them."""
        return [c for c in self._single_node_candidates(lsn) if self.scl_hint[c.name] >= lsn]

    def _single_node_candidates(self, lsn: int) -> list[NodeClient]:
        """Nodes believed to cover `lsn` first (spread in turn), then the rest."""
        self._turn = (self._turn + 1) % len(self.clients)
        ordered = self.clients[self._turn :] + self.clients[: self._turn]
        covering = [c for c in ordered if self.scl_hint[c.name] >= lsn]
        return covering + [c for c in ordered if self.scl_hint[c.name] < lsn]

    async def _quorum_read(self, page_no: int, lsn: int, min_epoch: int) -> tuple[bytes, int]:
        states = await asyncio.gather(
            *(c.get_state(timeout=READ_TIMEOUT_S) for c in self.clients), return_exceptions=True
        )
        usable = [
            (c, s)
            for c, s in zip(self.clients, states, strict=True)
            if isinstance(s, pb.NodeState) and s.serving and s.truncations_version >= min_epoch
        ]
        if len(usable) < READ_QUORUM:
            raise QuorumUnavailableError("read", len(usable), READ_QUORUM, COPIES)
        usable.sort(key=lambda cs: cs[1].scl, reverse=True)
        best, best_state = usable[0]
        base_lsn = min(best_state.scl, lsn)
        base = await best.get_page(
            pb.GetPageRequest(page_no=page_no, lsn=base_lsn, min_epoch=min_epoch),
            timeout=READ_TIMEOUT_S,
        )
        gathered: dict[int, RedoRecord] = {}
        answered = 0
        for client, _ in usable:
            if answered >= READ_QUORUM:
                break
            try:
                response = await client.read_records(
                    pb.ReadRecordsRequest(after_lsn=base_lsn, through_lsn=lsn, page_no=page_no),
                    timeout=READ_TIMEOUT_S,
                )
            except SixfoldError:
                continue
            answered += 1
            for encoded in response.records:
                record = decode_record(encoded)  # CRC checked after reading, here too
                gathered[record.lsn] = record
        if answered < READ_QUORUM:
            raise QuorumUnavailableError("read", answered, READ_QUORUM, COPIES)
        records = [gathered[x] for x in sorted(gathered)]
        _check_page_chain(page_no, base.page_lsn, records)
        image = apply_records(base.image, records) if records else base.image
        return image, (records[-1].lsn if records else base.page_lsn)


def _check_page_chain(page_no: int, base_page_lsn: int, records: list[RedoRecord]) -> None:
    """The per-page back-links must join the base version to every record gathered."""
    previous = base_page_lsn
    for record in records:
        if record.prev_page_lsn != previous:
            raise CorruptRecordError(
                f"page {page_no}: record LSN {record.lsn} links back to LSN "
                f"{record.prev_page_lsn}, expected {previous}: the read quorum is missing a record"
            )
        previous = record.lsn
