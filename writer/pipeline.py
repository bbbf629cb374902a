"""The writer's commit pipeline: LSN allocation, shipping to six nodes, durable points.

Commits allocate LSNs (bounded by the LAL) and append their records to the log tail. One
sender per storage node ships the tail to its node, one batch in flight: whatever piled up
while the last append was being synced goes in the next one (group commit). Each ack brings
the node's SCL; VolumeDurability turns those into VCL and VDL, and a commit is acknowledged
once VDL has reached its LSN (P17 §4.1). Senders are independent, so a slow or dead node holds
up nothing while four others answer. A node that comes back is sent what the tail still
holds; older records it gets from its peers by gossip.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from sixfold.allocation import LAL_DEFAULT, LsnAllocator
from sixfold.clients import NodeClient, NodeDownError, rpc_error
from sixfold.durability import VolumeDurability
from sixfold.errors import (
    CommitTimeoutError,
    EpochAheadError,
    NotWriterError,
    QuorumUnavailableError,
    SixfoldError,
    StaleEpochError,
    WriterFencedError,
)
from sixfold.quorum import COPIES, WRITE_QUORUM
from sixfold.record import (
    Delta,
    RecordFlags,
    RedoRecord,
    encode_deltas,
    encode_record,
    pack_records,
)
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.truncation import TruncationRange
from sixfold.wire import named_error, ranges_to_proto

log = logging.getLogger("sixfold.writer")

WAITER_SWEEP_S = 0.05  # how often commits past their write timeout are failed
VDL_ANNOUNCE_DELAY_S = 0.02  # a bare VDL update waits this long for a batch to ride on
STREAM_STATUS_WAIT_S = 1.0  # a write failed: how long to wait for the stream's status
TIMER_MIN_S = 0.001  # the shortest a sender's timer is set for (uvloop counts milliseconds)


@dataclass(frozen=True)  # no slots: fields double as argparse defaults
class WriterLimits:
    write_timeout_s: float = 10.0  # how long a commit waits for a write quorum
    lal: int = LAL_DEFAULT  # LSN allocation limit above VDL
    tail_records_max: int = 200_000  # records held for senders; commits wait when full
    append_batch_records_max: int = 2_048
    append_batch_bytes_max: int = 8 << 20
    append_timeout_s: float = 2.0  # a node silent this long with batches in flight is down
    append_batches_in_flight_max: int = 1  # batches sent to one node, not yet acknowledged
    append_window_bytes_max: int = 16 << 20  # bytes sent to one node, not yet acknowledged
    append_linger_s: float = 0.02  # the longest a small batch waits while commits pile up
    append_linger_share: float = 0.5  # a lingering batch goes once it holds this share of waiters
    append_linger_records: int = 64  # a batch this large goes at once
    append_linger_waiters_min: int = 8  # commits waiting before a small batch lingers
    retry_backoff_s_max: float = 1.0
    page_links_max: int = 1_000_000  # pages whose last LSN the writer remembers


@dataclass(frozen=True, slots=True)
class PageWrite:
    """`deltas` (offset, data) applied to page `page_no`: one record of a mini-transaction."""

    page_no: int
    deltas: tuple[tuple[int, bytes], ...]


def mark_retrieved(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()


class LogTail:
    """Records not yet trimmed, in LSN order. LSNs of an epoch are contiguous."""

    def __init__(self, first_lsn: int) -> None:
        self.first_lsn = first_lsn
        self.records: deque[RedoRecord] = deque()

    def append(self, record: RedoRecord) -> None:
        assert record.lsn == self.first_lsn + len(self.records)
        self.records.append(record)

    def batch_from(self, lsn: int, records_max: int, bytes_max: int) -> list[RedoRecord]:
        start = lsn - self.first_lsn
        assert start >= 0
        out: list[RedoRecord] = []
        size = 0
        for i in range(start, min(len(self.records), start + records_max)):
            record = self.records[i]
            size += len(record.encoded)
            if out and size > bytes_max:
                break
            out.append(record)
        return out

    def trim_through(self, lsn: int) -> None:
        while self.records and self.records[0].lsn <= lsn:
            self.records.popleft()
            self.first_lsn += 1

    @property
    def next_lsn(self) -> int:
        return self.first_lsn + len(self.records)


@dataclass(slots=True)
class _SentBatch:
    batch_id: int
    last_lsn: int  # 0 for a bare batch
    size_bytes: int
    vdl: int
    sent_at: float  # loop time


def commits_at_or_above(waiters: deque[tuple[int, asyncio.Future[int], float]], lsn: int) -> int:
    """How many of `waiters` (in LSN order) commit at or above `lsn`."""
    count = 0
    for commit_lsn, _, _ in reversed(waiters):
        if commit_lsn < lsn:
            break
        count += 1
    return count


class NodeSender:
    """Ships the log tail to one node over one long-lived append stream (issue 11).

    Each message is a whole batch, its records packed into one blob. Up to
    `append_batches_in_flight_max` batches and `append_window_bytes_max` bytes are in flight;
    whatever piles up meanwhile goes in the next batch (group commit). One batch in flight is
    the default: on a machine whose CPUs are the limit, fewer and larger batches win (issue
    11: 2,105 kv commits/s with one, 1,910 with two, 1,642 with four). Acknowledgements
    come back on the stream, in order, with the node's SCL. A broken stream is opened again,
    resuming after the last acknowledged record (appends are idempotent); a node that went
    silent for `append_timeout_s` with batches in flight is taken for down.
    """

    def __init__(self, pipeline: CommitPipeline, client: NodeClient) -> None:
        self.pipeline = pipeline
        self.client = client
        self.next_lsn = pipeline.tail.first_lsn  # next record to send
        self.acked_lsn = pipeline.tail.first_lsn - 1  # last record of the newest acked batch
        self.reachable = True
        self.stale = False
        self.vdl_sent = -1
        self.wake = asyncio.Event()
        self.bytes_sent = 0
        self.in_flight: deque[_SentBatch] = deque()
        self.bytes_in_flight = 0
        self.batch_ids = itertools.count(1)
        self.failure: BaseException | None = None  # what broke the current stream
        self.announce_at = 0.0  # loop time a bare VDL announcement is due (0: none)
        self.timer: asyncio.TimerHandle | None = None
        self.linger_until = 0.0  # loop time a lingering small batch goes anyway (0: none)

    def has_room(self) -> bool:
        lim = self.pipeline.limits
        return (
            len(self.in_flight) < lim.append_batches_in_flight_max
            and self.bytes_in_flight < lim.append_window_bytes_max
        )

    async def run(self) -> None:
        backoff = 0.05
        while not self.pipeline.fenced:
            try:
                await self._stream()
            except EpochAheadError:
                try:
                    await self._send_truncations()
                except (NodeDownError, SixfoldError) as exc:
                    self._unreachable(exc)
                    await asyncio.sleep(backoff)
            except StaleEpochError as exc:
                self.stale = True
                self.pipeline.on_stale(self.client.name, exc)
                return
            except (NodeDownError, SixfoldError) as exc:
                self._unreachable(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.pipeline.limits.retry_backoff_s_max)
                continue
            backoff = 0.05

    def _unreachable(self, exc: BaseException) -> None:
        if self.reachable:
            log.warning("storage node %s unreachable: %s", self.client.name, exc)
        self.reachable = False

    async def _stream(self) -> None:
        """One stream's life: returns never; raises what broke it."""
        call = self.client.append_stream()
        self.failure = None
        self.in_flight.clear()
        self.bytes_in_flight = 0
        self.linger_until = 0.0
        self.next_lsn = max(self.acked_lsn + 1, self.pipeline.tail.first_lsn)
        acks = asyncio.get_running_loop().create_task(self._read_acks(call))
        try:
            await self._send(call, [])  # the first acknowledgement says the node is there
            while not self.pipeline.fenced:
                await self.wake.wait()
                self.wake.clear()
                if self.failure is not None:
                    raise self.failure
                await self._send_ready(call)
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
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None

    async def _send_ready(self, call: grpc.aio.StreamStreamCall) -> None:
        """Send what the tail holds, as far as the window allows; else announce VDL."""
        loop = asyncio.get_running_loop()
        while self.has_room():
            batch = self._next_batch()
            if not batch or self._linger(batch, loop.time()):
                break
            await self._send(call, batch)
        lingering = bool(self.linger_until)  # the batch goes soon, VDL with it
        if self.pipeline.durability.vdl > self.vdl_sent and not self.in_flight and not lingering:
            # Readers learn VDL from the nodes; a batch would carry it anyway, so a bare
            # announcement waits a moment for one to ride on.
            now = loop.time()
            if not self.announce_at:
                self.announce_at = now + VDL_ANNOUNCE_DELAY_S
            if now >= self.announce_at:
                await self._send(call, [])
            else:
                self._arm(self.announce_at - now)

    def _linger(self, batch: list[RedoRecord], now: float) -> bool:
        """Hold a small batch back while many commits wait: it grows, and the nodes spend
        less per record (issue 11: their cost is mostly per batch). Nothing is in flight to
        this node, so the commits waiting outside the batch wait for other nodes; once they
        are durable their clients send more, and the batch takes them. It goes once it holds
        `append_linger_share` of the waiting commits, or after `append_linger_s` at most.
        With few commits waiting nothing lingers, so a lone client's latency does not grow."""
        lim = self.pipeline.limits
        waiters = self.pipeline.waiters
        small = len(batch) < lim.append_linger_records
        busy = len(waiters) >= lim.append_linger_waiters_min
        if not (lim.append_linger_s and small and busy):
            self.linger_until = 0.0
            return False
        if not self.linger_until:
            self.linger_until = now + lim.append_linger_s
        in_batch = commits_at_or_above(waiters, batch[0].lsn)
        if now < self.linger_until and in_batch < lim.append_linger_share * len(waiters):
            self._arm(self.linger_until - now)
            return True
        self.linger_until = 0.0
        return False

    async def _send(self, call: grpc.aio.StreamStreamCall, batch: list[RedoRecord]) -> None:
        p = self.pipeline
        vdl = p.durability.vdl
        message = pb.AppendBatch(
            epoch=p.epoch, records=pack_records(batch), vdl=vdl, batch_id=next(self.batch_ids)
        )
        size = len(message.records)
        now = asyncio.get_running_loop().time()
        self.in_flight.append(
            _SentBatch(message.batch_id, batch[-1].lsn if batch else 0, size, vdl, now)
        )
        self.bytes_in_flight += size
        if batch:
            self.next_lsn = batch[-1].lsn + 1
        self.announce_at = 0.0
        self.bytes_sent += message.ByteSize() + 5  # 5: gRPC's length-prefix framing
        if len(self.in_flight) == 1:
            self._arm(p.limits.append_timeout_s)
        await call.write(message)

    def _arm(self, delay_s: float) -> None:
        """Wake the sender after `delay_s` (an announcement or a lingering batch due, or a
        silence to check). A timer may fire a little early (uvloop counts milliseconds):
        whoever it wakes re-arms it for what is left, so nothing waits for another event."""
        if self.timer is not None:
            self.timer.cancel()
        delay_s = max(delay_s, TIMER_MIN_S)
        self.timer = asyncio.get_running_loop().call_later(delay_s, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.in_flight:
            oldest = self.in_flight[0]
            waited = asyncio.get_running_loop().time() - oldest.sent_at
            limit = self.pipeline.limits.append_timeout_s
            if waited >= limit:
                self.failure = self.failure or NodeDownError(
                    f"{self.client.name}: no acknowledgement of batch {oldest.batch_id} in "
                    f"{waited:.1f} s (append_timeout_s={limit:g})"
                )
            else:
                self._arm(limit - waited)
        self.wake.set()

    async def _read_acks(self, call: grpc.aio.StreamStreamCall) -> None:
        try:
            while (ack := await call.read()) is not grpc.aio.EOF:
                if ack.error:  # the node's last word on this stream
                    self.failure = named_error(ack.error, ack.message)
                    return
                self._on_ack(ack)
            self.failure = NodeDownError(f"{self.client.name}: the append stream ended")
        except grpc.aio.AioRpcError as err:
            self.failure = rpc_error(self.client.name, err)
        except SixfoldError as exc:
            self.failure = exc
        finally:
            self.wake.set()

    def _on_ack(self, ack: pb.AppendBatchAck) -> None:
        sent = self.in_flight.popleft()
        if sent.batch_id != ack.batch_id:
            raise SixfoldError(
                f"{self.client.name}: acknowledged batch {ack.batch_id}, expected {sent.batch_id}"
            )
        self.bytes_in_flight -= sent.size_bytes
        p = self.pipeline
        if not self.reachable:
            log.info("storage node %s reachable again", self.client.name)
            self.reachable = True
            p.room.set()
        self.vdl_sent = max(self.vdl_sent, sent.vdl)
        self.acked_lsn = max(self.acked_lsn, sent.last_lsn)
        if self.in_flight:
            self._arm(p.limits.append_timeout_s)  # the next batch's silence counts from now
        self.wake.set()
        p.on_ack(self.client.name, ack.scl)

    def _next_batch(self) -> list[RedoRecord]:
        p = self.pipeline
        self.next_lsn = max(self.next_lsn, p.tail.first_lsn)  # trimmed: the node gossips for it
        lim = p.limits
        return p.tail.batch_from(
            self.next_lsn, lim.append_batch_records_max, lim.append_batch_bytes_max
        )

    async def _send_truncations(self) -> None:
        p = self.pipeline
        request = pb.TruncateRequest(
            epoch=p.epoch, ranges=ranges_to_proto(p.truncations, pb.TruncationRange),
            truncations_version=p.epoch,
        )  # fmt: skip
        log.info(
            "storage node %s missed epoch %d: sending its truncations", self.client.name, p.epoch
        )
        await self.client.truncate(request, timeout=p.limits.append_timeout_s)


class CommitPipeline:
    def __init__(
        self,
        clients: list[NodeClient],
        *,
        epoch: int,
        vdl: int,
        next_lsn: int,
        node_scls: dict[str, int],
        truncations: tuple[TruncationRange, ...],
        limits: WriterLimits,
    ) -> None:
        self.epoch = epoch
        self.limits = limits
        self.truncations = truncations
        self.durability = VolumeDurability([c.name for c in clients], vdl, node_scls)
        self.allocator = LsnAllocator(last_lsn=vdl, epoch_base=next_lsn - 1, lal=limits.lal)
        self.tail = LogTail(next_lsn)
        self.recovered_vdl = vdl
        self.last_commit_lsn = vdl  # the CPL of the newest mini-transaction taken
        self.page_last_lsn: dict[int, int] = {}
        # (commit LSN, its future, the loop time it gives up at): LSN and deadline ascend together
        self.waiters: deque[tuple[int, asyncio.Future[int], float]] = deque()
        self.observe_commit: Callable[[float], None] | None = None  # seconds to acknowledgement
        self.room = asyncio.Event()  # set when VDL advanced (LAL) or the tail was trimmed
        self.fenced: WriterFencedError | None = None
        self.senders = [NodeSender(self, c) for c in clients]
        self.tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tasks = [loop.create_task(s.run()) for s in self.senders]
        self.tasks.append(loop.create_task(self._expire_waiters()))

    async def stop(self, why: str = "the writer is shutting down") -> None:
        """Stop sending; commits still waiting get an answer: their outcome is unknown."""
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        while self.waiters:
            lsn, future, _ = self.waiters.popleft()
            if not future.done():
                future.set_exception(self.fenced or WriterFencedError(
                    f"{why}: commit LSN {lsn} was sent but is not known to be durable; its "
                    "outcome is unknown until the next writer recovers"
                ))  # fmt: skip
        self.fenced = self.fenced or WriterFencedError(f"{why}: it takes no more commits")
        self.room.set()  # commits waiting for room see `fenced`

    def refusal(self) -> NotWriterError:
        """What a fenced or stopped writer answers a request it has not started on: retry-safe.
        (Commits it had already sent are answered with `fenced`: their outcome is unknown.)"""
        assert self.fenced is not None
        return NotWriterError(
            f"{self.fenced} Nothing of this request was applied: retry it at the current writer."
        )

    @property
    def vdl(self) -> int:
        return self.durability.vdl

    def reachable_count(self) -> int:
        return sum(1 for s in self.senders if s.reachable and not s.stale)

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
        if self.fenced:
            raise self.refusal()
        await self._wait_for_room(len(writes))
        if self.fenced:
            raise self.refusal()
        commit_lsn = self._allocate_and_queue(writes, prev_page_lsns)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        # Its caller may be gone (a cancelled RPC) when it fails: the failure is still
        # reported to anyone who awaits it, but is no "never retrieved" error in the log.
        future.add_done_callback(mark_retrieved)
        self.waiters.append((commit_lsn, future, loop.time() + self.limits.write_timeout_s))
        for sender in self.senders:
            if sender.has_room():  # a full one sends the rest when an ack makes room
                sender.wake.set()
        return future

    async def wait_durable(self, lsn: int) -> None:
        """Wait until VDL has reached `lsn`, at most the write timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.write_timeout_s
        while self.durability.vdl < lsn:
            if self.fenced:
                raise self.refusal()
            if loop.time() >= deadline:
                raise self._timeout_error(lsn, sent=True)
            self.room.clear()  # set on every VDL advance
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.room.wait(), deadline - loop.time())

    async def _expire_waiters(self) -> None:
        """Fail commits not durable by their deadline: one sweep, not a timer per commit."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(WAITER_SWEEP_S)
            now = loop.time()
            while self.waiters and self.waiters[0][2] <= now:
                lsn, future, _ = self.waiters.popleft()
                if not future.done():
                    future.set_exception(self._timeout_error(lsn, sent=True))

    def _allocate_and_queue(self, writes: list[PageWrite], prev_page_lsns: dict[int, int]) -> int:
        vdl = self.durability.vdl
        lsn = 0
        for i, write in enumerate(writes):
            lsn, prev = self.allocator.allocate(vdl)
            prev_page = self.page_last_lsn.get(write.page_no, prev_page_lsns.get(write.page_no, 0))
            flags = RecordFlags.CPL if i == len(writes) - 1 else 0
            payload = encode_deltas([Delta(offset, data) for offset, data in write.deltas])
            record = encode_record(
                lsn=lsn, prev_volume_lsn=prev, prev_page_lsn=prev_page, page_no=write.page_no,
                epoch=self.epoch, flags=flags, payload=payload,
            )  # fmt: skip
            self.tail.append(record)
            self.page_last_lsn[write.page_no] = lsn
        self.durability.note_cpl(lsn)
        self.last_commit_lsn = lsn
        self._bound_page_links()
        return lsn

    def _bound_page_links(self) -> None:
        if len(self.page_last_lsn) > self.limits.page_links_max:
            vdl = self.durability.vdl  # links at or below VDL can be looked up again
            self.page_last_lsn = {p: x for p, x in self.page_last_lsn.items() if x > vdl}

    def knows_page(self, page_no: int) -> bool:
        return page_no in self.page_last_lsn or self.recovered_vdl == 0

    async def _wait_for_room(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.write_timeout_s
        while not self._has_room(count):
            self.room.clear()
            remaining = deadline - loop.time()
            if self.fenced:
                raise self.refusal()
            if remaining <= 0:
                raise self._timeout_error(self.allocator.next_lsn)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.room.wait(), remaining)

    def _has_room(self, count: int) -> bool:
        """Room under the LAL and the tail bound, and a write quorum reachable.

        A commit waits for a reachable quorum before it takes LSNs: when none comes back in
        time it fails with nothing written, rather than leaving its outcome unknown.
        """
        return (
            self.reachable_count() >= WRITE_QUORUM
            and self.allocator.available(self.durability.vdl) >= count
            and len(self.tail.records) + count <= self.limits.tail_records_max
        )

    def _timeout_error(self, lsn: int, sent: bool = False) -> SixfoldError:
        reachable = self.reachable_count()
        if reachable < WRITE_QUORUM:
            exc = QuorumUnavailableError("write", reachable, WRITE_QUORUM, COPIES)
            if sent:  # it may have reached some nodes: not written, or written whole, later
                exc.args = (
                    f"{exc}; commit LSN {lsn} was already sent, so its outcome is unknown: it "
                    "becomes durable, whole, if a fourth node returns",
                )
                exc.outcome_unknown = True
            return exc
        return CommitTimeoutError(
            f"commit LSN {lsn} not durable within {self.limits.write_timeout_s:g} s (VDL "
            f"{self.durability.vdl}, {reachable} of {COPIES} nodes reachable); its outcome is "
            "unknown until the writer recovers or VDL passes it"
        )

    # -- acknowledgements ---------------------------------------------------------------------------

    def on_ack(self, node: str, scl: int) -> None:
        before = self.durability.vdl
        vdl = self.durability.on_scl(node, scl)
        if vdl == before:
            return
        now = asyncio.get_running_loop().time()
        while self.waiters and self.waiters[0][0] <= vdl:
            lsn, future, deadline = self.waiters.popleft()
            if not future.done():
                future.set_result(lsn)
                if self.observe_commit is not None:  # submitted at its deadline less the timeout
                    self.observe_commit(now - deadline + self.limits.write_timeout_s)
        self._trim()
        self.room.set()
        for sender in self.senders:
            sender.wake.set()  # announce the new VDL to nodes (readers learn it there)

    def _trim(self) -> None:
        """Drop durable records every reachable node has; a node that is down gossips for them."""
        sent = [s.acked_lsn for s in self.senders if s.reachable and not s.stale]
        self.tail.trim_through(min([self.durability.vdl, *sent]))
        if len(self.tail.records) >= self.limits.tail_records_max:
            self.tail.trim_through(self.durability.vdl)

    def on_stale(self, node: str, exc: StaleEpochError) -> None:
        stale = sum(1 for s in self.senders if s.stale)
        log.warning("storage node %s rejected epoch %d: %s", node, self.epoch, exc)
        if COPIES - stale >= WRITE_QUORUM or self.fenced:
            return
        self.fenced = WriterFencedError(
            f"writer fenced: volume epoch {self.epoch} was superseded ({exc}); this writer "
            "acknowledges nothing more: commits it had sent may or may not stay, and the next "
            "writer's recovery decides."
        )
        log.error("%s", self.fenced)
        while self.waiters:
            _, future, _ = self.waiters.popleft()
            if not future.done():
                future.set_exception(self.fenced)
        self.room.set()
