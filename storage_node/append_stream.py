"""The node's end of the writer's append stream: batches in, acknowledgements out, in order.

The batch is the unit (issue 11): one message carries a whole batch as one blob of encoded
records, which the node splits and CRC-checks without a protobuf message per record
(sixfold/core/record.py unpack_records), then queues for the commit loop, which folds every
pending batch, from every stream and from gossip, into one LMDB transaction and one fsync.
Reading and acknowledging run side by side: the next batch is taken while earlier ones sync.

An error ends the stream, named as on the unary Append: a stale epoch, a corrupt or cut
blob, a batch or window beyond the node's bounds, a message that does not decode. It goes
in band, as the last acknowledgement: a gRPC status sent while the writer is still sending
reaches it as a vague INTERNAL error. Nothing of the failing batch is stored; batches before
it stand; the node reads no more batches from that stream, and serves the others.
"""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from sixfold.core.errors import BatchTooLargeError, InvalidRequestError
from sixfold.core.membership import check_member, check_request_epoch
from sixfold.frames import StreamContext
from sixfold.guard import Undecodable
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.wire import reportable
from storage_node.checks import check_vdl
from storage_node.node import StorageNode

STREAM_BATCHES_QUEUED_MAX = 1_024  # batches taken from one stream, not yet acknowledged
STREAM_CLOSE_WAIT_S = 5.0  # after an error: how long the writer has to end the stream

_END = None  # the writer closed its side of the stream


class _Window:
    """Bytes received on one stream and not yet acknowledged, under the node's bound."""

    def __init__(self, bytes_max: int) -> None:
        self.bytes_max = bytes_max
        self.bytes = 0

    def take(self, size: int) -> None:
        if self.bytes + size > self.bytes_max:
            raise BatchTooLargeError(
                f"append stream has {self.bytes + size} bytes unacknowledged, beyond "
                f"stream_window_bytes_max={self.bytes_max}: wait for acknowledgements"
            )
        self.bytes += size


class _Failed(Exception):
    """A batch the node refused: its id and why."""

    def __init__(self, batch_id: int, error: Exception) -> None:
        super().__init__(str(error))
        self.batch_id = batch_id
        self.error = error


async def serve_append_stream(node: StorageNode, context: StreamContext) -> None:
    """Run one stream to its end: the writer's, or the first refused batch's."""
    queued: asyncio.Queue[tuple[int, asyncio.Future[int], int] | _Failed | None]
    queued = asyncio.Queue()  # bounded: STREAM_BATCHES_QUEUED_MAX and the byte window
    window = _Window(node.limits.stream_window_bytes_max)
    stop = asyncio.Event()  # set once a batch failed: the taker stores nothing more
    taker = asyncio.get_running_loop().create_task(
        _take_batches(node, context, queued, window, stop)
    )
    try:
        while (item := await queued.get()) is not _END:
            if isinstance(item, _Failed):
                raise item
            batch_id, done, size = item
            try:
                # The SCL now, not when the batch came: a bare batch is answered after the
                # batches before it, and the node is durable that far at least.
                scl = max(await done, node.state.scl)
            except Exception as exc:  # refused at commit (an epoch sealed meanwhile)
                raise _Failed(batch_id, exc) from None
            window.bytes -= size
            await context.write(
                pb.AppendBatchAck(batch_id=batch_id, scl=scl, epoch=node.state.epoch)
            )
    except _Failed as failed:
        stop.set()
        error = reportable(failed.error)
        await context.write(
            pb.AppendBatchAck(
                batch_id=failed.batch_id,
                epoch=node.state.epoch,
                error=type(error).__name__,
                message=str(error),
            )
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(taker), STREAM_CLOSE_WAIT_S)
    finally:
        taker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await taker


async def _take_batches(
    node: StorageNode,
    context: StreamContext,
    queued: asyncio.Queue,
    window: _Window,
    stop: asyncio.Event,
) -> None:
    """Take batches in order until the writer ends the stream; after a failure, read and
    drop whatever it still sends until it does. The stream's end is queued whatever ends
    the reading, so its acknowledger never waits on a taker that is gone."""
    try:
        while (batch := await context.read()) is not grpc.aio.EOF:
            if stop.is_set():
                continue
            batch_id = getattr(batch, "batch_id", 0)
            try:
                if queued.qsize() >= STREAM_BATCHES_QUEUED_MAX:
                    raise BatchTooLargeError(
                        f"append stream has {queued.qsize()} batches unacknowledged, beyond "
                        f"{STREAM_BATCHES_QUEUED_MAX}: wait for acknowledgements"
                    )
                queued.put_nowait(_accept(node, batch, window))
            except Exception as exc:  # refused whole: nothing of it queued
                stop.set()
                queued.put_nowait(_Failed(batch_id, exc))
    finally:
        queued.put_nowait(_END)


def _accept(
    node: StorageNode, batch: pb.AppendBatch | Undecodable, window: _Window
) -> tuple[int, asyncio.Future[int], int]:
    """Check one batch whole and queue it for the commit loop; its acknowledgement's future."""
    if isinstance(batch, Undecodable):
        raise InvalidRequestError(f"a stream message is not a valid AppendBatch: {batch.error}")
    check_request_epoch(node.membership, batch.membership_epoch, "append")
    check_member(node.membership, node.name, batch.membership_epoch, "append")
    size = len(batch.records)
    if not size:  # a bare batch: the writer's VDL, and a check of its epoch
        done = asyncio.get_running_loop().create_future()
        done.set_result(node.announce(batch.epoch, batch.vdl))
        return batch.batch_id, done, 0
    node.state.check_current(batch.epoch, "append")
    check_vdl(node.state, batch.vdl)
    records = node.unpack_batch(batch.records, batch.epoch)
    window.take(size)
    return batch.batch_id, node.submit(batch.epoch, records, batch.vdl), size
