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
import logging
from collections import deque
from dataclasses import dataclass

from sixfold.allocation import LAL_DEFAULT, LsnAllocator
from sixfold.clients import NodeClient, NodeDownError
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
from sixfold.record import Delta, RecordFlags, RedoRecord, encode_deltas, encode_record, peek_lsn
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.truncation import TruncationRange
from sixfold.wire import ranges_to_proto

log = logging.getLogger("sixfold.writer")

WAITER_SWEEP_S = 0.05  # how often commits past their write timeout are failed
VDL_ANNOUNCE_DELAY_S = 0.02  # a bare VDL update waits this long for a batch to ride on
APPENDS_IN_FLIGHT_MAX = 2  # appends to one node awaiting their acknowledgement


@dataclass(frozen=True)  # no slots: fields double as argparse defaults
class WriterLimits:
    write_timeout_s: float = 10.0  # how long a commit waits for a write quorum
    lal: int = LAL_DEFAULT  # LSN allocation limit above VDL
    tail_records_max: int = 200_000  # records held for senders; commits wait when full
    append_batch_records_max: int = 2_048
    append_batch_bytes_max: int = 8 << 20
    append_timeout_s: float = 2.0
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


class NodeSender:
    """Ships the log tail to one node, up to APPENDS_IN_FLIGHT_MAX appends at a time.

    A second append in flight keeps the node's commit queue fed while the first is being
    synced, so its next transaction starts at once instead of a round trip later.
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

    async def run(self) -> None:
        backoff = 0.05
        while not self.pipeline.fenced:
            await self.wake.wait()
            self.wake.clear()
            try:
                await self._pump()
                if self.pipeline.durability.vdl != self.vdl_sent:
                    # Readers learn VDL from the nodes; the next batch would carry it anyway.
                    # (A plain sleep: wait_for in Python 3.11 can swallow a cancellation.)
                    await asyncio.sleep(VDL_ANNOUNCE_DELAY_S)
                    if not self.wake.is_set():
                        await self._append(self._request([], bare_ok=True))
                backoff = 0.05
            except EpochAheadError:
                await self._send_truncations()
                self.wake.set()
            except StaleEpochError as exc:
                self.stale = True
                self.pipeline.on_stale(self.client.name, exc)
                return
            except (NodeDownError, SixfoldError) as exc:
                if self.reachable:
                    log.warning("storage node %s unreachable: %s", self.client.name, exc)
                self.reachable = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.pipeline.limits.retry_backoff_s_max)
                self.wake.set()

    async def _pump(self) -> None:
        """Send batches until the tail is drained, keeping up to the in-flight bound busy.

        On a failure the unacknowledged batches are sent again from the first of them
        (appends are idempotent); the error is raised once all in flight have settled.
        """
        in_flight: dict[asyncio.Task[None], int] = {}  # task -> first LSN of its batch
        failure: BaseException | None = None
        try:
            while True:
                while failure is None and len(in_flight) < APPENDS_IN_FLIGHT_MAX:
                    batch = self._next_batch()
                    if not batch and (in_flight or self.reachable):
                        break  # an unreachable node is probed with an empty append
                    request = self._request(batch, bare_ok=not batch)
                    task = asyncio.get_running_loop().create_task(self._append(request))
                    in_flight[task] = batch[0].lsn if batch else self.next_lsn
                    self.next_lsn = batch[-1].lsn + 1 if batch else self.next_lsn
                if not in_flight:
                    break
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    first = in_flight.pop(task)
                    if task.exception() is not None:
                        failure = failure or task.exception()
                        self.next_lsn = min(self.next_lsn, first)
        finally:
            for task in in_flight:
                task.cancel()
        if failure is not None:
            raise failure

    def _next_batch(self) -> list[RedoRecord]:
        p = self.pipeline
        self.next_lsn = max(self.next_lsn, p.tail.first_lsn)  # trimmed: the node gossips for it
        lim = p.limits
        return p.tail.batch_from(
            self.next_lsn, lim.append_batch_records_max, lim.append_batch_bytes_max
        )

    def _request(self, batch: list[RedoRecord], bare_ok: bool) -> pb.AppendRequest:
        assert batch or bare_ok
        p = self.pipeline
        request = pb.AppendRequest(
            epoch=p.epoch, records=[r.encoded for r in batch], vdl=p.durability.vdl
        )
        self.bytes_sent += request.ByteSize() + 5  # 5: gRPC's length-prefix framing
        return request

    async def _append(self, request: pb.AppendRequest) -> None:
        p = self.pipeline
        response = await self.client.append(request, timeout=p.limits.append_timeout_s)
        if not self.reachable:
            log.info("storage node %s reachable again", self.client.name)
            self.reachable = True
            p.room.set()
        self.vdl_sent = max(self.vdl_sent, request.vdl)
        if request.records:
            self.acked_lsn = max(self.acked_lsn, peek_lsn(request.records[-1]))
        p.on_ack(self.client.name, response.scl)

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
        while self.waiters and self.waiters[0][0] <= vdl:
            lsn, future, _ = self.waiters.popleft()
            if not future.done():
                future.set_result(lsn)
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
