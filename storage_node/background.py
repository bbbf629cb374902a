"""Background work: coalesce redo into page versions, and collect garbage (P17 §3.2, 5-7).

Pages are coalesced only up to the node's VDL (never above it: a truncation may still
cancel records above VDL). Garbage is collected below a horizon that is at or below the
lowest read point in use (readers report theirs) and every peer's SCL, so no reader and no
catching-up peer can need what is dropped. Each cycle's work is bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sixfold.errors import StoredCorruptionError
from storage_node.node import StorageNode

log = logging.getLogger("sixfold.background")

BACKGROUND_INTERVAL_S = 0.25


def coalesce_point(node: StorageNode) -> int:
    st = node.state
    return min(st.scl, st.vdl) if st.vdl_epoch == st.epoch else 0


def gc_horizon(node: StorageNode, now: float, peer_names: list[str]) -> int:
    if any(p not in node.peer_scl for p in peer_names):
        return 0  # a peer that did not answer last round may need anything
    # Below any LSN a node (this one or a peer) still has to fetch back, nothing may go.
    floors = [f - 1 for f in (node.repair_floor, *node.peer_repair_floor.values()) if f]
    return min([coalesce_point(node), node.min_read_point(now), *node.peer_scl.values(), *floors])


async def coalesce_once(node: StorageNode) -> int:
    """Materialise up to coalesce_pages_max dirty pages at the coalesce point.

    Neither this nor garbage collection takes the node's write lock: both work at or below
    VDL, where no truncation or epoch change can reach, and LMDB orders their transactions
    with the appends'. Holding the lock made every append wait out a whole cycle.
    """
    point = coalesce_point(node)
    ready = [p for p, lsn in node.dirty_pages.items() if lsn <= point]
    ready = ready[: node.limits.coalesce_pages_max]
    versions = await asyncio.to_thread(_materialise, node, ready, point)
    if versions:
        await asyncio.to_thread(node.store.put_versions, versions)
    for page_no in ready:
        if node.dirty_pages.get(page_no, 0) <= point:
            node.dirty_pages.pop(page_no, None)
    return len(versions)


def _materialise(node: StorageNode, pages: list[int], point: int) -> list[tuple[int, int, bytes]]:
    versions = []
    for page_no in pages:
        try:
            image, page_lsn = node.store.page_at(page_no, point)
        except StoredCorruptionError as exc:  # repaired from a peer; coalesced after that
            node.note_damage(exc)
            continue
        if page_lsn > node.store.newest_version_lsn(page_no, point):
            versions.append((page_no, page_lsn, image))
    return versions


async def collect_garbage_once(node: StorageNode, peer_names: list[str]) -> int:
    horizon = gc_horizon(node, time.monotonic(), peer_names)
    if horizon <= 0:
        return 0
    # Raised before any record goes, so a reader told the horizon after its read knows
    # whether the range it read could have lost records to this collection.
    node.gc_horizon = max(node.gc_horizon, horizon)
    st = node.state
    return await asyncio.to_thread(
        node.store.collect_garbage, horizon, node.limits.gc_keys_max, st.scl,
        st.completeness.cpl_at_scl,
    )  # fmt: skip


async def scrub_once(node: StorageNode) -> int:
    """CRC-check the next stretch of the log; note damaged records for repair."""
    damaged, last = await asyncio.to_thread(
        node.store.scrub, node.scrub_position, node.limits.scrub_records_max
    )
    node.scrub_position = last
    for lsn in damaged:
        node.note_damage(
            StoredCorruptionError(f"scrub: stored record at LSN {lsn} is corrupt", lsn)
        )
    return len(damaged)


async def run_background(node: StorageNode, peer_names: list[str]) -> None:
    while True:
        await asyncio.sleep(BACKGROUND_INTERVAL_S)
        try:
            await coalesce_once(node)
            await collect_garbage_once(node, peer_names)
            await scrub_once(node)
        except Exception:  # reported, and tried again next cycle
            log.exception("%s: background cycle failed", node.name)
