"""Probing the writer: is it there, silent, or gone? (a reader instance's takeover watch)

The watch probes five times a second, and each probe used to open a new connection: a fifth
of an idle cluster's CPU. `WriterProbe` keeps the connection of a probe that found the writer
for the next one. Any other answer drops it; and when a call on a kept connection fails other
than by running out of time (the connection broke: the writer restarted, say), the probe
asks again on a new connection in the time left. So GONE comes from a new connection, as when
every probe connected afresh, except when the kept one used up nearly all the time first.
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


async def probe_once(address: str, timeout_s: float) -> Probe:
    """One probe on a connection of its own, closed after it."""
    async with tls.aio_channel(address, options=PROBE_CHANNEL_OPTIONS) as channel:
        return probe_of(await _ask(channel, timeout_s))


class WriterProbe:
    """Probes of the writer that keep their connection while it answers as the writer.

    For one caller at a time (an instance's writer watch): closing the kept connection
    cancels a call another probe would have running on it.
    """

    def __init__(self) -> None:
        self.kept: tuple[str, grpc.aio.Channel] | None = None  # address, connection
        self.connections_made = 0
        self._probing = False

    async def probe(self, address: str, timeout_s: float) -> Probe:
        """What answers at `address` within `timeout_s` (`probe_of`)."""
        assert not self._probing, "WriterProbe has one caller at a time"
        self._probing = True
        try:
            return await self._probe(address, timeout_s)
        finally:
            self._probing = False

    async def close(self) -> None:
        if self.kept is not None:
            await self._drop(self.kept[1])

    async def _probe(self, address: str, timeout_s: float) -> Probe:
        kept = self.kept
        if kept is not None and kept[0] != address:
            await self._drop(kept[1])
            kept = None
        if kept is not None:
            started = time.monotonic()
            answer = await _ask(kept[1], timeout_s)
            broke = (
                isinstance(answer, grpc.StatusCode) and answer != grpc.StatusCode.DEADLINE_EXCEEDED
            )
            probe = probe_of(answer)
            if probe is not Probe.WRITER:
                await self._drop(kept[1])
            if not broke:
                return probe
            timeout_s = max(timeout_s - (time.monotonic() - started), 0.0)
        channel = tls.aio_channel(address, options=PROBE_CHANNEL_OPTIONS)
        self.connections_made += 1
        probe = probe_of(await _ask(channel, timeout_s))
        if probe is Probe.WRITER:
            self.kept = (address, channel)
        else:
            await channel.close()
        return probe

    async def _drop(self, channel: grpc.aio.Channel) -> None:
        """Close the kept connection and forget it."""
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
