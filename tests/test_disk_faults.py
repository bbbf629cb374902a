"""Disk faults on one node of a real process cluster: detected by CRC, never served, repaired."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import lmdb
import pytest

from sixfold.core.errors import SixfoldError
from sixfold.core.page import until_nul
from sixfold.rpc import sixfold_pb2 as pb
from storage_node.store import NodeStore, lsn_key
from tests.conftest import LocalCluster

pytestmark = pytest.mark.processes
PAGE = 90


def damage(data_dir: Path, lsn: int, how: str) -> str:
    """Flip a bit in, or tear the tail off, the stored record at `lsn` (or its page version)."""
    env = lmdb.open(str(data_dir), max_dbs=8)
    try:
        with env.begin(write=True) as txn:
            log_db = env.open_db(b"log", txn=txn)
            value = txn.get(lsn_key(lsn), db=log_db)
            if value is not None:
                txn.put(lsn_key(lsn), _broken(value, how), db=log_db)
                return "record"
            versions = env.open_db(b"versions", txn=txn)
            cursor = txn.cursor(db=versions)
            for key, image in cursor:
                if int.from_bytes(key[:8], "big") == PAGE:
                    txn.put(key, _broken(image, how), db=versions)
                    return "version"
    finally:
        env.close()
    raise AssertionError(f"nothing stored for page {PAGE} at LSN {lsn}")


def _broken(value: bytes, how: str) -> bytes:
    if how == "torn":
        return value[: len(value) // 2]
    flipped = bytearray(value)
    flipped[len(flipped) // 2] ^= 0x10
    return bytes(flipped)


@pytest.mark.parametrize("how", ["flip", "torn"])
def test_damaged_record_is_never_served_and_is_repaired(
    local_cluster: LocalCluster, how: str
) -> None:
    c = local_cluster
    lsn = c.write(PAGE, "precious")
    c.wait_for(lambda: c.on_node("a1", lambda n: n.get_state()).scl >= lsn, "a1 to hold the write")
    c.kill("a1")
    what = damage(Path(c.layout.directory) / "a1", lsn, how)
    c.start("a1")

    def a1_page() -> str | None:
        request = pb.GetPageRequest(page_no=PAGE, lsn=lsn)
        try:
            response = c.on_node("a1", lambda n: n.get_page(request))
        except SixfoldError:
            return None  # refused (damaged, or not serving yet): never a wrong answer
        return until_nul(response.image).decode(errors="replace")

    deadline = time.monotonic() + 30
    while (text := a1_page()) != "precious":
        assert text is None, f"a1 served damaged {what} data: {text!r}"
        assert time.monotonic() < deadline, f"a1's damaged {what} was never repaired"
        time.sleep(0.2)
    assert c.read(PAGE) == "precious"


TAIL_PAGES = [91, 92, 93]


def test_a_node_that_lost_its_tail_gets_it_back_and_never_serves_without_it(
    local_cluster: LocalCluster,
) -> None:
    """a1 acknowledged a mini-transaction, then (killed) its disk lost those records while
    its stored SCL still covers them: what an OS that dropped unsynced writes would leave.
    Our node fsyncs before acknowledging, so this is simulated, not something it does."""
    c = local_cluster
    lsn = asyncio.run(c.write_async([(p, f"tail {p}") for p in TAIL_PAGES]))
    c.wait_for(lambda: c.on_node("a1", lambda n: n.get_state()).scl >= lsn, "a1 to hold it")
    c.kill("a1")
    store = NodeStore.of_stopped(Path(c.layout.directory) / "a1", "a1")
    try:
        lost = store.lose_tail(records=len(TAIL_PAGES))
    finally:
        store.close()
    assert lost.startswith(f"lost {len(TAIL_PAGES)} newest records"), lost
    c.start("a1")

    def a1_page(page: int) -> str | None:
        request = pb.GetPageRequest(page_no=page, lsn=lsn)
        try:
            response = c.on_node("a1", lambda n: n.get_page(request))
        except SixfoldError:
            return None  # refused (not complete that far, or not serving yet)
        return until_nul(response.image).decode(errors="replace")

    deadline = time.monotonic() + 30
    for page in TAIL_PAGES:
        while (text := a1_page(page)) != f"tail {page}":
            assert text is None, f"a1 served page {page} without its lost record: {text!r}"
            assert time.monotonic() < deadline, f"a1 never got page {page}'s record back"
            time.sleep(0.2)
    assert [c.read(p) for p in TAIL_PAGES] == [f"tail {p}" for p in TAIL_PAGES]


def test_a_node_behind_fills_in_past_a_peer_that_cannot_serve_a_range(
    local_cluster: LocalCluster,
) -> None:
    """a1's copy of a record is damaged below its coalescing frontier: its page versions hold
    the data, so it never repairs the record, and it cannot serve it to a peer. a2, down
    while the record was written, must fill its log from another peer, not wait on a1 for
    good (its SCL would hold back every node's GC, and a1's damaged record with it). Found
    by the state machine. (a2 being down also keeps every node from collecting the record.)"""
    c = local_cluster
    c.kill("a2")
    lsn = c.write(PAGE, "covered")
    for page in TAIL_PAGES:  # the writer trims its tail past `lsn`: a2 must gossip for it
        c.write(page, "later")
    c.wait_for(
        lambda: c.on_node("a1", lambda x: x.get_state()).coalesced_through >= lsn,
        "a1 to coalesce the write",
    )
    c.kill("a1")
    damage(Path(c.layout.directory) / "a1", lsn, "flip")
    c.start("a1")  # up first, so a2 finds it among its peers from its first gossip round
    c.wait_for(lambda: _scl(c, "a1") >= lsn, "a1 to serve again")
    c.start("a2")
    c.wait_for(lambda: _scl(c, "a2") >= lsn, "a2 to fill its log from a peer that can serve it")
    assert c.read(PAGE) == "covered"


def _scl(c: LocalCluster, name: str) -> int:
    try:
        return c.on_node(name, lambda n: n.get_state()).scl
    except SixfoldError:
        return -1  # not up yet
