"""A storage node over real gRPC on loopback with a real LMDB store: bad input is refused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import lmdb
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sixfold.clients import NodeClient
from sixfold.core.errors import (
    BatchTooLargeError,
    InvalidRequestError,
    StaleEpochError,
)
from sixfold.core.page import until_nul
from sixfold.core.record import Delta, RecordFlags, RedoRecord, encode_deltas, encode_record
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.serving import service_name, start_server
from storage_node.frame_server import FrameServer
from storage_node.node import NodeLimits, StorageNode
from storage_node.service import StorageNodeService
from storage_node.store import MAP_SIZE_BYTES_DEFAULT, lsn_key

OWNER = "test-writer"


def record(
    lsn: int, prev: int, page: int, text: bytes, epoch: int = 1, cpl: bool = True
) -> RedoRecord:
    return encode_record(
        lsn=lsn,
        prev_volume_lsn=prev,
        prev_page_lsn=0,
        page_no=page,
        epoch=epoch,
        flags=RecordFlags.CPL if cpl else RecordFlags(0),
        payload=encode_deltas([Delta(0, text)]),
    )


def run_with_node(
    data_dir: Path,
    body: Callable[[NodeClient, StorageNode], Awaitable[None]],
    limits: NodeLimits | None = None,
    framed: bool = False,
    services: list[StorageNodeService] | None = None,
) -> None:
    """`body` against a node served over gRPC on loopback, and with `framed` its framed
    listener too (storage_node/frame_server.py), which the client then uses for streams.
    The node's service is put in `services`, when given."""

    async def main() -> None:
        node = StorageNode("a1", "a", data_dir, map_size_bytes=64 << 20, limits=limits)
        node.state.peers_heard.update({"a2", "b1"})  # no peers here: serve at once
        node.start()
        service = StorageNodeService(node)
        if services is not None:
            services.append(service)
        server, port = await start_server(
            "127.0.0.1",
            0,
            [(pb_grpc.add_StorageNodeServicer_to_server, service, service_name("StorageNode"))],
        )
        frame_server = FrameServer(node, service)
        if framed:
            await frame_server.start("127.0.0.1", 0)
        client = NodeClient("a1", f"127.0.0.1:{port}")
        try:
            await body(client, node)
        finally:
            await client.close()
            await frame_server.stop()
            await server.stop(None)
            await node.stop()

    asyncio.run(main())


async def sealed(client: NodeClient, epoch: int = 1) -> None:
    """Seal `epoch` and give the node its (empty) truncation set, as recovery does."""
    await client.seal(epoch, OWNER)
    await client.truncate(pb.TruncateRequest(epoch=epoch, truncations_version=epoch))


def test_append_then_read_pages_and_records(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        r1, r2 = record(1, 0, 7, b"one\0"), record(2, 1, 7, b"two\0")
        ack = await client.append(pb.AppendRequest(epoch=1, records=[r1.encoded, r2.encoded]))
        assert ack.scl == 2
        page = await client.get_page(pb.GetPageRequest(page_no=7, lsn=1))
        assert until_nul(page.image) == b"one" and page.page_lsn == 1
        page = await client.get_page(pb.GetPageRequest(page_no=7, lsn=2))
        assert until_nul(page.image) == b"two"
        got = await client.read_records(pb.ReadRecordsRequest(after_lsn=0, through_lsn=10))
        assert list(got.records) == [r1.encoded, r2.encoded]

    run_with_node(tmp_path / "a1", body)


def test_scl_waits_for_a_hole_to_fill(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        ack = await client.append(
            pb.AppendRequest(epoch=1, records=[record(2, 1, 1, b"b").encoded])
        )
        assert ack.scl == 0
        with pytest.raises(Exception, match="complete only to LSN 0"):
            await client.get_page(pb.GetPageRequest(page_no=1, lsn=2))
        ack = await client.append(
            pb.AppendRequest(epoch=1, records=[record(1, 0, 1, b"a").encoded])
        )
        assert ack.scl == 2

    run_with_node(tmp_path / "a1", body)


def test_stale_epoch_is_refused_naming_both_epochs(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client, epoch=2)
        with pytest.raises(StaleEpochError) as err:
            await client.append(pb.AppendRequest(epoch=1, records=[record(1, 0, 1, b"x").encoded]))
        assert "epoch 1" in str(err.value) and "epoch 2" in str(err.value)
        with pytest.raises(StaleEpochError):
            await client.seal(2, "another-writer")  # the same epoch cannot be won twice
        state = await client.get_state()
        assert state.scl == 0 and state.records_stored == 0 and state.epoch_owner == OWNER

    run_with_node(tmp_path / "a1", body)


def test_stale_epoch_status_code(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client, epoch=3)
        try:
            await client.stub.Append(pb.AppendRequest(epoch=2), timeout=2)
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "epoch 2" in err.details() and "epoch 3" in err.details()
        else:
            pytest.fail("a stale append was accepted")

    run_with_node(tmp_path / "a1", body)


def test_corrupt_record_is_refused_and_nothing_of_its_batch_stored(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        good = record(1, 0, 1, b"good").encoded
        bad = bytearray(record(2, 1, 1, b"bad").encoded)
        bad[60] ^= 0x01
        try:
            await client.stub.Append(
                pb.AppendRequest(epoch=1, records=[good, bytes(bad)]), timeout=2
            )
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "CRC32C mismatch" in err.details() and "LSN 2" in err.details()
        else:
            pytest.fail("a corrupt record was accepted")
        state = await client.get_state()
        assert state.records_stored == 0 and state.scl == 0

    run_with_node(tmp_path / "a1", body)


def test_oversized_batch_names_the_bound(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        records = [record(i, i - 1, 1, b"r").encoded for i in range(1, 6)]
        with pytest.raises(BatchTooLargeError, match="append_batch_records_max=4"):
            await client.append(pb.AppendRequest(epoch=1, records=records))
        big = [record(1, 0, 1, b"x" * 3000).encoded]
        with pytest.raises(BatchTooLargeError, match="append_batch_bytes_max=2048"):
            await client.append(pb.AppendRequest(epoch=1, records=big))
        assert (await client.get_state()).records_stored == 0

    limits = NodeLimits(append_batch_records_max=4, append_batch_bytes_max=2048)
    run_with_node(tmp_path / "a1", body, limits)


def test_malformed_truncation_is_refused(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        bad = pb.TruncationRange(epoch=1, after_lsn=10, through_lsn=5)
        with pytest.raises(InvalidRequestError, match="malformed truncation range"):
            await client.truncate(pb.TruncateRequest(epoch=1, ranges=[bad], truncations_version=1))

    run_with_node(tmp_path / "a1", body)


def test_truncation_cancels_records_and_refuses_them_later(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        recs = [record(1, 0, 1, b"keep"), record(2, 1, 1, b"gone")]
        await client.append(pb.AppendRequest(epoch=1, records=[r.encoded for r in recs]))
        await client.seal(2, OWNER)
        rng = pb.TruncationRange(epoch=2, after_lsn=1, through_lsn=100)
        state = await client.truncate(
            pb.TruncateRequest(epoch=2, ranges=[rng], truncations_version=2)
        )
        assert state.scl == 1 and state.records_stored == 1
        # The cancelled record offered again (by gossip or a late append) is not taken back.
        await node.append(None, [recs[1]])
        got = await client.read_records(pb.ReadRecordsRequest(after_lsn=0, through_lsn=100))
        assert [r for r in got.records] == [recs[0].encoded]

    run_with_node(tmp_path / "a1", body)


def test_health_and_reflection(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        health = health_pb2_grpc.HealthStub(client.channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service="sixfold.v1.StorageNode"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflect = reflection_pb2_grpc.ServerReflectionStub(client.channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for response in reflect.ServerReflectionInfo(iter([request])):
            names = {s.name for s in response.list_services_response.service}
            assert {"sixfold.v1.StorageNode", "grpc.health.v1.Health"} <= names
            break

    run_with_node(tmp_path / "a1", body)


def test_corrupt_stored_record_is_detected_on_read(tmp_path: Path) -> None:
    data = tmp_path / "a1"

    async def write(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        await client.append(pb.AppendRequest(epoch=1, records=[record(1, 0, 3, b"hello").encoded]))
        # The stored SCL covers LSN 1: start-up does not rescan it, the read path finds it.

    run_with_node(data, write)
    flip_stored_bit(data, lsn=1)

    async def read(client: NodeClient, node: StorageNode) -> None:
        assert (await client.get_state()).scl == 1
        with pytest.raises(Exception, match="corrupt") as err:
            await client.get_page(pb.GetPageRequest(page_no=3, lsn=1))
        assert "hello" not in str(err.value)
        assert (1, None) in node.damaged, "the damaged record awaits repair from a peer"
        with pytest.raises(Exception, match="corrupt"):
            await client.read_records(pb.ReadRecordsRequest(after_lsn=0, through_lsn=5))

    run_with_node(data, read)


def test_corrupt_record_above_the_stored_scl_is_dropped_at_start(tmp_path: Path) -> None:
    """A record above a hole (so above the stored SCL) that rots is dropped at start-up."""
    data = tmp_path / "a1"

    async def write(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        await client.append(pb.AppendRequest(epoch=1, records=[record(2, 1, 3, b"hello").encoded]))

    run_with_node(data, write)
    flip_stored_bit(data, lsn=2)

    async def read(client: NodeClient, node: StorageNode) -> None:
        state = await client.get_state()
        assert state.scl == 0 and state.records_stored == 0  # to be fetched again from peers

    run_with_node(data, read)


def flip_stored_bit(data: Path, lsn: int) -> None:
    env = lmdb.open(str(data), max_dbs=8)
    log_db = env.open_db(b"log")
    with env.begin(write=True, db=log_db) as txn:
        value = bytearray(txn.get(lsn_key(lsn)))
        value[55] ^= 0x40
        txn.put(lsn_key(lsn), bytes(value))
    env.close()


def run_node_process(data_dir: Path, name: str = "a1") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "storage_node",
            "--name",
            name,
            "--data-dir",
            str(data_dir),
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_unknown_format_version_refuses_to_start(tmp_path: Path) -> None:
    data = tmp_path / "a1"
    run_with_node(data, lambda c, n: sealed(c))
    env = lmdb.open(str(data), max_dbs=8)
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.put(b"format_version", b"99")
    env.close()
    result = run_node_process(data)
    assert result.returncode == 2
    assert "format version 99" in result.stderr and "refusing to start" in result.stderr


def test_unreadable_data_directories_refuse_to_start(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = run_node_process(not_a_dir)
    assert result.returncode == 2 and "not a directory" in result.stderr

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "data.mdb").write_bytes(b"this is not an LMDB file" * 100)
    result = run_node_process(garbage)
    assert result.returncode == 2 and "cannot open as an LMDB data directory" in result.stderr

    other = tmp_path / "b1"
    run_with_node(other, lambda c, n: sealed(c))  # belongs to a1
    result = run_node_process(other, name="b1")
    assert result.returncode == 2 and "belongs to storage node 'a1'" in result.stderr


def test_default_map_size_is_roomy() -> None:
    assert MAP_SIZE_BYTES_DEFAULT >= 1 << 30  # py-lmdb's own default of 10 MiB fills at once


def test_a_bug_in_the_commit_path_ends_the_process(tmp_path: Path, monkeypatch) -> None:
    # Issue 13: an operating error fails its appends and the node goes on; anything else is
    # a bug, and the process exits (here the exit is recorded instead: sixfold/crash.py).
    from sixfold import crash

    bugs: list[BaseException] = []
    monkeypatch.setattr(crash, "on_bug", bugs.append)

    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)

        def disk_full(*args: object) -> tuple[float, float]:
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(node.store, "put_records", disk_full)
        with pytest.raises(OSError, match="No space left"):
            await node.append(1, [record(1, 0, 3, b"x")])
        assert bugs == [] and not node._committer.done()  # an operating error: it goes on

        def broken(*args: object) -> tuple[float, float]:
            raise AssertionError("an invariant does not hold")

        monkeypatch.setattr(node.store, "put_records", broken)
        with pytest.raises(AssertionError):
            await node.append(1, [record(1, 0, 3, b"x")])
        await asyncio.sleep(0)  # the done-callback runs
        assert len(bugs) == 1 and isinstance(bugs[0], AssertionError)

    run_with_node(tmp_path / "a1", body)


# -- membership epochs (issue 14) -----------------------------------------------------------


def test_a_newer_membership_is_stored_and_requests_at_an_older_one_are_refused(
    tmp_path: Path,
) -> None:
    from sixfold.core.errors import StaleMembershipError
    from sixfold.core.membership import Membership
    from sixfold.wire import membership_to_proto

    moving = Membership.initial().begin("c2", "c3", 1)

    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        state = await client.set_membership(membership_to_proto(moving))
        assert state.membership.epoch == 2 and state.membership.change_new == "c3"
        again = await client.set_membership(membership_to_proto(moving))  # a retry: no-op
        assert again.membership.epoch == 2
        with pytest.raises(StaleMembershipError, match="membership epoch 1"):
            await client.set_membership(membership_to_proto(Membership.initial()))
        other = Membership(2, ("a1", "a2", "b1", "b2", "c3", "c2"))
        with pytest.raises(InvalidRequestError, match="other holders"):
            await client.set_membership(membership_to_proto(other))
        bad = pb.MembershipView(epoch=3, holders=["a1", "a1"])
        with pytest.raises(InvalidRequestError, match="malformed membership"):
            await client.set_membership(bad)
        one = record(1, 0, 7, b"one\0")
        with pytest.raises(StaleMembershipError) as err:
            await client.append(
                pb.AppendRequest(epoch=1, records=[one.encoded], membership_epoch=1)
            )
        assert "membership epoch 1" in str(err.value) and "epoch 2" in str(err.value)
        with pytest.raises(StaleMembershipError):
            await client.get_page(pb.GetPageRequest(page_no=7, lsn=0, membership_epoch=1))
        with pytest.raises(grpc.aio.AioRpcError) as raw:
            seal = pb.SealEpochRequest(epoch=2, owner="w@h:1#x", membership_epoch=1)
            await client.stub.SealEpoch(seal, timeout=2)
        assert raw.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        # Nothing of the refused append was stored; the current epoch (or none) is taken.
        assert (await client.get_state()).records_stored == 0
        ack = await client.append(
            pb.AppendRequest(epoch=1, records=[one.encoded], membership_epoch=2)
        )
        assert ack.scl == 1
        two = record(2, 1, 7, b"two\0")
        assert (await client.append(pb.AppendRequest(epoch=1, records=[two.encoded]))).scl == 2

    run_with_node(tmp_path / "a1", body)

    async def after_restart(client: NodeClient, node: StorageNode) -> None:
        assert node.membership == moving  # stored before it was acknowledged

    run_with_node(tmp_path / "a1", after_restart)


def test_a_membership_from_a_deposed_writer_is_refused(tmp_path: Path) -> None:
    from sixfold.core.membership import Membership
    from sixfold.wire import membership_to_proto

    deposed = Membership.initial().begin("c2", "c3", 2)
    successor = Membership.initial().begin("c2", "c3", 3)

    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client, epoch=3)
        with pytest.raises(StaleEpochError, match="epoch 2"):
            await client.set_membership(membership_to_proto(deposed), volume_epoch=2)
        assert (await client.get_state()).membership.epoch == 1  # nothing changed
        with pytest.raises(InvalidRequestError, match="made by the writer of volume epoch 2"):
            await client.set_membership(membership_to_proto(deposed), volume_epoch=3)
        state = await client.set_membership(membership_to_proto(successor), volume_epoch=3)
        assert state.membership.epoch == 2 and state.membership.writer_epoch == 3

    run_with_node(tmp_path / "a1", body)
