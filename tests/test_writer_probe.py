"""A reader's probe of the writer keeps its connection while the writer answers, and still
tells a writer that is gone from one that is not (real gRPC on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc

from instance.writer_probe import WriterProbe
from sixfold import cluster
from sixfold.core.takeover import Probe
from sixfold.core.topology import Role
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc

TIMEOUT_S = 2.0


class _Writer(pb_grpc.WriterServicer):
    def __init__(self) -> None:
        self.peers: list[str] = []  # each probe's connection, as the server saw it
        self.role = Role.WRITER
        self.fail_next: grpc.StatusCode | None = None  # the next call fails so, once
        self.stall_next_s = 0.0  # the next call answers this late, once

    async def GetWriterState(
        self, request: pb.GetWriterStateRequest, context: grpc.aio.ServicerContext
    ) -> pb.WriterState:
        self.peers.append(context.peer())
        if self.fail_next is not None:
            code, self.fail_next = self.fail_next, None
            await context.abort(code, "failing once for the test")
        if self.stall_next_s:
            stall, self.stall_next_s = self.stall_next_s, 0.0
            await asyncio.sleep(stall)
        writer = self.role == Role.WRITER
        return pb.WriterState(recovered=writer, role=self.role)


async def _serve(servicer: _Writer, port: int) -> grpc.aio.Server:
    server = grpc.aio.server()
    pb_grpc.add_WriterServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    return server


@dataclass
class _Stand:
    """A stand-in writer served on a loopback port, and a probe of it."""

    writer: _Writer
    port: int
    server: grpc.aio.Server | None = None
    probe: WriterProbe = field(default_factory=WriterProbe)

    async def start(self) -> None:
        self.server = await _serve(self.writer, self.port)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop(None)
            self.server = None

    async def ask(self, timeout_s: float = TIMEOUT_S) -> Probe:
        return await self.probe.probe(f"127.0.0.1:{self.port}", timeout_s)


@contextlib.asynccontextmanager
async def _stand() -> AsyncIterator[_Stand]:
    stand = _Stand(_Writer(), cluster.free_port())
    await stand.start()
    try:
        yield stand
    finally:
        await stand.probe.close()
        await stand.stop()


def test_one_connection_while_the_writer_answers_and_a_new_one_after() -> None:
    async def run() -> None:
        async with _stand() as s:
            writer, probe = s.writer, s.probe
            assert [await s.ask() for _ in range(5)] == [Probe.WRITER] * 5
            assert len(set(writer.peers)) == 1 and probe.connections_made == 1

            # An answer that is not the writer's drops the connection: the next probe
            # connects again.
            writer.role = Role.READER
            assert await s.ask() is Probe.NOT_WRITER
            writer.role = Role.WRITER
            assert await s.ask() is Probe.WRITER
            assert probe.connections_made == 2 and len(set(writer.peers)) == 2

            # The writer gone: the kept connection breaks, and a new one is refused.
            await s.stop()
            assert await s.ask() is Probe.GONE
            assert probe.kept is None

            # A writer back at the address is found at once, on a new connection.
            writer.peers.clear()
            await s.start()
            assert await s.ask() is Probe.WRITER
            assert await s.ask() is Probe.WRITER
            assert len(set(writer.peers)) == 1

    asyncio.run(run())


def test_a_kept_connection_that_fails_is_asked_again_on_a_new_one() -> None:
    """A call on the kept connection that fails other than by timing out (as when the
    connection broke) is asked again on a new connection: GONE only from a new one. One
    that times out is not: the time is spent, and the writer is SILENT."""

    async def run() -> None:
        async with _stand() as s:
            writer, probe = s.writer, s.probe
            assert await s.ask() is Probe.WRITER
            writer.fail_next = grpc.StatusCode.UNAVAILABLE
            assert await s.ask() is Probe.WRITER
            assert probe.connections_made == 2 and len(set(writer.peers)) == 2

            writer.stall_next_s = 1.0
            assert await s.ask(0.3) is Probe.SILENT
            assert probe.connections_made == 2 and probe.kept is None

    asyncio.run(run())
