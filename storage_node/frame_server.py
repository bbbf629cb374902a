"""The node's framed listener (sixfold/frames.py): the writer's append stream and readers'
state watches, off gRPC (issue 11).

The same handlers serve both transports: `serve_append_stream` and the service's `watch`
read and write through a two-method stream context. What gRPC does around a call is done
here: the addressing check (sixfold/addressing.py: a hello meant for another node or volume
is refused, naming both), bounds on connections and on what is read before a stream is
accepted, and the end of a handler when its client goes away (a watch reads its
connection, as gRPC cancels a call whose client left) or the node stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl

import grpc

from sixfold import frames, tls
from sixfold.addressing import wrong_node
from sixfold.cluster import MEMBER_NAMES
from sixfold.core.errors import InvalidRequestError, SixfoldError, WrongNodeError
from sixfold.frames import FrameStream, FrameStreamBroken
from sixfold.guard import Undecodable, UndecodableLog
from sixfold.rpc import sixfold_pb2 as pb
from storage_node.append_stream import serve_append_stream
from storage_node.node import StorageNode
from storage_node.service import StorageNodeService

log = logging.getLogger("sixfold.storage_node")

FRAME_CONNECTIONS_MAX = 128  # open framed connections; more are closed at once


class _ServerStream:
    """A framed connection as a handler's stream context. A connection that breaks or ends
    reads as the end of the stream. A frame that cannot be read as a message (too large, of
    no known kind) reads as one that does not decode, which the handler refuses by name, in
    band; the bytes after it are out of step, so the stream then ends."""

    def __init__(self, stream: FrameStream[pb.AppendBatch]) -> None:
        self.stream = stream
        self.out_of_step = False

    async def read(self) -> object:
        if self.out_of_step:
            return grpc.aio.EOF
        try:
            return await self.stream.read()
        except FrameStreamBroken:
            return grpc.aio.EOF
        except frames.FrameTooLargeError as exc:
            self.out_of_step = True
            return Undecodable(exc)
        except SixfoldError as exc:  # an ERROR frame's, which a client has no call to send
            self.out_of_step = True
            return Undecodable(
                InvalidRequestError(f"an ERROR frame ({type(exc).__name__}: {exc}) from a client")
            )

    async def write(self, message: object) -> None:
        await self.stream.write(message)  # type: ignore[arg-type]


class FrameServer:
    def __init__(self, node: StorageNode, service: StorageNodeService) -> None:
        self.node = node
        self.service = service
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[None]] = set()
        self.refusals = UndecodableLog()  # connections refused: logged at most once a while
        self.stopping = False
        self.tls: ssl.SSLContext | None = None

    async def start(self, host: str, port: int) -> None:
        """Listen on host:port (0: a free one); the node then tells its frame port in its
        state. With TLS on, only TLS, from callers whose certificate the CA signed."""
        self.tls = tls.server_ssl_context()
        handshake_s = frames.HELLO_WAIT_S if self.tls is not None else None  # else refused
        self.server = await asyncio.start_server(
            self._serve, host, port, ssl=self.tls, ssl_handshake_timeout=handshake_s
        )
        self.node.frame_port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and end every framed stream, before the node stops."""
        self.stopping = True
        if self.server is not None:
            self.server.close()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        node = self.node
        task = asyncio.current_task()
        assert task is not None
        self.handlers.add(task)
        node.frame_connections += 1
        try:
            if node.frame_connections > FRAME_CONNECTIONS_MAX:
                self._refused(writer, f"{FRAME_CONNECTIONS_MAX} open (FRAME_CONNECTIONS_MAX)")
                return
            try:
                hello, stream = await frames.accept(reader, writer)
            except Exception as exc:  # anything but a hello: closed, logged rarely
                self._refused(writer, f"no hello: {str(exc) or type(exc).__name__}")
                return
            if (refusal := self._not_a_member(writer)) is not None:
                self._refused(writer, str(refusal))
                await stream.write_error(refusal)
                return
            await self._dispatch(hello, stream)
        except asyncio.CancelledError:
            # Ended by `stop`: the task ends as done, not cancelled, as asyncio's stream
            # server logs a traceback for a handler task that ends cancelled.
            if not self.stopping:
                raise
        finally:
            node.frame_connections -= 1
            self.handlers.discard(task)
            writer.close()

    def _not_a_member(self, writer: asyncio.StreamWriter) -> InvalidRequestError | None:
        """Under TLS, the framed streams are the members' (they carry no token, so a tool's
        client certificate, which gRPC lets in with a token, gets nothing here)."""
        if self.tls is None:
            return None
        name = tls.peer_common_name(writer.get_extra_info("peercert"))
        if name in MEMBER_NAMES:
            return None
        return InvalidRequestError(
            f"framed streams are for cluster members; the certificate presented names "
            f"{name or 'no one'}: use gRPC"
        )

    def _refused(self, writer: asyncio.StreamWriter, why: str) -> None:
        """Logged at most once a while per host (its ports differ from one connection to
        the next), as undecodable gRPC requests are (issue 19)."""
        peer = writer.get_extra_info("peername")
        host = str(peer[0]) if peer else "?"
        self.refusals.note(host, "framed connection", InvalidRequestError(why))

    async def _dispatch(self, hello: pb.FrameHello, stream: FrameStream) -> None:
        node = self.node
        if hello.node and hello.node != node.name:
            await stream.write_error(wrong_node(hello.node, node.name))
        elif hello.volume_id and node.volume_id and hello.volume_id != node.volume_id:
            await stream.write_error(
                WrongNodeError(
                    f"this is storage node {node.name} of volume {node.volume_id}, not of "
                    f"{hello.volume_id}: the caller's address reaches another cluster"
                )
            )
        elif hello.method == frames.APPEND_STREAM:
            stream.kind = pb.AppendBatch
            stream.frame_bytes_max = frames.FRAME_BYTES_MAX
            await self._accept(stream, hello)
            await serve_append_stream(node, _ServerStream(stream))
            await stream.end()
        elif hello.method == frames.WATCH_STATE:
            stream.kind = pb.WatchStateRequest
            await self._accept(stream, hello)
            await self._watch(stream)
        else:
            await stream.write_error(
                InvalidRequestError(
                    f"no framed stream {hello.method!r}: the framed streams are "
                    f"{frames.APPEND_STREAM} and {frames.WATCH_STATE}"
                )
            )

    async def _accept(self, stream: FrameStream, hello: pb.FrameHello) -> None:
        node = self.node
        await stream.write(
            pb.FrameHello(method=hello.method, node=node.name, volume_id=node.volume_id)
        )

    async def _watch(self, stream: FrameStream) -> None:
        """The service's watch until the node stops or the client goes (it sends nothing
        after its request: a read that returns is its leaving)."""
        try:
            request = await asyncio.wait_for(stream.read(), frames.HELLO_WAIT_S)
        except (TimeoutError, FrameStreamBroken, SixfoldError):
            request = None
        if not isinstance(request, pb.WatchStateRequest):
            await stream.write_error(InvalidRequestError("a watch must begin with its request"))
            return
        loop = asyncio.get_running_loop()
        watch = loop.create_task(self.service.watch(request, _ServerStream(stream)))
        left = loop.create_task(_until_closed(stream))
        try:
            done, _ = await asyncio.wait([watch, left], return_when=asyncio.FIRST_COMPLETED)
        finally:
            left.cancel()
            watch.cancel()
            await asyncio.gather(watch, left, return_exceptions=True)
        if left in done:
            return  # the client went: nothing to tell it
        if isinstance(refused := watch.exception(), SixfoldError):  # WatchersFullError
            await stream.write_error(refused)
            return
        watch.result()  # a bug raises here
        await stream.end()  # the node stops


async def _until_closed(stream: FrameStream) -> None:
    with contextlib.suppress(FrameStreamBroken, SixfoldError):
        while await stream.read() is not grpc.aio.EOF:
            pass
