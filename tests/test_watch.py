"""WatchState over real gRPC: nodes push their state, readers follow it (P18 §3)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from reader import reader as reader_module
from reader.reader import Reader
from sixfold.clients import NodeClient, NodeDownError, ReaderClient
from sixfold.core.errors import NotServingError, SixfoldError
from sixfold.core.quorum import READ_QUORUM
from sixfold.rpc import sixfold_pb2 as pb
from storage_node import service as service_module
from storage_node.node import StorageNode
from tests.conftest import LocalCluster
from tests.test_node_rpc import record, run_with_node, sealed

FOLLOW_LIMIT_S = 2.0  # how long a reader may take to reach a commit in these tests
STREAM_LIMIT_S = 5.0


async def next_state(stream, limit_s: float = STREAM_LIMIT_S) -> pb.NodeState:
    return await asyncio.wait_for(anext(stream), limit_s)


# -- one node in this process ---------------------------------------------------------------


def test_watch_sends_state_at_once_then_on_append(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        stream = client.watch_state("t1")
        first = await next_state(stream)
        assert (first.name, first.epoch, first.scl) == ("a1", 1, 0)
        r1 = record(1, 0, 7, b"one\0")
        await client.append(pb.AppendRequest(epoch=1, records=[r1.encoded], vdl=0))
        assert (await next_state(stream)).scl == 1
        # A bare VDL announcement moves only the learned VDL: that too is sent.
        await client.append(pb.AppendRequest(epoch=1, records=[], vdl=1))
        moved = await next_state(stream)
        assert (moved.scl, moved.vdl, moved.vdl_epoch) == (1, 1, 1)
        await stream.aclose()

    run_with_node(tmp_path / "a1", body)


def test_watch_sends_a_new_epoch(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        stream = client.watch_state("t1")
        assert (await next_state(stream)).epoch == 1
        await client.seal(2, "next-writer")
        assert (await next_state(stream)).epoch == 2
        await stream.aclose()

    run_with_node(tmp_path / "a1", body)


def test_watchers_beyond_the_bound_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(service_module, "WATCHERS_MAX", 2)

    async def body(client: NodeClient, node: StorageNode) -> None:
        streams = [client.watch_state(f"t{i}") for i in range(2)]
        for s in streams:
            await next_state(s)
        refused = client.watch_state("t3")
        with pytest.raises(SixfoldError, match="WATCHERS_MAX=2") as failure:
            await next_state(refused)
        assert not isinstance(failure.value, NodeDownError)
        await streams[0].aclose()  # a closed watch frees its place (once the node sees it)
        deadline = time.monotonic() + STREAM_LIMIT_S
        while True:
            again = client.watch_state("t4")
            try:
                await next_state(again)
                break
            except SixfoldError:
                assert time.monotonic() < deadline, "a closed watch did not free its place"
                await asyncio.sleep(0.01)
        for s in (streams[1], again):
            await s.aclose()

    run_with_node(tmp_path / "a1", body)


def test_watch_ends_cleanly_when_the_node_stops(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        stream = client.watch_state("t1")
        await next_state(stream)
        await node.stop()
        with pytest.raises(StopAsyncIteration):
            await next_state(stream)

    run_with_node(tmp_path / "a1", body)


def test_wait_read_point_above(tmp_path: Path) -> None:
    async def body() -> None:
        reader = Reader("t1", {})
        with pytest.raises(NotServingError, match="still below LSN 5"):
            await reader.wait_read_point_above(5, timeout=0.05)
        seen: list[tuple[int, int]] = []
        reader.add_read_point_listener(lambda epoch, point: seen.append((epoch, point)))
        moved = reader.read_point_moved
        waiting = asyncio.create_task(reader.wait_read_point_above(5, timeout=5))
        await asyncio.sleep(0.01)
        reader.advance([pb.NodeState(vdl_epoch=1, vdl=4)] * READ_QUORUM)
        assert moved.is_set() and not waiting.done()
        reader.advance([pb.NodeState(vdl_epoch=1, vdl=6)] * READ_QUORUM)
        assert await waiting == 6
        assert seen == [(1, 4), (1, 6)]

    asyncio.run(body())


# -- the whole cluster as processes ---------------------------------------------------------


async def _until(predicate, limit_s: float = STREAM_LIMIT_S, what: str = "") -> None:
    deadline = time.monotonic() + limit_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {limit_s} s waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.mark.processes
def test_watch_follows_a_write_through_the_writer(local_cluster: LocalCluster) -> None:
    c = local_cluster

    async def run() -> None:
        client = NodeClient("b1", c.layout.processes["b1"].address)
        stream = client.watch_state("t1")
        try:
            first = await next_state(stream)
            assert first.serving and first.epoch >= 1
            lsn = await c.write_async([(3, "watched")])
            state = first
            while state.scl < lsn or state.vdl < lsn:
                state = await next_state(stream)
            assert state.vdl_epoch == first.epoch
        finally:
            await stream.aclose()
            await client.close()

    asyncio.run(run())


@pytest.mark.processes
def test_reader_follows_a_write_promptly(local_cluster: LocalCluster) -> None:
    c = local_cluster

    async def run() -> None:
        client = ReaderClient(c.layout.reader_address("r1"), "r1")
        try:
            for page in range(1, 4):
                lsn = await c.write_async([(page, f"v{page}")])
                deadline = time.monotonic() + FOLLOW_LIMIT_S
                while (await client.state()).read_point < lsn:
                    assert time.monotonic() < deadline, f"r1 did not reach LSN {lsn}"
                    await asyncio.sleep(0.005)
        finally:
            await client.close()

    asyncio.run(run())
    assert c.read(3, reader="r1") == "v3"


@pytest.mark.processes
def test_watch_of_a_killed_node_fails_and_the_reader_reconnects(
    local_cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the GetState poll out of the way, only the watch can bring a1 back."""
    c = local_cluster
    monkeypatch.setattr(reader_module, "READ_POINT_REPORT_S", 3600.0)
    nodes = c.layout.nodes

    async def run() -> None:
        reader = Reader("t1", nodes)
        running = asyncio.create_task(reader.run())
        client = NodeClient("a1", nodes["a1"])
        stream = client.watch_state("t2")
        try:
            await next_state(stream)
            await _until(lambda: reader.node_states["a1"] is not None, what="t1 to watch a1")
            c.kill("a1")
            # The watch runs on a1's framed listener: its connection breaks.
            assert client.frame_port
            with pytest.raises(NodeDownError, match="a1: the framed stream broke"):
                while True:
                    await next_state(stream)
            await _until(lambda: reader.node_states["a1"] is None, what="t1 to lose a1")
            assert reader.pages.choice.scl_hint["a1"] == 0, "a lost node covers nothing"
            c.start("a1")
            lsn = await c.write_async([(5, "after a1 restart")])
            await _until(lambda: _heard_at(reader, "a1", lsn), 20.0, "t1 to re-watch a1")
            assert reader.read_point >= lsn
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await reader.close()
            await client.close()

    asyncio.run(run())


def _heard_at(reader: Reader, node: str, lsn: int) -> bool:
    state = reader.node_states[node]
    return state is not None and state.scl >= lsn


def test_the_reported_read_point_keeps_pinned_reads() -> None:
    async def body() -> None:
        reader = Reader("t1", {})
        reader.advance([pb.NodeState(vdl_epoch=1, vdl=9)] * READ_QUORUM)
        assert reader.reported_read_point() == 9
        reader.pins = lambda: 4  # an SQL transaction still reads at 4: GC must keep it
        assert reader.reported_read_point() == 4
        reader.pins = lambda: None
        assert reader.reported_read_point() == 9

    asyncio.run(body())
