"""Gossip: a node fills its own holes from its peers (P17 §3.2, steps 3-4).

Each round the node asks every peer for its state. From a peer at a newer epoch, or one that
knows truncations this node does not, it adopts them first: a node that was down during
recovery learns the truncation before it serves reads or passes records on. Then, if a peer
is complete further than this node, it fetches the records above its own SCL from that peer.
The writer never resends what a node missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sixfold.clients import NodeClient
from sixfold.crash import OPERATING_ERRORS
from sixfold.errors import SixfoldError
from sixfold.record import RedoRecord, decode_record
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.wire import ranges_from_proto
from storage_node.node import StorageNode

log = logging.getLogger("sixfold.gossip")

GOSSIP_INTERVAL_S = 0.25
GOSSIP_CALL_TIMEOUT_S = 1.0


class Gossip:
    def __init__(self, node: StorageNode, peers: dict[str, str]) -> None:
        self.node = node
        self.peers = [NodeClient(name, address) for name, address in peers.items()]
        # Each peer's SCL one round ago: fetch only that far, so gossip does not race the
        # writer for records it is about to deliver anyway.
        self.prev_peer_scl: dict[str, int] = {}

    async def run(self) -> None:
        while True:
            behind = False
            try:
                behind = await self.round()
            except OPERATING_ERRORS:  # reported, and tried again next round; a bug ends it
                log.exception("%s: gossip round failed", self.node.name)
            if not behind:
                await asyncio.sleep(GOSSIP_INTERVAL_S)

    async def round(self) -> bool:
        """One gossip round; True when the node fetched records and may still be behind."""
        states = await asyncio.gather(
            *(p.get_state(timeout=GOSSIP_CALL_TIMEOUT_S) for p in self.peers),
            return_exceptions=True,
        )
        answered = [
            (p, s) for p, s in zip(self.peers, states, strict=True) if isinstance(s, pb.NodeState)
        ]
        for peer, _ in answered:
            self.node.state.heard_from(peer.name)
        # Only peers that answered this round: GC waits while any peer is unreachable, so a
        # node that comes back (maybe with a damaged disk) can still fetch what it lacks.
        self.node.peer_scl = {peer.name: state.scl for peer, state in answered}
        self.node.peer_coalesced = {peer.name: state.coalesced_through for peer, state in answered}
        self.node.peer_repair_floor = {
            p.name: s.repair_floor for p, s in answered if s.repair_floor
        }
        await self._adopt_truncations([s for _, s in answered])
        await self._repair(answered)
        return await self._fill_holes(answered)

    async def _adopt_truncations(self, states: list[pb.NodeState]) -> None:
        """Take a peer's truncation set when it is newer than ours (never merge an older one).

        A bare epoch is not spread this way: a recovery must win its epoch's seal itself.
        """
        st = self.node.state
        newest = max(states, key=lambda s: s.truncations_version, default=None)
        if newest is None or newest.truncations_version <= st.truncations_version:
            return
        version = newest.truncations_version
        ranges = ranges_from_proto(newest.truncations, epoch_max=version)
        await self.node.truncate(max(st.epoch, version), ranges, version)

    async def _fill_holes(self, answered: list[tuple[NodeClient, pb.NodeState]]) -> bool:
        st = self.node.state
        prev, self.prev_peer_scl = self.prev_peer_scl, {p.name: s.scl for p, s in answered}
        if not st.serving:
            return False
        # Only peers that cancel exactly what this node cancels may fill its holes.
        ahead = [
            (p, min(s.scl, prev.get(p.name, 0)))
            for p, s in answered
            if s.serving and s.truncations_version == st.truncations_version
        ]
        ahead = [(p, through) for p, through in ahead if through > st.scl]
        if not ahead:
            return False
        # Furthest ahead first, then the next: a peer that cannot serve the range (a damaged
        # record its page versions cover, so it never repairs it) must not stall this node,
        # whose SCL in turn holds back every peer's GC.
        ahead.sort(key=lambda pt: -pt[1])
        for peer, through in ahead:
            records = await self._fetch(peer, st.scl, through)
            if records:
                break
        else:
            return False
        before = st.scl
        self.node.metrics.gossip_records.inc(len(records))
        await self.node.append(None, records)
        log.debug("%s: gossip from %s: %d records, SCL %d -> %d", self.node.name, peer.name,
                  len(records), before, st.scl)  # fmt: skip
        return st.scl > before

    async def _fetch(self, peer: NodeClient, after_lsn: int, through_lsn: int) -> list[RedoRecord]:
        request = pb.ReadRecordsRequest(
            after_lsn=after_lsn,
            through_lsn=through_lsn,
            max_records=self.node.limits.gossip_records_max,
        )
        try:
            response = await peer.read_records(request, timeout=GOSSIP_CALL_TIMEOUT_S * 5)
            return [decode_record(b) for b in response.records]
        except SixfoldError as exc:
            log.info("%s: gossip fetch from %s failed: %s", self.node.name, peer.name, exc)
            return []

    async def _repair(self, answered: list[tuple[NodeClient, pb.NodeState]]) -> None:
        """Fetch good copies of damaged records and versions from peers that hold them.

        Repaired, never truncated: a damaged record at or below the SCL is durable history.
        """
        st = self.node.state
        damaged = sorted(self.node.damaged)[: self.node.limits.repairs_per_round_max]
        for lsn, page_no in damaged:
            sources = [
                p
                for p, s in answered
                if s.serving and s.truncations_version == st.truncations_version and s.scl >= lsn
            ]
            for peer in sources:
                with contextlib.suppress(SixfoldError):
                    if page_no is None:
                        await self._repair_record(peer, lsn)
                    else:
                        await self._repair_version(peer, page_no, lsn)
                    break

    async def _repair_record(self, peer: NodeClient, lsn: int) -> None:
        request = pb.ReadRecordsRequest(after_lsn=lsn - 1, through_lsn=lsn, max_records=1)
        response = await peer.read_records(request, timeout=GOSSIP_CALL_TIMEOUT_S)
        records = [decode_record(b) for b in response.records]
        if not records or records[0].lsn != lsn:
            raise SixfoldError(f"{peer.name} does not hold LSN {lsn}")
        await self.node.repair_record(records[0])

    async def _repair_version(self, peer: NodeClient, page_no: int, lsn: int) -> None:
        request = pb.GetPageRequest(page_no=page_no, lsn=lsn)
        response = await peer.get_page(request, timeout=GOSSIP_CALL_TIMEOUT_S)
        if response.page_lsn != lsn:
            raise SixfoldError(
                f"{peer.name}'s page {page_no} at {lsn} is of LSN {response.page_lsn}"
            )
        await self.node.repair_version(page_no, lsn, response.image)

    async def close(self) -> None:
        for peer in self.peers:
            await peer.close()
