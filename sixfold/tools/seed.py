"""Seeding a new secondary region: every page of the primary's volume as of a durable point,
written into the six new nodes' stores before they start (as a restore writes them), so the
replication agent ships only the log after that point. The primary's nodes keep their log
only until it is folded into pages: a new region cannot start from LSN 0.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sixfold.clients import NodeClient
from sixfold.committed_log import (
    AGENT_READ_POINT_HOLD_S,
    learned_durable_point,
    page_images_at,
    serving_states,
)
from sixfold.core.errors import RegionError, SixfoldError
from sixfold.core.quorum import NODE_NAMES, READ_QUORUM
from sixfold.core.replication import agent_owner
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.serving import parse_peers
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
        states = await serving_states(
            clients, pb.GetStateRequest(reader=owner, read_point_hold_s=AGENT_READ_POINT_HOLD_S)
        )
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
            request = pb.GetStateRequest(
                reader=owner, read_point=read_point, read_point_hold_s=AGENT_READ_POINT_HOLD_S
            )
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


# -- `python -m sixfold.tools.seed`: compose's region-b profile seeds its volumes so ---------

SEEDED_MARK = "region-seeded"  # in each node's directory once all six are seeded
SEED_WAIT_S_DEFAULT = 120.0
SEED_RETRY_S = 1.0


def seed_once(primary: dict[str, str], into: Path, region: str, wait_s: float) -> str:
    """Seed the six node directories under `into` unless a finished seeding marked them:
    what a seeding cut short left is cleared first, and a primary not ready yet (no
    durable point a read quorum learned) is waited for up to `wait_s`. What was done."""
    marks = [into / name / SEEDED_MARK for name in NODE_NAMES]
    if all(m.exists() for m in marks):
        return f"region {region}: already seeded"
    for name in NODE_NAMES:
        _clear(into / name)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            seeded = asyncio.run(seed(primary, into, region, volume_id=""))
            break
        except SixfoldError as exc:  # the primary still starting: no durable point yet
            if time.monotonic() >= deadline:
                raise RegionError(f"{exc} (waited {wait_s:g} s)") from None
            time.sleep(SEED_RETRY_S)
            for name in NODE_NAMES:
                _clear(into / name)
    for mark in marks:
        mark.write_text(f"{seeded.lsn}\n")
        with open(mark) as f:
            os.fsync(f.fileno())
    return f"region {region}: seeded {seeded.pages} pages as of LSN {seeded.lsn}"


def _clear(directory: Path) -> None:
    """Empty `directory` (a mounted volume: the directory itself stays)."""
    directory.mkdir(parents=True, exist_ok=True)
    for child in directory.iterdir():
        if child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sixfold.tools.seed",
        description="Seed a secondary region's six node directories (INTO/a1 ... INTO/c2) "
        "with the primary's pages at a durable point, once: run again, it does nothing "
        "(docker-compose.yml's region-b profile runs it before the region's nodes start).",
    )
    parser.add_argument("--region", required=True, help="the secondary region's name")
    parser.add_argument(
        "--primary-nodes",
        type=parse_peers,
        required=True,
        help="the primary's nodes: a1=HOST:PORT,...",
    )
    parser.add_argument("--into", type=Path, required=True, help="holds a directory per node")
    parser.add_argument(
        "--wait",
        type=float,
        default=SEED_WAIT_S_DEFAULT,
        help="how long to wait for the primary to have a durable point (default %(default)g s)",
    )
    args = parser.parse_args()
    try:
        print(seed_once(args.primary_nodes, args.into, args.region, args.wait), flush=True)
    except SixfoldError as exc:
        raise SystemExit(f"sixfold seed: {exc}") from None


if __name__ == "__main__":
    main()
