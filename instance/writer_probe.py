"""Probing the writer: is it there, silent, or gone? (a reader instance's takeover watch)

A probe that finds the writer keeps its connection for the next: five probes a second from
each reader, each on a new connection, were a fifth of an idle cluster's CPU. Any other
answer drops it, and a kept connection that fails at once (it broke: the writer restarted,
say) is asked again on a new one, so GONE still means that nothing listens there now, as when
every probe connected afresh.
"""

from __future__ import annotations

import time

import grpc

from sixfold import tls
from sixfold.clients import PROBE_CHANNEL_OPTIONS
from sixfold.core.takeover import Probe
from sixfold.core.topology import Role
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc

Answer = pb.WriterState | grpc.StatusCode  # the writer's state, or why the call failed


def probe_of(answer: Answer) -> Probe:
    """The verdict on what answers at the writer's address: the writer; GONE when nothing
    listens there (refused, unreachable); NOT_WRITER when it answers as a reader or a fenced
    writer; SILENT when it does not answer in time, or is still starting or taking over."""
    if isinstance(answer, grpc.StatusCode):
        return Probe.GONE if answer == grpc.StatusCode.UNAVAILABLE else Probe.SILENT
    if answer.recovered and not answer.fenced:
        return Probe.WRITER
    return Probe.SILENT if answer.role in (Role.STARTING, Role.TAKING_OVER) else Probe.NOT_WRITER


class WriterProbe:
    def __init__(self) -> None:
        self.kept: tuple[str, grpc.aio.Channel] | None = None  # address, connection
        self.connections_made = 0

    async def probe(self, address: str, timeout_s: float) -> Probe:
        kept = self.kept
        if kept is not None and kept[0] != address:
            await self._drop(kept[1])
            kept = None
        answer: Answer | None = None
        if kept is not None:
            channel = kept[1]
            started = time.monotonic()
            answer = await _ask(channel, timeout_s)
            if isinstance(answer, grpc.StatusCode) and answer != grpc.StatusCode.DEADLINE_EXCEEDED:
                await self._drop(channel)
                timeout_s = max(timeout_s - (time.monotonic() - started), 0.0)
                answer = None
        if answer is None:
            channel = tls.aio_channel(address, options=PROBE_CHANNEL_OPTIONS)
            self.connections_made += 1
            self.kept = (address, channel)
            answer = await _ask(channel, timeout_s)
        probe = probe_of(answer)
        if probe is not Probe.WRITER or self.kept != (address, channel):
            await self._drop(channel)  # kept only while the writer answers
        return probe

    async def close(self) -> None:
        if self.kept is not None:
            await self._drop(self.kept[1])

    async def _drop(self, channel: grpc.aio.Channel) -> None:
        """Close a probe's connection, and forget it if it is the kept one (a probe running
        on it at once fails, and is asked again on a new one)."""
        if self.kept is not None and self.kept[1] is channel:
            self.kept = None
        await channel.close()


async def _ask(channel: grpc.aio.Channel, timeout_s: float) -> Answer:
    try:
        return await pb_grpc.WriterStub(channel).GetWriterState(
            pb.GetWriterStateRequest(), timeout=timeout_s
        )
    except grpc.aio.AioRpcError as err:
        return err.code()
