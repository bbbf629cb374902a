"""The Sql gRPC service, the same on the writer and on readers: only the engine differs.

Statements run on the engine's SQL thread, within the client's deadline as well as the
engine's limits; results are turned into protobuf off the event loop when they are large,
so the loop that answers health probes and replication never waits on SQL work.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Protocol

import grpc

from sixfold.core.errors import InvalidRequestError, SixfoldError
from sixfold.guard import Undecodable
from sixfold.pipelined import answer_pipelined, error_in_band
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.sql.values import Statement, result_to_proto, statement_from_proto
from sixfold.wire import abort

RESULT_ROWS_INLINE_MAX = 256  # results with more rows are serialised on a worker thread
STREAM_REQUESTS_IN_FLIGHT_MAX = 64  # requests of one ExecuteStream running at once


class SqlEngine(Protocol):
    async def execute(
        self,
        statements: list[Statement],
        session: str = "",
        client_s: float | None = None,
        min_read_point: int = 0,
    ) -> object: ...
    async def begin(self) -> str: ...
    async def end(self, session: str, commit: bool) -> int: ...


class SqlService(pb_grpc.SqlServicer):
    """SQL on whichever engine the instance runs now: `engine_of` is called per request."""

    def __init__(
        self,
        engine_of: Callable[[], SqlEngine],
        writer_engine_of: Callable[[], SqlEngine] | None = None,
    ) -> None:
        self.engine_of = engine_of
        # For requests marked writer_only: the writer's engine, or NotWriterError.
        self.writer_engine_of = writer_engine_of or engine_of

    @property
    def engine(self) -> SqlEngine:
        return self.engine_of()

    def engine_for(self, writer_only: bool) -> SqlEngine:
        return self.writer_engine_of() if writer_only else self.engine_of()

    async def Execute(self, request: pb.ExecuteRequest, context: grpc.aio.ServicerContext):
        try:
            return await self._execute(request, context.time_remaining())
        except SixfoldError as exc:
            await abort(context, exc)

    async def _execute(
        self, request: pb.ExecuteRequest, client_s: float | None
    ) -> pb.ExecuteResponse:
        statements = [statement_from_proto(s) for s in request.statements]
        engine = self.engine_for(request.writer_only)
        outcome = await engine.execute(
            statements, request.session, client_s, request.min_read_point
        )
        if sum(len(r.rows) for r in outcome.results) > RESULT_ROWS_INLINE_MAX:
            results = await asyncio.to_thread(results_to_proto, outcome.results)
        else:
            results = results_to_proto(outcome.results)
        return pb.ExecuteResponse(
            results=results, commit_lsn=outcome.commit_lsn, read_point=outcome.read_point
        )

    async def ExecuteStream(
        self, requests: AsyncIterator[pb.ExecuteStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExecuteStreamResponse]:
        """Execute requests as they come, each on its own (pipelined, up to
        STREAM_REQUESTS_IN_FLIGHT_MAX at once), answered by id as each finishes; an error is
        answered in band and the stream goes on."""
        async for (response,) in answer_pipelined(
            requests, self._stream_answer, STREAM_REQUESTS_IN_FLIGHT_MAX
        ):
            yield response

    async def _stream_answer(self, request: pb.ExecuteStreamRequest) -> pb.ExecuteStreamResponse:
        try:
            if isinstance(request, Undecodable):  # sixfold/guard.py: answered, not raised
                raise InvalidRequestError(
                    f"not a valid ExecuteStreamRequest ({request.error}); the stream goes on"
                )
            response = await self._execute(request.request, request.timeout_s or None)
        except SixfoldError as exc:
            return pb.ExecuteStreamResponse(id=getattr(request, "id", 0), **error_in_band(exc))
        return pb.ExecuteStreamResponse(id=request.id, response=response)

    async def Begin(self, request: pb.BeginRequest, context: grpc.aio.ServicerContext):
        try:
            session = await self.engine_for(request.writer_only).begin()
        except SixfoldError as exc:
            await abort(context, exc)
        return pb.BeginResponse(session=session)

    async def End(self, request: pb.EndRequest, context: grpc.aio.ServicerContext):
        try:
            lsn = await self.engine.end(request.session, request.commit)
        except SixfoldError as exc:
            await abort(context, exc)
        return pb.EndResponse(commit_lsn=lsn)


def results_to_proto(results: Sequence) -> list[pb.SqlResult]:
    return [result_to_proto(r.columns, r.rows, r.rows_changed, r.last_row_id) for r in results]
