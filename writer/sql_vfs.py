"""The writer's SQLite database file, on the volume: page writes in, redo records out.

SQLite writes a transaction's pages at commit, then syncs. The file keeps those writes in
memory; at xSync it turns each page into byte-range deltas against its previous version and
stages the whole transaction as one mini-transaction, whose last record (on the SQL meta
page, flagged CPL) carries the new database size and the commit time (P17 §4.1). xSync
waits for nothing, not even the event loop: the engine runs a group of transactions back to
back on the SQL thread, then, back on the loop, submits what they staged to the commit
pipeline in order (`submit_staged`), and answers each client once VDL has passed its commit
LSN (P17 §4.2.1). A staged page's image is the newest one for later transactions at once;
it gets its LSN when submitted. If a submission fails, it and every later staged commit are
undone here, and the engine reopens SQLite, whose cache still holds them.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sixfold.core.commit_log import PageWrite
from sixfold.core.errors import SixfoldError, SqlError
from sixfold.core.page import EMPTY_PAGE
from sixfold.core.record import RECORD_OVERHEAD_BYTES
from sixfold.core.redo_delta import DELTA_HEADER_BYTES, page_delta
from sixfold.sql import layout as sql_layout
from sixfold.sql.engine import VolumeFileBase, call_in_loop
from sixfold.sql.layout import SQL_PAGE_BYTES, CommitInfo, sqlite_page_at, volume_page

PAGE_CACHE_PAGES = 16_384  # page images the writer keeps (64 MiB); durable ones are evicted
TRANSACTION_PAGES_MAX = 16_384  # pages one SQL transaction may change (64 MiB of page writes)

# (volume page) -> (image, page LSN at or below VDL)
ReadPage = Callable[[int], Awaitable[tuple[bytes, int]]]
# (writes, page links of pages read from storage) -> (commit LSN, future resolved when durable)
SubmitCommit = Callable[[list[PageWrite], dict[int, int]], Awaitable[tuple[int, asyncio.Future]]]


@dataclass(slots=True)
class Commit:
    lsn: int
    durable: asyncio.Future  # resolves (on the event loop) once VDL has reached `lsn`


# A staged page's LSN until its commit is submitted: above every VDL, so never evicted.
UNSUBMITTED_LSN = 1 << 63


@dataclass(slots=True)
class StagedCommit:
    """One transaction's mini-transaction, staged by xSync, not yet submitted."""

    writes: list[PageWrite]
    links: dict[int, int]  # latest LSNs of its pages read from storage
    images: dict[int, bytes]  # volume page -> its new image
    before: dict[int, tuple[bytes, int] | None]  # the cache entries it replaced
    info: CommitInfo
    info_before: CommitInfo | None


class StagedCommitError(SixfoldError):
    """Submitting a staged commit failed; `submitted` are those before it, which stand."""

    def __init__(self, submitted: list[Commit], error: Exception) -> None:
        super().__init__(str(error))
        self.submitted = submitted
        self.error = error


@dataclass(slots=True)
class ShippedCounters:
    """Redo shipped against what page shipping would have sent (issue 5's benchmark)."""

    commits: int = 0
    redo_bytes: int = 0  # encoded records, headers and CRCs included, as sent to each node
    changed_page_bytes: int = 0  # whole SQLite pages the same commits changed


def record_bytes(write: PageWrite) -> int:
    return RECORD_OVERHEAD_BYTES + sum(DELTA_HEADER_BYTES + len(d) for _, d in write.deltas)


class WriterVolume:
    """What survives a reopen of SQLite: page images, the size, the commits not yet answered."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        read_page: ReadPage,
        submit: SubmitCommit,
        durable_lsn: Callable[[], int],
    ) -> None:
        self.loop = loop
        self.read_page = read_page
        self.submit = submit
        self.durable_lsn = durable_lsn
        self.images: OrderedDict[int, tuple[bytes, int]] = OrderedDict()  # page -> (image, LSN)
        self.links: dict[int, int] = {}  # volume page -> latest LSN read from storage
        self.info: CommitInfo | None = None
        self.staged: list[StagedCommit] = []  # in commit order, submitted by the engine
        self.last_commit_lsn = 0  # the newest commit submitted: what a read may have seen
        self.failure: Exception | None = None  # why the last commit could not be staged
        self.shipped = ShippedCounters()

    def load(self) -> CommitInfo:
        if self.info is None:
            image, _ = self._fetch(sql_layout.SQL_META_PAGE)
            self.info = sql_layout.decode_commit_info(image)
        return self.info

    def page(self, sqlite_page: int) -> bytes:
        """The newest image of a page: written by this writer, or the durable one in storage."""
        vpage = volume_page(sqlite_page)
        cached = self.images.get(vpage)
        if cached is not None:
            self.images.move_to_end(vpage)
            return cached[0]
        image, lsn = self._fetch(vpage)
        self._remember(vpage, image, lsn)
        return image

    def _fetch(self, vpage: int) -> tuple[bytes, int]:
        image, lsn = call_in_loop(self.loop, self.read_page(vpage))
        self.links[vpage] = lsn
        return image, lsn

    def _remember(self, vpage: int, image: bytes, lsn: int) -> None:
        self.images[vpage] = (image, lsn)
        self.images.move_to_end(vpage)
        if len(self.images) <= PAGE_CACHE_PAGES:
            return
        durable = self.durable_lsn()
        # Only pages already durable may go: storage gives back the same image at VDL.
        for candidate, (_, lsn_) in list(self.images.items())[
            : len(self.images) - PAGE_CACHE_PAGES
        ]:
            if lsn_ <= durable:
                del self.images[candidate]
                self.links.pop(candidate, None)

    def commit(self, pending: dict[int, bytes], db_pages: int) -> None:
        """Stage one SQLite transaction as a mini-transaction (xSync, on the SQL thread)."""
        info = self.load()
        writes, images = self._page_writes(pending)
        new_info = CommitInfo(db_pages, time.time_ns() // 1000, info.commits + 1)
        if not writes and db_pages == info.db_pages:
            return  # nothing changed: no record
        writes.append(PageWrite(sql_layout.SQL_META_PAGE, ((0, new_info.encode()),)))
        links = {p: self.links[p] for p in {w.page_no for w in writes} if p in self.links}
        before = {vpage: self.images.get(vpage) for vpage in images}
        self.staged.append(StagedCommit(writes, links, images, before, new_info, self.info))
        self.info = new_info
        for vpage, image in images.items():
            self._remember(vpage, image, UNSUBMITTED_LSN)

    async def submit_staged(self) -> list[Commit]:
        """Submit the staged commits in order (on the event loop).

        Raises StagedCommitError if one fails: it and every later one are undone here, and
        the caller must reopen SQLite."""
        commits: list[Commit] = []
        while self.staged:
            staged = self.staged[0]
            try:
                lsn, durable = await self.submit(staged.writes, staged.links)
            except Exception as exc:
                self._undo_staged()
                raise StagedCommitError(commits, exc) from None
            del self.staged[0]
            self.last_commit_lsn = lsn
            for vpage, image in staged.images.items():
                cached = self.images.get(vpage)
                if cached is not None and cached[0] is image:  # not replaced by a later one
                    self.images[vpage] = (image, lsn)
            commits.append(Commit(lsn, durable))
            self.shipped.commits += 1
            self.shipped.redo_bytes += sum(record_bytes(w) for w in staged.writes)
            self.shipped.changed_page_bytes += len(staged.images) * SQL_PAGE_BYTES
        return commits

    def _undo_staged(self) -> None:
        """Forget every staged commit: the cache goes back to what was submitted."""
        for staged in reversed(self.staged):
            for vpage, entry in staged.before.items():
                if entry is None:
                    self.images.pop(vpage, None)
                else:
                    self.images[vpage] = entry
            self.info = staged.info_before
        self.staged.clear()

    def _page_writes(self, pending: dict[int, bytes]) -> tuple[list[PageWrite], dict[int, bytes]]:
        if len(pending) > TRANSACTION_PAGES_MAX:
            raise SqlError(
                f"the transaction changes {len(pending)} pages, more than TRANSACTION_PAGES_MAX="
                f"{TRANSACTION_PAGES_MAX}: split it into smaller transactions"
            )
        writes, images = [], {}
        for sqlite_page in sorted(pending):
            new = pending[sqlite_page]
            old = self.page(sqlite_page) if sqlite_page <= self._known_pages() else None
            if old is None:
                old = self._old_beyond_end(sqlite_page)
            ranges = page_delta(old, new)
            if not ranges:
                continue
            vpage = volume_page(sqlite_page)
            writes.append(PageWrite(vpage, ranges))
            images[vpage] = new
        return writes, images

    def _known_pages(self) -> int:
        return self.load().db_pages

    def _old_beyond_end(self, sqlite_page: int) -> bytes:
        """A page past the database's end: its old bytes in storage (it may have shrunk)."""
        vpage = volume_page(sqlite_page)
        cached = self.images.get(vpage)
        if cached is not None:
            return cached[0]
        image, _ = self._fetch(vpage)
        return image if image else EMPTY_PAGE


class WriterFile(VolumeFileBase):
    """SQLite's main database file on the writer. Writes wait in `pending` until xSync."""

    def __init__(self, volume: WriterVolume) -> None:
        self.volume = volume
        self.pending: dict[int, bytes] = {}
        self.db_pages = volume.load().db_pages

    def xRead(self, amount: int, offset: int) -> bytes:
        sqlite_page, start = sqlite_page_at(offset)
        if sqlite_page > self.db_pages:
            return b""  # past the end: SQLite reads this as a short read of zeros
        image = self.pending.get(sqlite_page) or self.volume.page(sqlite_page)
        return image[start : start + amount]

    def xWrite(self, data: bytes, offset: int) -> None:
        sqlite_page, start = sqlite_page_at(offset)
        if start != 0 or len(data) != SQL_PAGE_BYTES:  # only the header is ever partial
            page = bytearray(
                self.xRead(SQL_PAGE_BYTES, offset - start).ljust(SQL_PAGE_BYTES, b"\0")
            )
            page[start : start + len(data)] = data
            data = bytes(page)
        self.pending[sqlite_page] = bytes(data)
        self.db_pages = max(self.db_pages, sqlite_page)

    def xTruncate(self, newsize: int) -> None:
        self.db_pages = newsize // SQL_PAGE_BYTES
        for sqlite_page in [p for p in self.pending if p > self.db_pages]:
            del self.pending[sqlite_page]

    def xFileSize(self) -> int:
        return self.db_pages * SQL_PAGE_BYTES

    def xSync(self, flags: int) -> None:
        pending, self.pending = self.pending, {}
        try:
            self.volume.commit(pending, self.db_pages)
        except Exception as exc:
            self.volume.failure = exc  # the engine reports it and reopens SQLite
            self.db_pages = self.volume.load().db_pages
            raise

    def xClose(self) -> None:
        self.pending.clear()  # a transaction never synced never reached storage
