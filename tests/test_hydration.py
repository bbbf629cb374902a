"""Hydration (sixfold/core/hydration.py): a node that lost its disk rebuilds its segment from
its peers' page images, resumes after a crash, and stores nothing malformed."""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path

import pytest

from sixfold.core.checksum import crc32c
from sixfold.core.errors import CorruptPageImageError, SixfoldError
from sixfold.core.gossip_round import (
    FinishHydration,
    GossipLimits,
    GossipRound,
    NotePeers,
    StoreImages,
)
from sixfold.core.hydration import (
    HydratedPage,
    HydrationProgress,
    PageImages,
    check_images,
    hydration_sources,
    hydration_target,
)
from sixfold.core.node_requests import GetState, ReadPageImages, ReadRecords
from sixfold.core.page import EMPTY_PAGE, until_nul
from sixfold.core.quorum import NODE_NAMES
from sixfold.core.recovery import SegmentReport
from sixfold.core.segment import SegmentState
from sixfold.node_calls import page_images_of
from sixfold.rpc import sixfold_pb2 as pb
from storage_node.store import NodeStore
from tests.conftest import LocalCluster

PEERS = NODE_NAMES[1:]


def _serving(name: str = "a1") -> SegmentState:
    st = SegmentState(name)
    for peer in PEERS:
        st.heard_from(peer)
    return st


def _peer(name: str, scl: int, horizon: int, coalesced: int) -> SegmentReport:
    return SegmentReport(
        name, 1, scl, scl, scl, (), 0, gc_horizon=horizon, coalesced_through=coalesced
    )


def _page(page_no: int, lsn: int = 5) -> HydratedPage:
    return HydratedPage(page_no, lsn, EMPTY_PAGE)


# -- the rules --------------------------------------------------------------------------------


def test_a_node_hydrates_only_when_no_peer_ahead_holds_the_records_above_its_scl() -> None:
    st = _serving()
    collected = [_peer(p, 100, 60, 80) for p in PEERS]
    assert hydration_target(st, collected) == 80  # the highest frontier ahead of it
    assert hydration_sources(st, collected, 80) == list(PEERS)
    # One peer still holds the log above 0: gossip catches the node up from it instead.
    holding = [*collected[:-1], _peer(PEERS[-1], 100, 0, 80)]
    assert hydration_target(st, holding) is None
    # ... unless that peer is not ahead (two nodes lost their disks): it cannot help.
    stuck = [*collected[:-1], _peer(PEERS[-1], 0, 0, 0)]
    assert hydration_target(st, stuck) == 80
    assert PEERS[-1] not in hydration_sources(st, stuck, 80)
    # Not before its truncations are in sync with its peers (not serving).
    assert hydration_target(SegmentState("a1"), collected) is None


def test_a_peer_cannot_source_pages_below_its_horizon_or_above_its_scl() -> None:
    st = _serving()
    peers = [_peer("a2", 100, 90, 95), _peer("b1", 70, 10, 60), _peer("b2", 100, 10, 80)]
    assert hydration_sources(st, peers, 80) == ["b2"]


def test_malformed_page_images_are_refused_before_anything_is_stored() -> None:
    good = PageImages((_page(3), _page(7)), next_page=8, done=False)
    asked = HydrationProgress(80, next_page=3)
    check_images(good, asked, 2, "b1")
    bad = [
        PageImages((_page(3), _page(3)), 8, False),  # not in page order
        PageImages((_page(2),), 8, False),  # below the asked page
        PageImages((HydratedPage(3, 5, b"short"),), 8, False),  # not a whole page
        PageImages((_page(3), _page(7), _page(9)), 10, False),  # more than asked
        PageImages((_page(3), _page(7)), 7, False),  # next page goes back
        PageImages((_page(3, lsn=81),), 8, False),  # changed after the target
        PageImages((_page(3, lsn=0),), 8, False),  # never changed: not a page to send
    ]
    for images in bad:
        with pytest.raises(CorruptPageImageError):
            check_images(images, asked, 2, "b1")
    wire = pb.ReadPageImagesResponse(
        pages=[pb.PageImageEntry(page_no=1, page_lsn=2, image=EMPTY_PAGE, crc32c=1)]
    )
    with pytest.raises(CorruptPageImageError, match="CRC32C"):
        page_images_of("b1", wire)
    wire.pages[0].crc32c = crc32c(EMPTY_PAGE)
    assert page_images_of("b1", wire).pages == (HydratedPage(1, 2, EMPTY_PAGE),)


def _round(st: SegmentState, peers: list[SegmentReport], progress: HydrationProgress | None):
    """Drive one gossip round; answer its page-image requests from a fake 5-page volume."""
    machine = GossipRound(list(PEERS), GossipLimits(100, 4))
    steps = machine.run(st, [], progress)
    asked, local = [], []
    answer: object = None
    by_name = {p.name: p for p in peers}
    try:
        while True:
            step = steps.send(answer)
            answer = None
            if isinstance(step, dict):
                answer = {}
                for peer, request in step.items():
                    if isinstance(request, GetState):
                        answer[peer] = by_name.get(peer, SixfoldError("down"))
                    elif isinstance(request, ReadPageImages):
                        asked.append((peer, request))
                        pages = tuple(_page(p) for p in range(request.from_page, 5))
                        pages = pages[: request.pages_max]
                        nxt = pages[-1].page_no + 1 if pages else 5
                        answer[peer] = PageImages(pages, nxt, nxt >= 5, 5)
                    else:
                        assert isinstance(request, ReadRecords), request
                        answer[peer] = ()
            elif not isinstance(step, NotePeers):
                local.append(step)
    except StopIteration as done:
        return done.value, asked, local


def test_a_round_copies_a_run_of_pages_and_finishes_when_the_source_has_no_more() -> None:
    st = _serving()
    peers = [_peer(p, 100, 60, 80) for p in PEERS]
    behind, asked, local = _round(st, peers, None)
    assert behind is True
    assert [r.at_lsn for _, r in asked] == [80] and asked[0][1].from_page == 0
    store, finish = local
    assert isinstance(store, StoreImages) and len(store.pages) == 5
    assert store.progress == HydrationProgress(80, 5, 5, 5 * len(EMPTY_PAGE), 5)
    assert finish == FinishHydration(80)


def test_a_stored_hydration_resumes_at_its_next_page_and_target() -> None:
    st = _serving()
    peers = [_peer(p, 200, 60, 150) for p in PEERS]  # the peers moved on meanwhile
    resumed = HydrationProgress(80, 3, 3, 3 * len(EMPTY_PAGE), 5)
    _, asked, local = _round(st, peers, resumed)
    assert (asked[0][1].at_lsn, asked[0][1].from_page) == (80, 3)
    assert local[0].progress.pages_done == 5 and local[-1] == FinishHydration(80)
    # A target no peer can build any more (all collected past it) starts over at a new one.
    moved = [_peer(p, 200, 120, 150) for p in PEERS]
    _, asked, _ = _round(st, moved, resumed)
    assert (asked[0][1].at_lsn, asked[0][1].from_page) == (150, 0)


def test_a_failing_source_is_skipped_for_the_next() -> None:
    st = _serving()
    peers = [_peer(p, 100, 60, 80) for p in PEERS]
    machine = GossipRound(list(PEERS), GossipLimits(100, 4))
    steps = machine.run(st, [], None)
    step = steps.send(None)
    step = steps.send({p.name: p for p in peers})
    while not isinstance(step, dict):
        step = steps.send(None)
    (first,) = step
    step = steps.send({first: SixfoldError("gone")})
    (second,) = step
    assert second != first


# -- the store ----------------------------------------------------------------------------------


def test_hydrated_images_and_progress_survive_a_reopen(tmp_path: Path) -> None:
    store = NodeStore(tmp_path / "a1", "a1", 1 << 26)
    image = bytes([7]) * len(EMPTY_PAGE)
    store.put_hydrated([(4, 50, image)], '{"target_lsn": 80}')
    store.close()
    store = NodeStore(tmp_path / "a1", "a1", 1 << 26)
    assert store.load_hydration() == '{"target_lsn": 80}'
    assert store.page_at(4, 80) == (image, 50)
    pages, next_page, done = store.page_images_at(80, 0, 10)
    assert (pages, next_page, done) == ([(4, 50, image)], 5, True)
    store.finish_hydration(80)
    meta = store.load_meta()
    assert (meta.scl, meta.cpl_at_scl, meta.gc_horizon, meta.coalesced_through) == (80, 0, 80, 80)
    assert store.load_hydration() is None
    store.close()


# -- a real cluster -------------------------------------------------------------------------------

PAGES = range(200, 240)


def _node_state(c: LocalCluster, name: str) -> pb.NodeState:
    return c.on_node(name, lambda n: n.get_state())


async def _raw_page_at(c: LocalCluster, node: str, page_no: int, lsn: int) -> bytes:
    from sixfold.clients import NodeClient

    client = NodeClient(node, c.layout.processes[node].address)
    try:
        return (await client.get_page(pb.GetPageRequest(page_no=page_no, lsn=lsn))).image
    finally:
        await client.close()


async def _page_at(c: LocalCluster, node: str, page_no: int, lsn: int) -> str:
    from sixfold.clients import NodeClient

    client = NodeClient(node, c.layout.processes[node].address)
    try:
        response = await client.get_page(pb.GetPageRequest(page_no=page_no, lsn=lsn))
    finally:
        await client.close()
    return until_nul(response.image).decode()


@pytest.mark.processes
def test_a_node_that_lost_its_disk_hydrates_from_peers_and_gc_resumes(
    local_cluster: LocalCluster,
) -> None:
    c = local_cluster
    for rnd in range(4):
        asyncio.run(c.write_async([(p, f"r{rnd}-{p}") for p in PAGES]))
    # Every node coalesces and collects the log: the records a1 would need are gone.
    c.wait_for(
        lambda: all(_node_state(c, n).gc_horizon > 0 for n in NODE_NAMES), "GC on every node"
    )
    c.kill("a1")
    shutil.rmtree(Path(c.layout.directory) / "a1")
    last = asyncio.run(c.write_async([(p, f"down-{p}") for p in PAGES[:10]]))
    c.start("a1")
    last = max(last, c.write(PAGES[0], "after"))

    def hydrated() -> bool:
        try:
            st = _node_state(c, "a1")
        except SixfoldError:
            return False  # not up yet
        return st.scl >= last and st.hydrating_to == 0 and st.gc_horizon > 0

    c.wait_for(hydrated, "a1 to hydrate and catch up")
    # a1 builds every page as a peer does, at the same LSN.
    at = _node_state(c, "a1").scl
    for p in PAGES:
        mine = asyncio.run(_page_at(c, "a1", p, at))
        assert mine == asyncio.run(_page_at(c, "b1", p, at)), f"page {p} differs on a1"
    assert asyncio.run(_page_at(c, "a1", PAGES[0], at)) == "after"
    # And the peers' GC, held back while a1 had nothing, passes its hydration point again.
    hydrated_to = _node_state(c, "a1").gc_horizon
    deadline = time.monotonic() + 30
    while _node_state(c, "b1").gc_horizon <= hydrated_to:
        assert time.monotonic() < deadline, "b1's GC never passed a1's hydration point"
        c.write(PAGES[1], "nudge")  # commits move the VDL, so coalescing and GC go on
        time.sleep(0.3)
    c.check_no_bug_logged()


@pytest.mark.processes
def test_a_hydration_killed_half_way_resumes_where_it_stopped(tmp_path: Path) -> None:
    from sixfold.tools.restartbench import load

    c = LocalCluster(tmp_path / "cluster")
    layout = c.layout
    layout.extra_args["node"] = ["--hydrate-mib-per-s", "2"]  # 16 MiB take 8 s
    layout.save()
    c.up()
    try:
        pages = (16 << 20) // len(EMPTY_PAGE)
        asyncio.run(load(c.layout, pages, pages))
        # Every peer's, not one's: a peer that has not collected its log yet lets a1 catch
        # up by gossip instead, and a1 never hydrates (a CI run saw it).
        c.wait_for(
            lambda: all(_node_state(c, n).records_stored == 0 for n in PEERS),
            "the logs to drain",
            120,
        )
        c.kill("a1")
        shutil.rmtree(Path(c.layout.directory) / "a1")
        c.start("a1")

        def progress() -> pb.NodeState | None:
            try:
                return _node_state(c, "a1")
            except SixfoldError:
                return None

        c.wait_for(
            lambda: (s := progress()) is not None and s.hydrated_pages >= 1024, "a1 half-way"
        )
        target = progress().hydrating_to
        c.kill("a1")  # SIGKILL mid-hydration
        c.start("a1")
        c.wait_for(lambda: (s := progress()) is not None and s.hydrating_to, "a1 to resume")
        resumed = progress()
        assert resumed.hydrating_to == target and resumed.hydrated_pages >= 1024  # not from 0
        c.wait_for(lambda: (s := progress()) is not None and s.gc_horizon >= target, "the end", 60)
        for page in (0, pages // 2, pages - 1):
            mine = asyncio.run(_raw_page_at(c, "a1", page, target))
            assert mine == asyncio.run(_raw_page_at(c, "b1", page, target)), page
    finally:
        c.down()
