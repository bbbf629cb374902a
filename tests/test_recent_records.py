"""Records held in memory for coalescing (storage_node/recent_records.py), and a coalescing
step that applies them as received instead of reading them back (storage_node/store.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sixfold.core.errors import StoredCorruptionError
from sixfold.core.page import until_nul
from sixfold.core.record import Delta, RecordFlags, RedoRecord, encode_deltas, encode_record
from sixfold.core.truncation import TruncationRange
from storage_node.recent_records import RecentRecords
from storage_node.store import NodeStore, lsn_key
from tests.test_background import open_node, write_log

PAGE = 5


def record(lsn: int, text: str = "") -> RedoRecord:
    return encode_record(
        lsn=lsn,
        prev_volume_lsn=lsn - 1,
        prev_page_lsn=0,
        page_no=PAGE,
        epoch=1,
        flags=RecordFlags.CPL,
        payload=encode_deltas([Delta(0, (text or f"v{lsn}").encode() + b"\0")]),
    )


def size(r: RedoRecord) -> int:
    return len(r.encoded) + len(r.payload)


def test_the_oldest_go_past_the_bound_and_a_record_stored_again_replaces_its_copy() -> None:
    one = size(record(1))
    held = RecentRecords(bytes_max=3 * one)
    held.add([record(1), record(2), record(3)])
    assert len(held) == 3 and held.bytes == 3 * one
    held.add([record(4)])
    assert held.get(1) is None and held.get(4) is not None, "the oldest went"
    again = record(3, "v3again")  # larger than the copy it replaces
    held.add([again])
    assert held.get(3) == again
    assert held.get(2) is None, "over the bound again: the oldest, 2, went"
    assert held.bytes == one + size(again)


def test_deleted_and_coalesced_records_are_forgotten() -> None:
    held = RecentRecords()
    held.add([record(lsn) for lsn in range(1, 7)])
    held.drop([2, 9])
    held.drop_through(4)
    assert [lsn for lsn in range(1, 7) if held.get(lsn)] == [5, 6]
    assert held.bytes == size(record(5)) + size(record(6))


def _damage(store: NodeStore, lsn: int) -> None:
    with store.env.begin(write=True, db=store.log_db) as txn:
        stored = bytearray(txn.get(lsn_key(lsn)))
        stored[-1] ^= 0x01  # its CRC no longer matches
        txn.put(lsn_key(lsn), bytes(stored))


def test_a_step_applies_held_records_and_reads_the_others_back(tmp_path: Path) -> None:
    async def run() -> None:
        node = open_node(tmp_path / "a1")
        try:
            last = await write_log(node, [PAGE] * 4)
            store = node.store
            assert all(store.recent.get(lsn) for lsn in range(1, last + 1)), "held once durable"
            _damage(store, 2)  # the disk's copy, after it was received intact
            read = store.read_coalesce_step(0, last, 100)
            assert read.step is not None and read.records == last
            (page_no, page_lsn, image), *_ = read.versions
            assert (page_no, page_lsn, until_nul(image)) == (PAGE, last, f"p{PAGE}v{last}".encode())
            # Not held any more (a restart, or the bound): the step reads the disk and finds
            # the damage, as before.
            store.recent.drop_through(last)
            with pytest.raises(StoredCorruptionError):
                store.read_coalesce_step(0, last, 100)
        finally:
            await node.stop()

    asyncio.run(run())


def test_a_truncated_record_is_forgotten_with_its_log_entry(tmp_path: Path) -> None:
    async def run() -> None:
        node = open_node(tmp_path / "a1")
        try:
            last = await write_log(node, [PAGE] * 4)
            await node.seal(2, "w2")
            cancel = TruncationRange(2, last - 2, last)  # the last two
            await node.truncate(2, (cancel,), 2)
            assert node.store.recent.get(last) is None and node.store.recent.get(1) is not None
        finally:
            await node.stop()

    asyncio.run(run())
