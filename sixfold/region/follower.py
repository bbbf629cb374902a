"""The inter-region link: one FollowLog stream from the replication agent to one primary
storage node (storage_node/follow_log.py), compressed, carrying the primary's committed log
as it grows (issue 16).

The agent asks for the records in (shipped, durable] each round. The stream has usually
brought them already; what it brought beyond is kept for the next round. Records arrive
CRC-checked (unpack_records) and are checked to form one chain from where the stream
started: a chunk that does not follow the one before breaks the link. After any break, or
when the agent resumes from another point or moves to another node, the stream is opened
again from the secondary's durable point.
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib

from sixfold.clients import NodeClient
from sixfold.committed_log import chained
from sixfold.core.errors import CorruptRecordError, RegionError, SixfoldError
from sixfold.core.record import RedoRecord, unpack_records
from sixfold.rpc import sixfold_pb2 as pb

# Chunks received and not yet taken: the stream waits (gRPC flow control) beyond this, so a
# slow secondary costs the agent at most this many chunks of memory (4 MiB each at most).
FOLLOW_QUEUE_CHUNKS_MAX = 8


class LogFollower:
    def __init__(self, reader: str, compress: bool = True) -> None:
        self.reader = reader
        self.compress = compress
        self.source: NodeClient | None = None
        self.buffer: list[RedoRecord] = []  # received, above what was shipped
        self.received = 0  # the LSN the stream has brought the log to
        self.wire_bytes = 0  # the records' bytes as the link carried them
        self.raw_bytes = 0  # and before compression
        self._queue: asyncio.Queue[pb.LogChunk | SixfoldError] = asyncio.Queue()
        self._pump: asyncio.Task[None] | None = None

    async def records(
        self, source: NodeClient, after: int, durable: int, records_max: int, wait_s: float
    ) -> list[RedoRecord]:
        """The records in (`after`, `durable`], at most `records_max`, as far as the stream
        from `source` brings them within `wait_s`. Raises RegionError when the link breaks
        or brings something that does not fit (it is opened again next time)."""
        self.buffer = [r for r in self.buffer if r.lsn > after]
        if not self._follows(source, after):
            await self._open(source, after)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while self.received < durable and len(self.buffer) < records_max:
            try:
                item = await asyncio.wait_for(self._queue.get(), deadline - loop.time())
            except TimeoutError:
                break
            try:
                self._take(item)
            except SixfoldError:
                await self.close()
                raise
        return [r for r in self.buffer if r.lsn <= durable][:records_max]

    def _follows(self, source: NodeClient, after: int) -> bool:
        """Whether the open stream goes on from `after`: to the same node, with nothing
        between `after` and what it brought missing."""
        if self._pump is None or self._pump.done() or source is not self.source:
            return False
        if self.buffer:
            return self.buffer[0].prev_volume_lsn == after
        return self.received == after

    async def _open(self, source: NodeClient, after: int) -> None:
        await self.close()
        self.source, self.received, self.buffer = source, after, []
        self._queue = asyncio.Queue(FOLLOW_QUEUE_CHUNKS_MAX)
        self._pump = asyncio.create_task(self._run(source, after, self._queue))

    async def _run(
        self, source: NodeClient, after: int, queue: asyncio.Queue[pb.LogChunk | SixfoldError]
    ) -> None:
        try:
            async for chunk in source.follow_log(self.reader, after, self.compress):
                await queue.put(chunk)
            await queue.put(RegionError(f"{source.name} ended the log stream"))
        except SixfoldError as exc:
            await queue.put(RegionError(f"the log stream from {source.name} broke: {exc}"))

    def _take(self, item: pb.LogChunk | SixfoldError) -> None:
        if isinstance(item, SixfoldError):
            raise item
        name = self.source.name if self.source else "?"
        if item.after_lsn != self.received:
            raise RegionError(
                f"{name} sent records after LSN {item.after_lsn}, the link is at "
                f"{self.received}: opened again"
            )
        if item.last_lsn == item.after_lsn:
            return  # a heartbeat
        try:
            blob = zlib.decompress(item.records) if item.compressed else item.records
            got = unpack_records(blob)  # each record's CRC checked
        except (zlib.error, CorruptRecordError) as exc:
            raise RegionError(
                f"{name} sent a damaged chunk after LSN {item.after_lsn}: {exc}"
            ) from None
        self.received = chained(got, self.received, name, RegionError)
        self.buffer += got
        self.wire_bytes += len(item.records)
        self.raw_bytes += len(blob)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
        self._pump = None
