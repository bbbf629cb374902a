"""Page-index entries a node keeps in memory until it writes them to LMDB in one go.

The page index (`page_log`: page, then LSN) finds a page's records. Written at every commit,
a batch that touches 64 pages dirtied 64 of its leaves, scattered over the tree, and LMDB
writes each dirtied 4 KiB page in full: 7 KB per record (of 600 bytes of data) on each
node, and the commit's fsync waited for all of it (docs/BENCHMARKS.md, "The in-process
writer is held back by the page index's writes"). So the entries of records above a
frontier stored in the meta database (`page_index_through`) wait here, and go to LMDB
together, in the transaction of a later commit or of the background cycle: a page's leaf
is written once for many of its records.

Every record in the log above the frontier has its entry here or in LMDB, so a start reads
the log above the frontier to rebuild this (the bound keeps that short). A record too damaged
to name its page is `unplaced`: reading any page across its LSN fails, as reading the record
itself would, until a good copy replaces it, and the frontier stays below it.

A `PendingIndex` is never changed once made: a change makes another, so a reader keeps the
one it took with its LMDB snapshot (storage_node/store.py takes both under one lock).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

# Records whose entries wait here at most: the commit that finds this many writes them all.
PAGE_INDEX_PENDING_RECORDS_MAX = 2_048


@dataclass(frozen=True)
class PendingIndex:
    """Page -> LSNs (ascending) of stored records whose page-index entries are not in LMDB."""

    pages: dict[int, tuple[int, ...]] = field(default_factory=dict)
    records: int = 0
    unplaced: frozenset[int] = frozenset()  # LSNs of damaged records above the frontier

    @cached_property
    def _sorted_pages(self) -> tuple[int, ...]:
        return tuple(sorted(self.pages))

    def lsns(self, page_no: int, after: int, through: int) -> tuple[int, ...]:
        """The page's LSNs in (after, through]."""
        lsns = self.pages.get(page_no, ())
        return lsns[bisect.bisect_right(lsns, after) : bisect.bisect_right(lsns, through)]

    def unplaced_in(self, after: int, through: int) -> list[int]:
        """The unplaced LSNs in (after, through], ascending: a page read across one cannot
        be complete."""
        return sorted(lsn for lsn in self.unplaced if after < lsn <= through)

    def next_page(self, page_no: int) -> int | None:
        """The first page at or above `page_no` with an entry here."""
        pages = self._sorted_pages
        i = bisect.bisect_left(pages, page_no)
        return pages[i] if i < len(pages) else None

    def page_of(self, lsn: int) -> int | None:
        """The page whose entry names `lsn` (a damaged record's: rare, so a walk)."""
        return next((p for p, lsns in self.pages.items() if lsn in lsns), None)

    def entries(self) -> Iterable[tuple[int, int]]:
        """(page, LSN) of every entry."""
        for page_no, lsns in self.pages.items():
            for lsn in lsns:
                yield page_no, lsn

    def with_entries(self, entries: Iterable[tuple[int, int]]) -> PendingIndex:
        """This one and `entries` (page, LSN); an entry already here is not added twice."""
        pages = dict(self.pages)
        records = self.records
        for page_no, lsn in entries:
            lsns = pages.get(page_no, ())
            if not lsns or lsn > lsns[-1]:  # the usual case: records come in LSN order
                pages[page_no] = (*lsns, lsn)
            elif lsn not in lsns:
                i = bisect.bisect_left(lsns, lsn)
                pages[page_no] = (*lsns[:i], lsn, *lsns[i:])
            else:
                continue
            records += 1
        return PendingIndex(pages, records, self.unplaced)

    def with_unplaced(self, lsns: Iterable[int]) -> PendingIndex:
        return PendingIndex(self.pages, self.records, self.unplaced | frozenset(lsns))

    def placed(self, lsns: Iterable[int]) -> PendingIndex:
        """This one with `lsns` no longer unplaced (a good copy of each was stored)."""
        return PendingIndex(self.pages, self.records, self.unplaced - frozenset(lsns))

    def without(self, lsns: Iterable[int]) -> PendingIndex:
        """This one with no entry, and no unplaced record, at any of `lsns`."""
        gone = set(lsns)
        if not gone:
            return self
        pages = {}
        records = 0
        for page_no, page_lsns in self.pages.items():
            kept = tuple(x for x in page_lsns if x not in gone)
            if kept:
                pages[page_no] = kept
                records += len(kept)
        if records == self.records and self.unplaced.isdisjoint(gone):
            return self  # none of them here: unchanged (a commit then need not wait)
        return PendingIndex(pages, records, self.unplaced - gone)

    def written(self) -> PendingIndex:
        """What is left once every entry went to LMDB: the unplaced records."""
        return PendingIndex({}, 0, self.unplaced)
