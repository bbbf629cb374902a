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


def record(lsn: int, text: str = "", page: int = PAGE) -> RedoRecord:
    return encode_record(
        lsn=lsn,
        prev_volume_lsn=lsn - 1,
        prev_page_lsn=0,
        page_no=page,
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


def test_a_step_takes_held_records_yet_still_finds_damage_on_disk(tmp_path: Path) -> None:
    async def run() -> None:
        node = open_node(tmp_path / "a1")
        try:
            last = await write_log(node, [PAGE] * 4)
            store = node.store
            with store.env.begin() as txn:
                got = store._records_above(txn, 0, 100)
            assert [r.lsn for r in got] == list(range(1, last + 1))
            assert all(r is store.recent.get(r.lsn) for r in got), "the held copies, not decoded"
            store.write_page_index()  # coalescing stops at the index's frontier
            read = store.read_coalesce_step(0, last, 100)
            (page_no, page_lsn, image), *_ = read.versions
            assert (page_no, page_lsn, until_nul(image)) == (PAGE, last, f"p{PAGE}v{last}".encode())
            _damage(store, 2)  # on disk, after it came intact: the held copy no longer matches
            with pytest.raises(StoredCorruptionError, match="LSN 2"):
                store.read_coalesce_step(0, last, 100)
        finally:
            await node.stop()

    asyncio.run(run())


def test_a_truncated_record_is_forgotten_with_its_log_entry(tmp_path: Path) -> None:
    async def run() -> None:
        node = open_node(tmp_path / "a1")
        try:
            await node.seal(1, "w")
            await node.truncate(1, (), 1)
            for lsn in range(1, 5):  # the writer's VDL stays at 2: 3 and 4 are not durable yet
                await node.append(1, [record(lsn)], vdl=min(lsn, 2))
            await node.seal(2, "w2")
            await node.truncate(2, (TruncationRange(2, 2, 4),), 2)  # cancels 3 and 4
            held = node.store.recent
            assert [lsn for lsn in range(1, 5) if held.get(lsn)] == [1, 2]
        finally:
            await node.stop()

    asyncio.run(run())
