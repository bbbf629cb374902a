"""Coalescing and garbage collection on a real LMDB store: bounded steps, every read point
kept, and a log that drains whatever the restart history (issue 18)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.core.errors import StoredCorruptionError
from sixfold.core.log_cleanup import CoalesceStep, gc_horizon, plan_coalesce
from sixfold.core.page import until_nul
from sixfold.core.quorum import NODE_NAMES
from sixfold.core.record import Delta, RecordFlags, encode_deltas, encode_record
from storage_node.background import (
    BACKGROUND_INTERVAL_S,
    CoalescePace,
    CycleWork,
    background_cycle,
    coalesce_once,
    collect_garbage_once,
    horizon_of,
)
from storage_node.node import NodeLimits, StorageNode
from storage_node.store import NodeStore, lsn_key

PAGE = 5
PEERS = [n for n in NODE_NAMES if n != "a1"]
CYCLES_MAX = 500  # a drain that needs more is a bug, not slowness


def open_node(path: Path, **limits: int) -> StorageNode:
    node = StorageNode("a1", "a", path, map_size_bytes=64 << 20, limits=NodeLimits(**limits))
    node.state.peers_heard.update(PEERS)
    node.start()
    return node


async def write_log(node: StorageNode, pages: list[int], first_lsn: int = 1) -> int:
    """One record per entry of `pages`, each a CPL, VDL following; the last LSN."""
    last_of: dict[int, int] = {}
    lsn = first_lsn - 1
    if node.state.epoch == 0:
        await node.seal(1, "w")
        await node.truncate(1, (), 1)
    for lsn, page_no in enumerate(pages, start=first_lsn):
        record = encode_record(
            lsn=lsn,
            prev_volume_lsn=lsn - 1,
            prev_page_lsn=last_of.get(page_no, 0),
            page_no=page_no,
            epoch=1,
            flags=RecordFlags.CPL,
            payload=encode_deltas([Delta(0, f"p{page_no}v{lsn}\0".encode())]),
        )
        last_of[page_no] = lsn
        await node.append(1, [record], vdl=lsn)
    return lsn


async def drain(node: StorageNode) -> int:
    """Run background cycles until one does nothing; how many it took."""
    for cycle in range(CYCLES_MAX):
        work = await background_cycle(node, PEERS)
        if not (work.coalesced_records or work.versions_written or work.collected):
            return cycle
    raise AssertionError(f"the log did not drain in {CYCLES_MAX} cycles")


def test_coalesce_then_collect_garbage_keeps_every_read_point(tmp_path: Path) -> None:
    async def run() -> None:
        node = open_node(tmp_path / "a1", gc_keys_max=10)
        try:
            await write_log(node, [PAGE] * 40)
            assert node.store.counts() == (40, 0)
            node.note_read_point("r1", 30, time.monotonic())
            work = CycleWork()
            await coalesce_once(node, work)
            assert work.versions_written == 1 and node.coalesced_through == 40
            assert node.store.counts() == (40, 1)
            await collect_garbage_once(node, PEERS, work)
            assert work.collected == 0, "peers unknown: nothing goes"

            node.peer_scl.update({p: 40 for p in PEERS})
            assert horizon_of(node, time.monotonic(), PEERS) == 30  # held back by r1
            work = CycleWork()
            await collect_garbage_once(node, PEERS, work)
            assert work.collected == 0, "the only version is at 40, above the horizon"

            node.note_read_point("r1", 40, time.monotonic())
            total = 0
            for _ in range(10):  # bounded: at most gc_keys_max keys per step
                work = CycleWork()
                await collect_garbage_once(node, PEERS, work)
                assert work.collected <= 10
                total += work.collected
            assert total == 40 and node.store.counts() == (0, 1)
            image, page_lsn = node.page_at(PAGE, 40, 1)
            assert until_nul(image) == b"p5v40" and page_lsn == 40
        finally:
            await node.stop()

    asyncio.run(run())


def test_restarts_in_the_middle_of_coalescing_and_gc_leave_nothing_behind(tmp_path: Path) -> None:
    """The failure issue 18 found: after a restart the uncoalesced records below the SCL
    were never coalesced, and GC, stuck at the log's head, collected nothing ever after."""
    pages = [i % 50 for i in range(600)]  # 600 records over 50 pages

    async def run() -> None:
        node = open_node(tmp_path / "a1", coalesce_records_max=100, gc_keys_max=50)
        await write_log(node, pages)
        node.peer_scl.update({p: 600 for p in PEERS})
        for _ in range(3):  # part way: some coalesced, some collected
            await background_cycle(node, PEERS)
        assert 0 < node.coalesced_through < 600
        await node.stop()
        for restart in range(4):  # restarted again and again, each time mid-way
            node = open_node(tmp_path / "a1", coalesce_records_max=100, gc_keys_max=50)
            node.peer_scl.update({p: 600 for p in PEERS})
            for _ in range(2 + restart):
                await background_cycle(node, PEERS)
            await node.stop()
        node = open_node(tmp_path / "a1", coalesce_records_max=100, gc_keys_max=50)
        node.peer_scl.update({p: 600 for p in PEERS})
        try:
            await drain(node)
            records, versions = node.store.counts()
            assert records == 0, f"{records} records were never collected"
            assert versions == 50, "one version per page, the superseded ones dropped"
            assert node.store.backlog() == (0, 0)
            for page_no in range(50):
                image, page_lsn = node.page_at(page_no, 600, 1)
                assert page_lsn == 551 + page_no  # LSNs start at 1
                assert until_nul(image) == f"p{page_no}v{page_lsn}".encode()
        finally:
            await node.stop()

    asyncio.run(run())


def test_a_directory_from_before_the_frontier_drains_too(tmp_path: Path) -> None:
    """Written by a build that kept coalescing in memory: no stored frontier, records below
    the SCL never coalesced. The frontier starts at 0 and the whole log is coalesced."""

    async def run() -> None:
        node = open_node(tmp_path / "a1")
        await write_log(node, [i % 7 for i in range(200)])
        await node.stop()
        store = NodeStore(tmp_path / "a1", "a1", 64 << 20)
        with store.env.begin(write=True, db=store.meta_db) as txn:
            assert txn.get(b"coalesced_through") is None  # never coalesced here
        store.close()
        node = open_node(tmp_path / "a1")
        node.peer_scl.update({p: 200 for p in PEERS})
        try:
            await drain(node)
            assert node.store.counts() == (0, 7)
        finally:
            await node.stop()

    asyncio.run(run())


def test_an_idle_cycle_touches_nothing(tmp_path: Path) -> None:
    async def run() -> None:
        node = open_node(tmp_path / "a1")
        await write_log(node, list(range(300)))
        node.peer_scl.update({p: 300 for p in PEERS})
        try:
            await drain(node)
            work = await background_cycle(node, PEERS)
            assert (work.coalesced_records, work.versions_written, work.collected) == (0, 0, 0)
            assert not work.busy
        finally:
            await node.stop()

    asyncio.run(run())


# -- the pure rules -----------------------------------------------------------------------


@settings(max_examples=200)
@given(
    start=st.integers(0, 50),
    gaps=st.lists(st.integers(1, 5), max_size=30),
    point_offset=st.integers(-5, 120),
    limit=st.integers(1, 30),
)
def test_a_coalescing_step_covers_every_record_up_to_its_end(
    start: int, gaps: list[int], point_offset: int, limit: int
) -> None:
    lsns, lsn = [], start
    for gap in gaps:
        lsn += gap
        lsns.append(lsn)
    point = start + point_offset
    records = [(x, x % 4) for x in lsns][:limit]  # what the store hands over, at most `limit`
    step = plan_coalesce(start, point, records, limit)
    if point <= start:
        assert step is None
        return
    assert isinstance(step, CoalesceStep) and start < step.through <= point
    covered = [x for x in lsns if x <= step.through]
    # Every record up to the step's end was handed to it (none skipped), and its pages are
    # exactly theirs.
    assert [x for x, _ in records if x <= step.through] == covered
    assert set(step.pages) == {x % 4 for x in covered}


def test_the_gc_horizon_waits_for_every_peer_and_repair() -> None:
    assert gc_horizon(100, 90, [95, 99], []) == 90
    assert gc_horizon(80, 90, [95, 99], []) == 80  # never above the coalesced frontier
    assert gc_horizon(100, 90, None, []) == 0  # a peer not heard from may need anything
    assert gc_horizon(100, 90, [95, 99], [0, 40]) == 39  # a record awaiting repair at 40


def test_gc_keeps_a_damaged_record_until_a_version_below_the_horizon_covers_it(
    tmp_path: Path,
) -> None:
    """A damaged record below the coalescing frontier is held by its page's version at the
    end of its coalescing step, which may lie above the GC horizon: a read between the two
    still needs the record. GC dropped it at once, so such a read built the page without it
    (found by the simulator's GC check, issue 13). Now it stays, and the read fails its CRC
    check (and goes to another node) until the horizon passes that version."""

    async def run() -> None:
        node = open_node(tmp_path / "a1", coalesce_records_max=3)
        try:
            await node.seal(1, "w")
            await node.truncate(1, (), 1)
            for lsn in range(1, 7):  # page 5, each record writing bytes of its own
                record = encode_record(
                    lsn=lsn,
                    prev_volume_lsn=lsn - 1,
                    prev_page_lsn=lsn - 1,
                    page_no=PAGE,
                    epoch=1,
                    flags=RecordFlags.CPL,
                    payload=encode_deltas([Delta(lsn * 8, f"v{lsn}".encode())]),
                )
                await node.append(1, [record], vdl=lsn)
            for _ in range(2):  # two steps: versions at LSN 3 and LSN 6
                await coalesce_once(node, CycleWork())
            assert node.coalesced_through == 6
            with node.store.env.begin(write=True, db=node.store.log_db) as txn:
                stored = bytearray(txn.get(lsn_key(4)))
                stored[20] ^= 0x10
                txn.put(lsn_key(4), bytes(stored))
            st = node.state
            node.store.collect_garbage(5, 100, st.scl, st.completeness.cpl_at_scl)
            assert not node.store.has_record(3) and node.store.has_record(4)  # 3 is covered
            with pytest.raises(StoredCorruptionError):
                node.store.page_at(PAGE, 5)  # never the page without record 4
            node.store.collect_garbage(6, 100, st.scl, st.completeness.cpl_at_scl)
            assert not node.store.has_record(4)  # the version at 6 covers it now
            image, page_lsn = node.store.page_at(PAGE, 6)
            assert page_lsn == 6 and image[32:34] == b"v4"
        finally:
            await node.stop()

    asyncio.run(run())


def test_a_busy_gc_does_not_make_coalescing_run_more_often(tmp_path: Path) -> None:
    async def run() -> None:
        node = open_node(tmp_path / "a1", gc_keys_max=2)
        try:
            last = await write_log(node, [PAGE, PAGE + 1] * 5)
            pace = CoalescePace()
            first = await background_cycle(node, PEERS, pace)
            assert first.coalesced_records == last and not pace.last_step_full
            last = await write_log(node, [PAGE] * 3, first_lsn=last + 1)
            node.peer_scl.update({p: last for p in PEERS})
            node.peer_coalesced.update({p: last for p in PEERS})
            busy = await background_cycle(node, PEERS, pace)
            assert busy.collected and busy.busy, "GC filled its bound: the next cycle comes soon"
            assert busy.coalesced_records == 0, "but it does not coalesce again so soon"
            pace.stepped_at -= BACKGROUND_INTERVAL_S
            later = await background_cycle(node, PEERS, pace)
            assert later.coalesced_records == 3
        finally:
            await node.stop()

    asyncio.run(run())


def test_a_full_coalescing_step_is_followed_at_once() -> None:
    pace = CoalescePace()
    assert pace.due(100.0), "the first cycle coalesces"
    pace.stepped(100.0, full=True)
    assert pace.due(100.001)
    pace.stepped(100.001, full=False)
    assert not pace.due(100.001 + BACKGROUND_INTERVAL_S / 2)
    assert pace.due(100.001 + BACKGROUND_INTERVAL_S)
