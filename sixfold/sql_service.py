"""The Sql gRPC service, the same on the writer and on readers: only the engine differs.

Statements run on the engine's SQL thread, within the client's deadline as well as the
engine's limits; results are turned into protobuf off the event loop when they are large,
so the loop that answers health probes and replication never waits on SQL work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Protocol

import grpc

from sixfold.errors import SixfoldError
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.sqlvalues import Statement, result_to_proto, statement_from_proto
from sixfold.wire import abort

RESULT_ROWS_INLINE_MAX = 256  # results with more rows are serialised on a worker thread


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
            statements = [statement_from_proto(s) for s in request.statements]
            engine = self.engine_for(request.writer_only)
            outcome = await engine.execute(
                statements, request.session, context.time_remaining(), request.min_read_point
            )
            if sum(len(r.rows) for r in outcome.results) > RESULT_ROWS_INLINE_MAX:
                results = await asyncio.to_thread(results_to_proto, outcome.results)
            else:
                results = results_to_proto(outcome.results)
        except SixfoldError as exc:
            await abort(context, exc)
        return pb.ExecuteResponse(
            results=results, commit_lsn=outcome.commit_lsn, read_point=outcome.read_point
        )

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
