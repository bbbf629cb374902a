"""The writer's append stream to a node, over real gRPC and LMDB, and over the node's framed
listener (sixfold/frames.py) (issue 11): batches in as packed blobs, acknowledgements out in
order; every kind of bad input ends that stream with a clear status, nothing of the bad batch
stored, and the node serving other streams."""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
from collections import deque
from pathlib import Path

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold import clients as clients_module
from sixfold import cluster, frames, tls
from sixfold.clients import FramedAppendStream, NodeClient, rpc_error
from sixfold.core.commit_log import CommitLog, Waiter, WriterLimits
from sixfold.core.errors import (
    BatchTooLargeError,
    CorruptRecordError,
    EpochAheadError,
    InvalidRequestError,
    SixfoldError,
    StaleEpochError,
)
from sixfold.core.quorum import STORAGE_NAMES
from sixfold.core.record import RedoRecord, pack_records, unpack_records
from sixfold.core.shipping import commits_at_or_above
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.wire import named_error
from storage_node.frame_server import FrameServer
from storage_node.node import NodeLimits, StorageNode
from storage_node.service import StorageNodeService
from tests.test_node_rpc import record, run_with_node, sealed
from writer.pipeline import CommitPipeline

TRANSPORTS = ["grpc", "framed", "framed-tls"]


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and members' certificates, as `sixfold up --tls` makes them."""
    directory = tmp_path_factory.mktemp("certs")
    tls.init_certs(directory, ["a1", "writer"])
    return directory


def as_tls_member(monkeypatch: pytest.MonkeyPatch, certs: Path, name: str = "writer") -> None:
    """This process speaks mutual TLS from now on (its servers and its clients), presenting
    the certificate of `name`."""
    monkeypatch.setenv(tls.TLS_DIR_VARIABLE, str(certs))
    monkeypatch.setenv(tls.TLS_NAME_VARIABLE, name)


@pytest.fixture(params=TRANSPORTS)
def framed(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, certs: Path) -> bool:
    """Each stream test runs over gRPC, over the framed listener, and over the framed
    listener with TLS (the node's gRPC too), as a TLS cluster's writer streams."""
    if request.param == "framed-tls":
        as_tls_member(monkeypatch, certs)
    return request.param != "grpc"


def chain(first: int, count: int, epoch: int = 1) -> list[RedoRecord]:
    return [
        record(lsn, lsn - 1, lsn % 7, b"v%d" % lsn, epoch) for lsn in range(first, first + count)
    ]


async def exchange(client: NodeClient, batches: list[pb.AppendBatch]) -> list[pb.AppendBatchAck]:
    """Send every batch on one stream while reading acks, as the writer does; the acks, or
    raise what ended the stream."""
    call = await client.open_append_stream()

    async def send() -> None:
        try:
            for b in batches:
                await call.write(b)
            await call.done_writing()  # type: ignore[attr-defined]
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            pass  # the node ended the stream: the reads say why

    sending = asyncio.get_running_loop().create_task(send())
    acks = []
    try:
        while (ack := await call.read()) is not grpc.aio.EOF:
            if ack.error:
                call.cancel()
                raise named_error(ack.error, ack.message)
            acks.append(ack)
    except grpc.aio.AioRpcError as err:
        raise rpc_error(client.name, err) from None
    finally:
        await sending
    return acks


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=0, max_size=300), min_size=0, max_size=5))
def test_a_blob_unpacks_to_its_records(texts: list[bytes]) -> None:
    records = [record(i + 1, i, 3, t or b"x") for i, t in enumerate(texts)]
    assert unpack_records(pack_records(records)) == records


def test_a_cut_or_flipped_blob_is_refused_naming_the_problem() -> None:
    blob = pack_records(chain(1, 3))
    with pytest.raises(CorruptRecordError, match="cut short"):
        unpack_records(blob[:-5])
    with pytest.raises(CorruptRecordError, match="cut short"):
        unpack_records(blob + b"\x01\x02")
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x40
    with pytest.raises(CorruptRecordError):
        unpack_records(bytes(flipped))


def test_batches_are_acknowledged_in_order_with_the_scl(tmp_path: Path, framed: bool) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        assert bool(client.frame_port) == framed  # learned from the node's state
        call = await client.open_append_stream()
        assert isinstance(call, FramedAppendStream) == framed, "on the transport meant"
        call.cancel()
        batches = [
            pb.AppendBatch(epoch=1, records=pack_records(chain(1, 5)), vdl=0, batch_id=1),
            pb.AppendBatch(epoch=1, records=b"", vdl=5, batch_id=2),  # bare: VDL only
            pb.AppendBatch(epoch=1, records=pack_records(chain(6, 5)), vdl=5, batch_id=3),
        ]
        acks = await exchange(client, batches)
        assert [a.batch_id for a in acks] == [1, 2, 3]
        # Each ack's SCL covers its batch and never goes back. Batches 1 and 3 may share one
        # commit (the node drains what is queued), so the bare batch's ack may already say 10.
        scls = [a.scl for a in acks]
        assert scls == sorted(scls) and 5 <= scls[0] <= scls[1] <= 10 and scls[2] == 10
        assert node.state.scl == 10 and node.state.vdl == 5

    run_with_node(tmp_path / "a1", body, framed=framed)


BAD = [
    ("stale epoch", StaleEpochError, lambda good: pb.AppendBatch(epoch=1, records=good)),
    ("epoch ahead", EpochAheadError, lambda good: pb.AppendBatch(epoch=3, records=good)),
    ("cut blob", CorruptRecordError, lambda good: pb.AppendBatch(epoch=2, records=good[:-9])),
    (
        "bad CRC",
        CorruptRecordError,
        lambda good: pb.AppendBatch(epoch=2, records=good[:40] + bytes([good[40] ^ 1]) + good[41:]),
    ),
    (
        "VDL beyond allocation",
        InvalidRequestError,
        lambda good: pb.AppendBatch(epoch=2, records=good, vdl=2**62),
    ),
    ("batch too large", BatchTooLargeError, lambda good: pb.AppendBatch(epoch=2, records=good * 3)),
]


@pytest.mark.parametrize(("what", "error", "make"), BAD, ids=[b[0] for b in BAD])
def test_bad_batches_end_their_stream_and_store_nothing(
    tmp_path: Path, framed: bool, what, error, make
) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client, 1)
        await client.seal(2, "test-writer")
        # Recovery at epoch 2 truncated (0, 1000]: its writer allocates at most 1000 above.
        epoch_range = pb.TruncationRange(epoch=2, after_lsn=0, through_lsn=1000)
        await client.truncate(
            pb.TruncateRequest(epoch=2, ranges=[epoch_range], truncations_version=2)
        )
        good = pack_records(chain(1, 2, epoch=2))
        with pytest.raises(error):
            await exchange(client, [make(good)])
        assert node.state.scl == 0 and node.store.counts()[0] == 0, f"{what}: something stored"
        # The node serves the next stream.
        acks = await exchange(client, [pb.AppendBatch(epoch=2, records=good, batch_id=9)])
        assert [(a.batch_id, a.scl) for a in acks] == [(9, 2)]

    # 5 records' worth of bytes: the tripled blob (6 records) is beyond it.
    limits = NodeLimits(append_batch_bytes_max=len(pack_records(chain(1, 5, epoch=2))))
    run_with_node(tmp_path / "a1", body, limits, framed)


def test_a_window_beyond_the_nodes_bound_is_refused(tmp_path: Path, framed: bool) -> None:
    blob_bytes = len(pack_records(chain(1, 4)))

    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        batches = [
            pb.AppendBatch(epoch=1, records=pack_records(chain(1 + 4 * i, 4)), batch_id=i)
            for i in range(40)
        ]
        # Held, the write lock keeps the node from committing for a while: nothing is
        # acknowledged, so the second batch finds the first still in the window, however
        # fast the node commits.
        async with node.write_lock:
            sent = asyncio.get_running_loop().create_task(exchange(client, batches))
            await asyncio.sleep(0.5)
        with pytest.raises(BatchTooLargeError, match="stream_window_bytes_max"):
            await sent
        assert node.store.counts()[0] == 4, "only the first batch is stored"

    # One batch and a half: two unacknowledged at once are beyond it.
    limits = NodeLimits(stream_window_bytes_max=blob_bytes * 3 // 2)
    run_with_node(tmp_path / "a1", body, limits, framed)


def test_an_undecodable_stream_message_is_refused_by_name(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        raw = client.channel.stream_stream("/sixfold.v1.StorageNode/AppendStream")
        call = raw()
        await call.write(b"\xff\xff\xff not a message")
        ack = pb.AppendBatchAck.FromString(await call.read())
        call.cancel()
        assert ack.error == "InvalidRequestError", ack
        assert "not a valid AppendBatch" in ack.message
        assert node.store.counts()[0] == 0

    run_with_node(tmp_path / "a1", body)


async def raw_framed(client: NodeClient, hello: pb.FrameHello) -> frames.FrameStream:
    """A framed connection to the client's node, its hello sent, the answer not read."""
    assert client.frame_port, "the node has a frame port"
    reader, writer = await asyncio.open_connection("127.0.0.1", client.frame_port)
    stream = frames.FrameStream(reader, writer, pb.AppendBatchAck)
    await stream.write(hello)
    return stream


async def answer_of(stream: frames.FrameStream) -> str:
    """The node's answer to a hello: "" when accepted, else the error it names."""
    try:
        accepted = await asyncio.wait_for(stream.read(), 5)
    except SixfoldError as exc:
        return f"{type(exc).__name__}: {exc}"
    assert accepted is not grpc.aio.EOF
    return ""


async def still_serves(client: NodeClient) -> None:
    acks = await exchange(client, [pb.AppendBatch(epoch=1, records=pack_records(chain(1, 2)))])
    assert [a.scl for a in acks] == [2]


def test_framed_input_that_is_not_a_batch_is_refused_and_nothing_stored(tmp_path: Path) -> None:
    """Malformed frames get an error naming the problem, on that stream only."""

    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        hello = pb.FrameHello(method=frames.APPEND_STREAM, node="a1")
        # Bytes that are no AppendBatch: refused in band, by name.
        stream = await raw_framed(client, hello)
        assert await answer_of(stream) == ""
        stream.writer.write(struct.pack(">IB", 9, frames.MESSAGE) + b"\xff" * 8)
        ack = await asyncio.wait_for(stream.read(), 5)
        assert ack.error == "InvalidRequestError" and "not a valid AppendBatch" in ack.message
        stream.close()
        # A frame claiming more than FRAME_BYTES_MAX: refused before anything is read.
        stream = await raw_framed(client, hello)
        assert await answer_of(stream) == ""
        stream.writer.write(struct.pack(">IB", frames.FRAME_BYTES_MAX + 2, frames.MESSAGE))
        ack = await asyncio.wait_for(stream.read(), 5)
        assert ack.error == "InvalidRequestError" and "frames here hold" in ack.message, ack
        stream.close()
        # An ERROR frame, which no client sends: refused in band too, not left hanging.
        stream = await raw_framed(client, hello)
        assert await answer_of(stream) == ""
        await stream.write_error(BatchTooLargeError("from a client"))
        ack = await asyncio.wait_for(stream.read(), 5)
        assert ack.error == "InvalidRequestError" and "an ERROR frame" in ack.message, ack
        stream.close()
        assert node.store.counts()[0] == 0
        await still_serves(client)

    run_with_node(tmp_path / "a1", body, framed=True)


def test_a_framed_hello_for_another_node_or_stream_is_refused(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        for hello, expected in [
            (pb.FrameHello(method=frames.APPEND_STREAM, node="b2"), "WrongNodeError: this is"),
            (pb.FrameHello(method="ReadRecords", node="a1"), "InvalidRequestError: no framed"),
        ]:
            stream = await raw_framed(client, hello)
            assert (await answer_of(stream)).startswith(expected)
            stream.close()
        # A connection that opens with no hello at all (garbage) is closed.
        reader, writer = await asyncio.open_connection("127.0.0.1", client.frame_port)
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await still_serves(client)

    run_with_node(tmp_path / "a1", body, framed=True)


def test_a_hello_too_large_or_a_silent_watcher_is_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frames, "HELLO_WAIT_S", 0.3)

    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        reader, writer = await asyncio.open_connection("127.0.0.1", client.frame_port)
        writer.write(struct.pack(">IB", frames.HELLO_BYTES_MAX + 1, frames.MESSAGE))
        assert await asyncio.wait_for(reader.read(), 5) == b"", "closed unread"
        writer.close()
        # A watcher that sends its hello and then no request is closed after HELLO_WAIT_S.
        stream = await raw_framed(client, pb.FrameHello(method=frames.WATCH_STATE, node="a1"))
        assert await answer_of(stream) == ""
        assert (await answer_of(stream)).startswith("InvalidRequestError: a watch must begin")
        stream.close()
        await still_serves(client)

    run_with_node(tmp_path / "a1", body, framed=True)


def test_a_stale_frame_port_that_reaches_another_program_falls_back_to_grpc(
    tmp_path: Path,
) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)

        async def http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            writer.close()

        other = await asyncio.start_server(http, "127.0.0.1", 0)
        try:
            client.frame_port = other.sockets[0].getsockname()[1]  # the node moved its port
            call = await client.open_append_stream()
            assert not isinstance(call, FramedAppendStream), "the other program is no node"
            call.cancel()
            assert client.frame_port is None  # asked again next time
            assert isinstance(await client.open_append_stream(), FramedAppendStream)
        finally:
            other.close()
        await still_serves(client)

    run_with_node(tmp_path / "a1", body, framed=True)


def test_a_tls_frame_port_serves_members_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certs: Path
) -> None:
    """Under TLS the frame port speaks TLS with the cluster's CA and serves members: a
    plaintext caller, a caller without a certificate or with another CA's, a node whose
    certificate the caller's CA did not sign, and a tool's client certificate get nothing
    there (a tool's streams stay on gRPC), and the node goes on serving its members."""
    as_tls_member(monkeypatch, certs)
    other_ca = tmp_path / "other-ca"
    tls.init_certs(other_ca, ["writer"])

    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        call = await client.open_append_stream()
        assert isinstance(call, FramedAppendStream), "a member streams framed over TLS"
        call.cancel()
        port = client.frame_port
        assert port
        hello = pb.FrameHello(method=frames.APPEND_STREAM, node="a1")
        with pytest.raises(frames.FrameStreamBroken):  # plaintext: the handshake fails
            await frames.connect("127.0.0.1", port, hello, pb.AppendBatchAck)
        trusting = ssl.create_default_context(cafile=str(certs / tls.CA_CERT_FILE))
        with pytest.raises(frames.FrameStreamBroken):  # no certificate: the node refuses
            await frames.connect("127.0.0.1", port, hello, pb.AppendBatchAck, trusting)
        trusting.load_cert_chain(other_ca / "writer.pem", other_ca / "writer-key.pem")
        with pytest.raises(frames.FrameStreamBroken):  # another CA's: the node refuses
            await frames.connect("127.0.0.1", port, hello, pb.AppendBatchAck, trusting)
        monkeypatch.setenv(tls.TLS_DIR_VARIABLE, str(other_ca))
        with pytest.raises(ssl.SSLCertVerificationError):  # the caller refuses the node
            await frames.connect(
                "127.0.0.1", port, hello, pb.AppendBatchAck, tls.client_ssl_context()
            )
        as_tls_member(monkeypatch, certs, tls.CLIENT_NAME)
        with pytest.raises(InvalidRequestError, match=r"for cluster members.*names client"):
            await frames.connect(
                "127.0.0.1", port, hello, pb.AppendBatchAck, tls.client_ssl_context()
            )
        tool = NodeClient("a1", client.address)
        try:
            stream = await tool.open_append_stream()
            assert not isinstance(stream, FramedAppendStream), "a tool stays on gRPC"
            stream.cancel()
        finally:
            await tool.close()
        as_tls_member(monkeypatch, certs)
        await still_serves(client)
        assert node.frame_connections <= 1

    run_with_node(tmp_path / "a1", body, framed=True)


def test_streams_on_grpc_move_to_the_frame_port_once_it_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node told its frame port before anything listened there (as when a swarm's tasks all
    start at once): the writer's append stream and a reader's watch fall back to gRPC, and
    move to the frame port once it answers, at once (an idle watch too), each going on there.
    """
    monkeypatch.setattr(clients_module, "FRAMED_RETRY_MIN_S", 0.2)
    monkeypatch.setattr(frames, "HELLO_WAIT_S", 0.5)  # a watch's request is due this soon
    services: list[StorageNodeService] = []

    async def body(client: NodeClient, node: StorageNode) -> None:
        loop = asyncio.get_running_loop()
        on_grpc = services[0]
        await sealed(client)
        node.frame_port = cluster.free_port()  # told, but nothing listens there yet
        watch = client.watch_state("r1")
        assert (await asyncio.wait_for(anext(watch), 5)).frame_port == node.frame_port
        assert client.frame_port_unreached and on_grpc.watchers == 1
        log = CommitLog(
            list(STORAGE_NAMES),
            epoch=1,
            vdl=0,
            next_lsn=1,
            node_scls=dict.fromkeys(STORAGE_NAMES, 0),
            truncations=(),
            limits=WriterLimits(),
        )
        others = [NodeClient(n, f"127.0.0.1:{cluster.free_port()}") for n in STORAGE_NAMES[1:]]
        pipeline = CommitPipeline([client, *others], log)
        sender = loop.create_task(pipeline.senders[0].run())
        framed = StorageNodeService(node)
        late = FrameServer(node, framed)
        try:
            await asyncio.sleep(0.1)  # the append stream opened on gRPC, the retries wait
            assert node.frame_connections == 0
            # The state the sender's first batch changed, on gRPC; then the watch is idle.
            assert (await asyncio.wait_for(anext(watch), 5)).vdl_epoch == 1
            pending = loop.create_task(anext(watch))
            await late.start("127.0.0.1", node.frame_port)
            for _ in range(100):  # each moves with no message on its gRPC stream
                if node.frame_connections == 2 and on_grpc.watchers == 0:
                    break
                await asyncio.sleep(0.05)
            assert node.frame_connections == 2, "the append stream and the watch moved"
            assert (on_grpc.watchers, framed.watchers) == (0, 1), "the watch left gRPC"
            moved = await asyncio.wait_for(pending, 5)  # the framed watch's whole state
            assert moved.frame_port == node.frame_port
            await asyncio.sleep(2 * frames.HELLO_WAIT_S)  # the framed watch sent its request
            assert node.frame_connections == 2 and framed.watchers == 1
            assert not sender.done() and pipeline.senders[0].failure is None
            await client.append(pb.AppendRequest(epoch=1, records=[chain(1, 1)[0].encoded]))
            while (await asyncio.wait_for(anext(watch), 5)).scl < 1:
                pass  # the watch goes on, framed
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            await watch.aclose()
            await late.stop()
            for other in others:
                await other.close()

    run_with_node(tmp_path / "a1", body, services=services)


def test_a_framed_watch_sends_the_state_and_ends_when_the_watcher_goes(tmp_path: Path) -> None:
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        await client.get_state()
        watch = client.watch_state("r1")
        first = await asyncio.wait_for(anext(watch), 5)
        assert first.name == "a1" and first.frame_port == client.frame_port
        await still_serves(client)
        while (state := await asyncio.wait_for(anext(watch), 5)).scl < 2:
            pass
        assert state.scl == 2 and client_watchers(node)
        await watch.aclose()
        for _ in range(50):  # the node notices the watcher left
            if not client_watchers(node):
                break
            await asyncio.sleep(0.05)
        assert not client_watchers(node)

    run_with_node(tmp_path / "a1", body, framed=True)


def test_a_node_stopping_ends_its_framed_streams_quietly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # asyncio logs a traceback for a stream server's handler that ends cancelled: stopping a
    # node with framed streams open must not fill its log with them.
    async def body(client: NodeClient, node: StorageNode) -> None:
        await sealed(client)
        call = await client.open_append_stream()
        assert isinstance(call, FramedAppendStream)
        await call.write(pb.AppendBatch(epoch=1, records=pack_records(chain(1, 2)), batch_id=1))
        assert (await asyncio.wait_for(call.read(), 5)).scl == 2
        watch = client.watch_state("r1")
        await asyncio.wait_for(anext(watch), 5)
        assert node.frame_connections == 2  # left open: the node stops with them

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        run_with_node(tmp_path / "a1", body, framed=True)
    assert not [r for r in caplog.records if r.name == "asyncio"], caplog.text


def client_watchers(node: StorageNode) -> bool:
    """Whether a watch still runs on the node (served in this process: a task of ours)."""
    return any(
        getattr(t.get_coro(), "__qualname__", "") == "StorageNodeService.watch"
        for t in asyncio.all_tasks()
    )


def test_a_lingering_batch_counts_the_commits_it_holds() -> None:
    # The writer's linger rule (issue 11) sends a batch once it holds a share of the
    # waiting commits: those at or above its first LSN, counted from the newest.
    waiters = deque(Waiter(lsn, 0.0, 10.0) for lsn in (3, 5, 9, 10, 14))
    assert commits_at_or_above(waiters, 9) == 3
    assert commits_at_or_above(waiters, 15) == 0
    assert commits_at_or_above(waiters, 1) == 5
    assert commits_at_or_above(deque(), 1) == 0
