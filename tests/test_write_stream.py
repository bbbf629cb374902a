"""Writer/WritePagesStream (issue 11): page writes pipelined on one stream, answered by id
once durable, errors in band; and the client that shares one stream between tasks."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from sixfold.clients import NodeDownError, WriterClient
from sixfold.core.errors import InvalidRequestError
from sixfold.core.record import PAGE_SIZE_BYTES
from sixfold.rpc import sixfold_pb2 as pb
from tests.conftest import LocalCluster

pytestmark = pytest.mark.processes


def _write(write_id: int, page_no: int, data: bytes, offset: int = 0) -> pb.StreamedWrite:
    change = pb.PageChange(page_no=page_no, offset=offset, data=data)
    return pb.StreamedWrite(id=write_id, changes=[change])


def _message(*writes: pb.StreamedWrite) -> bytes:
    return pb.WritePagesStreamRequest(writes=writes).SerializeToString()


def test_the_stream_pipelines_writes_and_answers_errors_in_band(
    local_cluster: LocalCluster,
) -> None:
    # Every message is sent before any answer is read, the first with two commits. A write
    # off the end of its page and a message that is not a WritePagesStreamRequest are
    # answered in band, nothing of them is stored, and the stream goes on.
    raw = [
        _message(_write(1, 40, b"one\0"), _write(2, 41, b"two\0")),
        b"\xff\xff\xff not a message",
        _message(_write(3, 40, b"off the page", offset=PAGE_SIZE_BYTES - 4)),
        _message(_write(4, 40, b"four\0")),
    ]
    with grpc.insecure_channel(local_cluster.layout.find_writer_address()) as channel:
        stream = channel.stream_stream(
            "/sixfold.v1.Writer/WritePagesStream",
            request_serializer=None,
            response_deserializer=pb.WritePagesStreamResponse.FromString,
        )
        outcomes = [o for answer in stream(iter(raw), timeout=30) for o in answer.outcomes]
    by_id = {o.id: o for o in outcomes if o.id}
    assert len(outcomes) == 5 and set(by_id) == {1, 2, 3, 4}
    assert not any(by_id[i].error_code for i in (1, 2, 4))
    assert 0 < by_id[1].commit_lsn < by_id[4].commit_lsn  # page 40, in the order sent
    assert by_id[3].error_code == "INVALID_ARGUMENT" and not by_id[3].commit_lsn
    assert by_id[3].error_name == "InvalidRequestError" and "page" in by_id[3].error_message
    refused = [o for o in outcomes if not o.id]
    assert "not a valid WritePagesStreamRequest" in refused[0].error_message
    assert local_cluster.read(40) == "four" and local_cluster.read(41) == "two"


def test_tasks_share_one_stream_and_each_gets_its_own_answer(local_cluster: LocalCluster) -> None:
    async def body() -> tuple[list[int], Exception, Exception]:
        client = WriterClient(local_cluster.layout.find_writer_address())
        stream = client.write_pages_stream()
        try:

            async def write(page_no: int, text: str, offset: int = 0) -> int:
                data = text.encode() + b"\0"
                change = pb.PageChange(page_no=page_no, offset=offset, data=data)
                return await stream.write([change], timeout=30.0)

            lsns = await asyncio.gather(*(write(50 + i, f"task {i}") for i in range(20)))
            try:
                await write(70, "too far", offset=PAGE_SIZE_BYTES)
            except InvalidRequestError as exc:
                refused: Exception = exc
            lsns.append(await write(71, "after the refusal"))
            await stream.close()
            try:
                await write(72, "after close")
            except NodeDownError as exc:
                closed: Exception = exc
            return lsns, refused, closed
        finally:
            await client.close()

    lsns, refused, closed = asyncio.run(body())
    assert len(set(lsns)) == 21 and all(lsns)
    assert "page" in str(refused) and "closed" in str(closed)
    assert [local_cluster.read(50 + i) for i in range(20)] == [f"task {i}" for i in range(20)]
    assert local_cluster.read(71) == "after the refusal"


def test_the_stream_needs_the_role_a_unary_write_needs() -> None:
    from sixfold.auth import role_needed

    unary = role_needed("/sixfold.v1.Writer/WritePages")
    assert role_needed("/sixfold.v1.Writer/WritePagesStream") == unary == "write"


def test_closing_the_stream_fails_the_writes_in_flight_at_once(local_cluster: LocalCluster) -> None:
    """A write waiting on a stream that is closed learns it at once (its outcome unknown),
    not at its deadline."""

    async def body() -> tuple[list[object], float]:
        client = WriterClient(local_cluster.layout.find_writer_address())
        stream = client.write_pages_stream()
        try:
            changes = [pb.PageChange(page_no=80 + i, offset=0, data=b"x\0") for i in range(8)]
            writes = [asyncio.create_task(stream.write([c], timeout=60.0)) for c in changes]
            await asyncio.sleep(0)  # queued, not answered yet
            started = asyncio.get_running_loop().time()
            await stream.close()
            outcomes = await asyncio.gather(*writes, return_exceptions=True)
            return outcomes, asyncio.get_running_loop().time() - started
        finally:
            await client.close()

    outcomes, waited_s = asyncio.run(body())
    assert waited_s < 5.0, waited_s
    assert all(isinstance(o, NodeDownError) and "closed" in str(o) for o in outcomes), outcomes
