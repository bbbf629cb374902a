"""The backup agent: ships the volume's committed log from the storage nodes to an object
store, with a base of page images first (sixfold/core/backup.py has the rules).

Each round it asks every node its state, naming itself with the LSN it has shipped through
as its read point, so the nodes' GC keeps every record above it (sixfold/core/read_point.py).
The durable point is the newest VDL a node learned: records at or below it are committed
and no recovery ever truncates them. It copies the records above what it has shipped up to
that point, from a node complete that far that still holds them, as one log object per
segment; when none holds them (the agent was away longer than the nodes keep records), it
takes a new base instead. Objects are written before the manifest that names them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass

from sixfold.backup.store import ObjectStore
from sixfold.clients import NodeClient
from sixfold.committed_log import (
    AGENT_READ_POINT_HOLD_S,
    log_source,
    page_images_at,
    read_committed,
)
from sixfold.core.backup import (
    BASE_PAGES_PER_OBJECT_MAX,
    LEASE_NAME,
    LEASE_TTL_S,
    LOG_SEGMENT_RECORDS_MAX,
    OBJECT_PREFIXES,
    BackupObject,
    Chapter,
    Lease,
    Manifest,
    chapter_of,
    chapter_retention,
    dump_chapter,
    encode_pages,
    encode_records,
    lease_held_by_another,
    manifest_name,
    object_last_lsn,
    object_name,
    orphans,
    retention_plan,
    volume_backed_up,
)
from sixfold.core.checksum import crc32c
from sixfold.core.errors import BackupError, BackupLeaseError, CorruptBackupError, SixfoldError
from sixfold.core.quorum import READ_QUORUM
from sixfold.core.read_point import advance_read_point
from sixfold.core.record import RedoRecord
from sixfold.rpc import sixfold_pb2 as pb

log = logging.getLogger("sixfold.backup")

AGENT_NAME = "backup"  # how the agent names itself to the nodes (its read point holds GC)
CALL_TIMEOUT_S = 10.0
MANIFESTS_KEPT = 3  # the newest manifests kept; older ones are deleted as new ones come
MANIFESTS_SWEPT = 16  # older manifests looked for each time (more go in later rounds)
BASE_INTERVAL_S_DEFAULT = 3_600.0  # a new base of every page each hour


@dataclass(frozen=True, slots=True)
class Shipped:
    objects: tuple[BackupObject, ...]
    durable_point: int  # the nodes' newest learned VDL this round
    manifest: Manifest  # the newest, after the round


class BackupAgent:
    """A new base is taken when the newest is `base_interval_s` old: retention can delete
    nothing older than the newest base a restore point needs. `retention_s` (0: keep
    everything): after each round, objects that no point seen durable within it, nor any
    snapshot, needs are deleted (sixfold/core/backup.py)."""

    def __init__(
        self,
        clients: list[NodeClient],
        store: ObjectStore,
        retention_s: float = 0,
        base_interval_s: float = BASE_INTERVAL_S_DEFAULT,
    ) -> None:
        self.clients = clients
        self.store = store
        self.retention_s = retention_s
        self.base_interval_s = base_interval_s
        self.owner = uuid.uuid4().hex
        self.holder = f"{socket.gethostname()} pid {os.getpid()}"
        self._lease_at = 0.0  # when it last renewed its lease (0: never took it)
        self._sweep_due = True  # at the first round, and after any round that failed

    async def round(self) -> Shipped:
        """Ship what became durable since the last round; the objects written. Raises
        BackupLeaseError, not to be retried, when another agent ships to the store."""
        self._renew_lease()
        try:
            shipped = await self._round()
        except BaseException:
            self._sweep_due = True  # it may have written objects no manifest names
            raise
        if self._sweep_due:
            self._sweep(shipped.manifest)
            self._sweep_due = False
        return shipped

    async def _round(self) -> Shipped:
        manifest = self.store.latest_manifest()
        shipped = manifest.newest_lsn
        states = await self._states(shipped)
        seen_at = time.time()
        if not states:
            raise BackupError("no storage node answered: nothing shipped")
        volume = volume_backed_up(manifest, (s.volume_id for s in states.values()))
        manifest = dataclasses.replace(manifest, volume_id=volume)
        # As readers take theirs: only a VDL a read quorum of nodes learned (one node fed a
        # bogus VDL must not make the backup ship records that are not committed).
        learned = [(s.vdl_epoch, s.vdl) for s in states.values() if s.vdl_epoch]
        if len(learned) < READ_QUORUM and shipped:
            raise BackupError(
                f"only {len(learned)} storage nodes report a durable point, "
                f"{READ_QUORUM} needed: nothing shipped"
            )
        _, durable = advance_read_point((0, 0), learned)
        if durable < shipped:
            raise BackupError(
                f"the nodes' durable point {durable} is below LSN {shipped}, which the backup "
                "already holds: is this the volume this backup belongs to?"
            )
        if durable <= shipped and manifest.window() is not None:
            if self.retention_s:  # a snapshot deleted, or time passed: still retained
                manifest = self._retain(manifest, seen_at)
            return Shipped((), durable, manifest)
        source = log_source(self.clients, states, shipped, durable) if manifest.window() else None
        objects: list[BackupObject] = []
        if source is None:  # the first round, or the records are gone: a base now
            if manifest.window() is not None:
                log.warning(
                    "backup: no node still holds the records above LSN %d (the agent was away "
                    "longer than the nodes keep them): points in (%d, %d) are not restorable",
                    shipped,
                    shipped,
                    durable,
                )
            objects += await self._base(states, durable, seen_at)
            manifest = self._publish_base(manifest, objects)
        else:
            objects += await self._log(source, shipped, durable, seen_at)
            manifest = self._publish(manifest, objects)
            if self._base_due(manifest, seen_at):  # after the log is in a manifest
                base = await self._base(states, durable, seen_at)
                manifest = self._publish_base(manifest, base)
                objects += base
        # What it holds now is its read point on every node: their GC keeps the records
        # above it until the next round (or, should the agent stop, for READ_POINT_TTL_S).
        await asyncio.gather(
            *(self._hold(c, manifest.newest_lsn) for c in self.clients), return_exceptions=True
        )
        if self.retention_s:
            manifest = self._retain(manifest, seen_at)
        return Shipped(tuple(objects), durable, manifest)

    def _publish_base(self, manifest: Manifest, base: list[BackupObject]) -> Manifest:
        """A new manifest naming a new base: the open objects before it are sealed into a
        chapter first (sixfold/core/backup.py), so the manifest stays one base interval long."""
        if not any(o.kind == "base" for o in manifest.objects):
            return self._publish(manifest, base)
        chapter = chapter_of(manifest.objects)
        self.store.put(chapter.name, dump_chapter(manifest.objects))
        return self._publish(manifest, base, chapter)

    def _publish(
        self, manifest: Manifest, objects: list[BackupObject], chapter: Chapter | None = None
    ) -> Manifest:
        """A new manifest naming `objects` too, or opening a chapter with them after sealing
        `chapter` (written after them); older manifests but the last few go."""
        manifest = (
            manifest.with_objects(objects) if chapter is None else manifest.sealed(chapter, objects)
        )
        self._put_manifest(manifest)
        for seq in range(
            max(manifest.seq - MANIFESTS_KEPT - MANIFESTS_SWEPT, 1),
            manifest.seq - MANIFESTS_KEPT + 1,
        ):
            self.store.delete(manifest_name(seq))
        return manifest

    def _base_due(self, manifest: Manifest, now: float) -> bool:
        newest = max((o.durable_at for o in manifest.objects if o.kind == "base"), default=0.0)
        return now - newest >= self.base_interval_s

    def _retain(self, manifest: Manifest, now: float) -> Manifest:
        """The manifest without what no point within the retention needs, published."""
        pinned = [s.lsn for s in self.store.snapshots()]
        manifest = self._retain_chapters(manifest, now, pinned)
        kept, doomed = retention_plan(manifest, now, self.retention_s, pinned)
        if not doomed:
            return manifest
        self._put_manifest(kept)  # first: no manifest ever names a deleted object
        for obj in doomed:
            self.store.delete(obj.name)
        log.info(
            "backup: retention deleted %d objects up to LSN %d", len(doomed), doomed[-1].last_lsn
        )
        return kept

    def _retain_chapters(self, manifest: Manifest, now: float, pinned: list[int]) -> Manifest:
        kept, doomed = chapter_retention(manifest, now, self.retention_s, pinned)
        if not doomed:
            return manifest
        # Listed before the manifest forgets them: a failure after it would leak them.
        names: list[str] = []
        for chapter in doomed:
            try:
                names += [o.name for o in self.store.read_chapter(chapter)]
            except CorruptBackupError as exc:  # its objects are found by their names instead
                log.warning("backup: %s; deleting its objects by their LSNs", exc)
                names += self._names_before(kept.window() or (0, 0))
        self._put_manifest(kept)  # first: no manifest ever names a deleted object
        for name in [*names, *(c.name for c in doomed)]:
            self.store.delete(name)
        log.info(
            "backup: retention deleted %d chapters up to LSN %d", len(doomed), doomed[-1].last_lsn
        )
        return kept

    def _names_before(self, window: tuple[int, int]) -> list[str]:
        """The base and log objects in the store that no point in `window` needs, by their
        names: bases below its start, segments ending at or below it."""
        bases = [n for n in self.store.names("base/") if 0 <= object_last_lsn(n) < window[0]]
        logs = [n for n in self.store.names("log/") if 0 <= object_last_lsn(n) <= window[0]]
        return bases + logs

    async def _states(self, shipped: int) -> dict[str, pb.NodeState]:
        request = pb.GetStateRequest(
            reader=AGENT_NAME, read_point=shipped, read_point_hold_s=AGENT_READ_POINT_HOLD_S
        )
        results = await asyncio.gather(
            *(c.get_state(request, timeout=CALL_TIMEOUT_S) for c in self.clients),
            return_exceptions=True,
        )
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, SixfoldError):
                raise r
        return {
            c.name: r
            for c, r in zip(self.clients, results, strict=True)
            if isinstance(r, pb.NodeState) and r.serving
        }

    async def _hold(self, client: NodeClient, read_point: int) -> None:
        """Name the agent to `client` with `read_point`: its GC keeps what reads at or above
        it need, the records above it included."""
        request = pb.GetStateRequest(
            reader=AGENT_NAME, read_point=read_point, read_point_hold_s=AGENT_READ_POINT_HOLD_S
        )
        await client.get_state(request, timeout=CALL_TIMEOUT_S)

    async def _log(
        self, source: NodeClient, shipped: int, durable: int, seen_at: float
    ) -> list[BackupObject]:
        records = await read_committed(source, shipped, durable, self._hold, BackupError)
        # Segments of about LOG_SEGMENT_RECORDS_MAX records, each ending at a commit
        # boundary (a CPL); the last ends at the durable point, which is one.
        objects: list[BackupObject] = []
        segment: list[RedoRecord] = []
        start = shipped
        for record in records:
            segment.append(record)
            if len(segment) >= LOG_SEGMENT_RECORDS_MAX and record.is_cpl:
                objects.append(
                    self._put("log", start, record.lsn, encode_records(segment), seen_at)
                )
                segment, start = [], record.lsn
        if segment:
            objects.append(self._put("log", start, durable, encode_records(segment), seen_at))
        return objects

    async def _base(
        self, states: dict[str, pb.NodeState], durable: int, seen_at: float
    ) -> list[BackupObject]:
        """Every page's image as of `durable`, from a node that can build it."""
        by_name = {c.name: c for c in self.clients}
        min_epoch = max(s.truncations_version for s in states.values())
        sources = [n for n, s in states.items() if s.gc_horizon <= durable <= s.scl]
        if not sources:
            raise BackupError(
                f"no storage node can build the pages as of LSN {durable} yet: retried"
            )
        client = by_name[sources[0]]
        objects: list[BackupObject] = []
        pages: list[tuple[int, int, bytes]] = []
        async for piece, done in page_images_at(client, durable, min_epoch, self._hold):
            pages += piece
            if len(pages) >= BASE_PAGES_PER_OBJECT_MAX or done:
                part = len(objects)
                objects.append(
                    self._put("base", durable, durable, encode_pages(pages), seen_at, part)
                )
                pages = []
        return objects

    def _renew_lease(self) -> None:
        self._check_lease()
        now = time.time()
        self.store.put_lease(Lease(self.owner, self.holder, now))
        self._lease_at = now

    def _put_manifest(self, manifest: Manifest) -> None:
        """Publish `manifest`, the lease checked first: of two agents started together
        (both found no lease), the one whose lease was written last keeps it and the other
        stops here, before it publishes anything."""
        self._check_lease()
        self.store.put_manifest(manifest)

    def _check_lease(self) -> None:
        lease, now = self.store.lease(), time.time()
        if lease is not None and lease_held_by_another(lease, self.owner, now):
            raise BackupLeaseError(
                f"another backup agent ({lease.holder}) ships to {self.store.url}: its lease "
                f"({LEASE_NAME}) was renewed {now - lease.renewed_at:.0f} s ago. Stop it, or "
                f"if it is gone, start this one again after {lease.ttl_s:.0f} s"
            )

    def _sweep(self, manifest: Manifest) -> None:
        """Delete the objects no manifest names (`orphans`) and the pieces a crash cut
        short. Only with the lease: another agent's unpublished objects are not orphans."""
        try:
            in_chapters = [o for c in manifest.chapters for o in self.store.read_chapter(c)]
        except CorruptBackupError as exc:
            log.warning("backup: %s; no orphans swept (a chapter's objects are unknown)", exc)
            return
        stored = [n for prefix in OBJECT_PREFIXES for n in self.store.names(prefix)]
        doomed = orphans(manifest, in_chapters, stored)
        for name in doomed:
            self.store.delete(name)
        partials = self.store.delete_partials(OBJECT_PREFIXES)
        if doomed or partials:
            log.info(
                "backup: swept %d objects no manifest names and %d partial writes",
                len(doomed),
                partials,
            )

    def _put(
        self, kind: str, first: int, last: int, data: bytes, seen_at: float, part: int = 0
    ) -> BackupObject:
        if time.time() - self._lease_at > LEASE_TTL_S / 3:  # a long base: keep the lease
            self._renew_lease()
        obj = BackupObject(
            object_name(kind, first, last, part),
            kind,
            first,
            last,
            len(data),
            crc32c(data),
            seen_at,
            part,
        )
        self.store.put(obj.name, data)
        log.info("backup: %s (%d bytes)", obj.name, obj.size)
        return obj

    async def close(self) -> None:
        """Close the channels, and let go of the lease if it is still this agent's: the
        next agent need not wait it out."""
        for c in self.clients:
            await c.close()
        if self._lease_at:
            with contextlib.suppress(SixfoldError):  # unreachable: it lapses by itself
                lease = self.store.lease()
                if lease is not None and lease.owner == self.owner:
                    self.store.delete(LEASE_NAME)
