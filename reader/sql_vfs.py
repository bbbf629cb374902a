"""The reader's SQLite database file: pages of the volume at a pinned read point (P18 §3).

A read transaction pins the reader's read point when SQLite takes its SHARED lock and keeps
it until the lock is dropped, so every page of the transaction comes from one consistent
point at or below VDL. Page 1's change counter is stamped with the read point, so SQLite
empties its own page cache whenever the point has moved (sixfold/sql/layout.py).

Pages are kept in a bounded cache keyed by page and the read point they were built at. A
cached page is brought forward to a newer point by applying only the page's records between
the two points, fetched from one node that holds them all; it is read whole again when no
node can serve that, or when the node may have coalesced records the range needs.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from dataclasses import dataclass

import apsw

from sixfold.core.errors import NotServingError, ReadOnlyError, SixfoldError
from sixfold.core.page import apply_records
from sixfold.core.record import decode_record
from sixfold.page_reader import READ_TIMEOUT_S
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.sql import layout as sql_layout
from sixfold.sql.engine import VolumeFileBase, call_in_loop
from sixfold.sql.layout import SQL_PAGE_BYTES, sqlite_page_at, volume_page

PAGE_CACHE_PAGES = 16_384  # page images a reader keeps (64 MiB)
FORWARD_RECORDS_MAX = 1_024  # more records than this for one page: read it whole instead


@dataclass(frozen=True, slots=True)
class CachedPage:
    read_point: int  # the point the image is correct at
    page_lsn: int  # its newest change at or below that point
    image: bytes


class ReaderVolume:
    """Pages at read points, shared by the reader's SQLite connections (each on a thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reader) -> None:
        self.loop = loop
        self.reader = reader
        self.cache: OrderedDict[int, CachedPage] = OrderedDict()
        self.mutex = threading.Lock()  # the cache is used from several SQL threads
        self.pins: dict[int, int] = {}  # id(file) -> pinned read point
        self.forwarded = 0  # pages brought forward by applying records (for tests and bench)
        self.fetched = 0  # pages read whole

    def current_point(self) -> tuple[int, int]:
        if self.reader.epoch == 0:
            raise NotServingError(
                f"reader {self.reader.name} has no read point yet: no storage node has "
                "reported a durable point (is the writer up and recovered?)"
            )
        return self.reader.read_point, self.reader.epoch

    def lowest_pin(self) -> int | None:
        """The oldest read point a transaction still reads at: nodes must keep its pages."""
        with self.mutex:
            return min(self.pins.values(), default=None)

    def page(self, vpage: int, point: int, epoch: int) -> bytes:
        with self.mutex:
            cached = self.cache.get(vpage)
        if cached is not None and cached.read_point == point:
            return cached.image
        if cached is not None and cached.read_point < point:
            page = call_in_loop(self.loop, self._forward(vpage, cached, point, epoch))
        else:
            image, page_lsn = call_in_loop(self.loop, self.reader.pages.read(vpage, point, epoch))
            page = CachedPage(point, page_lsn, image)
            self.fetched += 1
        with self.mutex:
            current = self.cache.get(vpage)
            if current is None or current.read_point <= point:
                self.cache[vpage] = page
                self.cache.move_to_end(vpage)
            while len(self.cache) > PAGE_CACHE_PAGES:
                self.cache.popitem(last=False)
        return page.image

    async def _forward(self, vpage: int, cached: CachedPage, point: int, epoch: int) -> CachedPage:
        forwarded = await self._records_since(vpage, cached, point)
        if forwarded is not None:
            self.forwarded += 1
            return forwarded
        image, page_lsn = await self.reader.pages.read(vpage, point, epoch)
        self.fetched += 1
        return CachedPage(point, page_lsn, image)

    async def _records_since(self, vpage: int, cached: CachedPage, point: int) -> CachedPage | None:
        """The cached page with its records in (cached point, point] applied, or None."""
        pages = self.reader.pages
        for client in pages.covering_nodes(point):
            request = pb.ReadRecordsRequest(
                after_lsn=cached.read_point,
                through_lsn=point,
                max_records=FORWARD_RECORDS_MAX,
                page_no=vpage,
            )
            try:
                response = await client.read_records(request, timeout=READ_TIMEOUT_S)
            except SixfoldError:
                continue
            # Records at or below the node's GC horizon may have been folded into a version.
            if (
                response.gc_horizon > cached.read_point
                or len(response.records) >= FORWARD_RECORDS_MAX
            ):
                return None
            records = [decode_record(r) for r in response.records]  # CRC checked here too
            if not _chained(cached.page_lsn, records):
                return None
            image = apply_records(cached.image, records) if records else cached.image
            return CachedPage(point, records[-1].lsn if records else cached.page_lsn, image)
        return None


def _chained(page_lsn: int, records: list) -> bool:
    previous = page_lsn
    for record in records:
        if record.prev_page_lsn != previous:
            return False
        previous = record.lsn
    return True


class ReaderFile(VolumeFileBase):
    """SQLite's database file on a reader: read-only, at the read point its lock pinned."""

    def __init__(self, volume: ReaderVolume) -> None:
        self.volume = volume
        self.pinned: tuple[int, int] | None = None  # (read point, epoch)

    def xLock(self, level: int) -> None:
        if self.pinned is None and level >= apsw.SQLITE_LOCK_SHARED:
            self.pinned = self.volume.current_point()
            with self.volume.mutex:
                self.volume.pins[id(self)] = self.pinned[0]

    def xUnlock(self, level: int) -> None:
        if level == apsw.SQLITE_LOCK_NONE and self.pinned is not None:
            self.pinned = None
            with self.volume.mutex:
                self.volume.pins.pop(id(self), None)

    def _point(self) -> tuple[int, int]:
        return self.pinned or self.volume.current_point()

    def xRead(self, amount: int, offset: int) -> bytes:
        point, epoch = self._point()
        sqlite_page, start = sqlite_page_at(offset)
        if sqlite_page > self._db_pages(point, epoch):
            return b""
        image = self.volume.page(volume_page(sqlite_page), point, epoch)
        if sqlite_page == 1:
            image = sql_layout.stamp_read_point(image, point)
        return image[start : start + amount]

    def _db_pages(self, point: int, epoch: int) -> int:
        meta = self.volume.page(sql_layout.SQL_META_PAGE, point, epoch)
        return sql_layout.decode_commit_info(meta).db_pages

    def xFileSize(self) -> int:
        point, epoch = self._point()
        return self._db_pages(point, epoch) * SQL_PAGE_BYTES

    def xWrite(self, data: bytes, offset: int) -> None:
        raise ReadOnlyError("read-only: this is a reader; send writes to the writer")

    def xTruncate(self, newsize: int) -> None:
        raise ReadOnlyError("read-only: this is a reader; send writes to the writer")

    def xSync(self, flags: int) -> None:
        pass

    def xClose(self) -> None:
        self.xUnlock(apsw.SQLITE_LOCK_NONE)
