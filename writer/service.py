"""The Writer gRPC service: the page API until the SQL layer exists."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Callable

import grpc

from sixfold.core.commit_log import PageWrite
from sixfold.core.errors import InvalidRequestError, NotWriterError, SixfoldError
from sixfold.guard import Undecodable
from sixfold.pipelined import answer_pipelined, error_in_band
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.wire import abort, membership_to_proto
from writer.sql_vfs import ShippedCounters
from writer.writer import Writer

# Commits of one WritePagesStream waiting for durability at once: a client's whole load
# (peers.py's kv runs 64 clients), more waits on the stream's flow control.
WRITE_STREAM_COMMITS_IN_FLIGHT_MAX = 256
OUTCOMES_PER_MESSAGE_MAX = 256  # outcomes ready at once, answered in one message


async def _streamed_writes(
    requests: AsyncIterator[pb.WritePagesStreamRequest | Undecodable],
) -> AsyncIterator[pb.StreamedWrite | Undecodable]:
    """Each commit of each message, in the order sent; an undecodable message as itself."""
    async for request in requests:
        if isinstance(request, Undecodable):
            yield request
            continue
        for write in request.writes:
            yield write


def page_writes(changes: list[pb.PageChange]) -> list[PageWrite]:
    """Group changes by page, in first-seen order: one record per page."""
    by_page: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    for change in changes:
        by_page[change.page_no].append((change.offset, change.data))
    return [PageWrite(page_no, tuple(deltas)) for page_no, deltas in by_page.items()]


class WriterService(pb_grpc.WriterServicer):
    """The page API of the writer. On an instance that may change roles, `writer_of` gives
    the current writer or raises NotWriterError naming where the writer is."""

    def __init__(
        self,
        writer_of: Callable[[], Writer],
        shipped: Callable[[], ShippedCounters] | None = None,
        role_of: Callable[[], str] = lambda: "writer",
    ) -> None:
        self.writer_of = writer_of
        self.shipped = shipped  # the SQL layer's counters, when it runs here
        self.role_of = role_of  # the instance's role, reported with the writer's state

    @property
    def writer(self) -> Writer:
        return self.writer_of()

    async def WritePages(self, request: pb.WritePagesRequest, context: grpc.aio.ServicerContext):
        try:
            lsn = await self.writer.write_pages(page_writes(list(request.changes)))
        except SixfoldError as exc:
            await abort(context, exc)
        return pb.WritePagesResponse(commit_lsn=lsn)

    async def WritePagesStream(
        self, requests: AsyncIterator[pb.WritePagesStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.WritePagesStreamResponse]:
        """Commits on one stream (issue 11), each its own, pipelined (up to
        WRITE_STREAM_COMMITS_IN_FLIGHT_MAX at once) and answered by id once durable, the
        outcomes ready at once in one message; an error is answered in band and the stream
        goes on. A stream message costs the writer less than half of a unary call, and one
        message carries a burst."""
        writes = _streamed_writes(requests)
        async for outcomes in answer_pipelined(
            writes,
            self._write_outcome,
            WRITE_STREAM_COMMITS_IN_FLIGHT_MAX,
            OUTCOMES_PER_MESSAGE_MAX,
        ):
            yield pb.WritePagesStreamResponse(outcomes=outcomes)

    async def _write_outcome(self, write: pb.StreamedWrite | Undecodable) -> pb.WriteOutcome:
        try:
            if isinstance(write, Undecodable):  # sixfold/guard.py: answered, not raised
                raise InvalidRequestError(
                    f"not a valid WritePagesStreamRequest ({write.error}); the stream goes on"
                )
            lsn = await self.writer.write_pages(page_writes(list(write.changes)))
        except SixfoldError as exc:
            return pb.WriteOutcome(id=getattr(write, "id", 0), **error_in_band(exc))
        return pb.WriteOutcome(id=write.id, commit_lsn=lsn)

    async def ReadPage(self, request: pb.ReadPageRequest, context):
        try:
            image, page_lsn, vdl = await self.writer.read_page_linearizable(request.page_no)
        except SixfoldError as exc:
            await abort(context, exc)
        return pb.ReadPageResponse(image=image, page_lsn=page_lsn, read_point=vdl)

    async def CompareAndSet(self, request: pb.CompareAndSetRequest, context):
        try:
            applied, found, lsn = await self.writer.compare_and_set(
                request.page_no, request.offset, request.expected, request.new
            )
        except SixfoldError as exc:
            await abort(context, exc)
        return pb.CompareAndSetResponse(applied=applied, found=found, commit_lsn=lsn)

    async def GetWriterState(self, request, context):
        try:
            w = self.writer
        except NotWriterError as exc:  # a reader, or an instance taking over: not recovered
            return pb.WriterState(status=str(exc), recovered=False, role=self.role_of())
        p = w.pipeline
        state = pb.WriterState(status=w.status, recovered=p is not None, role=self.role_of())
        if p is None:
            return state
        state.epoch = p.epoch
        state.vdl = p.vdl
        state.vcl = p.vcl
        state.next_lsn = p.next_lsn
        state.fenced = p.fenced is not None
        if self.shipped is not None:
            c = self.shipped()
            state.sql.commits, state.sql.redo_bytes = c.commits, c.redo_bytes
            state.sql.changed_page_bytes = c.changed_page_bytes
        if p.fenced:
            state.status = str(p.fenced)
        for name, reachable, scl in p.node_views():
            state.nodes.add(name=name, reachable=reachable, scl=scl)
        state.membership.CopyFrom(membership_to_proto(p.log.membership))
        return state
