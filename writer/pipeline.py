"""The writer's commit pipeline: the asyncio shell around sixfold.core.commit_log (issue 11).

The pure CommitLog decides everything: LSNs, the log tail, what each node is sent and when,
durable points and fencing. This shell owns what it cannot: one long-lived append stream per
storage node (NodeSender), the clock and timers, and an asyncio future per waiting commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import grpc

from sixfold import frames
from sixfold.clients import (
    AppendStream,
    FramedAppendStream,
    NodeClient,
    NodeDownError,
    close_opened,
    rpc_error,
)
from sixfold.core.commit_log import CommitLog, PageWrite, Waiter, WriterLimits
from sixfold.core.errors import (
    EpochAheadError,
    NotWriterError,
    SixfoldError,
    StaleEpochError,
    StaleMembershipError,
    WriterFencedError,
    WrongNodeError,
)
from sixfold.core.membership import Membership
from sixfold.core.shipping import Batch
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.wire import named_error, ranges_to_proto

__all__ = ["CommitPipeline", "PageWrite", "WriterLimits"]

log = logging.getLogger("sixfold.writer")

WAITER_SWEEP_S = 0.05  # how often commits past their write timeout are failed
STREAM_STATUS_WAIT_S = 1.0  # a write failed: how long to wait for the stream's status
TIMER_MIN_S = 0.001  # the shortest a sender's timer is set for (uvloop counts milliseconds)


def mark_retrieved(future: asyncio.Future[int]) -> None:
    if not future.cancelled():
        future.exception()


class _StreamMoved(Exception):
    """The stream on gRPC gives way to a framed one just opened (NodeSender.moved_to)."""


class NodeSender:
    """One node's append stream: sends what its NodeShipper says, feeds back the acks.

    A broken stream is opened again after a backoff; a node that holds a newer epoch is
    given up on (the CommitLog fences the writer once a write quorum has). A stream on gRPC
    because the node's frame port did not answer moves there once it does, as a new stream
    that resumes after the last acknowledged record.
    """

    def __init__(self, pipeline: CommitPipeline, client: NodeClient) -> None:
        self.pipeline = pipeline
        self.client = client
        self.shipper = pipeline.log.shippers[client.name]
        self.wake = asyncio.Event()
        self.bytes_sent = 0
        self.failure: BaseException | None = None  # what broke the current stream
        self.timer: asyncio.TimerHandle | None = None
        self.timer_at = 0.0  # loop time the timer is due
        self.moved_to: FramedAppendStream | None = None  # the next stream, opened already

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            if self.moved_to is not None:
                self.moved_to.cancel()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        p = self.pipeline
        while not p.log.fenced:
            try:
                await self._stream()
            except _StreamMoved:
                continue  # at once, on the framed stream
            except EpochAheadError:
                try:
                    await self._send_truncations()
                except (NodeDownError, SixfoldError) as exc:
                    await self._back_off(exc, loop)
            except StaleEpochError as exc:
                p.on_stale(self.client.name, exc)
                return
            except StaleMembershipError as exc:  # a change this writer did not ship by yet
                p.refresh_membership()
                await self._back_off(exc, loop)
            except WrongNodeError as exc:  # its address reached another node: resolve again
                self.client.redial(exc)
                await self._back_off(exc, loop)
            except (NodeDownError, SixfoldError) as exc:
                await self._back_off(exc, loop)

    async def _back_off(self, exc: BaseException, loop: asyncio.AbstractEventLoop) -> None:
        if self.shipper.reachable:
            log.warning("storage node %s unreachable: %s", self.client.name, exc)
        now = loop.time()
        await asyncio.sleep(self.pipeline.log.broken(self.client.name, now) - now)

    async def _stream(self) -> None:
        """One stream's life: returns never; raises what broke it."""
        loop = asyncio.get_running_loop()
        p = self.pipeline
        call: AppendStream = self.moved_to or await self.client.open_append_stream()
        self.moved_to = None
        self.failure = None
        acks = loop.create_task(self._read_acks(call))
        framed_later = None
        if not isinstance(call, FramedAppendStream) and self.client.frame_port_unreached:
            framed_later = loop.create_task(
                self.client.framed_later(frames.APPEND_STREAM, pb.AppendBatchAck)
            )
            framed_later.add_done_callback(lambda _: self.wake.set())
        try:
            # The first acknowledgement says the node is there.
            await self._send(call, p.log.open(self.client.name, loop.time()))
            while not p.log.fenced:
                await self.wake.wait()
                self.wake.clear()
                if self.failure is not None:
                    raise self.failure
                if framed_later is not None and framed_later.done():
                    self.moved_to = FramedAppendStream(self.client.name, framed_later.result())
                    raise _StreamMoved()
                now = loop.time()
                if not self.shipper.has_work(now):
                    continue
                poll = p.log.poll(self.client.name, now)
                if poll.silent is not None:
                    raise NodeDownError(poll.silent)
                for batch in poll.batches:
                    await self._send(call, batch)
                if poll.wake_at is not None:
                    self._wake_at(poll.wake_at)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as err:
            # A write to a stream the node ended fails vaguely: why it ended (a stale epoch,
            # say) is what the acknowledgement reader gets.
            await asyncio.wait([acks], timeout=STREAM_STATUS_WAIT_S)
            if self.failure is not None:
                raise self.failure from None
            if isinstance(err, grpc.aio.AioRpcError):
                raise rpc_error(self.client.name, err) from None
            raise NodeDownError(f"{self.client.name}: the append stream ended") from None
        finally:
            acks.cancel()
            call.cancel()
            if framed_later is not None and self.moved_to is None:  # not taken
                framed_later.cancel()  # a stream it opens all the same (a cancel that came late)
                framed_later.add_done_callback(close_opened)  # is closed, not left open
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

    async def _send(self, call: AppendStream, batch: Batch) -> None:
        message = pb.AppendBatch(
            epoch=self.pipeline.log.epoch,
            records=batch.blob,
            vdl=batch.vdl,
            batch_id=batch.batch_id,
            membership_epoch=self.pipeline.log.membership.epoch,
        )
        self.bytes_sent += message.ByteSize() + 5  # 5: gRPC's length-prefix framing
        if len(self.shipper.in_flight) == 1:
            loop = asyncio.get_running_loop()
            self._wake_at(loop.time() + self.pipeline.log.limits.append_timeout_s)
        await call.write(message)

    def _wake_at(self, when: float) -> None:
        """Wake the sender by loop time `when` (an announcement or a lingering batch due, or a
        silence to check). A timer already due by then stands: the poll it wakes asks for the
        next one, so a wake per commit does not cost a timer each. A timer may fire a little
        early (uvloop counts milliseconds): the poll then asks for another for what is left."""
        if self.timer is not None:
            if self.timer_at <= when:
                return
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        self.timer_at = when
        self.timer = loop.call_later(max(when - loop.time(), TIMER_MIN_S), self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        self.wake.set()

    async def _read_acks(self, call: AppendStream) -> None:
        try:
            while (ack := await call.read()) is not grpc.aio.EOF:
                if ack.error:  # the node's last word on this stream
                    self.failure = named_error(ack.error, ack.message)
                    return
                self.pipeline.on_ack(self.client.name, ack.batch_id, ack.scl)
                self.wake.set()
            self.failure = NodeDownError(f"{self.client.name}: the append stream ended")
        except grpc.aio.AioRpcError as err:
            self.failure = rpc_error(self.client.name, err)
        except SixfoldError as exc:
            self.failure = exc
        finally:
            self.wake.set()

    async def _send_truncations(self) -> None:
        core = self.pipeline.log
        request = pb.TruncateRequest(
            epoch=core.epoch,
            ranges=ranges_to_proto(core.truncations, pb.TruncationRange),
            truncations_version=core.epoch,
            membership_epoch=core.membership.epoch,
        )
        log.info(
            "storage node %s missed epoch %d: sending its truncations",
            self.client.name,
            core.epoch,
        )
        await self.client.truncate(request, timeout=core.limits.append_timeout_s)


class CommitPipeline:
    def __init__(self, clients: list[NodeClient], log: CommitLog) -> None:
        assert list(log.shippers) == [c.name for c in clients]
        self.log = log
        self.limits = log.limits
        self.observe_commit: Callable[[float], None] | None = None  # seconds to acknowledgement
        self.room = asyncio.Event()  # set when VDL advanced (LAL), a node came back, or fenced
        self.senders = [NodeSender(self, c) for c in clients]
        self.sender_tasks: dict[str, asyncio.Task[None]] = {}
        self.on_membership: Callable[[Membership], None] | None = None  # told of each change
        # Finds the newest membership on the nodes and ships by it (writer/replacement.py).
        self.membership_refresher: Callable[[], Awaitable[None]] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self.membership_lock = asyncio.Lock()
        self.tasks: list[asyncio.Task[None]] = []

    # What the rest of the writer reads, from the core.
    @property
    def epoch(self) -> int:
        return self.log.epoch

    @property
    def vdl(self) -> int:
        return self.log.vdl

    @property
    def vcl(self) -> int:
        return self.log.durability.vcl

    @property
    def next_lsn(self) -> int:
        return self.log.allocator.next_lsn

    @property
    def fenced(self) -> WriterFencedError | None:
        return self.log.fenced

    @property
    def last_commit_lsn(self) -> int:
        return self.log.last_commit_lsn

    @property
    def page_last_lsn(self) -> dict[int, int]:
        return self.log.page_last_lsn

    @property
    def waiting(self) -> int:
        return len(self.log.waiters)

    def knows_page(self, page_no: int) -> bool:
        return self.log.knows_page(page_no)

    def refusal(self) -> NotWriterError:
        return self.log.refusal()

    def live_count(self) -> int:
        return self.log.live_count()

    def node_views(self) -> list[tuple[str, bool, int]]:
        """(node, reachable, SCL) for each node, as this writer last heard."""
        scl = self.log.durability.node_scl
        return [(name, s.live, scl[name]) for name, s in self.log.shippers.items()]

    def bytes_sent(self) -> int:
        return sum(s.bytes_sent for s in self.senders)

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.sender_tasks = {s.client.name: loop.create_task(s.run()) for s in self.senders}
        self.tasks = [*self.sender_tasks.values(), loop.create_task(self._expire_waiters())]

    async def change_membership(
        self, membership: Membership, clients: dict[str, NodeClient]
    ) -> None:
        """Ship to `membership`'s nodes (sixfold/core/membership.py): a stream to each node
        that joins, and none any more to each that leaves (stopped before the core forgets
        it, so no acknowledgement of it arrives after)."""
        async with self.membership_lock:  # a settle and an adoption may race to the same one
            if not membership.is_newer_than(self.log.membership):
                return  # in force already
            await self._change_membership(membership, clients)

    async def _change_membership(
        self, membership: Membership, clients: dict[str, NodeClient]
    ) -> None:
        leaving = [name for name in self.log.shippers if name not in membership.nodes]
        for name in leaving:
            task = self.sender_tasks.pop(name)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self.tasks.remove(task)
            self.senders = [s for s in self.senders if s.client.name != name]
        joined, _, acked = self.log.change_membership(membership)
        self._after(acked.released, acked.vdl_advanced)
        if self.on_membership is not None:
            self.on_membership(membership)
        loop = asyncio.get_running_loop()
        for name in joined:
            sender = NodeSender(self, clients[name])
            self.senders.append(sender)
            self.sender_tasks[name] = task = loop.create_task(sender.run())
            self.tasks.append(task)
        self.room.set()  # a quorum may have come (or gone) with the change
        self.wake_all()

    async def stop(self, why: str = "the writer is shutting down") -> None:
        """Stop sending; commits still waiting get an answer: their outcome is unknown."""
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        fenced = self.log.fenced
        for waiter in self.log.stop(why):
            _fail(
                waiter,
                fenced
                or WriterFencedError(
                    f"{why}: commit LSN {waiter.lsn} was sent but is not known to be durable; its "
                    "outcome is unknown until the next writer recovers"
                ),
            )
        self.room.set()  # commits waiting for room see `fenced`

    # -- commits ------------------------------------------------------------------------------------

    async def commit(self, writes: list[PageWrite], prev_page_lsns: dict[int, int]) -> int:
        """Make `writes` one mini-transaction; return its commit LSN once VDL covers it.

        `prev_page_lsns` holds, for pages this writer has not written in its epoch, their
        latest LSN at or below VDL (looked up by the caller).
        """
        return await (await self.submit(writes, prev_page_lsns))

    async def submit(
        self, writes: list[PageWrite], prev_page_lsns: dict[int, int]
    ) -> asyncio.Future[int]:
        """Take LSNs for `writes` and queue them; the future resolves to the commit LSN once
        VDL has reached it."""
        assert writes
        if self.log.fenced:
            raise self.log.refusal()
        await self._wait_for_room(len(writes))
        if self.log.fenced:
            raise self.log.refusal()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        # Its caller may be gone (a cancelled RPC) when it fails: the failure is still
        # reported to anyone who awaits it, but is no "never retrieved" error in the log.
        future.add_done_callback(mark_retrieved)
        self.log.append(writes, prev_page_lsns, loop.time(), future)
        for sender in self.senders:
            if sender.shipper.has_room():  # a full one sends the rest when an ack makes room
                sender.wake.set()
        return future

    async def wait_durable(self, lsn: int) -> None:
        """Wait until VDL has reached `lsn`, at most the write timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.write_timeout_s
        while self.log.vdl < lsn:
            if self.log.fenced:
                raise self.log.refusal()
            if loop.time() >= deadline:
                raise self.log.room_error(lsn, sent=True)
            self.room.clear()  # set on every VDL advance
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.room.wait(), deadline - loop.time())

    async def _expire_waiters(self) -> None:
        """Fail commits not durable by their deadline: one sweep, not a timer per commit."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WAITER_SWEEP_S)
            for waiter in self.log.expire(loop.time()):
                _fail(waiter, self.log.room_error(waiter.lsn, sent=True))

    async def _wait_for_room(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.write_timeout_s
        while not self.log.has_room(count):
            self.room.clear()
            remaining = deadline - loop.time()
            if self.log.fenced:
                raise self.log.refusal()
            if remaining <= 0:
                raise self.log.room_error(self.log.allocator.next_lsn)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.room.wait(), remaining)

    # -- acknowledgements ---------------------------------------------------------------------------

    def on_ack(self, node: str, batch_id: int, scl: int) -> None:
        acked = self.log.on_ack(node, batch_id, scl)
        if acked.came_back:
            log.info("storage node %s reachable again", node)
            self.room.set()
        self._after(acked.released, acked.vdl_advanced)

    def on_scl(self, node: str, scl: int) -> None:
        """`node` holds every record through `scl` (recovery's repair said so)."""
        acked = self.log.on_scl(node, scl)
        self._after(acked.released, acked.vdl_advanced)

    def _after(self, released: list[Waiter], vdl_advanced: bool) -> None:
        if not vdl_advanced:
            return
        now = asyncio.get_running_loop().time()
        for waiter in released:
            future: asyncio.Future[int] = waiter.token  # type: ignore[assignment]
            if not future.done():
                future.set_result(waiter.lsn)
                if self.observe_commit is not None:
                    self.observe_commit(now - waiter.submitted_at)
        self.room.set()
        self.wake_all()  # announce the new VDL to nodes (readers learn it there)

    def refresh_membership(self) -> None:
        """A node refused this writer's membership epoch: look for the newer one, once at a
        time, in a task of its own (a sender it removes must not wait on itself)."""
        if self.membership_refresher is None or (
            self._refreshing is not None and not self._refreshing.done()
        ):
            return
        self._refreshing = asyncio.get_running_loop().create_task(self._refresh())
        self.tasks.append(self._refreshing)

    async def _refresh(self) -> None:
        assert self.membership_refresher is not None
        try:
            await self.membership_refresher()
        except SixfoldError as exc:  # tried again at the next refusal
            log.warning("could not adopt the nodes' newer membership: %s", exc)
        finally:
            if self._refreshing in self.tasks:
                self.tasks.remove(self._refreshing)

    def wake_all(self) -> None:
        for sender in self.senders:
            sender.wake.set()

    def on_stale(self, node: str, exc: StaleEpochError) -> None:
        log.warning("storage node %s rejected epoch %d: %s", node, self.log.epoch, exc)
        fenced = self.log.on_stale(node, str(exc))
        if fenced is None:
            return
        log.error("%s", fenced.error)
        for waiter in fenced.waiters:
            _fail(waiter, fenced.error)
        self.room.set()


def _fail(waiter: Waiter, exc: BaseException) -> None:
    future: asyncio.Future[int] = waiter.token  # type: ignore[assignment]
    if not future.done():
        future.set_exception(exc)
