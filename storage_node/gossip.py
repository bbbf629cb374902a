"""Gossip: a node fills its own holes from its peers (P17 §3.2, steps 3-4).

The asyncio shell around sixfold/core/gossip_round.py, which decides each round: adopt a newer
truncation set, repair damaged records and versions, fetch the records above this node's
SCL from a peer complete further. This shell sends its requests to the peers and carries
out its local steps on the node (storage_node/node.py).
"""

from __future__ import annotations

import asyncio
import logging
import time

from sixfold.clients import NodeClient
from sixfold.core.errors import SixfoldError
from sixfold.core.gossip_pacing import GossipPacing, GossipSignals
from sixfold.core.gossip_round import (
    AdoptMembership,
    AdoptTruncations,
    DropHydration,
    FinishHydration,
    GossipLimits,
    GossipRound,
    LocalStep,
    NotePeers,
    RepairRecord,
    RepairVersion,
    StoreFetched,
    StoreImages,
    fork_below,
)
from sixfold.crash import OPERATING_ERRORS
from sixfold.node_calls import CallTimeouts, drive
from storage_node.node import StorageNode

log = logging.getLogger("sixfold.gossip")

GOSSIP_INTERVAL_S = 0.25  # the shortest rest between rounds; up to 8x that while quiet
GOSSIP_CALL_TIMEOUTS = CallTimeouts(quick_s=1.0, bulk_s=5.0)


class Gossip:
    def __init__(self, node: StorageNode, peers: dict[str, str]) -> None:
        self.node = node
        self.peers = [NodeClient(name, address) for name, address in peers.items()]
        self.by_name = {p.name: p for p in self.peers}
        limits = GossipLimits(node.limits.gossip_records_max, node.limits.repairs_per_round_max)
        self.machine = GossipRound(list(self.by_name), limits)
        self.pacing = GossipPacing(GOSSIP_INTERVAL_S)
        self.fork_reported: tuple[int, int] | None = None  # (fork, SCL) last logged

    async def run(self) -> None:
        while True:
            behind = False
            try:
                behind = await self.round()
            except OPERATING_ERRORS:  # reported, and tried again next round; a bug ends it
                log.exception("%s: gossip round failed", self.node.name)
            self.pacing.after_round(behind, self.signals())
            rested = 0.0
            # Each look at the node's own signals costs no call; a round rests until due.
            while not self.pacing.due(rested, self.signals()):
                await asyncio.sleep(GOSSIP_INTERVAL_S)
                rested += GOSSIP_INTERVAL_S

    def _report_fork(self, peer: str, fork: int, scl: int) -> None:
        """Counted every round it is seen, logged once per fork (it stays until the node is
        replaced)."""
        node = self.node
        node.metrics.log_forks.inc()
        if self.fork_reported == (fork, scl):
            return
        self.fork_reported = (fork, scl)
        log.error(
            "%s: this node's log has left the volume's history: the records %s holds above "
            "this node's SCL %d follow LSN %d, so its records in (%d, %d] are on no peer's "
            "chain (appended by something other than the writer). It cannot catch up, and "
            "its SCL holds back garbage collection on every node: replace it with a spare "
            "(`sixfold replace %s --with SPARE --force`)",
            node.name,
            peer,
            scl,
            fork,
            fork,
            scl,
            node.name,
        )

    def signals(self) -> GossipSignals:
        node = self.node
        return GossipSignals.of(node.state, len(node.damaged), node.hydration, node.membership)

    async def round(self) -> bool:
        """One gossip round; True when the node fetched records and may still be behind."""
        node = self.node
        steps = self.machine.run(node.state, list(node.damaged), node.hydration, node.membership)
        return await drive(steps, self.by_name, GOSSIP_CALL_TIMEOUTS, local=self._carry_out)

    async def _carry_out(self, step: LocalStep) -> SixfoldError | None:
        node = self.node
        if isinstance(step, NotePeers):
            node.peer_scl = {s.name: s.scl for s in step.answered}
            node.peer_coalesced = {s.name: s.coalesced_through for s in step.answered}
            node.peer_repair_floor = {
                s.name: s.repair_floor for s in step.answered if s.repair_floor
            }
        elif isinstance(step, AdoptMembership):
            await node.set_membership(step.membership)
        elif isinstance(step, AdoptTruncations):
            await node.truncate(step.epoch, step.ranges, step.version)
        elif isinstance(step, StoreImages):
            await self._store_images(step)
        elif isinstance(step, FinishHydration):
            await node.finish_hydration(step.target_lsn)
        elif isinstance(step, DropHydration):
            await node.drop_hydration()
        elif isinstance(step, StoreFetched):
            before = node.state.scl
            node.metrics.gossip_records.inc(len(step.records))
            fork = fork_below(step.asked_after, step.records)
            if fork is not None:  # none of them can chain on: storing them is wasted
                self._report_fork(step.source, fork, step.asked_after)
                return None
            await node.append(None, list(step.records))
            log.debug(
                "%s: gossip from %s: %d records, SCL %d -> %d",
                node.name,
                step.source,
                len(step.records),
                before,
                node.state.scl,
            )
        else:
            try:
                if isinstance(step, RepairRecord):
                    await node.repair_record(step.record)
                else:
                    assert isinstance(step, RepairVersion), step
                    await node.repair_version(step.page_no, step.lsn, step.image)
            except SixfoldError as exc:
                return exc  # another peer's copy is tried
        return None

    async def _store_images(self, step: StoreImages) -> None:
        """Store a run of hydrated pages, then wait as long as the throttle asks (the
        copy shares the disk and the CPU with commits)."""
        node, started = self.node, time.monotonic()
        if step.progress.pages_done == len(step.pages):
            log.info(
                "%s: hydrating to LSN %d from peers (its log is gone below their GC horizon)",
                node.name,
                step.progress.target_lsn,
            )
        await node.store_images(step.pages, step.progress)
        rate = node.limits.hydrate_bytes_per_s_max
        if rate:
            spent_s = time.monotonic() - started
            await asyncio.sleep(max(0.0, sum(len(p.image) for p in step.pages) / rate - spent_s))

    async def close(self) -> None:
        for peer in self.peers:
            await peer.close()
