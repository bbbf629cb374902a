"""Where the SQL database lives on the volume, and the commit record that ends a transaction.

SQLite page n (1-based) is volume page SQL_PAGE_BASE + n. Volume page SQL_PAGE_BASE itself
is the SQL meta page: every SQL transaction ends with a record on it, flagged CPL, carrying
the database size in pages and the commit time. A reader learns the size of the database at
its read point from that page. Raw page writes (the page API) stay below SQL_PAGE_BASE.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from sixfold.core.errors import CorruptRecordError
from sixfold.core.record import PAGE_SIZE_BYTES

SQL_PAGE_BASE = 1 << 32
SQL_META_PAGE = SQL_PAGE_BASE
SQL_PAGE_BYTES = PAGE_SIZE_BYTES  # SQLite's page size on the volume: one volume page
SQLITE_DB_PAGES_MAX = (1 << 31) - 2  # SQLite's own limit on a database's pages

_META = struct.Struct("<4sIQQQ")
META_MAGIC = b"SXSQ"
META_VERSION = 1
# Bytes 24..27 and 92..95 of SQLite page 1: the file change counter and "version valid for".
CHANGE_COUNTER_OFFSETS = (24, 92)


@dataclass(frozen=True, slots=True)
class CommitInfo:
    """What the last record of a SQL transaction says about the database after it."""

    db_pages: int
    commit_time_us: int
    commits: int  # SQL transactions committed on this volume, this one included

    def encode(self) -> bytes:
        return _META.pack(
            META_MAGIC, META_VERSION, self.db_pages, self.commit_time_us, self.commits
        )


EMPTY_DATABASE = CommitInfo(db_pages=0, commit_time_us=0, commits=0)


def decode_commit_info(meta_page: bytes) -> CommitInfo:
    """The commit info on a meta page image; an all-zero page is an empty database."""
    magic, version, db_pages, commit_time_us, commits = _META.unpack_from(meta_page, 0)
    if magic == bytes(4) and not any(meta_page[: _META.size]):
        return EMPTY_DATABASE
    if magic != META_MAGIC or version != META_VERSION:
        raise CorruptRecordError(
            f"SQL meta page holds {magic!r} version {version}, not {META_MAGIC!r} version "
            f"{META_VERSION}: the volume was not written by this SQL layer"
        )
    return CommitInfo(db_pages, commit_time_us, commits)


def volume_page(sqlite_page: int) -> int:
    assert 1 <= sqlite_page <= SQLITE_DB_PAGES_MAX, sqlite_page
    return SQL_PAGE_BASE + sqlite_page


def sqlite_page_at(offset: int) -> tuple[int, int]:
    """(SQLite page number, offset within it) of a byte offset of the database file."""
    return offset // SQL_PAGE_BYTES + 1, offset % SQL_PAGE_BYTES


def stamp_read_point(page1: bytes, read_point: int) -> bytes:
    """Page 1 with its change counter set from the read point.

    The writer holds SQLite's lock in exclusive mode, so SQLite never moves the counter on
    commit. A reader's SQLite keeps its page cache while the counter is unchanged; deriving it
    from the read point makes every move of the read point empty that cache, so a read never
    mixes pages of two read points.
    """
    if len(page1) < 96:
        return page1
    stamp = (read_point % (1 << 32)).to_bytes(4, "big")
    page = bytearray(page1)
    for offset in CHANGE_COUNTER_OFFSETS:
        page[offset : offset + 4] = stamp
    return bytes(page)
