"""The LMDB store of one storage node: redo log, page index, page versions, metadata.

Named databases:
    meta      key -> value: format version, node name, epoch, truncations, SCL, VDL, the
              highest GC horizon used (so start-up can tell a collected record from a lost
              one), the coalescing frontier (sixfold/core/log_cleanup.py) and a hydration's
              progress (sixfold/core/hydration.py), stored with the images it counts,
              and the volume's membership (sixfold/core/membership.py)
    log       LSN (u64 BE) -> record in its canonical encoding (CRC included)
    page_log  page (u64 BE) + LSN (u64 BE) -> b"": the records of each page, in LSN order;
              the entries of records above meta `page_index_through` wait in memory and go
              here in one transaction later (storage_node/page_index.py)
    versions  page (u64 BE) + LSN (u64 BE) -> page image + CRC32C: coalesced page versions
    superseded  newer version's LSN + page + older version's LSN (u64 BE each) -> b"": old
              versions to drop once the GC horizon reaches the newer one
    held      the same keys, set aside from `superseded`: versions a clone's hold keeps
              (sixfold/core/clones.py), queued again when the hold goes

A clone's node has a lower layer (meta `lower`): the source node's directory, opened read-only,
where it reads, as of the clone's point, every page it has no version or record of.

Every record is CRC-checked before it is written (by the service, on decode) and after it is
read (here). Write transactions commit with fsync (sync=True): an append is acknowledged
only once its transaction is on disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import lmdb

from sixfold.core.checksum import crc32c
from sixfold.core.clones import (
    LowerLayer,
    check_can_hold,
    coalesce_limit,
    crosses_hold,
    dump_holds,
    dump_lower,
    hold_keeps,
    load_holds,
    load_lower,
)
from sixfold.core.errors import (
    CloneError,
    CorruptRecordError,
    DataFormatError,
    NotServingError,
    StoredCorruptionError,
)
from sixfold.core.log_cleanup import (
    CoalesceStep,
    plan_coalesce,
    record_redundant,
    version_needed,
)
from sixfold.core.page import EMPTY_PAGE, apply_records
from sixfold.core.record import (
    PAGE_SIZE_BYTES,
    RECORD_OVERHEAD_BYTES,
    RedoRecord,
    decode_record,
    peek_page_no,
)
from sixfold.core.truncation import TruncationRange
from storage_node.page_index import PAGE_INDEX_PENDING_RECORDS_MAX, PendingIndex
from storage_node.recent_records import RecentRecords

# 2: the page index may lack the entries of records above `page_index_through` (they wait in
# memory, storage_node/page_index.py), which a release that reads version 1 would not know.
FORMAT_VERSION = 2
FORMAT_VERSIONS_UPGRADED = (1,)  # upgraded in place when opened for writing
NAMED_DBS = 6  # meta, log, page_log, versions, superseded, held: the main database's entries
MAP_SIZE_BYTES_DEFAULT = 8 << 30  # sparse on Linux: costs disk only as it fills
_U64 = struct.Struct(">Q")
_PAGE_LSN = struct.Struct(">QQ")
_SUPERSEDED = struct.Struct(">QQQ")
_CRC = struct.Struct("<I")
_PAGE_NO = struct.Struct("<Q")
_PAGE_NO_OFFSET = (
    32  # in a record's header: u8 u8 u16 u32, then lsn, prev_volume, prev_page, page_no
)


def lsn_key(lsn: int) -> bytes:
    return _U64.pack(lsn)


def page_key(page_no: int, lsn: int) -> bytes:
    return _PAGE_LSN.pack(page_no, lsn)


@dataclass(frozen=True, slots=True)
class CoalesceRead:
    """A coalescing step as read: the step (None: nothing to do), its page versions (page,
    LSN, image), how many records it covers, and whether the read filled its bound."""

    step: CoalesceStep | None
    versions: list[tuple[int, int, bytes]]
    records: int
    full: bool


@dataclass(slots=True)
class _IndexedWrite:
    """A write transaction, and the index's frontier and waiting entries it leaves."""

    txn: lmdb.Transaction
    through: int
    pending: PendingIndex


@dataclass(frozen=True, slots=True)
class StoredMeta:
    node_name: str
    epoch: int
    epoch_owner: str
    truncations: tuple[TruncationRange, ...]
    truncations_version: int
    scl: int
    cpl_at_scl: int
    vdl: int
    vdl_epoch: int
    gc_horizon: int | None = None  # None: a directory from before the horizon was stored
    coalesced_through: int = 0  # 0 in a directory from before: coalesce from the log's head


class NodeStore:
    def __init__(
        self, path: Path, node_name: str, map_size_bytes: int, readonly: bool = False
    ) -> None:
        """`readonly`: a clone's view of its source node, which that node's process writes."""
        self.path = path
        self.node_name = node_name
        self.readonly = readonly
        self.env = _open_env(path, map_size_bytes, readonly)
        create = not readonly
        self.meta_db = self.env.open_db(b"meta", create=create)
        self.log_db = self.env.open_db(b"log", create=create)
        self.page_log_db = self.env.open_db(b"page_log", create=create)
        self.versions_db = self.env.open_db(b"versions", create=create)
        if not readonly:
            self.superseded_db = self.env.open_db(b"superseded")
            self.held_db = self.env.open_db(b"held")
        self._check_or_init_format()
        # A reader takes its LMDB snapshot and the pending index entries under this lock, and
        # a commit that changes those entries commits under it: the two always agree.
        self._index_lock = threading.Lock()
        self._index_through, self._pending = self._load_pending_index()
        self._index_held_back = bool(self._pending.unplaced)
        self.lower_layer, self.lower = self._open_lower(map_size_bytes)
        # Records stored lately, for the next coalescing step (storage_node/recent_records.py).
        self.recent = RecentRecords()

    def close(self) -> None:
        if self.lower is not None:
            self.lower.close()
        self.env.close()

    @classmethod
    def of_stopped(cls, path: Path, node_name: str) -> NodeStore:
        """The store of a stopped node's directory, to inject disk faults (sixfold fuzz)."""
        if not path.is_dir():
            raise DataFormatError(f"{path}: no storage node directory there")
        return cls(path, node_name, MAP_SIZE_BYTES_DEFAULT)

    # -- disk faults, injected into a stopped node by the fuzzer and the tests --------------------

    def damage_one(self, how: str, rng: random.Random) -> str:
        """Flip a bit in (`how` "flip"), or tear ("torn"), one stored record, else one page
        version; say which."""
        with self.env.begin(write=True) as txn:
            for name, db in ((b"log", self.log_db), (b"versions", self.versions_db)):
                keys = [k for k, _ in txn.cursor(db=db)]
                if keys:
                    key = rng.choice(keys)
                    value = bytearray(txn.get(key, db=db))
                    if how == "torn":
                        value = value[: len(value) // 2]
                    else:
                        value[rng.randrange(len(value))] ^= 1 << rng.randrange(8)
                    txn.put(key, bytes(value), db=db)
                    return f"{name.decode()} key {key.hex()}"
        return "nothing stored yet"

    def lose_tail(self, records: int) -> str:
        """Drop the newest `records` log records above the stored VDL, keeping the stored
        SCL: the node acknowledged them, and its disk has lost them.

        Our nodes fsync before they acknowledge, so this is what an OS that lost writes it
        had not synced would leave behind, not something our node does. Only records above
        the stored VDL go: nothing is coalesced there, and peers keep records above the VDL
        for gossip, so the node can fetch them back (older ones had been synced long before).
        """
        meta = self.load_meta()
        with self._writing() as write:
            txn = write.txn
            tail = [(k, v) for k, v in txn.cursor(db=self.log_db) if _U64.unpack(k)[0] > meta.vdl]
            lost = tail[-records:]
            for key, value in lost:
                txn.delete(key, db=self.log_db)
                with contextlib.suppress(struct.error):  # a torn record: no page to name
                    page_no = peek_page_no(bytes(value))
                    txn.delete(page_key(page_no, _U64.unpack(key)[0]), db=self.page_log_db)
            write.pending = write.pending.without(_U64.unpack(k)[0] for k, _ in lost)
        if not lost:
            return f"nothing above the stored VDL {meta.vdl} to lose"
        first = _U64.unpack(lost[0][0])[0]
        return (
            f"lost {len(lost)} newest records from LSN {first} (stored VDL {meta.vdl}, "
            f"SCL {meta.scl})"
        )

    # -- metadata -------------------------------------------------------------------------------

    def _check_or_init_format(self) -> None:
        with self.env.begin(write=not self.readonly, db=self.meta_db) as txn:
            stored = txn.get(b"format_version")
            if stored is None and self.readonly:
                raise DataFormatError(f"{self.path}: not a sixfold storage node directory")
            if stored is None:
                if self.env.stat()["entries"] > NAMED_DBS or txn.stat(self.log_db)["entries"]:
                    raise DataFormatError(
                        f"{self.path}: LMDB data without a sixfold format version; not a "
                        "sixfold storage node directory"
                    )
                txn.put(b"format_version", str(FORMAT_VERSION).encode())
                txn.put(b"node_name", self.node_name.encode())
                txn.put(b"gc_horizon", b"0")
                txn.put(b"page_index_through", b"0")  # none stored yet (storage_node/page_index.py)
                return
            version = _parse_int(stored, self.path)
            if version != FORMAT_VERSION and version not in FORMAT_VERSIONS_UPGRADED:
                raise DataFormatError(
                    f"{self.path}: on-disk format version {version} is not one this build "
                    f"knows (it reads version {FORMAT_VERSION}); use a matching sixfold release"
                )
            if version != FORMAT_VERSION and not self.readonly:
                # Version 1 indexed every record as it came: all are below the frontier. (A
                # frontier stored already is kept: a build between the two stored one.)
                if txn.get(b"page_index_through") is None:
                    cursor = txn.cursor(db=self.log_db)
                    last = _U64.unpack(cursor.key())[0] if cursor.last() else 0
                    txn.put(b"page_index_through", str(last).encode())
                txn.put(b"format_version", str(FORMAT_VERSION).encode())
            owner = (txn.get(b"node_name") or b"").decode()
            if owner != self.node_name:
                raise DataFormatError(
                    f"{self.path}: this data directory belongs to storage node {owner!r}, "
                    f"not {self.node_name!r}"
                )

    def claim_volume(self, volume_id: str) -> str:
        """The volume this store's segment belongs to: `volume_id` when it names none yet
        (a new node, or one from before volumes were named); a store of another volume is
        refused, so a node never serves one volume's data as another's."""
        with self.env.begin(write=bool(volume_id), db=self.meta_db) as txn:
            stored = bytes(txn.get(b"volume_id") or b"").decode()
            if volume_id and not stored:
                txn.put(b"volume_id", volume_id.encode())
                return volume_id
        if volume_id and stored != volume_id:
            raise DataFormatError(
                f"{self.path}: this directory holds a segment of volume {stored}, not of "
                f"volume {volume_id}: start the node on its own volume's directory"
            )
        return stored

    def load_meta(self) -> StoredMeta:
        with self.env.begin(db=self.meta_db) as txn:

            def num(key: bytes) -> int:
                raw = txn.get(key)
                return 0 if raw is None else _parse_int(raw, self.path)

            ranges = json.loads(txn.get(b"truncations") or b"[]")
            return StoredMeta(
                node_name=self.node_name,
                epoch=num(b"epoch"),
                epoch_owner=(txn.get(b"epoch_owner") or b"").decode(),
                truncations=tuple(TruncationRange(*r) for r in ranges),
                truncations_version=num(b"truncations_version"),
                scl=num(b"scl"),
                cpl_at_scl=num(b"cpl_at_scl"),
                vdl=num(b"vdl"),
                vdl_epoch=num(b"vdl_epoch"),
                gc_horizon=num(b"gc_horizon") if txn.get(b"gc_horizon") is not None else None,
                coalesced_through=num(b"coalesced_through"),
            )

    def save_meta(self, meta: StoredMeta) -> None:
        """Durably record the epoch, its truncations and the points (one transaction)."""
        assert meta.node_name == self.node_name
        with self.env.begin(write=True, db=self.meta_db) as txn:
            txn.put(b"epoch", str(meta.epoch).encode())
            txn.put(b"epoch_owner", meta.epoch_owner.encode())
            ranges = [list(_range_tuple(r)) for r in meta.truncations]
            txn.put(b"truncations", json.dumps(ranges).encode())
            txn.put(b"truncations_version", str(meta.truncations_version).encode())
            _put_points(txn, meta.scl, meta.cpl_at_scl)
            txn.put(b"vdl", str(meta.vdl).encode())
            txn.put(b"vdl_epoch", str(meta.vdl_epoch).encode())

    # -- the log ----------------------------------------------------------------------------------

    def put_records(
        self, records: list[RedoRecord], scl: int, cpl: int, vdl: int, vdl_epoch: int
    ) -> tuple[float, float]:
        """Store records and the points they were admitted under, in one durable transaction.
        Returns the seconds spent putting them and committing (writes and fsyncs), for metrics.

        Their page-index entries wait in memory (storage_node/page_index.py) unless they lie
        at or below the index's frontier (gossip filling a hole), or enough wait already:
        then this transaction writes them all."""
        with self._writing() as write:  # its begin may wait for another writer: not timed
            started = time.perf_counter()
            txn = write.txn
            write_all = write.pending.records + len(records) >= PAGE_INDEX_PENDING_RECORDS_MAX
            waiting = []
            for record in records:
                txn.put(lsn_key(record.lsn), record.encoded, db=self.log_db)
                if write_all or record.lsn <= write.through:
                    txn.put(page_key(record.page_no, record.lsn), b"", db=self.page_log_db)
                else:
                    waiting.append((record.page_no, record.lsn))
            if write_all:
                self._write_pending(write)
            else:
                write.pending = write.pending.with_entries(waiting)
            if write.pending.unplaced:  # a damaged record stored again, good: its page is known
                write.pending = write.pending.placed(r.lsn for r in records)
            _put_points(txn, scl, cpl, self.meta_db)
            txn.put(b"vdl", str(vdl).encode(), db=self.meta_db)
            txn.put(b"vdl_epoch", str(vdl_epoch).encode(), db=self.meta_db)
            written = time.perf_counter()
        committed = time.perf_counter()
        self.recent.add(records)
        return written - started, committed - written

    # -- the page index (storage_node/page_index.py) ----------------------------------------------

    def _load_pending_index(self) -> tuple[int, PendingIndex]:
        with self.env.begin() as txn:
            return self._scan_pending(txn)

    def _scan_pending(self, txn: lmdb.Transaction) -> tuple[int, PendingIndex]:
        """The stored frontier, and the entries of the records above it, read from the log
        in `txn`: what a start rebuilds, and what another process's view of a running node's
        store must read again (its own entries are in that node's memory). A version-1
        directory opened read-only stores none: it indexed every record as it came."""
        stored = txn.get(b"page_index_through", db=self.meta_db)
        cursor = txn.cursor(db=self.log_db)
        if stored is None:
            return (_U64.unpack(cursor.key())[0] if cursor.last() else 0), PendingIndex()
        through = _parse_int(stored, self.path)
        entries, unplaced = [], []
        if cursor.set_range(lsn_key(through + 1)):
            for key, value in cursor:
                lsn = _U64.unpack(key)[0]
                record = _verified(value, lsn)
                if isinstance(record, CorruptRecordError):
                    unplaced.append(lsn)
                else:
                    entries.append((record.page_no, lsn))
        return through, PendingIndex().with_entries(entries).with_unplaced(unplaced)

    def _write_pending(self, write: _IndexedWrite) -> None:
        """Write every waiting entry in the transaction and move the frontier to the log's
        last record, but not past a record too damaged to name its page (a start must find
        it again)."""
        txn, pending = write.txn, write.pending
        for page_no, lsn in pending.entries():
            txn.put(page_key(page_no, lsn), b"", db=self.page_log_db)
        cursor = txn.cursor(db=self.log_db)
        last = _U64.unpack(cursor.key())[0] if cursor.last() else 0
        through = max(write.through, last)
        if pending.unplaced:
            through = min(through, min(pending.unplaced) - 1)
        txn.put(b"page_index_through", str(through).encode(), db=self.meta_db)
        # A hint (not under the lock): once the damaged record goes, the next background
        # cycle moves the frontier up even with no entry waiting.
        self._index_held_back = through < last
        write.through, write.pending = through, pending.written()

    def _index_state(self) -> tuple[int, PendingIndex]:
        """The frontier and the waiting entries, for a write transaction begun already: the
        commit before it may still be setting them (under the lock) as this one starts."""
        with self._index_lock:
            return self._index_through, self._pending

    @contextlib.contextmanager
    def _writing(self, db: lmdb._Database | None = None) -> Iterator[_IndexedWrite]:
        """A write transaction with the index's frontier and waiting entries as it starts;
        what the body sets them to lands with its commit, under the lock (see __init__). One
        that changes neither commits without the lock: readers need not wait for its sync."""
        txn = self.env.begin(write=True, db=db)  # may wait for another writer
        try:
            through, pending = self._index_state()
            write = _IndexedWrite(txn, through, pending)
            yield write
        except BaseException:
            txn.abort()
            raise
        if write.through == through and write.pending is pending:
            txn.commit()
            return
        with self._index_lock:
            txn.commit()
            self._index_through, self._pending = write.through, write.pending

    def write_page_index(self) -> int:
        """Write the waiting page-index entries, in one durable transaction (the background
        cycle's, so none waits long and a start reads little of the log). Returns how many."""
        if not self._pending.records and not self._index_held_back:
            return 0
        with self._writing() as write:
            written = write.pending.records
            self._write_pending(write)
        return written

    @contextlib.contextmanager
    def _reading(self) -> Iterator[tuple[lmdb.Transaction, PendingIndex]]:
        """A read transaction and the waiting entries that agree with its snapshot."""
        with self._index_lock:
            txn = self.env.begin()
            pending = self._pending
        try:
            yield txn, pending
        finally:
            txn.abort()

    def records_after(
        self, after_lsn: int
    ) -> Iterator[tuple[int, RedoRecord | CorruptRecordError]]:
        """(LSN, record) for every record above `after_lsn`; a corrupt one comes as its error."""
        with self.env.begin(db=self.log_db) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(lsn_key(after_lsn + 1)):
                return
            for key, value in cursor:
                lsn = _U64.unpack(key)[0]
                yield lsn, _verified(value, lsn)

    def read_records(
        self, after_lsn: int, through_lsn: int, max_records: int, page_no: int | None = None
    ) -> list[RedoRecord]:
        """Verified records with LSN in (after, through], all or one page's, ascending."""
        out: list[RedoRecord] = []
        with self._reading() as (txn, pending):
            if page_no is None:
                cursor = txn.cursor(db=self.log_db)
                if not cursor.set_range(lsn_key(after_lsn + 1)):
                    return out
                for key, value in cursor:
                    lsn = _U64.unpack(key)[0]
                    if lsn > through_lsn or len(out) >= max_records:
                        break
                    out.append(_raise_if_corrupt(_verified(value, lsn)))
                return out
            for lsn in self._page_lsns(txn, pending, page_no, after_lsn, through_lsn):
                if len(out) >= max_records:
                    break
                out.append(self._log_record(txn, lsn))
        return out

    def _page_lsns(
        self, txn: lmdb.Transaction, pending: PendingIndex, page_no: int, after: int, through: int
    ) -> list[int]:
        """The LSNs of the page's records in (after, through], ascending: from the index in
        LMDB and the entries waiting in memory (`pending`, taken with `txn`'s snapshot)."""
        cursor = txn.cursor(db=self.page_log_db)
        lsns = []
        if cursor.set_range(page_key(page_no, after + 1)):
            for key in cursor.iternext(keys=True, values=False):
                key_page, lsn = _PAGE_LSN.unpack(key)
                if key_page != page_no or lsn > through:
                    break
                lsns.append(lsn)
        waiting = (
            *pending.lsns(page_no, after, through),
            *self._unplaced_of(txn, pending, page_no, after, through),
        )
        if not waiting:
            return lsns
        return sorted({*lsns, *waiting})

    def _unplaced_of(
        self, txn: lmdb.Transaction, pending: PendingIndex, page_no: int, after: int, through: int
    ) -> tuple[int, ...]:
        """A record above the frontier too damaged to name its page may be this page's: the
        page cannot be built without knowing, so the read fails as the record's own would,
        until a good copy replaces it."""
        mine = []
        for lsn in pending.unplaced_in(after, through):
            if (value := txn.get(lsn_key(lsn), db=self.log_db)) is None:
                continue  # dropped (for gossip to fetch again) since the entries were taken
            if _raise_if_corrupt(_verified(value, lsn)).page_no == page_no:
                mine.append(lsn)
        return tuple(mine)

    def _log_record(self, txn: lmdb.Transaction, lsn: int) -> RedoRecord:
        value = txn.get(lsn_key(lsn), db=self.log_db)
        if value is None:
            raise CorruptRecordError(
                f"{self.node_name}: page index names LSN {lsn} but the log has no such record"
            )
        return _raise_if_corrupt(_verified(value, lsn))

    def delete_truncated(self, rng: TruncationRange) -> int:
        """Delete the records `rng` cancels; return how many went."""
        deleted = 0
        with self._writing() as write:
            txn = write.txn
            cursor = txn.cursor(db=self.log_db)
            doomed: list[tuple[int, int]] = []
            if cursor.set_range(lsn_key(rng.after_lsn + 1)):
                for key, value in cursor:
                    lsn = _U64.unpack(key)[0]
                    if lsn > rng.through_lsn:
                        break
                    record = _verified(value, lsn)
                    # A corrupt record in a cancelled range is deleted all the same.
                    if isinstance(record, CorruptRecordError):
                        doomed.append((lsn, -1))
                    elif rng.cancels(lsn, record.epoch):
                        doomed.append((lsn, record.page_no))
            for lsn, page_no in doomed:
                txn.delete(lsn_key(lsn), db=self.log_db)
                if page_no >= 0:
                    txn.delete(page_key(page_no, lsn), db=self.page_log_db)
                deleted += 1
            write.pending = write.pending.without(lsn for lsn, _ in doomed)
        self.recent.drop(lsn for lsn, _ in doomed)
        return deleted

    def put_repaired_record(self, record: RedoRecord) -> None:
        """Overwrite a damaged record with a good copy from a peer; its page-index entry
        goes to LMDB at once (a damaged record above the frontier had none)."""
        with self._writing() as write:
            write.txn.put(lsn_key(record.lsn), record.encoded, db=self.log_db)
            write.txn.put(page_key(record.page_no, record.lsn), b"", db=self.page_log_db)
            write.pending = write.pending.without([record.lsn])

    def scrub(self, after_lsn: int, records_max: int) -> tuple[list[int], int]:
        """CRC-check up to records_max stored records above after_lsn (P17 §3.2, step 8).

        Returns the LSNs found damaged and the last LSN checked (0: wrapped to the start).
        """
        damaged, last = [], 0
        with self.env.begin(db=self.log_db) as txn:
            cursor = txn.cursor()
            if not cursor.set_range(lsn_key(after_lsn + 1)):
                return damaged, 0
            for checked, (key, value) in enumerate(cursor):
                if checked >= records_max:
                    break
                last = _U64.unpack(key)[0]
                if not _crc_intact(value):  # disk damage; reads still decode in full
                    damaged.append(last)
        return damaged, last

    def has_record(self, lsn: int) -> bool:
        """Whether the log holds a record (intact or not) under this LSN."""
        with self.env.begin(db=self.log_db) as txn:
            return txn.get(lsn_key(lsn)) is not None

    def delete_record(self, lsn: int) -> None:
        """Drop one record (found corrupt above the SCL): gossip will fetch it again. No
        waiting index entry names it any longer (nor holds the frontier below it)."""
        with self._writing() as write:
            write.txn.delete(lsn_key(lsn), db=self.log_db)
            write.pending = write.pending.without([lsn])
        self.recent.drop([lsn])

    # -- pages ------------------------------------------------------------------------------------

    def page_at(self, page_no: int, lsn: int) -> tuple[bytes, int]:
        """The page image at `lsn` and the LSN of its newest change (0: never written)."""
        with self._reading() as (txn, pending):
            image, page_lsn, _ = self._page_in(txn, pending, page_no, lsn)
        return image, page_lsn

    def _page_in(
        self,
        txn: lmdb.Transaction,
        pending: PendingIndex,
        page_no: int,
        lsn: int,
        known: dict[int, RedoRecord] | None = None,
    ) -> tuple[bytes, int, int]:
        """(image, LSN of its newest change, LSN of the version it was built from) of a page
        at `lsn`, read in `txn`: its newest version at or below `lsn` and its records above
        (those in `known`, checked against `txn`'s log already, are not read again)."""
        base, base_lsn = self._version_at(txn, page_no, lsn)
        known = known or {}
        records = [
            known.get(x) or self._log_record(txn, x)
            for x in self._page_lsns(txn, pending, page_no, base_lsn, lsn)
        ]
        if not records:
            return base, base_lsn, base_lsn
        return apply_records(base, records), records[-1].lsn, base_lsn

    def _version_at(self, txn: lmdb.Transaction, page_no: int, lsn: int) -> tuple[bytes, int]:
        """The page's newest version at or below `lsn`; in a clone, with none of its own,
        its image at the clone's point in the source (every record here lies above it)."""
        cursor = txn.cursor(db=self.versions_db)
        found = cursor.set_range(page_key(page_no, lsn + 1))
        found = cursor.prev() if found else cursor.last()
        if found:
            key_page, version_lsn = _PAGE_LSN.unpack(cursor.key())
            if key_page == page_no:
                return _verified_image(cursor.value(), page_no, version_lsn), version_lsn
        if self.lower is None:
            return EMPTY_PAGE, 0
        assert self.lower_layer is not None
        try:
            return self.lower.page_held(page_no, self.lower_layer)
        except StoredCorruptionError as exc:  # the source's damage: no repair of ours fixes it
            raise NotServingError(
                f"the clone's source {self.lower_layer.path} holds a damaged copy of page "
                f"{page_no} ({exc}); the clone's other nodes read their own source nodes"
            ) from exc

    def _version_lsn_at(self, txn: lmdb.Transaction, page_no: int, lsn: int) -> int:
        """The LSN of the page's newest version at or below `lsn` (0: none), image unread."""
        cursor = txn.cursor(db=self.versions_db)
        found = cursor.set_range(page_key(page_no, lsn + 1))
        found = cursor.prev() if found else cursor.last()
        if not found:
            return 0
        key_page, version_lsn = _PAGE_LSN.unpack(cursor.key())
        return version_lsn if key_page == page_no else 0

    def put_versions(self, versions: list[tuple[int, int, bytes]]) -> None:
        """Store page versions (page, lsn, image), each with its CRC32C (a repair's copy)."""
        with self.env.begin(write=True, db=self.versions_db) as txn:
            for page_no, lsn, image in versions:
                _put_version(txn, page_no, lsn, image)

    def read_coalesce_step(self, after_lsn: int, point: int, records_max: int) -> CoalesceRead:
        """Read one coalescing step in one transaction (sixfold/core/log_cleanup.py): the
        records just above `after_lsn`, up to `records_max`, each checked once against the
        log (`_records_above`: a corrupt one raises StoredCorruptionError); the step they
        plan, up to `point` and to no clone's hold past the frontier; and the page versions
        it stores.

        The records read for the plan are the ones applied to the pages, not read again
        page by page, and each page's base version is read once: coalescing is most of a
        node's background work (docs/BENCHMARKS.md, "A node's background work")."""
        # Not past the index's frontier (read before the snapshot: it only grows): a record
        # above it may be too damaged to name its page (page_index.py), and one coalesced
        # would be dropped by GC, which finds a damaged record's page through the index.
        point = min(point, self._index_state()[0])
        with self._reading() as (txn, pending):
            point = coalesce_limit(after_lsn, point, self._holds_in(txn).values())
            if point <= after_lsn:
                return CoalesceRead(None, [], 0, False)
            records = self._records_above(txn, after_lsn, records_max)
            step = plan_coalesce(
                after_lsn, point, [(r.lsn, r.page_no) for r in records], records_max
            )
            if step is None:
                return CoalesceRead(None, [], 0, False)
            known = {r.lsn: r for r in records}
            versions = []
            for page_no in step.pages:
                image, page_lsn, base_lsn = self._page_in(
                    txn, pending, page_no, step.through, known
                )
                if version_needed(page_lsn, base_lsn):
                    versions.append((page_no, page_lsn, image))
        taken = sum(1 for r in records if r.lsn <= step.through)
        # Full: more may be waiting at or below the point (records above it must wait).
        full = len(records) >= records_max and records[-1].lsn <= point
        return CoalesceRead(step, versions, taken, full)

    def _records_above(
        self, txn: lmdb.Transaction, after_lsn: int, records_max: int
    ) -> list[RedoRecord]:
        """The records above `after_lsn` in the log, each checked against its stored bytes: a
        record held in memory (decoded and CRC-checked when it came) is taken when the log
        holds exactly its bytes, which costs a compare, not a decode; any other is decoded
        and CRC-checked here (a damaged one raises, as it did before records were held)."""
        out: list[RedoRecord] = []
        cursor = txn.cursor(db=self.log_db)
        if not cursor.set_range(lsn_key(after_lsn + 1)):
            return out
        for key, value in cursor:
            if len(out) >= records_max:
                break
            lsn = _U64.unpack(key)[0]
            held = self.recent.get(lsn)
            if held is not None and held.encoded == value:
                out.append(held)
            else:
                out.append(_raise_if_corrupt(_verified(value, lsn)))
        return out

    def commit_coalesce(
        self, versions: list[tuple[int, int, bytes]], after_lsn: int, through_lsn: int
    ) -> bool:
        """Store a coalescing step's versions and move the frontier from `after_lsn` to
        `through_lsn`, in one durable transaction. Each page's older versions are queued to be
        dropped once the GC horizon reaches the new one. A step that would cross a clone's
        hold taken since it was planned is not stored (False): it is planned again."""
        with self.env.begin(write=True) as txn:
            holds = self._holds_in(txn)
            if crosses_hold(after_lsn, through_lsn, holds.values()):
                return False
            versions_cursor = txn.cursor(db=self.versions_db)
            for page_no, lsn, image in versions:
                self._put_superseding(txn, versions_cursor, page_no, lsn, image)
            txn.put(b"coalesced_through", str(through_lsn).encode(), db=self.meta_db)
        self.recent.drop_through(through_lsn)
        return True

    # -- hydration (sixfold/core/hydration.py) ------------------------------------------------------

    def page_images_at(
        self, at_lsn: int, from_page: int, pages_max: int
    ) -> tuple[list[tuple[int, int, bytes]], int, bool]:
        """(page, page LSN, image) as of `at_lsn` for the next `pages_max` pages from
        `from_page` on that have a version or a record at or below it, read in one
        transaction; with the page to go on from, and whether none is left."""
        out: list[tuple[int, int, bytes]] = []
        with self._reading() as (txn, pending):
            # Read in this transaction: GC stores its horizon in the one that deletes below
            # it, so this snapshot holds every version a page at `at_lsn` needs, or says so.
            horizon = _parse_int(txn.get(b"gc_horizon", db=self.meta_db) or b"0", self.path)
            if at_lsn < horizon:
                raise NotServingError(
                    f"{self.node_name} collected garbage up to LSN {horizon}; it cannot build "
                    f"pages at the older LSN {at_lsn}"
                )
            versions = txn.cursor(db=self.versions_db)
            index = txn.cursor(db=self.page_log_db)
            page_no = from_page
            while len(out) < pages_max:
                found = [
                    _next_page(versions, page_no),
                    _next_page(index, page_no),
                    pending.next_page(page_no),
                ]
                if self.lower is not None:  # a clone: the source's pages too
                    found.append(self.lower.next_page(page_no))
                if found.count(None) == len(found):
                    return out, page_no, True
                page_no = min(p for p in found if p is not None)
                image, page_lsn, _ = self._page_in(txn, pending, page_no, at_lsn)
                if page_lsn:  # a page whose changes all lie above `at_lsn` is not sent
                    out.append((page_no, page_lsn, image))
                page_no += 1
        return out, page_no, False

    def put_hydrated(self, versions: list[tuple[int, int, bytes]], progress: str) -> None:
        """Store hydrated page images as versions and the hydration's progress, in one
        durable transaction. Older versions of those pages are queued for GC, as coalescing
        queues them (an earlier attempt's, or what the disk still held)."""
        with self.env.begin(write=True) as txn:
            cursor = txn.cursor(db=self.versions_db)
            for page_no, lsn, image in versions:
                self._put_superseding(txn, cursor, page_no, lsn, image)
            txn.put(b"hydration", progress.encode(), db=self.meta_db)

    def _put_superseding(
        self, txn: lmdb.Transaction, versions: lmdb.Cursor, page_no: int, lsn: int, image: bytes
    ) -> None:
        """Store a page version, queueing the page's older ones to be dropped once the GC
        horizon reaches it."""
        for older in _version_lsns_below(versions, page_no, lsn):
            txn.put(_SUPERSEDED.pack(lsn, page_no, older), b"", db=self.superseded_db)
        _put_version(txn, page_no, lsn, image, self.versions_db)

    def save_membership(self, membership: str) -> None:
        with self.env.begin(write=True, db=self.meta_db) as txn:
            txn.put(b"membership", membership.encode())

    def load_membership(self) -> str | None:
        with self.env.begin(db=self.meta_db) as txn:
            raw = txn.get(b"membership")
        return None if raw is None else bytes(raw).decode()

    def load_hydration(self) -> str | None:
        with self.env.begin(db=self.meta_db) as txn:
            raw = txn.get(b"hydration")
        return None if raw is None else bytes(raw).decode()

    def put_restored(self, versions: list[tuple[int, int, bytes]], point: int | None) -> None:
        """A restore from a backup (sixfold/backup/restore.py): page images as versions, in
        one durable transaction; with `point`, the last batch: the volume ends at that
        commit, so it is the SCL and its CPL (recovery takes it as the VDL), the coalescing
        frontier and the GC horizon."""
        with self.env.begin(write=True) as txn:
            for page_no, lsn, image in versions:
                _put_version(txn, page_no, lsn, image, self.versions_db)
            if point is not None:
                _put_points(txn, point, point, self.meta_db)
                for key in (b"coalesced_through", b"gc_horizon"):
                    txn.put(key, str(point).encode(), db=self.meta_db)

    def finish_hydration(self, target_lsn: int) -> None:
        """Every page's image as of `target_lsn` is stored: it is the SCL (with no CPL known:
        too low a CPL is safe, sixfold/core/node_restart.py), the coalescing frontier and the
        GC horizon, and the progress goes, in one durable transaction.

        The page index's waiting entries go to LMDB in it, and damaged records at or below
        the target that no entry places are dropped (the images cover them): the index's
        frontier then reaches the coalescing frontier, which coalescing must not pass."""
        with self._writing(db=self.meta_db) as write:
            txn = write.txn
            scl = _parse_int(txn.get(b"scl") or b"0", self.path)
            if scl < target_lsn:
                _put_points(txn, target_lsn, 0)
            for key in (b"coalesced_through", b"gc_horizon"):
                stored = _parse_int(txn.get(key) or b"0", self.path)
                txn.put(key, str(max(stored, target_lsn)).encode())
            txn.delete(b"hydration")
            covered = [lsn for lsn in write.pending.unplaced if lsn <= target_lsn]
            for lsn in covered:
                txn.delete(lsn_key(lsn), db=self.log_db)
            write.pending = write.pending.without(covered)
            self._write_pending(write)

    def drop_hydration(self) -> None:
        with self.env.begin(write=True, db=self.meta_db) as txn:
            txn.delete(b"hydration")

    def collect_garbage(
        self, horizon_lsn: int, keys_max: int, scl: int, cpl: int
    ) -> tuple[int, int]:
        """One bounded step of garbage collection below the horizon (sixfold/core/log_cleanup.py).

        Log records go from the head while each is covered by a version of its page at or
        below the horizon (the first one not yet covered ends the step: those after it are
        not covered either); then superseded versions queued under an LSN at or below the
        horizon. At most keys_max of each. Returns how many records, and how many versions,
        went.
        """
        assert horizon_lsn <= scl
        # A clone's node killed mid-read leaves its reader slot here, pinning old pages.
        self.env.reader_check()
        with self._writing() as write:
            txn = write.txn
            # Records at or below the stored SCL are never rescanned at start-up, so the SCL
            # stored must cover every record this transaction deletes.
            _put_points(txn, scl, cpl, self.meta_db)
            # And start-up must know that a record missing at or below the horizon was
            # collected, not lost (`has_record`).
            stored = _parse_int(txn.get(b"gc_horizon", db=self.meta_db) or b"0", self.path)
            txn.put(b"gc_horizon", str(max(stored, horizon_lsn)).encode(), db=self.meta_db)
            records = self._collect_records(txn, write.pending, horizon_lsn, keys_max)
            versions = self._drop_superseded(txn, horizon_lsn, keys_max)
            # The horizon lies at or below the coalescing frontier, which coalescing keeps at
            # or below the index's (read_coalesce_step): as a rule GC deletes no waiting
            # entry's record, and its commit then leaves the entries as they were.
            write.pending = write.pending.without(records)
        return len(records), versions

    def _collect_records(
        self, txn: lmdb.Transaction, pending: PendingIndex, horizon_lsn: int, keys_max: int
    ) -> list[int]:
        """Delete the log's head while its records are covered; return their LSNs."""
        cursor = txn.cursor(db=self.log_db)
        doomed: list[tuple[int, int]] = []
        version_of: dict[int, int] = {}  # page -> its newest version at or below the horizon
        if cursor.first():
            for key, value in cursor:
                lsn = _U64.unpack(key)[0]
                if len(doomed) >= keys_max or lsn > horizon_lsn:
                    break
                # A damaged record lies below the horizon, so below the coalescing frontier:
                # it was intact when coalesced, and its versions hold it from the end of
                # its coalescing step. It is dropped, not repaired, once a version at or below
                # the horizon covers it, as any record: a read between the horizon and that
                # version still needs it (found by the simulator's GC check, issue 13). Its
                # page comes from the index; with no entry naming it, nothing shows it is
                # covered.
                intact = _crc_intact(value)
                page_no = peek_page_no(value) if intact else self._page_of_lsn(txn, pending, lsn)
                if page_no is None:
                    break
                if page_no not in version_of:
                    version_of[page_no] = self._version_lsn_at(txn, page_no, horizon_lsn)
                if not record_redundant(lsn, horizon_lsn, version_of[page_no]):
                    break
                doomed.append((lsn, page_no))
        for lsn, page_no in doomed:
            txn.delete(lsn_key(lsn), db=self.log_db)
            txn.delete(page_key(page_no, lsn), db=self.page_log_db)
        return [lsn for lsn, _ in doomed]

    def _page_of_lsn(self, txn: lmdb.Transaction, pending: PendingIndex, lsn: int) -> int | None:
        """The page a record's index entry names, found by a walk of the whole page index
        and of the entries waiting in memory: for a damaged record only (its own bytes
        cannot be trusted), so rare."""
        cursor = txn.cursor(db=self.page_log_db)
        for key in cursor.iternext(keys=True, values=False):
            key_page, key_lsn = _PAGE_LSN.unpack(key)
            if key_lsn == lsn:
                return key_page
        return pending.page_of(lsn)

    def _drop_superseded(self, txn: lmdb.Transaction, horizon_lsn: int, keys_max: int) -> int:
        """Drop superseded versions below the horizon, but set aside those a clone's hold
        keeps (sixfold/core/clones.py)."""
        held = self._holds_in(txn).values()
        cursor = txn.cursor(db=self.superseded_db)
        doomed: list[bytes] = []
        if cursor.first():
            for key in cursor.iternext(keys=True, values=False):
                newer, page_no, older = _SUPERSEDED.unpack(key)
                if newer > horizon_lsn or len(doomed) >= keys_max:
                    break
                doomed.append(key)
                if not hold_keeps(older, newer, held):
                    txn.delete(page_key(page_no, older), db=self.versions_db)
                elif txn.get(page_key(page_no, older), db=self.versions_db) is not None:
                    txn.put(key, b"", db=self.held_db)  # (another key may have dropped it)
        for key in doomed:
            txn.delete(key, db=self.superseded_db)
        return len(doomed)

    # -- clones (sixfold/core/clones.py) ---------------------------------------------------------

    def holds(self) -> dict[str, int]:
        with self.env.begin() as txn:
            return self._holds_in(txn)

    def _holds_in(self, txn: lmdb.Transaction) -> dict[str, int]:
        return load_holds(txn.get(b"clone_holds", db=self.meta_db), str(self.path))

    def hold(self, clone_id: str, point: int) -> int:
        """Keep the volume at `point` readable for clone `clone_id`, in one durable
        transaction: the hold and, where coalescing passed `point` already, a version at or
        below it of every page with a record stored at or below it that has none. Returns
        how many versions that took."""
        with self.env.begin(write=True) as txn:
            # `sixfold clone` holds from a process of its own: the entries the node keeps in
            # memory are read again from the log, in this transaction.
            pending = self._scan_pending(txn)[1]
            holds = self._holds_in(txn)

            def num(key: bytes) -> int:
                return _parse_int(txn.get(key, db=self.meta_db) or b"0", self.path)

            horizon, frontier = num(b"gc_horizon"), num(b"coalesced_through")
            check_can_hold(self.node_name, holds, clone_id, point, num(b"scl"), horizon)
            pages = set()
            if frontier > point:  # every record still stored at or below it, from the head
                pages = {page for _, page in self._records_between(txn, 0, point)}
            made = 0
            versions = txn.cursor(db=self.versions_db)
            for page_no in sorted(pages):
                image, lsn, version_lsn = self._page_in(txn, pending, page_no, point)
                if not version_needed(lsn, version_lsn):
                    continue
                newer = _version_lsn_above(versions, page_no, lsn)
                if newer is not None:  # this one is superseded already, kept by the hold
                    txn.put(_SUPERSEDED.pack(newer, page_no, lsn), b"", db=self.superseded_db)
                self._put_superseding(txn, versions, page_no, lsn, image)
                made += 1
            holds[clone_id] = point
            txn.put(b"clone_holds", dump_holds(holds), db=self.meta_db)
        return made

    def release(self, clone_id: str) -> int:
        """Drop clone `clone_id`'s hold; the versions set aside go back to GC's queue (it
        sets aside again those another hold keeps). Returns how many."""
        with self.env.begin(write=True) as txn:
            holds = self._holds_in(txn)
            if clone_id not in holds:
                raise CloneError(f"{self.node_name} holds no clone {clone_id!r}")
            del holds[clone_id]
            txn.put(b"clone_holds", dump_holds(holds), db=self.meta_db)
            keys = [k for k in txn.cursor(db=self.held_db).iternext(keys=True, values=False)]
            for key in keys:
                txn.put(key, b"", db=self.superseded_db)
            txn.drop(self.held_db, delete=False)
        return len(keys)

    def _records_between(
        self, txn: lmdb.Transaction, after: int, through: int
    ) -> Iterator[tuple[int, int]]:
        """(LSN, page) of each stored record in (after, through], CRC-checked."""
        cursor = txn.cursor(db=self.log_db)
        if not cursor.set_range(lsn_key(after + 1)):
            return
        for key, value in cursor:
            lsn = _U64.unpack(key)[0]
            if lsn > through:
                return
            yield lsn, _page_of_verified(value, lsn)

    def put_cloned(self, lower: LowerLayer) -> None:
        """A new clone's node: the volume starts as the source's at `lower.point`, which is
        its SCL and CPL (its first writer recovers with it as the VDL), coalescing frontier and
        GC horizon; its pages are read from `lower` until it writes them."""
        with self.env.begin(write=True, db=self.meta_db) as txn:
            txn.put(b"lower", dump_lower(lower))
            _put_points(txn, lower.point, lower.point)
            for key in (b"coalesced_through", b"gc_horizon"):
                txn.put(key, str(lower.point).encode())

    def _open_lower(self, map_size_bytes: int) -> tuple[LowerLayer | None, NodeStore | None]:
        with self.env.begin(db=self.meta_db) as txn:
            lower = load_lower(txn.get(b"lower"), str(self.path))
        if lower is None:
            return None, None
        try:
            return lower, NodeStore(Path(lower.path), lower.node_name, map_size_bytes, True)
        except DataFormatError as exc:
            raise CloneError(
                f"{self.path} is a clone reading its pages from {lower.path}, which cannot be "
                f"opened: {exc}. A clone needs its source's storage node directories"
            ) from exc

    def page_held(self, page_no: int, lower: LowerLayer) -> tuple[bytes, int]:
        """The page at the clone's point, read by the clone's node from this (source) store;
        refused unless the source still holds that point for the clone."""
        with self._reading() as (txn, pending):
            holds = self._holds_in(txn)
            if holds.get(lower.hold_id) != lower.point:
                raise NotServingError(
                    f"{self.path} no longer holds LSN {lower.point} for clone "
                    f"{lower.hold_id!r} (dropped, or the node was replaced): the clone's copy "
                    "of this position cannot read the pages it shares"
                )
            image, page_lsn, _ = self._page_in(txn, pending, page_no, lower.point)
        return image, page_lsn

    def next_page(self, page_no: int) -> int | None:
        """The first page at or above `page_no` with a version or a record here (or in
        this store's own lower layer)."""
        with self._reading() as (txn, pending):
            found = [
                _next_page(txn.cursor(db=self.versions_db), page_no),
                _next_page(txn.cursor(db=self.page_log_db), page_no),
                pending.next_page(page_no),
            ]
        if self.lower is not None:
            found.append(self.lower.next_page(page_no))
        pages = [p for p in found if p is not None]
        return min(pages) if pages else None

    def backlog(self) -> tuple[int, int]:
        """(log records, superseded versions) left for GC: for status and the soak."""
        with self.env.begin() as txn:
            return txn.stat(self.log_db)["entries"], txn.stat(self.superseded_db)["entries"]

    def counts(self) -> tuple[int, int]:
        with self.env.begin() as txn:
            return txn.stat(self.log_db)["entries"], txn.stat(self.versions_db)["entries"]


def _open_env(path: Path, map_size_bytes: int, readonly: bool = False) -> lmdb.Environment:
    if path.exists() and not path.is_dir():
        raise DataFormatError(f"{path}: not a directory; give a storage node a data directory")
    if readonly and not path.is_dir():
        raise DataFormatError(f"{path}: no storage node directory there")
    path.mkdir(parents=True, exist_ok=True)
    # Read-only too: a reader registers in the lock file, so the writing process keeps the
    # pages it reads.
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise DataFormatError(f"{path}: data directory is not readable and writable by this user")
    try:
        return lmdb.open(
            str(path),
            map_size=map_size_bytes,
            max_dbs=8,
            sync=True,
            metasync=True,
            readahead=False,
            max_readers=256,
            readonly=readonly,
        )
    except lmdb.Error as exc:
        raise DataFormatError(f"{path}: cannot open as an LMDB data directory: {exc}") from exc


def _parse_int(raw: bytes, path: Path) -> int:
    try:
        return int(raw.decode())
    except (UnicodeDecodeError, ValueError) as exc:
        raise DataFormatError(f"{path}: unreadable metadata value {raw[:32]!r}") from exc


def _put_version(
    txn: lmdb.Transaction, page_no: int, lsn: int, image: bytes, db: object = None
) -> None:
    assert len(image) == PAGE_SIZE_BYTES
    kwargs = {"db": db} if db is not None else {}
    txn.put(page_key(page_no, lsn), image + _CRC.pack(crc32c(image)), **kwargs)


def _version_lsns_below(cursor: lmdb.Cursor, page_no: int, lsn: int) -> list[int]:
    """The LSNs of page `page_no`'s versions below `lsn` (a cursor on the versions)."""
    found = []
    if not cursor.set_range(page_key(page_no, 0)):
        return found
    for key in cursor.iternext(keys=True, values=False):
        key_page, version_lsn = _PAGE_LSN.unpack(key)
        if key_page != page_no or version_lsn >= lsn:
            break
        found.append(version_lsn)
    return found


def _version_lsn_above(cursor: lmdb.Cursor, page_no: int, lsn: int) -> int | None:
    """The LSN of page `page_no`'s first version above `lsn`, if any."""
    if not cursor.set_range(page_key(page_no, lsn + 1)):
        return None
    key_page, version_lsn = _PAGE_LSN.unpack(cursor.key())
    return version_lsn if key_page == page_no else None


def _next_page(cursor: lmdb.Cursor, page_no: int) -> int | None:
    """The first page at or above `page_no` with a key under the cursor (versions or the
    page index, both keyed page + LSN)."""
    if not cursor.set_range(page_key(page_no, 0)):
        return None
    return int(_PAGE_LSN.unpack(cursor.key())[0])


def _put_points(txn: lmdb.Transaction, scl: int, cpl: int, db: object = None) -> None:
    kwargs = {"db": db} if db is not None else {}
    txn.put(b"scl", str(scl).encode(), **kwargs)
    txn.put(b"cpl_at_scl", str(cpl).encode(), **kwargs)


def _range_tuple(r: TruncationRange) -> tuple[int, int, int]:
    return r.epoch, r.after_lsn, r.through_lsn


def _verified(value: bytes, lsn: int) -> RedoRecord | CorruptRecordError:
    try:
        record = decode_record(bytes(value))
    except CorruptRecordError as exc:
        return StoredCorruptionError(f"stored record at LSN {lsn} is corrupt: {exc}", lsn)
    if record.lsn != lsn:
        return StoredCorruptionError(
            f"stored record under key LSN {lsn} says LSN {record.lsn}", lsn
        )
    return record


def _crc_intact(value: bytes) -> bool:
    """Whether a stored record's CRC32C matches its bytes (no full decode)."""
    return (
        len(value) >= RECORD_OVERHEAD_BYTES
        and crc32c(value[:-4]) == _CRC.unpack_from(value, len(value) - 4)[0]
    )


def _page_of_verified(value: bytes, lsn: int) -> int:
    """A stored record's page number, after checking its CRC (no full decode)."""
    if not _crc_intact(value):
        raise StoredCorruptionError(f"stored record at LSN {lsn} is corrupt: CRC32C mismatch", lsn)
    return peek_page_no(value)


def _raise_if_corrupt(record: RedoRecord | CorruptRecordError) -> RedoRecord:
    if isinstance(record, CorruptRecordError):
        raise record
    return record


def _verified_image(value: bytes, page_no: int, lsn: int) -> bytes:
    image, (crc,) = value[:-4], _CRC.unpack(value[-4:])
    if len(image) != PAGE_SIZE_BYTES or crc32c(image) != crc:
        raise StoredCorruptionError(
            f"stored version of page {page_no} at LSN {lsn} is corrupt", lsn, page_no
        )
    return bytes(image)
