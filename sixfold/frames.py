"""Framed streams: the hot path's two streams on plain TCP beside gRPC (issue 11).

A message on a grpc.aio stream costs each end 0.15-0.3 ms of CPU on the benchmark machines,
and a batch costs the writer's append to each node, its acknowledgement and a state message
to each watching reader; a length-prefixed frame on an asyncio connection costs a tenth of
that (docs/BENCHMARKS.md, "What one message costs" and "The framed append and watch path").
So a node may also listen on a frame port, for two streams only: the writer's append stream
(`AppendBatch` in, `AppendBatchAck` out) and a reader's `WatchState`. Everything else, and
any client that does not know the frame port, stays on gRPC. In a TLS cluster the frame port
speaks TLS with the same CA, and serves members only (their certificates name them; the
streams carry no tokens): a tool, which presents the client certificate, stays on gRPC.

A frame is a u32 length (big-endian) of what follows it, a u8 kind and a payload:

    MESSAGE  a protobuf message of the stream's type
    ERROR    a FrameError: the stream ends with this operating error, named
    END      the sender ended the stream by design: a node that stops, a client done writing

A connection opens with a FrameHello from the client: the stream it wants and the node and
volume it is meant for. The server answers with a FrameHello of its own name and volume (go
on) or an ERROR (a wrong node, an unknown stream), then the stream's messages flow; a client
that gets anything else has reached some other program, and uses gRPC. A connection that
ends with no END is a broken stream, as a gRPC stream ending UNAVAILABLE. Until a stream is
accepted, and on a watch, a frame holds at most HELLO_BYTES_MAX bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import struct
from typing import Any, Generic, Protocol, TypeVar

import grpc
from google.protobuf.message import DecodeError, Message

from sixfold.core.errors import InvalidRequestError
from sixfold.guard import Undecodable
from sixfold.rpc import sixfold_pb2 as pb

FRAME_BYTES_MAX = 64 << 20  # the largest frame an append stream reads, as gRPC's message bound
HELLO_BYTES_MAX = 4 << 10  # the largest hello, accept or watch request: before any is trusted
WRITE_BUFFER_BYTES_MAX = 1 << 20  # queued on a connection before a writer waits for it
HELLO_WAIT_S = 5.0  # a connection that says nothing this long is closed
CONNECT_WAIT_S = 2.0  # a node that does not accept a connection this fast is taken for down
# A node's frame port by default: this far above its gRPC port (7000 in a container, whose
# metrics are on 9000; 7101-7109 in a local cluster, whose readers are on 7201-7202).
FRAME_PORT_OFFSET = 500

MESSAGE, ERROR, END = 0, 1, 2
_HEADER = struct.Struct(">IB")  # the length of kind and payload, the kind

APPEND_STREAM = "AppendStream"
WATCH_STATE = "WatchState"

M = TypeVar("M", bound=Message)


class StreamContext(Protocol):
    """What a node's stream handler uses of its stream, on either transport: a grpc.aio
    servicer context, or a framed connection (storage_node/frame_server.py)."""

    async def read(self) -> Any: ...

    async def write(self, message: Any) -> None: ...


class FrameStreamBroken(ConnectionError):
    """The connection ended without the server's END, or carried something that is no frame
    of this protocol: the peer went away, or is not a node's framed listener."""


class FrameTooLargeError(InvalidRequestError):
    """A frame's length is beyond the stream's bound, or too short to hold its kind."""


class FrameStream(Generic[M]):
    """One end of a framed connection: reads messages of type `kind`, writes any message.

    `frame_bytes_max` bounds what it reads: small until the hello is accepted and for a
    watcher's request, FRAME_BYTES_MAX on an append stream."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        kind: type[M],
        frame_bytes_max: int = HELLO_BYTES_MAX,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.kind = kind
        self.frame_bytes_max = frame_bytes_max

    async def read(self) -> M | Undecodable | Any:
        """The next message (Undecodable when its bytes are not one), or grpc.aio.EOF once the
        server ended the stream. Raises the error a well-formed ERROR frame names,
        FrameStreamBroken when the connection ended with neither or sent a frame of no
        known kind, FrameTooLargeError on a frame beyond the bound."""
        frame_kind, payload = await self._read_frame()
        if frame_kind == END:
            return grpc.aio.EOF
        if frame_kind == ERROR:
            raise _named(payload)
        if frame_kind != MESSAGE:
            raise FrameStreamBroken(f"a frame of unknown kind {frame_kind}")
        try:
            return self.kind.FromString(payload)
        except DecodeError as exc:
            return Undecodable(exc)

    async def _read_frame(self) -> tuple[int, bytes]:
        try:
            size, frame_kind = _HEADER.unpack(await self.reader.readexactly(_HEADER.size))
            if not 1 <= size <= self.frame_bytes_max:
                raise FrameTooLargeError(
                    f"a frame of {size} bytes: frames here hold 1 to {self.frame_bytes_max} bytes"
                )
            return frame_kind, await self.reader.readexactly(size - 1)
        except (asyncio.IncompleteReadError, OSError) as exc:
            raise FrameStreamBroken(
                f"the framed connection ended ({str(exc) or type(exc).__name__})"
            ) from exc

    async def write(self, message: Message, frame_kind: int = MESSAGE) -> None:
        """Queue one frame. A connection the peer closed takes it silently: the reading side
        finds out, as with a gRPC stream the other end ended."""
        if self.writer.is_closing():
            return
        body = message.SerializeToString()
        self.writer.write(_HEADER.pack(len(body) + 1, frame_kind) + body)
        if self.writer.transport.get_write_buffer_size() > WRITE_BUFFER_BYTES_MAX:
            with contextlib.suppress(OSError):
                await self.writer.drain()

    async def write_error(self, exc: Exception) -> None:
        await self.write(pb.FrameError(error=type(exc).__name__, message=str(exc)), ERROR)

    async def end(self) -> None:
        """End the stream by design (END), then the connection."""
        await self.done_writing()
        self.close()

    async def done_writing(self) -> None:
        """The peer reads the end of the stream, and may still answer: an END frame, not a
        TCP half-close, which a TLS connection cannot make."""
        await self.write(pb.FrameError(), END)

    def close(self) -> None:
        self.writer.close()

    cancel = close  # as a grpc.aio call's


def _named(payload: bytes) -> Exception:
    """The error an ERROR frame names; FrameStreamBroken for one that is not a FrameError."""
    from sixfold.wire import named_error  # wire imports grpc's status machinery: only here

    try:
        error = pb.FrameError.FromString(payload)
    except DecodeError:
        return FrameStreamBroken("an ERROR frame that is no FrameError")
    return named_error(error.error, error.message)


async def connect(
    host: str,
    port: int,
    hello: pb.FrameHello,
    kind: type[M],
    tls: ssl.SSLContext | None = None,
) -> FrameStream[M]:
    """A framed stream to the node at host:port, once it accepted `hello` with its own name
    (and volume, when both are known); over TLS with `tls`, the node's certificate checked
    for `host`. Raises OSError (TimeoutError, ssl.SSLError) when it cannot connect, the named
    error of a refusal, FrameStreamBroken when the connection ends first or what answers is
    not that node's framed listener (a stale port another program took)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None),
        CONNECT_WAIT_S,
    )
    stream = FrameStream(reader, writer, kind)
    try:
        await stream.write(hello)
        try:
            frame_kind, payload = await asyncio.wait_for(stream._read_frame(), HELLO_WAIT_S)
        except FrameTooLargeError as exc:
            raise FrameStreamBroken(f"no framed listener answered: {exc}") from None
        if frame_kind == ERROR:
            raise _named(payload)
        _check_accepted(hello, frame_kind, payload)
    except BaseException:
        stream.close()
        raise
    stream.frame_bytes_max = FRAME_BYTES_MAX  # the node's frames: it answered as one
    return stream


def _check_accepted(hello: pb.FrameHello, frame_kind: int, payload: bytes) -> None:
    """The node's answer names the node and volume the hello asked for."""
    try:
        answer = pb.FrameHello.FromString(payload) if frame_kind == MESSAGE else None
    except DecodeError:
        answer = None
    if (
        answer is None
        or answer.node != hello.node
        or (hello.volume_id and answer.volume_id and answer.volume_id != hello.volume_id)
    ):
        raise FrameStreamBroken(f"no framed listener of {hello.node} answered the hello")


async def accept(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> tuple[pb.FrameHello, FrameStream[Any]]:
    """The server's side of the hello: what the client asks for (the caller answers it).
    Raises what a connection that opens with anything else ends with."""
    stream: FrameStream[Any] = FrameStream(reader, writer, pb.FrameHello)
    hello = await asyncio.wait_for(stream.read(), HELLO_WAIT_S)
    if not isinstance(hello, pb.FrameHello):
        raise InvalidRequestError("a framed connection must open with a FrameHello")
    return hello, stream
