"""Background work: coalesce redo into page versions, collect garbage, scrub (P17 §3.2, 5-8),
and write the page index's waiting entries (storage_node/page_index.py).

What to do next comes from sixfold/core/log_cleanup.py: coalescing walks the log in LSN order
from a frontier stored on disk, and garbage collection deletes the log from its head and
the superseded versions queued on disk. So every step costs in proportion to what changed
since the last one, and a restart leaves nothing behind. Each step is bounded; when one
fills its bound the next follows soon, otherwise the loop rests.

The scrub CRC-checks the stored log in bounded steps, one pass and then a rest, while the
node serves: a damaged record is never served because every read checks CRCs anyway; the
scrub finds damage in records nobody reads, so they are repaired before they are needed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from sixfold.core.errors import StoredCorruptionError
from sixfold.core.log_cleanup import coalesce_point, node_gc_horizon
from sixfold.crash import OPERATING_ERRORS
from storage_node.node import StorageNode

log = logging.getLogger("sixfold.background")

BACKGROUND_INTERVAL_S = 0.25  # rest between cycles when there is little to do
BACKGROUND_BUSY_INTERVAL_S = 0.02  # at least, between cycles while a step filled its bound
# While there is a backlog, a node rests this many times as long as its last cycle took:
# background work takes at most half of its time, and the rest is for serving.
BACKGROUND_REST_RATIO = 1.0
# A node that has just started first takes its place in the quorum (recovery, gossip, the
# writer's first appends) before it works off a backlog.
BACKGROUND_START_DELAY_S = 3.0
SCRUB_PASS_REST_S = 60.0  # after a whole pass over the log, the scrub rests this long


@dataclass
class CycleWork:
    """What one background cycle did (for the loop's pace, the soak and the tests)."""

    coalesced_records: int = 0
    versions_written: int = 0
    collected: int = 0
    scrubbed: int = 0
    indexed: int = 0  # page-index entries written from memory
    busy: bool = False  # a step filled its bound: more is waiting
    coalesce_full: bool = False  # the coalescing step filled its bound


def node_coalesce_point(node: StorageNode) -> int:
    st = node.state
    return coalesce_point(st.scl, st.vdl, st.vdl_epoch, st.epoch)


def horizon_of(node: StorageNode, now: float, peer_names: list[str]) -> int:
    return node_gc_horizon(
        node.coalesced_through,
        node.min_read_point(now),
        node.membership.nodes,
        peer_names,
        node.peer_scl,
        node.peer_coalesced,
        node.repair_floor,
        node.peer_repair_floor,
    )


async def coalesce_once(node: StorageNode, work: CycleWork) -> None:
    """One step: the records just above the frontier, materialised at the step's end.

    Neither this nor garbage collection takes the node's write lock: both work at or below
    VDL, where no truncation or epoch change can reach, and LMDB orders their transactions
    with the appends'. Holding the lock made every append wait out a whole step.
    """
    # First the page index's waiting entries (storage_node/page_index.py), at coalescing's
    # pace: a hot page's leaf is written once here, not at each commit; and coalescing does
    # not pass the index's frontier.
    work.indexed = await asyncio.to_thread(node.store.write_page_index)
    start = node.coalesced_through
    try:
        # A clone's hold ends a step (sixfold/core/clones.py), read with the step: `sixfold
        # clone` stores holds from another process.
        read = await asyncio.to_thread(
            node.store.read_coalesce_step,
            start,
            node_coalesce_point(node),
            node.limits.coalesce_records_max,
        )
    except StoredCorruptionError as exc:  # repaired from a peer; the step runs after that
        node.note_damage(exc)
        return
    if read.step is None:
        return
    through = read.step.through
    if not await asyncio.to_thread(node.store.commit_coalesce, read.versions, start, through):
        return  # a clone's hold came in its range: planned again next cycle
    node.coalesced_through = through
    work.coalesced_records += read.records
    work.versions_written += len(read.versions)
    work.coalesce_full = read.full
    work.busy = work.busy or read.full


async def collect_garbage_once(node: StorageNode, peer_names: list[str], work: CycleWork) -> None:
    horizon = horizon_of(node, time.monotonic(), peer_names)
    if horizon <= 0:
        return
    # Raised before any record goes, so a reader told the horizon after its read knows
    # whether the range it read could have lost records to this collection.
    node.gc_horizon = max(node.gc_horizon, horizon)
    st = node.state
    try:
        collected = await asyncio.to_thread(
            node.store.collect_garbage,
            horizon,
            node.limits.gc_keys_max,
            st.scl,
            st.completeness.cpl_at_scl,
        )
    except StoredCorruptionError as exc:  # the horizon stays below it until it is repaired
        node.note_damage(exc)
        return
    work.collected += sum(collected)
    # Busy when either kind filled its bound, not when both together reached one: that kept
    # a node cycling back to back under a load its steps kept up with.
    work.busy = work.busy or max(collected) >= node.limits.gc_keys_max


async def scrub_once(node: StorageNode, work: CycleWork, now: float) -> None:
    """CRC-check the next stretch of the log; note damaged records for repair."""
    if now < node.scrub_rest_until:
        return
    damaged, last = await asyncio.to_thread(
        node.store.scrub, node.scrub_position, node.limits.scrub_records_max
    )
    work.scrubbed += node.limits.scrub_records_max if last else 0
    node.scrub_position = last
    if last == 0:  # a whole pass done
        node.scrub_rest_until = now + SCRUB_PASS_REST_S
    for lsn in damaged:
        node.note_damage(
            StoredCorruptionError(f"scrub: stored record at LSN {lsn} is corrupt", lsn)
        )


@dataclass
class CoalescePace:
    """When a cycle coalesces: when its last step filled its bound (more is waiting), or
    BACKGROUND_INTERVAL_S after that step. A busy GC, which cycles sooner, does not make
    coalescing run more often: each step writes a version of every page it touches, so steps
    close together write more versions per record, which GC must then drop too (at a paced
    3,000 commits/s, 2,100 versions in 10 s per node instead of 4,000-5,800)."""

    stepped_at: float = float("-inf")  # monotonic: when the last step started
    last_step_full: bool = False

    def due(self, now: float) -> bool:
        return self.last_step_full or now - self.stepped_at >= BACKGROUND_INTERVAL_S

    def stepped(self, at: float, full: bool) -> None:
        self.stepped_at, self.last_step_full = at, full


async def background_cycle(
    node: StorageNode, peer_names: list[str], pace: CoalescePace | None = None
) -> CycleWork:
    """One cycle: a coalescing step, with the page index's waiting entries first (when
    `pace` says it is due; always without one), a GC step, a scrub step."""
    work = CycleWork()
    now = time.monotonic()
    if pace is None or pace.due(now):
        try:
            await coalesce_once(node, work)
        finally:  # noted even when the step failed: the next one waits its turn
            if pace is not None:
                pace.stepped(now, work.coalesce_full)
    await collect_garbage_once(node, peer_names, work)
    await scrub_once(node, work, time.monotonic())
    return work


async def run_background(node: StorageNode, peer_names: list[str]) -> None:
    await asyncio.sleep(BACKGROUND_START_DELAY_S)
    pace = CoalescePace()
    while True:
        started = time.monotonic()
        try:
            work = await background_cycle(node, peer_names, pace)
        except OPERATING_ERRORS:  # reported, and tried again next cycle; a bug ends it
            log.exception("%s: background cycle failed", node.name)
            work = CycleWork()
        took_s = time.monotonic() - started
        if work.busy:
            await asyncio.sleep(max(BACKGROUND_BUSY_INTERVAL_S, took_s * BACKGROUND_REST_RATIO))
        else:
            await asyncio.sleep(BACKGROUND_INTERVAL_S)
