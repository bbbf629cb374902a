"""The Reader gRPC service."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from prometheus_client import Histogram

from reader.reader import Reader
from sixfold.core.errors import SixfoldError
from sixfold.metrics import InstanceMetrics
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.wire import abort


class ReaderService(pb_grpc.ReaderServicer):
    def __init__(
        self,
        reader: Reader,
        sql_pages: Callable[[], tuple[int, int]] | None = None,
        page_read_seconds: Histogram | None = None,
    ) -> None:
        self.reader = reader
        self.sql_pages = sql_pages  # (pages brought forward, pages read whole), when SQL runs
        self.page_read_seconds = page_read_seconds or InstanceMetrics().page_reads

    async def ReadPage(self, request: pb.ReadPageRequest, context: grpc.aio.ServicerContext):
        try:
            with self.page_read_seconds.time():
                image, page_lsn, read_point = await self.reader.read_page(request.page_no)
        except SixfoldError as exc:
            await abort(context, exc)
        return pb.ReadPageResponse(image=image, page_lsn=page_lsn, read_point=read_point)

    async def GetReaderState(self, request, context):
        r = self.reader
        state = pb.ReaderState(name=r.name, read_point=r.read_point, epoch=r.epoch)
        if self.sql_pages is not None:
            state.sql_pages_forwarded, state.sql_pages_fetched = self.sql_pages()
        for name, s in r.node_states.items():
            state.nodes.add(
                name=name,
                reachable=s is not None,
                scl=s.scl if s else 0,
                epoch=s.epoch if s else 0,
            )
        return state
