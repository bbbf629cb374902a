"""Async gRPC clients for the storage nodes, the writer and the readers.

Channels are created once per endpoint. Every call has a deadline; a failure is turned into
the named exception the server raised (`sixfold.wire.error_from_rpc`), or a NodeDownError
when the endpoint did not answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import Message

from sixfold import frames, tls
from sixfold.addressing import addressed_to
from sixfold.core.errors import SixfoldError, WrongNodeError
from sixfold.guard import Undecodable
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.wire import error_from_rpc, named_error

log = logging.getLogger("sixfold.clients")

MESSAGE_BYTES_MAX = 64 << 20  # the largest gRPC message sent or received
WRITES_PER_MESSAGE_MAX = 256  # commits a PageWriteStream sends in one message
CALL_TIMEOUT_S = 2.0
# A stream that fell back to gRPC because the node's frame port did not answer tries the port
# again after this long, then twice as long each time, up to the max (`framed_later`).
FRAMED_RETRY_MIN_S = 5.0
FRAMED_RETRY_MAX_S = 300.0

T = TypeVar("T")
M = TypeVar("M", bound=Message)

CHANNEL_OPTIONS = [
    ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
    ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
    # Reconnect quickly after a node comes back: the default backoff grows to 120 s.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # gRPC also takes this as the time a connection attempt may take: with 100 ms a busy
    # process (one coalescing a large log after a restart) was taken for a dead one.
    ("grpc.min_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
]


# For telling a process that is gone from one that is there but silent. gRPC takes the
# minimum reconnect backoff as the time a connection attempt may take: a paused process
# (whose kernel still accepts the TCP connection) would fail as UNAVAILABLE when that runs
# out, like a dead one. Without it the call runs to its own deadline: DEADLINE_EXCEEDED.
# And a new probe channel is a new connection: channels share the process's pooled
# connections otherwise, and a probe would ride a connection that broke.
PROBE_CHANNEL_OPTIONS = [o for o in CHANNEL_OPTIONS if "reconnect_backoff" not in o[0]] + [
    ("grpc.use_local_subchannel_pool", 1)
]


class NodeDownError(SixfoldError):
    """An endpoint did not answer (connection refused, timed out)."""


async def call(
    name: str,
    fn: Callable[..., Awaitable[T]],
    request: object,
    timeout: float,
    metadata: tuple[tuple[str, str], ...] | None = None,
) -> T:
    try:
        return await fn(request, timeout=timeout, metadata=metadata)
    except grpc.aio.AioRpcError as err:
        raise rpc_error(name, err) from None


def rpc_error(name: str, err: grpc.aio.AioRpcError) -> Exception:
    """The named exception an RPC failure of endpoint `name` stands for."""
    exc = error_from_rpc(err)
    if exc is not err:
        return exc
    if err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        details = err.details() or ""
        return NodeDownError(f"{name}: {err.code().name}: {details}{tls.explain(details)}")
    return SixfoldError(f"{name}: {err.code().name}: {err.details()}")


class NodeClient:
    """One storage node. Every call names the node it is meant for (sixfold/addressing.py):
    when the address reaches another node, the call fails with WrongNodeError and the client
    dials the name again, so the next call resolves it afresh."""

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address
        self.metadata = addressed_to(name)
        self.redials = 0  # times the address reached another node
        self._closing: set[asyncio.Task[None]] = set()
        self._dial()

    def _dial(self) -> None:
        self.channel = tls.aio_channel(self.address, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.StorageNodeStub(self.channel)
        # The node's frame port, as its last state told it (sixfold/frames.py): None until
        # told, 0 when it has none. Told again with every state, and after each redial.
        self.frame_port: int | None = None
        # Whether the last framed stream tried could not reach the frame port the node told
        # (it was starting, or not routed yet): a stream then on gRPC moves when it can.
        self.frame_port_unreached = False
        self.volume_id = ""

    async def connected(self, limit_s: float) -> bool:
        """Whether the channel connects within `limit_s`. A channel whose node was down waits
        out its reconnect backoff before trying again, and a call meanwhile fails at once as
        UNAVAILABLE although the node is back."""
        try:
            await asyncio.wait_for(self.channel.channel_ready(), limit_s)
        except TimeoutError:
            return False
        return True

    def redial(self, why: WrongNodeError) -> None:
        """A new channel, which resolves the address again: the old one reached another
        node (its host name now resolves elsewhere, but a live connection keeps the old IP).
        Calls still on the old channel get a grace period before it closes."""
        log.warning("%s at %s: %s", self.name, self.address, why)
        self.redials += 1
        old = self.channel
        self._dial()
        task = asyncio.get_running_loop().create_task(old.close(grace=CALL_TIMEOUT_S))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _call(self, method: str, request: object, timeout: float) -> Any:
        """The stub's `method`; once more on a fresh channel when the address reached another
        node (that node refused before doing anything, so the call is safe to repeat)."""
        try:
            answer = await call(
                self.name, getattr(self.stub, method), request, timeout, self.metadata
            )
        except WrongNodeError as exc:
            self.redial(exc)
            answer = await call(
                self.name, getattr(self.stub, method), request, timeout, self.metadata
            )
        if isinstance(answer, pb.NodeState):
            self._learn(answer)
        return answer

    def _learn(self, state: pb.NodeState) -> None:
        """Where the node's framed streams are, and its volume, as its state tells."""
        self.frame_port = state.frame_port
        self.volume_id = state.volume_id

    async def _framed(
        self, method: str, kind: type[M], retry: bool = False
    ) -> frames.FrameStream[M] | None:
        """A framed stream of `method` to the node, or None to use gRPC: the node has no frame
        port, or it could not be learned or reached (gRPC then reports a node that is down).
        The port is asked for afresh while unknown or none, so a node restarted with one is
        framed again. A refusal (a wrong node, say) is raised, as on gRPC. Under TLS only
        members go framed (a tool's client certificate would be refused there)."""
        if tls.tls_files() is not None and tls.member_name() is None:
            self.frame_port_unreached = False  # never framed: its streams stay on gRPC
            return None
        if not self.frame_port:
            try:
                await self.get_state(timeout=CALL_TIMEOUT_S)
            except SixfoldError:
                self.frame_port_unreached = True  # not known yet: a stream on gRPC asks later
                return None
        if not self.frame_port:
            self.frame_port_unreached = False  # the node has none
            return None
        host = self.address.rsplit(":", 1)[0].strip("[]")
        hello = pb.FrameHello(method=method, node=self.name, volume_id=self.volume_id)
        try:
            stream = await frames.connect(
                host, self.frame_port, hello, kind, tls.client_ssl_context()
            )
        except (OSError, frames.FrameStreamBroken) as exc:  # TimeoutError is an OSError
            log.log(
                logging.DEBUG if retry else logging.INFO,
                "%s: framed %s on port %d: %s; over gRPC, the port tried again later",
                self.name,
                method,
                self.frame_port,
                str(exc) or type(exc).__name__,
            )
            self.frame_port = None  # asked again next time: the node may have moved or be back
            self.frame_port_unreached = True
            return None
        self.frame_port_unreached = False
        return stream

    async def framed_later(
        self, method: str, kind: type[M], first: Message | None = None
    ) -> frames.FrameStream[M]:
        """For a stream that fell back to gRPC because the frame port did not answer (the node
        was starting, or its address not routed yet: seen in a swarm whose tasks all start at
        once), a framed stream of `method` once the port answers, tried with growing rests,
        `first` written on it at once (a watch's request: the node waits for it only so
        long); the caller then moves its stream over. Runs until cancelled, with the stream
        it is for."""
        rest_s = FRAMED_RETRY_MIN_S
        while True:
            await asyncio.sleep(rest_s)
            try:
                stream = await self._framed(method, kind, retry=True)
            except SixfoldError as exc:  # refused there (a wrong node): gRPC says so in time
                log.debug("%s: framed %s refused: %s", self.name, method, exc)
                stream = None
            if stream is not None:
                try:
                    if first is not None:
                        await stream.write(first)
                except BaseException:  # cancelled while it waited on a full buffer
                    stream.close()
                    raise
                log.info("%s: %s moved to the frame port", self.name, method)
                return stream
            rest_s = min(rest_s * 2, FRAMED_RETRY_MAX_S)

    async def append(
        self, request: pb.AppendRequest, timeout: float = CALL_TIMEOUT_S
    ) -> pb.AppendResponse:
        return await self._call("Append", request, timeout)

    async def open_append_stream(self) -> AppendStream:
        """A new append stream, framed when the node has a frame port: AppendBatch written,
        AppendBatchAck read, until either side ends it (failures: `rpc_error`, or a named
        SixfoldError when framed; on WrongNodeError the caller redials)."""
        stream = await self._framed(frames.APPEND_STREAM, pb.AppendBatchAck)
        if stream is not None:
            return FramedAppendStream(self.name, stream)
        return self.stub.AppendStream(metadata=self.metadata)  # type: ignore[no-any-return]

    async def read_records(
        self, request: pb.ReadRecordsRequest, timeout: float = CALL_TIMEOUT_S
    ) -> pb.ReadRecordsResponse:
        return await self._call("ReadRecords", request, timeout)

    async def get_page(
        self, request: pb.GetPageRequest, timeout: float = CALL_TIMEOUT_S
    ) -> pb.GetPageResponse:
        return await self._call("GetPage", request, timeout)

    async def set_membership(
        self, membership: pb.MembershipView, timeout: float = CALL_TIMEOUT_S, volume_epoch: int = 0
    ) -> pb.NodeState:
        request = pb.SetMembershipRequest(membership=membership, epoch=volume_epoch)
        return await self._call("SetMembership", request, timeout)

    async def read_page_images(
        self, request: pb.ReadPageImagesRequest, timeout: float = CALL_TIMEOUT_S
    ) -> pb.ReadPageImagesResponse:
        return await self._call("ReadPageImages", request, timeout)

    async def get_state(
        self, request: pb.GetStateRequest | None = None, timeout: float = CALL_TIMEOUT_S
    ) -> pb.NodeState:
        return await self._call("GetState", request or pb.GetStateRequest(), timeout)

    async def seal(
        self, epoch: int, owner: str, timeout: float = CALL_TIMEOUT_S, membership_epoch: int = 0
    ) -> pb.NodeState:
        request = pb.SealEpochRequest(epoch=epoch, owner=owner, membership_epoch=membership_epoch)
        return await self._call("SealEpoch", request, timeout)

    async def truncate(
        self, request: pb.TruncateRequest, timeout: float = CALL_TIMEOUT_S
    ) -> pb.NodeState:
        return await self._call("Truncate", request, timeout)

    async def watch_state(self, reader: str) -> AsyncIterator[pb.NodeState]:
        """The node's state at once, then after each change, until the stream breaks.

        No deadline: the stream lives as long as the node. It ends quietly when the node
        stops; a broken or refused stream raises like `call` (NodeDownError when the node
        is unreachable or went away mid-stream). As with any async generator, cancelling
        a pending step (e.g. `wait_for(anext(...))` timing out) closes the stream. A watch
        on gRPC because the frame port did not answer moves there once it does.
        """
        request = pb.WatchStateRequest(reader=reader)
        try:
            framed = await self._framed(frames.WATCH_STATE, pb.NodeState)
        except WrongNodeError as exc:
            self.redial(exc)
            raise
        moved: list[frames.FrameStream[pb.NodeState]] = []  # a framed watch, its request sent
        try:
            if framed is None:
                on_grpc = self._grpc_watch(request, moved)
                try:
                    async for state in on_grpc:
                        yield state
                finally:
                    await on_grpc.aclose()
                if not moved:
                    return
                framed = moved[0]  # it sends the whole state first
            else:
                await framed.write(request)
            while (state := await _framed_read(self.name, framed)) is not grpc.aio.EOF:
                self._learn(state)
                yield state
        finally:
            for stream in [*moved, framed]:
                if stream is not None:
                    stream.close()

    async def _grpc_watch(
        self, request: pb.WatchStateRequest, moved: list[frames.FrameStream[pb.NodeState]]
    ) -> AsyncIterator[pb.NodeState]:
        """The watch on gRPC. When it is there because the frame port did not answer, it ends
        once a framed watch opened, which it puts in `moved` (a state message the two crossed
        is not lost: a framed watch begins with the whole state; one a little older than the
        last on gRPC, if the reader was busy meanwhile, only understates, as a poll may)."""
        states = self._streamed(self.stub.WatchState(request, metadata=self.metadata))
        if not self.frame_port_unreached:
            try:
                async for state in states:
                    yield state
            finally:
                await states.aclose()
            return
        loop = asyncio.get_running_loop()
        later = loop.create_task(self.framed_later(frames.WATCH_STATE, pb.NodeState, request))
        step: asyncio.Future[pb.NodeState] | None = None
        try:
            while True:
                step = asyncio.ensure_future(anext(states))
                await asyncio.wait([step, later], return_when=asyncio.FIRST_COMPLETED)
                if later.done():
                    moved.append(later.result())
                    return
                try:
                    state = step.result()
                except StopAsyncIteration:
                    return
                step = None
                yield state
        finally:
            later.cancel()  # both before any wait: a second cancel may end this one
            if step is not None:
                step.cancel()
            if not moved:  # a watch it opens all the same (a cancel that came late) is closed
                later.add_done_callback(close_opened)
            if step is not None:
                await asyncio.gather(step, return_exceptions=True)
            await states.aclose()

    async def follow_log(
        self, reader: str, after_lsn: int, compress: bool
    ) -> AsyncIterator[pb.LogChunk]:
        """The node's committed log above `after_lsn` as it grows (storage_node/follow_log.py),
        chunk by chunk, with heartbeats; no deadline, errors as `watch_state`'s."""
        request = pb.FollowLogRequest(reader=reader, after_lsn=after_lsn, compress=compress)
        async for chunk in self._streamed(self.stub.FollowLog(request, metadata=self.metadata)):
            yield chunk

    async def _streamed(self, stream: Any) -> AsyncIterator[Any]:
        try:
            async for message in stream:
                yield message
        except grpc.aio.AioRpcError as err:
            exc = _stream_error(self.name, err)
            if isinstance(exc, WrongNodeError):
                self.redial(exc)
            raise exc from None
        finally:
            stream.cancel()

    async def close(self) -> None:
        await self.channel.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)


def _stream_error(name: str, err: grpc.aio.AioRpcError) -> Exception:
    """A failed stream as `call` would report it; CANCELLED too means the node went away."""
    exc = error_from_rpc(err)
    if exc is not err:
        return exc
    if err.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    ):
        details = err.details() or ""
        return NodeDownError(f"{name}: {err.code().name}: {details}{tls.explain(details)}")
    return SixfoldError(f"{name}: {err.code().name}: {err.details()}")


class AppendStream(Protocol):
    """An append stream as the writer uses it: a grpc.aio call, or a FramedAppendStream."""

    async def write(self, message: pb.AppendBatch) -> None: ...

    async def read(self) -> Any: ...

    def cancel(self) -> bool | None: ...


class FramedAppendStream:
    """A framed append stream with a grpc.aio call's face: read gives acknowledgements, then
    grpc.aio.EOF; a broken connection raises NodeDownError."""

    def __init__(self, name: str, stream: frames.FrameStream[pb.AppendBatchAck]) -> None:
        self.name = name
        self.stream = stream

    async def write(self, message: pb.AppendBatch) -> None:
        await self.stream.write(message)

    async def read(self) -> Any:
        return await _framed_read(self.name, self.stream)

    async def done_writing(self) -> None:
        await self.stream.done_writing()

    def cancel(self) -> None:
        self.stream.close()


def close_opened(task: asyncio.Task[frames.FrameStream[Any]]) -> None:
    """A done callback for a `framed_later` given up on: the stream it opened all the same
    (a cancel that came too late) is closed, not left open on the node."""
    if not task.cancelled() and task.exception() is None:
        task.result().close()


async def _framed_read(name: str, stream: frames.FrameStream[M]) -> M | Any:
    """The next message of a framed stream from node `name`, or grpc.aio.EOF once the node
    ended it; NodeDownError when the connection broke, SixfoldError when a frame is not a
    message of the stream's kind."""
    try:
        message = await stream.read()
    except frames.FrameStreamBroken:
        raise NodeDownError(f"{name}: the framed stream broke") from None
    if isinstance(message, Undecodable):
        raise SixfoldError(f"{name}: a framed stream's message did not decode: {message.error}")
    return message


class WriterClient:
    def __init__(self, address: str, name: str = "writer") -> None:
        self.name = name
        self.channel = tls.aio_channel(address, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.WriterStub(self.channel)

    async def write_pages(self, changes: list[pb.PageChange], timeout: float = 30.0) -> int:
        response = await call(
            self.name, self.stub.WritePages, pb.WritePagesRequest(changes=changes), timeout
        )
        return response.commit_lsn

    async def read_page(self, page_no: int, timeout: float = 10.0) -> pb.ReadPageResponse:
        return await call(
            self.name, self.stub.ReadPage, pb.ReadPageRequest(page_no=page_no), timeout
        )

    async def compare_and_set(
        self, page_no: int, offset: int, expected: bytes, new: bytes, timeout: float = 30.0
    ) -> pb.CompareAndSetResponse:
        request = pb.CompareAndSetRequest(
            page_no=page_no, offset=offset, expected=expected, new=new
        )
        return await call(self.name, self.stub.CompareAndSet, request, timeout)

    async def state(self, timeout: float = CALL_TIMEOUT_S) -> pb.WriterState:
        return await call(self.name, self.stub.GetWriterState, pb.GetWriterStateRequest(), timeout)

    def write_pages_stream(self) -> PageWriteStream:
        """Commits from any number of tasks on one Writer/WritePagesStream."""
        return PageWriteStream(self)

    async def close(self) -> None:
        await self.channel.close()


class PageWriteStream:
    """Writer/WritePagesStream (issue 11): each `write` is its own commit, sent without
    waiting for the ones before it, and answered by id once durable; the writes waiting to
    go when the stream is free go in one message. An error comes back as
    the exception a unary WritePages would have raised; a broken stream fails every write
    waiting on it, and later ones, with NodeDownError (open another stream)."""

    def __init__(self, client: WriterClient) -> None:
        self.name = client.name
        self._requests: asyncio.Queue[pb.StreamedWrite | None] = asyncio.Queue()
        self._call = client.stub.WritePagesStream(self._sent())
        self._waiting: dict[int, asyncio.Future[int]] = {}
        self._next_id = 1
        self._broken: Exception | None = None
        self._reader = asyncio.create_task(self._read())

    async def write(self, changes: list[pb.PageChange], timeout: float = 30.0) -> int:
        """The commit LSN once the change is durable."""
        if self._broken is not None:
            raise self._broken
        request_id, self._next_id = self._next_id, self._next_id + 1
        answer = self._waiting[request_id] = asyncio.get_running_loop().create_future()
        self._requests.put_nowait(pb.StreamedWrite(id=request_id, changes=changes))
        try:
            async with asyncio.timeout(timeout):
                return await answer
        except TimeoutError:
            raise NodeDownError(
                f"{self.name}: no answer on the WritePages stream in {timeout:g} s (the "
                "commit may still take effect)"
            ) from None
        finally:
            self._waiting.pop(request_id, None)

    @property
    def broken(self) -> Exception | None:
        """Why this stream takes no more writes (None: it does)."""
        return self._broken

    async def close(self) -> None:
        """End the stream; writes still waiting fail at once (their outcome unknown)."""
        closed = NodeDownError(
            f"{self.name}: the WritePages stream is closed (a write that was in flight may "
            "still take effect)"
        )
        self._fail_waiting(self._broken or closed)
        self._requests.put_nowait(None)
        self._call.cancel()
        self._reader.cancel()

    async def _sent(self) -> AsyncIterator[pb.WritePagesStreamRequest]:
        """Every write waiting to go, in one message (up to WRITES_PER_MESSAGE_MAX)."""
        while (first := await self._requests.get()) is not None:
            writes = [first]
            while len(writes) < WRITES_PER_MESSAGE_MAX and not self._requests.empty():
                more = self._requests.get_nowait()
                if more is None:
                    self._requests.put_nowait(None)  # closed: after what is ready
                    break
                writes.append(more)
            yield pb.WritePagesStreamRequest(writes=writes)

    async def _read(self) -> None:
        broken: Exception = NodeDownError(f"{self.name}: the WritePages stream ended")
        try:
            async for answer in self._call:
                for outcome in answer.outcomes:
                    self._settle(outcome)
        except grpc.aio.AioRpcError as err:
            broken = rpc_error(self.name, err)
        finally:  # cancelled too (close): no write is left waiting for an answer
            self._fail_waiting(broken)

    def _fail_waiting(self, why: Exception) -> None:
        self._broken = self._broken or why
        for waiting in self._waiting.values():
            if not waiting.done():
                waiting.set_exception(self._broken)

    def _settle(self, outcome: pb.WriteOutcome) -> None:
        waiting = self._waiting.get(outcome.id)
        if waiting is None or waiting.done():
            return  # timed out meanwhile
        if outcome.error_code:
            fields = outcome.error_fields
            waiting.set_exception(named_error(outcome.error_name, outcome.error_message, fields))
        else:
            waiting.set_result(outcome.commit_lsn)


class ReaderClient:
    def __init__(self, address: str, name: str) -> None:
        self.name = name
        self.channel = tls.aio_channel(address, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.ReaderStub(self.channel)

    async def read_page(self, page_no: int, timeout: float = 10.0) -> pb.ReadPageResponse:
        return await call(
            self.name, self.stub.ReadPage, pb.ReadPageRequest(page_no=page_no), timeout
        )

    async def state(self, timeout: float = CALL_TIMEOUT_S) -> pb.ReaderState:
        return await call(self.name, self.stub.GetReaderState, pb.GetReaderStateRequest(), timeout)

    async def close(self) -> None:
        await self.channel.close()


async def drain_writer(address: str, hold_s: float, timeout_s: float) -> int:
    """Ask the writer at `address` to take no new commit for `hold_s` (a planned switchover)
    and to answer once every commit it took is durable: the VDL they are all at or below."""
    channel = tls.aio_channel(address, options=CHANNEL_OPTIONS)
    try:
        stub = pb_grpc.InstanceStub(channel)
        request = pb.DrainRequest(hold_s=hold_s)
        return (await call(address, stub.Drain, request, timeout_s)).vdl
    finally:
        await channel.close()
