"""Page-index entries that wait in memory and go to LMDB together (storage_node/page_index.py),
on a real store (storage_node/store.py): reads see them, a start rebuilds them from the log,
and a reader's snapshot and the entries it takes always agree."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import lmdb
import pytest

from sixfold.core.errors import StoredCorruptionError
from sixfold.core.page import until_nul
from sixfold.core.record import RedoRecord
from sixfold.core.truncation import TruncationRange
from storage_node import page_index
from storage_node.page_index import PendingIndex
from storage_node.store import (
    FORMAT_VERSION,
    MAP_SIZE_BYTES_DEFAULT,
    NodeStore,
    lsn_key,
    page_key,
)
from tests.test_recent_records import record

READ_RACE_S = 2.0  # how long the reader races the writer


def open_store(path: Path) -> NodeStore:
    return NodeStore(path, "a1", MAP_SIZE_BYTES_DEFAULT)


def put(store: NodeStore, records: list[RedoRecord]) -> None:
    last = max(r.lsn for r in records)
    store.put_records(records, last, last, 0, 0)


def indexed_in_lmdb(store: NodeStore) -> set[tuple[int, int]]:
    with store.env.begin(db=store.page_log_db) as txn:
        return {page_index_key(k) for k in txn.cursor().iternext(keys=True, values=False)}


def page_index_key(key: bytes) -> tuple[int, int]:
    return int.from_bytes(key[:8], "big"), int.from_bytes(key[8:], "big")


def text_at(store: NodeStore, page: int, lsn: int) -> str:
    image, _ = store.page_at(page, lsn)
    return until_nul(image).decode()


def damage_page_no(path: Path, lsn: int) -> None:
    """Flip a bit of a stored record's page number: its CRC no longer matches."""
    env = lmdb.open(str(path), max_dbs=8)
    log_db = env.open_db(b"log")
    with env.begin(write=True, db=log_db) as txn:
        value = bytearray(txn.get(lsn_key(lsn)))
        value[33] ^= 0x01  # the page number is a u64 at offset 32
        txn.put(lsn_key(lsn), bytes(value))
    env.close()


def reopened_with_record_2_damaged(path: Path) -> tuple[NodeStore, RedoRecord]:
    """A store of records 1 and 3 (page 7) and 2 (page 8), none indexed in LMDB, reopened
    after record 2's page number rotted; with a good copy of record 2."""
    store = open_store(path)
    good = record(2, "b", page=8)
    put(store, [record(1, "a", page=7), good, record(3, "c", page=7)])
    store.close()
    damage_page_no(path, lsn=2)
    return open_store(path), good


# -- the pending entries alone --------------------------------------------------------------------


def test_pending_entries_are_ordered_deduplicated_and_never_changed_in_place() -> None:
    empty = PendingIndex()
    one = empty.with_entries([(7, 5), (7, 3), (9, 4), (7, 5)])
    assert one.lsns(7, 0, 10) == (3, 5) and one.records == 3
    assert one.lsns(7, 3, 5) == (5,) and one.lsns(7, 5, 10) == ()
    assert empty.records == 0 and empty.pages == {}, "a change makes another"
    assert [one.next_page(p) for p in (0, 8, 9, 10)] == [7, 9, 9, None]
    assert one.page_of(4) == 9 and one.page_of(6) is None
    two = one.with_unplaced([8]).without([3, 4])
    assert two.pages == {7: (5,)} and two.records == 1 and two.unplaced == {8}
    assert two.unplaced_in(7, 8) == [8] and two.unplaced_in(8, 20) == []
    assert two.written() == PendingIndex({}, 0, frozenset({8}))


# -- on a store -------------------------------------------------------------------------------


def test_records_are_read_through_waiting_entries_and_a_start_rebuilds_them(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path / "a1")
    put(store, [record(1, "a", page=7), record(2, "b", page=8)])
    put(store, [record(3, "c", page=7)])
    assert indexed_in_lmdb(store) == set(), "the entries wait in memory"
    assert text_at(store, 7, 3) == "c" and text_at(store, 7, 2) == "a"
    assert [r.lsn for r in store.read_records(0, 10, 10, page_no=7)] == [1, 3]
    assert store.next_page(8) == 8
    store.close()  # as a crash would: nothing written from memory
    store = open_store(tmp_path / "a1")
    assert store._pending.records == 3, "rebuilt from the log above the frontier"
    assert text_at(store, 7, 3) == "c" and text_at(store, 8, 3) == "b"
    assert store.write_page_index() == 3
    assert indexed_in_lmdb(store) == {(7, 1), (8, 2), (7, 3)}
    store.close()
    store = open_store(tmp_path / "a1")
    assert store._pending.records == 0 and store._index_through == 3
    assert text_at(store, 7, 3) == "c"
    store.close()


def test_a_record_at_or_below_the_frontier_is_indexed_at_once(tmp_path: Path) -> None:
    """Gossip fills a hole below records already indexed: its entry cannot wait, since a
    start reads only the log above the frontier."""
    store = open_store(tmp_path / "a1")
    put(store, [record(1, "a", page=7), record(3, "c", page=7)])
    store.write_page_index()
    put(store, [record(2, "b", page=7)])
    assert (7, 2) in indexed_in_lmdb(store)
    store.close()
    store = open_store(tmp_path / "a1")
    assert [r.lsn for r in store.read_records(0, 10, 10, page_no=7)] == [1, 2, 3]
    store.close()


def test_enough_waiting_entries_go_with_the_next_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("storage_node.store.PAGE_INDEX_PENDING_RECORDS_MAX", 4)
    store = open_store(tmp_path / "a1")
    put(store, [record(1, page=7), record(2, page=8)])
    put(store, [record(3, page=9)])
    assert indexed_in_lmdb(store) == set()
    put(store, [record(4, page=7)])  # the fourth: all four go in its transaction
    assert len(indexed_in_lmdb(store)) == 4 and store._pending.records == 0
    assert store._index_through == 4
    store.close()


def test_truncated_records_leave_no_waiting_entry(tmp_path: Path) -> None:
    store = open_store(tmp_path / "a1")
    put(store, [record(1, "a", page=7), record(2, "b", page=7), record(3, "c", page=7)])
    store.delete_truncated(TruncationRange(2, 1, 3))
    assert store._pending.lsns(7, 0, 10) == (1,)
    assert text_at(store, 7, 10) == "a"  # no index entry names a record that is gone
    store.close()


def test_a_damaged_record_above_the_frontier_fails_the_reads_across_it_until_repaired(
    tmp_path: Path,
) -> None:
    store, good = reopened_with_record_2_damaged(tmp_path / "a1")
    assert store._pending.unplaced == {2}
    with pytest.raises(StoredCorruptionError):
        store.page_at(7, 3)  # record 2 may be page 7's: unknown, so no page built across it
    assert text_at(store, 7, 1) == "a", "below it, reads go on"
    store.write_page_index()
    assert store._index_through == 1, "a start must find the damaged record again"
    store.put_repaired_record(good)
    assert text_at(store, 7, 3) == "c" and text_at(store, 8, 3) == "b"
    assert (8, 2) in indexed_in_lmdb(store) and not store._pending.unplaced
    store.close()


def test_a_damaged_record_dropped_for_gossip_no_longer_holds_the_frontier(
    tmp_path: Path,
) -> None:
    store, _ = reopened_with_record_2_damaged(tmp_path / "a1")
    store.delete_record(2)  # as a start does with a damaged record above the SCL
    assert not store._pending.unplaced
    store.write_page_index()
    assert store._index_through == 3
    assert text_at(store, 7, 3) == "c"
    store.close()


def test_a_reader_never_misses_a_record_its_snapshot_holds(tmp_path: Path) -> None:
    """Commits and the writes of waiting entries race reads in another thread: each read
    sees a page at least as new as the one before (a snapshot that holds a record but
    entries that lack it would go back)."""
    store = open_store(tmp_path / "a1")
    stop = threading.Event()
    seen: list[int] = []
    failures: list[BaseException] = []

    def read() -> None:
        try:
            while not stop.is_set():
                _, page_lsn = store.page_at(7, 1 << 40)
                assert not seen or page_lsn >= seen[-1], (seen[-1], page_lsn)
                seen.append(page_lsn)
        except BaseException as exc:  # reported by the test's thread
            failures.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    deadline = time.monotonic() + READ_RACE_S
    lsn = 0
    try:
        while time.monotonic() < deadline and not failures and lsn < 20_000:
            lsn += 1
            put(store, [record(lsn, page=7)])
            if lsn % 7 == 0:
                store.write_page_index()
    finally:
        stop.set()
        reader.join()
    assert not failures, failures[0]
    assert len(seen) > 10 and lsn > 10
    assert store.page_at(7, lsn)[1] == lsn
    store.close()


def test_no_commit_loses_the_waiting_entries_of_another_thread(tmp_path: Path) -> None:
    """A commit in another thread (the background's write of the waiting entries) sets the
    entries it read at the start of its transaction: read before the commit ahead of it had
    set its own, they would drop that one's entries, and its records with them."""
    store = open_store(tmp_path / "a1")
    stop = threading.Event()

    def write_index() -> None:
        while not stop.is_set():
            store.write_page_index()

    other = threading.Thread(target=write_index)
    other.start()
    lsn = 0
    deadline = time.monotonic() + READ_RACE_S
    try:
        while time.monotonic() < deadline and lsn < 20_000:
            lsn += 1
            put(store, [record(lsn, page=7)])
    finally:
        stop.set()
        other.join()
    in_lmdb = {x for page, x in indexed_in_lmdb(store) if page == 7}
    assert in_lmdb | set(store._pending.lsns(7, 0, lsn)) == set(range(1, lsn + 1))
    assert store.page_at(7, lsn)[1] == lsn
    store.close()


def test_a_version_1_directory_is_upgraded_with_its_frontier_stored(tmp_path: Path) -> None:
    """Version 1 indexed every record as it came. Upgraded, its frontier is stored at once:
    records appended after the upgrade and lost from memory by a crash are found again."""
    store = open_store(tmp_path / "a1")
    put(store, [record(1, "a", page=7), record(2, "b", page=7)])
    store.write_page_index()
    with store.env.begin(write=True, db=store.meta_db) as txn:  # as release 1 left it
        txn.delete(b"page_index_through")
        txn.put(b"format_version", b"1")
    store.close()
    store = open_store(tmp_path / "a1")
    assert store._index_through == 2 and store._pending.records == 0
    put(store, [record(3, "c", page=7)])
    store.close()  # as a crash would: record 3's entry only in memory
    store = open_store(tmp_path / "a1")
    assert text_at(store, 7, 3) == "c"
    with store.env.begin(db=store.meta_db) as txn:
        assert txn.get(b"format_version") == str(FORMAT_VERSION).encode()
    store.close()


def test_a_format_1_directory_with_a_frontier_keeps_it(tmp_path: Path) -> None:
    """A build between the two releases stored the frontier but wrote format 1: its entries
    waiting in memory when it stopped are found again from the log above that frontier."""
    store = open_store(tmp_path / "a1")
    put(store, [record(1, "a", page=7)])
    store.write_page_index()
    put(store, [record(2, "b", page=7)])  # waits in memory
    with store.env.begin(write=True, db=store.meta_db) as txn:
        txn.put(b"format_version", b"1")
    store.close()
    store = open_store(tmp_path / "a1")
    assert store._index_through == 1 and store._pending.lsns(7, 0, 9) == (2,)
    assert text_at(store, 7, 2) == "b"
    store.close()


def test_a_finished_hydration_drops_damaged_records_it_covers_and_moves_the_frontier(
    tmp_path: Path,
) -> None:
    store, _ = reopened_with_record_2_damaged(tmp_path / "a1")
    assert store._pending.unplaced == {2}
    store.finish_hydration(2)  # the images as of LSN 2 cover record 2
    assert not store._pending.unplaced and not store.has_record(2)
    assert store._index_through == 3 and store._pending.records == 0
    assert store.read_coalesce_step(2, 3, 100).step.through == 3
    store.close()


def test_the_frontier_moves_once_a_damaged_record_is_repaired_with_nothing_waiting(
    tmp_path: Path,
) -> None:
    store, good = reopened_with_record_2_damaged(tmp_path / "a1")
    store.write_page_index()
    assert store._index_through == 1 and store._pending.records == 0
    store.put_repaired_record(good)
    store.write_page_index()  # an idle volume: nothing waits, the frontier still moves
    assert store._index_through == 3
    store.close()


def test_coalescing_stops_at_the_frontier(tmp_path: Path) -> None:
    """A record above the frontier may be one too damaged to name its page: coalesced, GC
    would need its page from the index to drop it."""
    store = open_store(tmp_path / "a1")
    put(store, [record(1, "a", page=7), record(2, "b", page=7)])
    assert store.read_coalesce_step(0, 2, 100).step is None
    store.write_page_index()
    assert store.read_coalesce_step(0, 2, 100).step.through == 2
    store.close()


def test_every_damaged_record_across_a_read_fails_it(tmp_path: Path) -> None:
    store = open_store(tmp_path / "a1")
    good = record(2, "b", page=8)
    put(store, [record(1, "a", page=7), good, record(3, "c", page=9), record(4, "d", page=7)])
    store.close()
    damage_page_no(tmp_path / "a1", lsn=2)
    damage_page_no(tmp_path / "a1", lsn=3)
    store = open_store(tmp_path / "a1")
    assert store._pending.unplaced == {2, 3}
    put(store, [good])  # gossip brings a good copy of one of them
    assert store._pending.unplaced == {3}
    with pytest.raises(StoredCorruptionError):
        store.page_at(7, 4)  # record 3 is still unknown
    store.close()


def test_the_bound_is_named_with_its_unit() -> None:
    assert page_index.PAGE_INDEX_PENDING_RECORDS_MAX >= 64
    assert page_key(1, 2) < page_key(2, 1), "page first: a page's records lie together"
