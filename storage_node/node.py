"""A storage node's runtime: the shell joining the pure segment core to its LMDB store.

Every change to durable state (appends, seals, truncations, gossip) passes through one write
lock, so an epoch is checked in the same critical section that stores under it: a node sealed
at a new epoch can never afterwards acknowledge a record of the old one (P18 §2.4).
Appends that arrive while a transaction is being synced wait and share the next one: group
commit at the node, one fsync for many batches.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from sixfold.core.errors import (
    BatchTooLargeError,
    CorruptRecordError,
    DataFormatError,
    MembershipError,
    StoredCorruptionError,
)
from sixfold.core.hydration import HYDRATE_PAGES_MAX, HydratedPage, HydrationProgress
from sixfold.core.log_cleanup import COALESCE_RECORDS_MAX, GC_KEYS_MAX
from sixfold.core.membership import (
    Change,
    Membership,
    checked_membership,
    describe,
    membership_is_news,
)
from sixfold.core.node_commit import QueuedAppend, plan_commit
from sixfold.core.node_restart import complete_from, restore
from sixfold.core.read_point import ReadPointTable
from sixfold.core.record import RedoRecord, decode_record, unpack_records
from sixfold.core.segment import SegmentState
from sixfold.core.truncation import TruncationRange
from sixfold.crash import OPERATING_ERRORS, guarded_task
from sixfold.futures import settle
from sixfold.metrics import NodeMetrics
from storage_node.checks import check_vdl
from storage_node.store import MAP_SIZE_BYTES_DEFAULT, NodeStore, StoredMeta

log = logging.getLogger("sixfold.storage_node")

READ_POINT_TTL_S = 10.0  # a reader that stops reporting no longer holds back GC
# The longest a reader may ask its read point kept without reporting (an agent's hold,
# sixfold/committed_log.py): the most log a vanished agent can make the node keep.
READ_POINT_HOLD_S_MAX = 3_600.0


@dataclass(frozen=True)  # no slots: fields double as argparse defaults
class NodeLimits:
    append_batch_records_max: int = 8192
    append_batch_bytes_max: int = 32 << 20
    commit_queue_batches_max: int = 1024  # appends waiting for the next fsync
    read_records_max: int = 10_000  # records in one ReadRecords answer
    gossip_records_max: int = 5_000  # records fetched from a peer per gossip round
    coalesce_records_max: int = COALESCE_RECORDS_MAX  # records coalesced per background step
    gc_keys_max: int = GC_KEYS_MAX  # records (and versions) collected per background step
    damaged_max: int = 10_000  # damaged records and versions remembered for repair
    repairs_per_round_max: int = 64  # damaged items repaired per gossip round
    scrub_records_max: int = 2_000  # stored records CRC-checked per background cycle
    stream_window_bytes_max: int = 64 << 20  # an append stream's bytes not yet acknowledged
    hydrate_pages_max: int = HYDRATE_PAGES_MAX  # page images one ReadPageImages answer holds
    # Hydration copies at most this many bytes a second, so commits keep their latency
    # (sixfold/core/hydration.py); 0: unthrottled.
    hydrate_bytes_per_s_max: int = 64 << 20


def _answer_future() -> asyncio.Future[int]:
    """An append's answer. Its caller may be gone (a cancelled RPC) when it fails: the
    failure is then retrieved here, not reported as "never retrieved"."""
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


Queued = QueuedAppend[asyncio.Future[int]]  # the future resolves to the SCL once durable


class StorageNode:
    def __init__(
        self,
        name: str,
        az: str,
        data_dir: Path,
        *,
        map_size_bytes: int = MAP_SIZE_BYTES_DEFAULT,
        limits: NodeLimits | None = None,
        volume_id: str = "",
    ) -> None:
        self.name = name
        self.az = az
        self.limits = limits or NodeLimits()
        self.store = NodeStore(data_dir, name, map_size_bytes)
        self.volume_id = self.store.claim_volume(volume_id)
        self.state = SegmentState(name)
        # Damaged items awaiting repair from a peer: (lsn, None) a record, (lsn, page) a version.
        self.damaged: set[tuple[int, int | None]] = set()
        self.scrub_position = 0
        self.scrub_rest_until = 0.0  # monotonic: the next scrub pass starts then
        self.gc_horizon = 0  # the highest GC horizon used: set from the store at start-up
        self.coalesced_through = 0  # every record at or below is in a page version (stored)
        self.hydration: HydrationProgress | None = None  # stored: a restart resumes it
        self.membership = Membership.initial()  # stored once a change made a newer one
        self.frame_port = 0  # its framed listener's, once that listens (frame_server.py)
        self.frame_connections = 0  # open on that listener
        self._restore_state()
        self.write_lock = asyncio.Lock()
        self._queue: list[Queued] = []
        self._queue_event = asyncio.Event()
        self._committer: asyncio.Task[None] | None = None
        self.read_points = ReadPointTable(READ_POINT_TTL_S, hold_max=READ_POINT_HOLD_S_MAX)
        self.peer_scl: dict[str, int] = {}
        self.peer_coalesced: dict[str, int] = {}  # peers' coalescing frontiers
        self.peer_repair_floor: dict[str, int] = {}  # peers' lowest LSN awaiting repair
        # Set, then replaced, on every change a watcher cares about (epoch, SCL, learned VDL,
        # truncations): one broadcast for any number of watchers, none of them queued.
        self.state_changed = asyncio.Event()
        self.stopped = False
        self.metrics = NodeMetrics()
        self.metrics.watch(self._gauges)

    def _gauges(self) -> dict[str, tuple[str, float]]:
        """The node's points, read when metrics are scraped (sixfold/metrics.py)."""
        st = self.state
        records, versions = self.store.counts()
        return {
            "sixfold_node_scl": ("Segment complete LSN (SCL)", st.scl),
            "sixfold_node_vdl": ("The writer's VDL as this node last learned it", st.vdl),
            "sixfold_node_epoch": ("Volume epoch this node is at", st.epoch),
            "sixfold_node_log_records": ("Redo records held in the log", records),
            "sixfold_node_page_versions": ("Page versions stored", versions),
            "sixfold_node_damaged": (
                "Damaged records and versions awaiting repair",
                len(self.damaged),
            ),
            "sixfold_node_serving": ("1 once truncations are in sync with peers", int(st.serving)),
            "sixfold_node_frame_connections": (
                "Open connections on the frame port (the writer's append stream, readers' "
                "watches; with none they are on gRPC)",
                self.frame_connections,
            ),
            "sixfold_node_hydrating_to": (
                "The LSN a hydration copies page images as of (0: none under way)",
                self.hydration.target_lsn if self.hydration else 0,
            ),
            "sixfold_node_hydration_progress": (
                "A hydration's rough progress, 0 to 1 (1: none under way)",
                self.hydration.fraction if self.hydration else 1.0,
            ),
        }

    # -- start-up ---------------------------------------------------------------------------------

    def _restore_state(self) -> None:
        """Rebuild the segment core from metadata and the records above the stored SCL
        (sixfold/core/node_restart.py). Coalescing resumes at its stored frontier; the CRC scrub
        of the rest of the log runs in the background while the node serves (every read
        checks CRCs anyway)."""
        meta = self.store.load_meta()
        # A directory from before the horizon was stored: GC never passes the SCL, so the
        # stored SCL bounds whatever horizon was used.
        self.gc_horizon = meta.scl if meta.gc_horizon is None else meta.gc_horizon
        self.coalesced_through = meta.coalesced_through
        self.hydration = _parse_progress(self.store.load_hydration(), self.store.path)
        self.membership = parse_membership(self.store.load_membership(), self.store.path)
        start = complete_from(meta, self.store.has_record)
        if start[0] != meta.scl:
            log.error(
                "%s: the stored SCL is %d but the log has no record there: this disk lost "
                "acknowledged writes; complete only to the GC horizon %d, re-fetching the rest "
                "from peers",
                self.name,
                meta.scl,
                start[0],
            )
        for rng in meta.truncations:  # finish deletions a crash may have cut short
            self.store.delete_truncated(rng)
        corrupt = restore(self.state, meta, start, self.store.records_after(start[0]))
        for lsn in corrupt:
            log.warning(
                "%s: corrupt record LSN %d dropped, to be re-fetched from peers", self.name, lsn
            )
            self.store.delete_record(lsn)

    def start(self) -> None:
        self._committer = guarded_task(self._commit_loop(), f"{self.name} commit loop")

    async def stop(self) -> None:
        self.stopped = True
        self.note_state_changed()  # watchers wake, see `stopped` and end their streams
        if self._committer:
            self._committer.cancel()
            await asyncio.gather(self._committer, return_exceptions=True)
        self.store.close()

    # -- appends ----------------------------------------------------------------------------------

    def decode_batch(self, encoded: list[bytes], request_epoch: int) -> list[RedoRecord]:
        """Check bounds and CRCs of a whole batch before anything of it is stored."""
        self._check_batch_bounds(len(encoded), sum(len(b) for b in encoded))
        records = [decode_record(b) for b in encoded]
        self._check_epochs(records, request_epoch)
        return records

    def unpack_batch(self, blob: bytes, request_epoch: int) -> list[RedoRecord]:
        """A stream batch's blob: its size first, then every record's CRC, then its count,
        before anything of it is stored."""
        self._check_batch_bounds(0, len(blob))
        records = unpack_records(blob)
        self._check_batch_bounds(len(records), len(blob))
        self._check_epochs(records, request_epoch)
        return records

    def _check_batch_bounds(self, records: int, size_bytes: int) -> None:
        lim = self.limits
        if records > lim.append_batch_records_max:
            raise BatchTooLargeError(
                f"append batch of {records} records exceeds append_batch_records_max="
                f"{lim.append_batch_records_max}"
            )
        if size_bytes > lim.append_batch_bytes_max:
            raise BatchTooLargeError(
                f"append batch of {size_bytes} bytes exceeds append_batch_bytes_max="
                f"{lim.append_batch_bytes_max}"
            )

    @staticmethod
    def _check_epochs(records: list[RedoRecord], request_epoch: int) -> None:
        for record in records:
            if record.epoch > request_epoch:
                raise CorruptRecordError(
                    f"record LSN {record.lsn} carries epoch {record.epoch}, newer than its "
                    f"append's epoch {request_epoch}"
                )

    async def append(self, epoch: int | None, records: list[RedoRecord], vdl: int = 0) -> int:
        """Store records durably; return the SCL after them. Raises on a wrong epoch."""
        return await self.submit(epoch, records, vdl)

    def submit(
        self, epoch: int | None, records: list[RedoRecord], vdl: int = 0
    ) -> asyncio.Future[int]:
        """Queue records for the next commit; the future resolves to the SCL once they are
        durable, or raises (a wrong epoch at commit time). Queued in order, settled in order."""
        if len(self._queue) >= self.limits.commit_queue_batches_max:
            raise BatchTooLargeError(
                f"storage node {self.name} has {len(self._queue)} appends waiting to commit "
                f"(commit_queue_batches_max={self.limits.commit_queue_batches_max}); retry"
            )
        self._learn_vdl_now(epoch, vdl)
        if epoch is not None:  # from the writer (gossip counts its own)
            m = self.metrics
            m.appends.inc()
            m.records.inc(len(records))
            m.bytes.inc(sum(len(r.encoded) for r in records))
        done = _answer_future()
        self._queue.append(QueuedAppend(epoch, records, vdl, done))
        self._queue_event.set()
        return done

    def announce(self, epoch: int, vdl: int) -> int:
        """A bare append (no records): check the epoch, learn the VDL, return the SCL.

        Answered at once, not after the queued syncs: nothing is stored, and the SCL it
        returns is already durable. The writer sends these to announce its VDL and to
        confirm its epoch before answering reads (sixfold/core/read_index.py); the check reads the
        epoch in memory, which a seal changes before it is acknowledged."""
        self.state.check_current(epoch, "append")
        check_vdl(self.state, vdl)
        self._learn_vdl_now(epoch, vdl)
        return self.state.scl

    def _learn_vdl_now(self, epoch: int | None, vdl: int) -> None:
        """Learn a current writer's VDL on arrival, not after the queued fsyncs: it is durable
        on a write quorum whatever this node holds, and readers move their read point by it
        (P18 §3). The records it came with are stored in turn, as before."""
        st = self.state
        if epoch is None or epoch != st.epoch or (epoch, vdl) <= (st.vdl_epoch, st.vdl):
            return
        st.learn_vdl(epoch, vdl)
        self.note_state_changed()

    async def _commit_loop(self) -> None:
        while True:
            await self._queue_event.wait()
            self._queue_event.clear()
            batch, self._queue = self._queue, []
            try:
                async with self.write_lock:
                    await self._commit(batch)
            except OPERATING_ERRORS as exc:  # a failed transaction fails its appends only
                log.exception("%s: commit failed", self.name)
                for p in batch:
                    settle(p.token, exc)
            except BaseException as exc:  # a bug: its appends fail, and the process ends
                for p in batch:
                    settle(p.token, exc)
                raise

    async def _commit(self, batch: list[Queued]) -> None:
        st = self.state
        plan = plan_commit(st, batch)
        for queued, exc in plan.refused:
            settle(queued.token, exc)
        if plan.records:
            after = plan.after
            # On the loop's thread, not a worker's (issue 11): the hop there and back cost
            # more CPU than the loop loses while LMDB writes and syncs. py-lmdb lets go of the
            # GIL meanwhile, so gRPC's poller goes on taking batches, and the next commit
            # drains them all (docs/BENCHMARKS.md, "the commit on the loop's thread").
            write_s, commit_s = self.store.put_records(
                plan.records, after.scl, after.cpl_at_scl, st.vdl, st.vdl_epoch
            )
            self.metrics.lmdb_write.observe(write_s)
            self.metrics.fsync.observe(commit_s)
            # Durable now: the trial is the node's completeness (no change can slip in
            # between: truncations and epochs wait for the same write lock).
            st.completeness = after
        if plan.accepted:
            self.note_state_changed()
        for queued in plan.accepted:
            settle(queued.token, st.scl)

    def note_state_changed(self) -> None:
        """Wake every watcher waiting on the current event; later waiters get a fresh one."""
        self.state_changed.set()
        self.state_changed = asyncio.Event()

    # -- epochs and truncation ----------------------------------------------------------------------

    def _meta(self) -> StoredMeta:
        st = self.state
        return StoredMeta(
            node_name=self.name,
            epoch=st.epoch,
            epoch_owner=st.epoch_owner,
            truncations=st.truncations,
            truncations_version=st.truncations_version,
            scl=st.scl,
            cpl_at_scl=st.completeness.cpl_at_scl,
            vdl=st.vdl,
            vdl_epoch=st.vdl_epoch,
        )

    async def seal(self, epoch: int, owner: str) -> None:
        async with self.write_lock:
            self.state.seal(epoch, owner)  # raises, changing nothing, if the epoch is stale
            await asyncio.to_thread(self.store.save_meta, self._meta())
            self.note_state_changed()
            log.info("%s: sealed epoch %d for %s", self.name, epoch, owner)

    async def truncate(self, epoch: int, ranges: tuple[TruncationRange, ...], version: int) -> None:
        """Adopt an epoch and a newer truncation set: record them, then delete what they cancel.

        The SCL drops to the truncation point in memory first, so no read can ask for a
        cancelled record while it is being deleted; and the truncation is on disk before any
        record goes, so a crash in between leaves records that start-up deletes again.
        """
        async with self.write_lock:
            st = self.state
            if not st.truncation_is_news(epoch, version):
                return
            fresh = st.truncate(epoch, ranges, version)
            await asyncio.to_thread(self.store.save_meta, self._meta())
            self.note_state_changed()  # epoch, SCL and learned VDL may all have changed
            for rng in fresh:
                await asyncio.to_thread(self.store.delete_truncated, rng)
                log.info(
                    "%s: truncated (%d, %d] at epoch %d",
                    self.name,
                    rng.after_lsn,
                    rng.through_lsn,
                    rng.epoch,
                )

    # -- reads --------------------------------------------------------------------------------------

    def page_at(self, page_no: int, lsn: int, min_epoch: int) -> tuple[bytes, int]:
        self.state.check_page_at(lsn, min_epoch, self.gc_horizon)
        try:
            return self.store.page_at(page_no, lsn)
        except StoredCorruptionError as exc:
            self.note_damage(exc)
            raise

    def read_records(
        self, after: int, through: int, max_records: int, page_no: int | None
    ) -> list[RedoRecord]:
        self.state.check_serving()
        limit = min(max_records or self.limits.read_records_max, self.limits.read_records_max)
        try:
            records = self.store.read_records(after, through, limit, page_no)
        except StoredCorruptionError as exc:
            self.note_damage(exc)
            raise
        return self.state.servable(records)

    # -- damage and repair (P17 §3.2, step 8) -----------------------------------------------------

    @property
    def repair_floor(self) -> int:
        """The lowest LSN this node must fetch back from a peer (0: nothing to repair)."""
        return min((lsn for lsn, _ in self.damaged), default=0)

    def note_damage(self, exc: StoredCorruptionError) -> None:
        """Remember a damaged record or version so gossip fetches a good copy from a peer.

        A record at or below the coalescing frontier needs none: it was intact when it was
        coalesced (as received, or read back), its page's versions hold it, and GC drops the
        damaged copy."""
        if exc.page_no is None and exc.lsn <= self.coalesced_through:
            return
        if len(self.damaged) < self.limits.damaged_max:
            if (exc.lsn, exc.page_no) not in self.damaged:
                log.warning("%s: %s; it will be repaired from a peer", self.name, exc)
            self.damaged.add((exc.lsn, exc.page_no))

    async def repair_record(self, record: RedoRecord) -> None:
        async with self.write_lock:
            if self.state.cancels(record):
                self.damaged.discard((record.lsn, None))
                return
            await asyncio.to_thread(self.store.put_repaired_record, record)
            self.damaged.discard((record.lsn, None))
            self.metrics.repairs.inc()
            log.info("%s: repaired record LSN %d from a peer", self.name, record.lsn)

    async def repair_version(self, page_no: int, lsn: int, image: bytes) -> None:
        await asyncio.to_thread(self.store.put_versions, [(page_no, lsn, image)])
        self.damaged.discard((lsn, page_no))
        self.metrics.repairs.inc()
        log.info("%s: repaired page %d's version at LSN %d from a peer", self.name, page_no, lsn)

    # -- hydration (sixfold/core/hydration.py) ----------------------------------------------------

    def page_images(
        self, at_lsn: int, from_page: int, pages_max: int, min_epoch: int
    ) -> tuple[list[tuple[int, int, bytes]], int, bool]:
        """Page images as of `at_lsn` for a hydrating peer: refused below the GC horizon or
        above the SCL, as any page read (runs in a thread: an LMDB read transaction)."""
        self.state.check_page_at(at_lsn, min_epoch, self.gc_horizon)
        limit = min(pages_max or self.limits.hydrate_pages_max, self.limits.hydrate_pages_max)
        try:
            return self.store.page_images_at(at_lsn, from_page, limit)
        except StoredCorruptionError as exc:
            self.note_damage(exc)
            raise

    async def store_images(
        self, pages: tuple[HydratedPage, ...], progress: HydrationProgress
    ) -> None:
        versions = [(p.page_no, p.page_lsn, p.image) for p in pages]
        async with self.write_lock:
            await asyncio.to_thread(self.store.put_hydrated, versions, _dump_progress(progress))
            self.hydration = progress
        m = self.metrics
        m.hydrated_pages.inc(len(pages))
        m.hydrated_bytes.inc(sum(len(p.image) for p in pages))

    async def finish_hydration(self, target_lsn: int) -> None:
        """Take the hydration target as SCL, frontier and horizon, then rebuild the segment
        state from the store as a restart does: records above it re-chain from it."""
        async with self.write_lock:
            await asyncio.to_thread(self.store.finish_hydration, target_lsn)
            peers_heard = self.state.peers_heard
            self.state = SegmentState(self.name)
            self.state.peers_heard = peers_heard  # its truncations are still in sync
            self._restore_state()
            self.note_state_changed()
        log.info(
            "%s: hydrated to LSN %d; catching up above it from peers, SCL %d",
            self.name,
            target_lsn,
            self.state.scl,
        )

    async def drop_hydration(self) -> None:
        async with self.write_lock:
            await asyncio.to_thread(self.store.drop_hydration)
            self.hydration = None

    # -- membership (sixfold/core/membership.py) ---------------------------------------------------

    @property
    def is_member(self) -> bool:
        """Whether this node holds a position (or is being hydrated into one): a spare that
        does not neither fetches records nor hydrates."""
        return self.name in self.membership.nodes

    async def set_membership(self, membership: Membership, volume_epoch: int = 0) -> None:
        """Adopt a newer membership, durably before it is acknowledged. An older one is
        refused (StaleMembershipError), the same one is a no-op; so is one sent by a writer
        of an older volume epoch than this node has sealed (StaleEpochError): a deposed
        writer cannot settle a change its successor settles otherwise."""
        async with self.write_lock:
            if not membership_is_news(self.membership, membership, volume_epoch, self.state.epoch):
                return
            await asyncio.to_thread(self.store.save_membership, _dump_membership(membership))
            self.membership = membership
            self.note_state_changed()
        log.info("%s: %s", self.name, describe(membership))

    # -- read points (PGMRPL, P18 §3) ---------------------------------------------------------------

    def note_read_point(self, reader: str, read_point: int, now: float, hold_s: float = 0) -> None:
        """A reader's read point holds GC back for a while, or for `hold_s` if longer
        (sixfold/core/read_point.py)."""
        self.read_points.note(reader, read_point, now, self.gc_horizon, hold_s)

    def min_read_point(self, now: float) -> int:
        return self.read_points.lowest(now, self.state.vdl)


def _dump_progress(progress: HydrationProgress) -> str:
    return json.dumps(asdict(progress))


def _dump_membership(m: Membership) -> str:
    change = [m.change.position, m.change.old, m.change.new] if m.change else None
    return json.dumps(
        {
            "epoch": m.epoch,
            "holders": list(m.holders),
            "change": change,
            "writer_epoch": m.writer_epoch,
        }
    )


def parse_membership(raw: str | None, path: Path) -> Membership:
    if raw is None:
        return Membership.initial()
    try:
        data = json.loads(raw)
        change = Change(*data["change"]) if data["change"] else None
        # writer_epoch: absent in what a node stored before it kept it (then 0, the oldest)
        writer_epoch = int(data.get("writer_epoch", 0))
        return checked_membership(int(data["epoch"]), tuple(data["holders"]), change, writer_epoch)
    except (ValueError, TypeError, KeyError, MembershipError) as exc:
        raise DataFormatError(f"{path}: unreadable membership {raw[:80]!r}: {exc}") from exc


def _parse_progress(raw: str | None, path: Path) -> HydrationProgress | None:
    if raw is None:
        return None
    try:
        return HydrationProgress(**json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise DataFormatError(f"{path}: unreadable hydration progress {raw[:64]!r}") from exc
