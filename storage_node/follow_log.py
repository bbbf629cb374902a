"""FollowLog: the node's committed log as it grows, on one stream (issue 16).

A secondary region's agent follows the primary on one of these instead of polling for
records: the node sends the records above the follower's point that are committed as far as
it knows (at or below the VDL it learned, and its SCL, so they form one chain), in chunks
packed as the writer's append stream packs them, zlib'd when asked; then it waits for a
newer VDL. While nothing is new it sends a heartbeat (a chunk with no records), so a
follower tells a quiet primary from a dead link. Records at or below a learned VDL are never
truncated (P17 §2.4), so what it sends is final. The follower's read point is its own
business (GetState): the stream does not hold GC back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib

import grpc

from sixfold.core.errors import InvalidRequestError, SixfoldError
from sixfold.core.record import RedoRecord, pack_records
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.wire import abort
from storage_node.checks import check_numbers
from storage_node.node import StorageNode

log = logging.getLogger("sixfold.storage_node")

FOLLOWERS_MAX = 16  # concurrent FollowLog streams; more are refused (RESOURCE_EXHAUSTED)
FOLLOW_CHUNK_RECORDS_MAX = 2_000  # records in one chunk
FOLLOW_CHUNK_BYTES_MAX = 4 << 20  # a chunk's records before compression (one record at least)
FOLLOW_HEARTBEAT_S = 1.0  # a chunk with no records this often while nothing is new
FOLLOW_RECHECK_S = 0.25  # gossip moves the SCL without waking waiters: look again this often
COMPRESS_LEVEL = 1  # zlib's fastest: the link's bytes, not the last percent
# Compression pays only where the records repeat themselves (SQL pages do, random values do
# not): a chunk that shrinks less than this stops it for the next COMPRESS_RETRY_CHUNKS.
COMPRESS_WORTH_RATIO = 0.9
COMPRESS_RETRY_CHUNKS = 64


class LogFollowers:
    """The node's FollowLog streams, bounded in number."""

    def __init__(self, node: StorageNode) -> None:
        self.node = node
        self.count = 0

    async def serve(self, request: pb.FollowLogRequest, context: grpc.aio.ServicerContext) -> None:
        try:
            check_numbers(after_lsn=request.after_lsn)
            if request.chunk_records_max > FOLLOW_CHUNK_RECORDS_MAX:
                raise InvalidRequestError(
                    f"chunk_records_max {request.chunk_records_max} is above this node's "
                    f"FOLLOW_CHUNK_RECORDS_MAX={FOLLOW_CHUNK_RECORDS_MAX}"
                )
        except SixfoldError as exc:
            await abort(context, exc)
        if self.count >= FOLLOWERS_MAX:
            exc = SixfoldError(
                f"storage node {self.node.name} already has {self.count} log followers "
                f"(FOLLOWERS_MAX={FOLLOWERS_MAX}): retry later"
            )
            await abort(context, exc, grpc.StatusCode.RESOURCE_EXHAUSTED)
        self.count += 1
        log.info(
            "%s: %s follows the log from LSN %d",
            self.node.name,
            request.reader or "a client",
            request.after_lsn,
        )
        try:
            await self._stream(request, context)
        except SixfoldError as exc:
            await abort(context, exc)
        finally:
            self.count -= 1

    async def _stream(
        self, request: pb.FollowLogRequest, context: grpc.aio.ServicerContext
    ) -> None:
        node = self.node
        after = request.after_lsn
        records_max = request.chunk_records_max or FOLLOW_CHUNK_RECORDS_MAX
        sent_at = time.monotonic()
        plain_chunks = 0  # chunks still to send uncompressed: compression did not pay
        while not node.stopped:
            changed = node.state_changed  # taken before the state is read: no wake-up is lost
            st = node.state
            through = min(st.vdl, st.scl)
            if through > after:
                if after < node.gc_horizon:
                    raise SixfoldError(
                        f"storage node {node.name} no longer holds every record above LSN "
                        f"{after} (its GC horizon is {node.gc_horizon}): follow another node, "
                        "or from a later point"
                    )
                records = _bounded(node.read_records(after, through, records_max, None))
                if records:
                    chunk = _chunk(node, after, records, request.compress and not plain_chunks)
                    plain_chunks = max(plain_chunks - 1, 0)
                    if (
                        chunk.compressed
                        and len(chunk.records) > COMPRESS_WORTH_RATIO * chunk.raw_bytes
                    ):
                        plain_chunks = COMPRESS_RETRY_CHUNKS
                    await context.write(chunk)
                    after, sent_at = records[-1].lsn, time.monotonic()
                    continue
            if time.monotonic() - sent_at >= FOLLOW_HEARTBEAT_S:
                await context.write(_chunk(node, after, [], False))
                sent_at = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), FOLLOW_RECHECK_S)


def _bounded(records: list[RedoRecord]) -> list[RedoRecord]:
    """The first records within FOLLOW_CHUNK_BYTES_MAX (the first one always)."""
    size = 0
    for i, record in enumerate(records):
        size += len(record.encoded)
        if size > FOLLOW_CHUNK_BYTES_MAX and i:
            return records[:i]
    return records


def _chunk(node: StorageNode, after: int, records: list[RedoRecord], compress: bool) -> pb.LogChunk:
    blob = pack_records(records)
    st = node.state
    return pb.LogChunk(
        records=zlib.compress(blob, COMPRESS_LEVEL) if compress else blob,
        compressed=compress,
        after_lsn=after,
        last_lsn=records[-1].lsn if records else after,
        vdl=st.vdl,
        vdl_epoch=st.vdl_epoch,
        scl=st.scl,
        raw_bytes=len(blob),
    )
