"""Copy-on-write clones (issue 15): a clone starts as its source at a point, shares its pages,
and the two never see each other's writes; the source's GC keeps what the clone shares."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sixfold.clients import NodeClient
from sixfold.core.clones import CLONES_MAX, LowerLayer, hold_keeps
from sixfold.core.errors import CloneError, NotServingError
from sixfold.core.page import until_nul
from storage_node.background import background_cycle
from storage_node.node import StorageNode
from storage_node.store import NodeStore
from tests.conftest import LocalCluster
from tests.test_background import PEERS, open_node, write_log
from tests.test_backup import _restored

ROOT = Path(__file__).resolve().parent.parent
PAGES = 20
RECORDS = 300
POINT = 150  # the clone's point: half the records below it, half above


def expected_at(point: int) -> dict[int, bytes]:
    """Each page's text as of `point`, for write_log's records (record i on page i % PAGES)."""
    newest = {(lsn - 1) % PAGES: lsn for lsn in range(1, point + 1)}
    return {page: f"p{page}v{lsn}".encode() for page, lsn in newest.items()}


async def drain_all(node: StorageNode, peer_scl: int) -> None:
    node.peer_scl.update({p: peer_scl for p in PEERS})
    node.peer_coalesced.update({p: peer_scl for p in PEERS})
    for _ in range(200):
        work = await background_cycle(node, PEERS)
        if not (work.coalesced_records or work.versions_written or work.collected):
            return
    raise AssertionError("the log did not drain")


def test_the_rule_keeps_the_newest_version_at_or_below_each_hold() -> None:
    assert hold_keeps(10, 20, [15])
    assert hold_keeps(15, 20, [15])
    assert not hold_keeps(16, 20, [15]), "a version above the point is not the clone's"
    assert not hold_keeps(10, 15, [15]), "superseded at or below the point: not its image"
    assert not hold_keeps(10, 20, [])


@pytest.mark.parametrize("coalesced", ["below", "above"])
def test_a_hold_keeps_the_volume_at_its_point_through_coalescing_and_gc(
    tmp_path: Path, coalesced: str
) -> None:
    """The hold comes while coalescing is below the point (the step then ends at it) or past
    it (the hold writes the versions at the point); then GC passes the point, and the clone
    still reads every page as of the point."""
    source = tmp_path / "source" / "a1"
    pages = [i % PAGES for i in range(RECORDS)]

    async def build() -> None:
        node = open_node(source, coalesce_records_max=500, gc_keys_max=100)
        try:
            await write_log(node, pages[: POINT // 2])
            await drain_all(node, POINT // 2)  # part coalesced and collected before the hold
            await write_log(node, pages[POINT // 2 :], first_lsn=POINT // 2 + 1)
            if coalesced == "above":  # one step from 75 to 300; GC held at 75 by the peers
                await background_cycle(node, PEERS)
                assert node.coalesced_through == RECORDS
            assert node.gc_horizon == POINT // 2
            written = node.store.hold("c1", POINT)
            assert written == (PAGES if coalesced == "above" else 0)
            with pytest.raises(CloneError, match="already holds clone 'c1'"):
                node.store.hold("c1", POINT)
            await drain_all(node, RECORDS)
            assert node.coalesced_through == RECORDS and node.gc_horizon == RECORDS
            assert node.store.counts() == (0, 2 * PAGES), "the newest and the held versions"
        finally:
            await node.stop()

    asyncio.run(build())
    clone = NodeStore(tmp_path / "clone" / "a1", "a1", 64 << 20)
    clone.put_cloned(LowerLayer(str(source), "a1", POINT, "c1"))
    clone.close()
    clone = NodeStore(tmp_path / "clone" / "a1", "a1", 64 << 20)
    try:
        for page, text in expected_at(POINT).items():
            image, lsn = clone.page_at(page, POINT)
            assert until_nul(image) == text and lsn <= POINT
        images, _, done = clone.page_images_at(POINT, 0, 100)
        assert done and {p: until_nul(i) for p, _, i in images} == expected_at(POINT)
    finally:
        clone.close()

    async def release() -> None:
        store = NodeStore(source, "a1", 64 << 20)
        assert store.release("c1") == PAGES
        store.close()
        node = open_node(source, gc_keys_max=100)
        try:
            await drain_all(node, RECORDS)
            assert node.store.counts() == (0, PAGES), "released: only the newest versions"
        finally:
            await node.stop()

    asyncio.run(release())
    clone = NodeStore(tmp_path / "clone" / "a1", "a1", 64 << 20)
    try:
        with pytest.raises(NotServingError, match="no longer holds LSN 150 for clone 'c1'"):
            clone.page_at(0, POINT)
    finally:
        clone.close()


def test_a_hold_covers_records_below_the_gc_horizon_that_only_versions_above_it_cover(
    tmp_path: Path,
) -> None:
    """Coalescing went past the point in one step (versions at 3 and 4 only) while the GC
    horizon, held by the peers, stayed at 2: records 1 and 2 are covered only above the
    point. The hold must give them versions at or below it, or GC drops them."""
    source = tmp_path / "a1"

    async def run() -> None:
        node = open_node(source, coalesce_records_max=100, gc_keys_max=100)
        try:
            await write_log(node, [0, 1, 0, 1])
            node.peer_scl.update({p: 2 for p in PEERS})
            node.peer_coalesced.update({p: 2 for p in PEERS})
            await background_cycle(node, PEERS)
            assert node.coalesced_through == 4 and node.gc_horizon == 2
            assert node.store.hold("c", 2) == 2
            await drain_all(node, 4)
            assert node.gc_horizon == 4 and node.store.counts()[0] == 0
            lower = LowerLayer(str(source), "a1", 2, "c")
            images = {p: until_nul(node.store.page_held(p, lower)[0]) for p in (0, 1)}
            assert images == {0: b"p0v1", 1: b"p1v2"}
        finally:
            await node.stop()

    asyncio.run(run())


def test_a_hold_is_refused_where_the_node_cannot_keep_it(tmp_path: Path) -> None:
    async def run() -> None:
        node = open_node(tmp_path / "a1", gc_keys_max=100)
        try:
            await write_log(node, [i % PAGES for i in range(100)])
            node.store.hold("early", 50)  # nothing coalesced: no version needed
            assert not node.store.commit_coalesce([], 0, 100), "a step across a hold"
            node.store.release("early")
            with pytest.raises(CloneError, match=r"complete only to LSN 100, below .* 101"):
                node.store.hold("c", 101)
            await drain_all(node, 100)
            with pytest.raises(CloneError, match="collected garbage up to LSN 100, above"):
                node.store.hold("c", 50)
            for i in range(CLONES_MAX):
                node.store.hold(f"c{i}", 100)
            with pytest.raises(CloneError, match="the most a volume may have"):
                node.store.hold("one-more", 100)
            with pytest.raises(CloneError, match="clone id"):
                node.store.hold("../x", 100)
        finally:
            await node.stop()

    asyncio.run(run())


def sixfold(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "sixfold.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


@pytest.mark.processes
def test_a_clone_shares_the_volume_and_neither_sees_the_others_writes(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    c = local_cluster
    for page in range(1, 40):
        c.write(page, f"before {page}")
    into = tmp_path / "clone"
    src = str(c.directory)
    started = time.monotonic()
    out = sixfold("--dir", src, "clone", "--into", str(into), "--id", "test-clone")
    assert "clone test-clone in" in out and time.monotonic() - started < 60
    assert "test-clone  LSN" in sixfold("--dir", src, "clone", "--list")
    source_after = c.write(1, "source after the clone")
    clone = _restored(into)
    try:
        c.wait_for(clone.writer_ready, "the clone's writer")
        assert clone.read(1) == "before 1" and clone.read(39) == "before 39"
        clone.write(2, "clone's own")
        assert clone.read(2) == "clone's own" and c.read(2) == "before 2"
        assert c.read(1) == "source after the clone"
        # The source overwrites every page and its GC passes the clone's point: the clone
        # still reads its pages as of that point, from the versions the hold keeps.
        for page in range(1, 40):
            c.write(page, f"after {page}")
        last = c.write(40, "last")
        assert last > source_after
        c.wait_for(lambda: _gc_passed(c, last), "the source's GC to pass the clone's point")
        for reader in (None, "r1"):
            assert clone.read(3, reader) == "before 3"
        assert clone.read(2) == "clone's own" and c.read(3) == "after 3"
        grandchild = tmp_path / "clone-of-clone"
        sixfold("--dir", str(into), "clone", "--into", str(grandchild), "--id", "grandchild")
    finally:
        clone.down()
    refused = subprocess.run(
        [sys.executable, "-m", "sixfold.tools.cli", "clone", "--drop", str(into)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert refused.returncode == 1 and "is the source of clones grandchild" in refused.stderr
    assert "dropped" in sixfold("clone", "--drop", str(grandchild))
    with pytest.raises(AssertionError, match="is running"):
        clone.up()
        try:
            sixfold("clone", "--drop", str(into))
        finally:
            clone.down()
    assert "dropped" in sixfold("clone", "--drop", str(into))
    assert not into.exists()
    assert "no clone shares this volume" in sixfold("--dir", src, "clone", "--list")


def _gc_passed(c: LocalCluster, lsn: int) -> bool:
    async def horizons() -> list[int]:
        clients = [NodeClient(n, a) for n, a in c.layout.nodes.items()]
        try:
            states = await asyncio.gather(*(x.get_state(timeout=2.0) for x in clients))
            return [s.gc_horizon for s in states]
        finally:
            await asyncio.gather(*(x.close() for x in clients))

    return min(asyncio.run(horizons())) >= lsn
