"""The inter-region link (issue 16): a storage node's FollowLog stream over real gRPC on
loopback with a real LMDB store, and the agent's LogFollower reading it."""

from __future__ import annotations

import asyncio
import os
import zlib
from pathlib import Path

import pytest

from sixfold.clients import NodeClient
from sixfold.core.errors import InvalidRequestError, RegionError
from sixfold.core.record import pack_records
from sixfold.region.follower import LogFollower
from sixfold.rpc import sixfold_pb2 as pb
from storage_node.follow_log import FOLLOW_CHUNK_RECORDS_MAX
from storage_node.node import StorageNode
from tests.test_node_rpc import record, run_with_node, sealed


async def _append(client: NodeClient, records: list, vdl: int) -> None:
    request = pb.AppendRequest(epoch=1, records=[r.encoded for r in records], vdl=vdl)
    await client.append(request)


def test_the_stream_sends_what_is_committed_then_more_as_the_vdl_moves(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        first = [record(1, 0, 7, b"one" * 100), record(2, 1, 8, b"two" * 100)]
        later = record(3, 2, 7, b"three" * 100)
        await _append(client, first, vdl=0)
        await _append(client, [later], vdl=2)  # the VDL learned: 2, so LSN 3 waits
        stream = client.follow_log("region b", 0, compress=True)
        chunk = await anext(stream)
        assert chunk.compressed and chunk.after_lsn == 0 and chunk.last_lsn == 2
        assert zlib.decompress(chunk.records) == pack_records(first)
        assert chunk.raw_bytes > len(chunk.records), "repetitive records compress"
        heartbeat = await asyncio.wait_for(anext(stream), 3.0)  # nothing new: a heartbeat
        assert heartbeat.after_lsn == heartbeat.last_lsn == 2 and not heartbeat.records
        await _append(client, [], vdl=3)
        chunk = await asyncio.wait_for(anext(stream), 3.0)
        assert (chunk.after_lsn, chunk.last_lsn) == (2, 3)
        await stream.aclose()
        plain = client.follow_log("region b", 1, compress=False)
        chunk = await anext(plain)
        assert not chunk.compressed and chunk.records == pack_records([first[1], later])
        await plain.aclose()
        too_big = pb.FollowLogRequest(chunk_records_max=FOLLOW_CHUNK_RECORDS_MAX + 1)
        with pytest.raises(InvalidRequestError, match="FOLLOW_CHUNK_RECORDS_MAX"):
            async for _ in client._streamed(client.stub.FollowLog(too_big)):
                pass

    run_with_node(tmp_path / "a1", body)


def test_the_follower_keeps_what_it_did_not_ship_and_reopens_where_asked(
    tmp_path: Path,
) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        records = [record(n, n - 1, n, b"x%d" % n) for n in range(1, 6)]
        await _append(client, records, vdl=5)
        follower = LogFollower("region b")
        try:
            got = await follower.records(client, 0, 3, 100, wait_s=2.0)
            assert [r.lsn for r in got] == [1, 2, 3]
            pump = follower._pump
            got = await follower.records(client, 3, 5, 100, wait_s=2.0)
            assert [r.lsn for r in got] == [4, 5] and follower._pump is pump, "same stream"
            # The region holds less than the stream brought (its nodes lost some): the link
            # starts again from there.
            got = await follower.records(client, 1, 5, 2, wait_s=2.0)
            assert [r.lsn for r in got] == [2, 3] and follower._pump is not pump
        finally:
            await follower.close()

    run_with_node(tmp_path / "a1", body)


def test_the_follower_refuses_a_chunk_that_does_not_fit() -> None:
    follower = LogFollower("region b")
    follower.received = 2
    records = [record(3, 2, 7, b"three"), record(4, 3, 7, b"four")]
    blob = pack_records(records)
    good = pb.LogChunk(records=zlib.compress(blob), compressed=True, after_lsn=2, last_lsn=4)
    damaged = bytearray(blob)
    damaged[-1] ^= 0xFF
    for bad, why in (
        (pb.LogChunk(records=blob, after_lsn=1, last_lsn=4), "after LSN 1, the link is at 2"),
        (pb.LogChunk(records=bytes(damaged), after_lsn=2, last_lsn=4), "damaged chunk"),
        (pb.LogChunk(records=b"not zlib", compressed=True, after_lsn=2, last_lsn=4), "damaged"),
        (
            pb.LogChunk(records=pack_records(records[1:]), after_lsn=2, last_lsn=4),
            "links to LSN 3, not 2",
        ),
    ):
        with pytest.raises(RegionError, match=why):
            follower._take(bad)
        assert follower.received == 2 and not follower.buffer
    follower._take(good)
    assert follower.received == 4 and [r.lsn for r in follower.buffer] == [3, 4]


def test_compression_stops_where_it_does_not_pay(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        noise = [record(n, n - 1, n, os.urandom(600)) for n in range(1, 4)]
        await _append(client, noise[:1], vdl=1)
        stream = client.follow_log("region b", 0, compress=True)
        first = await anext(stream)
        assert first.compressed and len(first.records) > 0.9 * first.raw_bytes
        await _append(client, noise[1:], vdl=3)
        second = await asyncio.wait_for(anext(stream), 3.0)
        assert not second.compressed and second.records == pack_records(noise[1:])
        await stream.aclose()

    run_with_node(tmp_path / "a1", body)
