"""Seeding a new secondary region: every page of the primary's volume as of a durable point,
written into the six new nodes' stores before they start (as a restore writes them), so the
replication agent ships only the log after that point. The primary's nodes keep their log
only until it is folded into pages: a new region cannot start from LSN 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sixfold.clients import NodeClient
from sixfold.committed_log import learned_durable_point, page_images_at, serving_states
from sixfold.core.errors import RegionError
from sixfold.core.quorum import NODE_NAMES, READ_QUORUM
from sixfold.core.replication import agent_owner
from sixfold.rpc import sixfold_pb2 as pb
from storage_node.store import MAP_SIZE_BYTES_DEFAULT, NodeStore

CALL_TIMEOUT_S = 10.0


@dataclass(frozen=True, slots=True)
class Seeded:
    lsn: int  # the primary's durable point the region starts at
    pages: int


async def seed(primary: dict[str, str], into: Path, region: str, volume_id: str) -> Seeded:
    """Write the primary's pages as of its durable point into a store per node under `into`
    (which must hold none yet)."""
    clients = [NodeClient(n, a) for n, a in primary.items()]
    owner = agent_owner(region)
    try:
        states = await serving_states(clients, pb.GetStateRequest(reader=owner))
        point = learned_durable_point(states)
        if point is None:
            raise RegionError(
                f"fewer than {READ_QUORUM} primary storage nodes report a durable point, "
                f"needed to seed region {region}: is the primary up?"
            )
        sources = [c for c in clients if c.name in states and _can_build(states[c.name], point)]
        if not sources:
            raise RegionError(f"no primary node can build the pages as of LSN {point} yet: retry")
        min_epoch = max(s.truncations_version for s in states.values())

        async def hold(client: NodeClient, read_point: int) -> None:
            request = pb.GetStateRequest(reader=owner, read_point=read_point)
            await client.get_state(request, timeout=CALL_TIMEOUT_S)

        stores = [NodeStore(into / n, n, MAP_SIZE_BYTES_DEFAULT) for n in NODE_NAMES]
        pages = 0
        try:
            for s in stores:
                s.claim_volume(volume_id)
            async for piece, done in page_images_at(sources[0], point, min_epoch, hold):
                for s in stores:
                    s.put_restored(piece, point if done else None)
                pages += len(piece)
        finally:
            for s in stores:
                s.close()
        return Seeded(point, pages)
    finally:
        for c in clients:
            await c.close()


def _can_build(state: pb.NodeState, point: int) -> bool:
    return state.serving and state.gc_horizon <= point <= state.scl
