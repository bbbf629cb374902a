"""The writer's commit pipeline, sans I/O: LSNs, the log tail, durable points, fencing.

A commit takes LSNs under the LAL (P17 §4.2.1) and appends its records to the log tail. One
`NodeShipper` per storage node ships the tail (sixfold/core/shipping.py). Each acknowledgement
brings the node's SCL; VolumeDurability turns those into VCL and VDL, and a commit is
acknowledged once VDL has reached its LSN (P17 §4.1). Shippers are independent, so a slow or
dead node holds up nothing while four others answer. Records every live node acknowledged
are trimmed from the tail; a node that comes back is sent what the tail still holds, and
older records it gets from its peers by gossip. A writer whose epoch a write quorum has
superseded is fenced (P18 §2.4): it acknowledges nothing more.

The asyncio shell (writer/pipeline.py) and the simulator (sixfold/sim/writer.py) drive this
same class; the time is passed in as `now`, in seconds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from sixfold.core.allocation import LAL_DEFAULT, LsnAllocator
from sixfold.core.durability import VolumeDurability
from sixfold.core.errors import (
    CommitTimeoutError,
    NotWriterError,
    QuorumUnavailableError,
    SixfoldError,
    WriterFencedError,
)
from sixfold.core.membership import Membership
from sixfold.core.quorum import COPIES, WRITE_QUORUM
from sixfold.core.record import Delta, RecordFlags, RedoRecord, encode_deltas, encode_record
from sixfold.core.recovery_machine import Recovered
from sixfold.core.shipping import Batch, NodeShipper, Poll
from sixfold.core.truncation import TruncationRange


@dataclass(frozen=True)  # no slots: fields double as argparse defaults
class WriterLimits:
    write_timeout_s: float = 10.0  # how long a commit waits for a write quorum
    lal: int = LAL_DEFAULT  # LSN allocation limit above VDL
    tail_records_max: int = 200_000  # records held for shippers; commits wait when full
    append_batch_records_max: int = 2_048
    append_batch_bytes_max: int = 8 << 20
    append_timeout_s: float = 2.0  # a node silent this long with batches in flight is down
    # Batches sent to one node, not yet acknowledged. One is the default: on a machine whose
    # CPUs are the limit, fewer and larger batches win (issue 11: 2,105 kv commits/s with
    # one, 1,910 with two, 1,642 with four).
    append_batches_in_flight_max: int = 1
    append_window_bytes_max: int = 16 << 20  # bytes sent to one node, not yet acknowledged
    append_linger_s: float = 0.02  # the longest a small batch waits while commits pile up
    append_linger_share: float = 0.5  # a lingering batch goes once it holds this share of waiters
    append_linger_records: int = 64  # a batch this large goes at once
    append_linger_waiters_min: int = 8  # commits waiting before a small batch lingers
    retry_backoff_s: float = 0.05  # the first wait before a node is tried again
    retry_backoff_s_max: float = 1.0
    page_links_max: int = 1_000_000  # pages whose last LSN the writer remembers
    # Replace a member unreachable this long with an empty spare of its AZ (issue 14);
    # 0: never by itself (`sixfold replace` does it).
    auto_replace_after_s: float = 0.0


@dataclass(frozen=True, slots=True)
class PageWrite:
    """`deltas` (offset, data) applied to page `page_no`: one record of a mini-transaction."""

    page_no: int
    deltas: tuple[tuple[int, bytes], ...]


@dataclass(slots=True)
class Waiter:
    """A commit waiting for VDL to reach its LSN. `token` is the shell's handle on it (an
    asyncio future in the writer); the core only hands it back."""

    lsn: int
    submitted_at: float
    deadline: float
    token: object = None


@dataclass(slots=True)
class Acked:
    """What an acknowledgement changed: commits now durable, and whether VDL moved (the
    nodes are told) or a node came back (commits waiting for a quorum may go)."""

    released: list[Waiter]
    vdl_advanced: bool
    came_back: bool


@dataclass(frozen=True, slots=True)
class Fenced:
    """This writer was just fenced: why, and its waiting commits, now of unknown outcome."""

    error: WriterFencedError
    waiters: list[Waiter]


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


class CommitLog:
    def __init__(
        self,
        nodes: list[str],
        *,
        epoch: int,
        vdl: int,
        next_lsn: int,
        node_scls: dict[str, int],
        truncations: tuple[TruncationRange, ...],
        limits: WriterLimits,
        durability: VolumeDurability | None = None,
        membership: Membership | None = None,
    ) -> None:
        self.epoch = epoch
        self.limits = limits
        self.truncations = truncations
        self.durability = durability or VolumeDurability(nodes, vdl, node_scls, membership)
        self.allocator = LsnAllocator(last_lsn=vdl, epoch_base=next_lsn - 1, lal=limits.lal)
        self.tail = LogTail(next_lsn)
        self.recovered_vdl = vdl
        self.last_commit_lsn = vdl  # the CPL of the newest mini-transaction taken
        self.page_last_lsn: dict[int, int] = {}
        self.waiters: deque[Waiter] = deque()  # LSN and deadline ascend together
        self.shippers = {name: NodeShipper(name, next_lsn, limits) for name in nodes}
        self.membership = self.durability.membership  # who counts towards a quorum
        # What this writer stores next for each change it settles, by transitional epoch:
        # the outcome, or the change renewed (sixfold/core/replacement.py Settle). Chosen
        # once, whichever settle runs it.
        self.settle_choices: dict[tuple[int, int], Membership] = {}  # by Membership.rank
        # Recounted whenever a shipper's liveness may change:
        self._live = len(self.shippers)
        self._quorum_live = self.membership.is_write_quorum(self.shippers)
        self.fenced: WriterFencedError | None = None

    @classmethod
    def recovered(
        cls,
        nodes: list[str],
        result: Recovered,
        limits: WriterLimits,
        durability: VolumeDurability | None = None,
    ) -> CommitLog:
        """The log of a writer that has just won recovery (sixfold/core/recovery_machine.py):
        it ships to the nodes of the membership the recovery found."""
        assert set(nodes) == result.membership.nodes, (nodes, result.membership)
        plan = result.plan
        return cls(
            nodes,
            epoch=plan.epoch,
            vdl=plan.vdl,
            next_lsn=plan.next_lsn,
            node_scls=result.node_scls,
            truncations=result.truncations,
            limits=limits,
            durability=durability,
            membership=result.membership,
        )

    @property
    def vdl(self) -> int:
        return self.durability.vdl

    def live_count(self) -> int:
        """Nodes reachable and not superseded: a write quorum of them lets commits go."""
        return self._live

    def change_membership(self, membership: Membership) -> tuple[list[str], list[str], Acked]:
        """Ship to `membership`'s nodes from now on, and count quorums by it (P18 §2.3).
        A node joining is sent records from the next LSN on (it hydrates, and gossip fills
        the rest); a node leaving is no longer waited for. Returns (joined, left, and the
        commits the new rules make durable at once)."""
        assert membership.is_newer_than(self.membership), (membership, self.membership)
        joined = sorted(membership.nodes - self.shippers.keys())
        left = sorted(self.shippers.keys() - membership.nodes)
        for name in joined:
            self.shippers[name] = NodeShipper(name, self.tail.next_lsn, self.limits)
            self.durability.node_scl[name] = 0
        for name in left:
            del self.shippers[name]
            del self.durability.node_scl[name]
        self.membership = self.durability.membership = membership
        self._recount_live()
        before = self.durability.vdl
        vdl = self.durability.recompute()
        released: list[Waiter] = []
        while self.waiters and self.waiters[0].lsn <= vdl:
            released.append(self.waiters.popleft())
        return joined, left, Acked(released, vdl != before, False)

    def quorum_live(self) -> bool:
        """Whether the live nodes make a write quorum (of both sets during a change)."""
        return self._quorum_live

    def _recount_live(self) -> None:
        live = [n for n, s in self.shippers.items() if s.live]
        self._live = len(live)
        self._quorum_live = self.membership.is_write_quorum(live)

    def drained(self) -> bool:
        """Every commit taken is durable: a planned switchover may seal a new epoch now and
        leave no commit with an unknown outcome."""
        return self.vdl >= self.last_commit_lsn

    def knows_page(self, page_no: int) -> bool:
        """Whether this writer knows the page's latest LSN without asking storage."""
        return page_no in self.page_last_lsn or self.recovered_vdl == 0

    # -- commits ------------------------------------------------------------------------------------

    def has_room(self, count: int) -> bool:
        """Room under the LAL and the tail bound, and a write quorum reachable.

        A commit waits for a reachable quorum before it takes LSNs: when none comes back in
        time it fails with nothing written, rather than leaving its outcome unknown.
        """
        return (
            self._quorum_live
            and self.allocator.available(self.durability.vdl) >= count
            and len(self.tail.records) + count <= self.limits.tail_records_max
        )

    def append(
        self,
        writes: list[PageWrite],
        prev_page_lsns: dict[int, int],
        now: float,
        token: object = None,
    ) -> Waiter:
        """Make `writes` one mini-transaction at the tail; the caller checked `has_room`.

        `prev_page_lsns` holds, for pages this writer has not written in its epoch, their
        latest LSN at or below VDL (looked up by the caller).
        """
        assert writes and self.fenced is None  # the allocator asserts the LAL, the tail its order
        vdl = self.durability.vdl
        lsn = 0
        for i, write in enumerate(writes):
            lsn, prev = self.allocator.allocate(vdl)
            prev_page = self.page_last_lsn.get(write.page_no, prev_page_lsns.get(write.page_no, 0))
            flags = RecordFlags.CPL if i == len(writes) - 1 else 0
            payload = encode_deltas([Delta(offset, data) for offset, data in write.deltas])
            record = encode_record(
                lsn=lsn,
                prev_volume_lsn=prev,
                prev_page_lsn=prev_page,
                page_no=write.page_no,
                epoch=self.epoch,
                flags=flags,
                payload=payload,
            )
            self.tail.append(record)
            self.page_last_lsn[write.page_no] = lsn
        self.durability.note_cpl(lsn)
        self.last_commit_lsn = lsn
        self._bound_page_links()
        waiter = Waiter(lsn, now, now + self.limits.write_timeout_s, token)
        self.waiters.append(waiter)
        return waiter

    def _bound_page_links(self) -> None:
        if len(self.page_last_lsn) > self.limits.page_links_max:
            vdl = self.durability.vdl  # links at or below VDL can be looked up again
            self.page_last_lsn = {p: x for p, x in self.page_last_lsn.items() if x > vdl}

    def expire(self, now: float) -> list[Waiter]:
        """Commits not durable by their deadline: they fail (`room_error(lsn, sent=True)`)."""
        out: list[Waiter] = []
        while self.waiters and self.waiters[0].deadline <= now:
            out.append(self.waiters.popleft())
        return out

    def room_error(self, lsn: int, sent: bool = False) -> SixfoldError:
        """Why a commit at `lsn` waited in vain: for room (`sent` False: nothing of it was
        written) or to become durable (its outcome is unknown)."""
        live = self.live_count()
        if not self._quorum_live:
            exc = QuorumUnavailableError("write", live, WRITE_QUORUM, COPIES)
            if sent:  # it may have reached some nodes: not written, or written whole, later
                exc.args = (
                    f"{exc}; commit LSN {lsn} was already sent, so its outcome is unknown: it "
                    "becomes durable, whole, if a fourth node returns",
                )
                exc.outcome_unknown = True
            return exc
        return CommitTimeoutError(
            f"commit LSN {lsn} not durable within {self.limits.write_timeout_s:g} s (VDL "
            f"{self.durability.vdl}, {live} of {COPIES} nodes reachable); its outcome is "
            "unknown until the writer recovers or VDL passes it"
        )

    def refusal(self) -> NotWriterError:
        """What a fenced or stopped writer answers a request it has not started on: retry-safe.
        (Commits it had already sent are answered with `fenced`: their outcome is unknown.)"""
        assert self.fenced is not None
        return NotWriterError(
            f"{self.fenced} Nothing of this request was applied: retry it at the current writer."
        )

    # -- shipping ---------------------------------------------------------------------------------

    def open(self, node: str, now: float) -> Batch:
        """A new stream to `node`: its first message (sixfold/core/shipping.py)."""
        return self.shippers[node].open(self.tail, self.durability.vdl, now)

    def poll(self, node: str, now: float) -> Poll:
        return self.shippers[node].poll(self.tail, self.waiters, self.durability.vdl, now)

    def broken(self, node: str, now: float) -> float:
        """`node`'s stream broke: when to open another."""
        retry_at = self.shippers[node].broken(now)
        self._recount_live()
        return retry_at

    # -- acknowledgements ---------------------------------------------------------------------------

    def on_ack(self, node: str, batch_id: int, scl: int) -> Acked:
        came_back = self.shippers[node].on_ack(batch_id)
        if came_back:
            self._recount_live()
        acked = self.on_scl(node, scl)
        acked.came_back = came_back
        return acked

    def on_scl(self, node: str, scl: int) -> Acked:
        """`node` holds every record through `scl` (an acknowledgement, or recovery's repair)."""
        before = self.durability.vdl
        vdl = self.durability.on_scl(node, scl)
        if vdl == before:
            return Acked([], False, False)
        released: list[Waiter] = []
        while self.waiters and self.waiters[0].lsn <= vdl:
            released.append(self.waiters.popleft())
        self._trim()
        return Acked(released, True, False)

    def _trim(self) -> None:
        """Drop durable records every live node has; a node that is down gossips for them."""
        acked = [s.acked_lsn for s in self.shippers.values() if s.live]
        self.tail.trim_through(min([self.durability.vdl, *acked]))
        if len(self.tail.records) >= self.limits.tail_records_max:
            self.tail.trim_through(self.durability.vdl)

    def on_stale(self, node: str, why: str) -> Fenced | None:
        """`node` holds a newer volume epoch. Once too few nodes are left for a write quorum
        this writer is fenced: its waiting commits fail, their outcome unknown. Returns them
        with the error when this call fenced it; None otherwise (not yet, or already)."""
        self.shippers[node].stale = True
        self._recount_live()
        current = [n for n, s in self.shippers.items() if not s.stale]
        if self.membership.is_write_quorum(current) or self.fenced:
            return None
        self.fenced = WriterFencedError(
            f"writer fenced: volume epoch {self.epoch} was superseded ({why}); this writer "
            "acknowledges nothing more: commits it had sent may or may not stay, and the next "
            "writer's recovery decides."
        )
        return Fenced(self.fenced, self._take_waiters())

    def stop(self, why: str) -> list[Waiter]:
        """Take no more commits; those still waiting are returned: their outcome is unknown."""
        self.fenced = self.fenced or WriterFencedError(f"{why}: it takes no more commits")
        return self._take_waiters()

    def _take_waiters(self) -> list[Waiter]:
        out = list(self.waiters)
        self.waiters.clear()
        return out
