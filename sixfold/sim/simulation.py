"""A deterministic simulation of the whole volume: six nodes, writers and a reader, one seed.

The simulator runs the code that ships wherever it is free of I/O, and replaces only what the
asyncio shells do: the network is a queue of messages with delay, drop and reorder; a node's
disk is a dict of records, made durable by a commit step that a crash may forestall (the real
node acknowledges only after fsync, so a crash loses exactly the appends queued but not yet
committed). Time is a logical clock in ticks (SIM_TICK_S each for the writer's limits); every
random choice comes from one random.Random(seed), so a seed replays the same trace exactly
(the approach of TigerBeetle's VOPR and FoundationDB's simulator).

The writer IS the shipping one: recovery is sixfold/core/recovery_machine.py's Recovery (seal on
>= 4, sync the newest truncation set, plan, write the new set versioned with the epoch,
repair), and the commit pipeline is sixfold/core/commit_log.py's CommitLog with a NodeShipper per
node (batching, the window in flight, lingering, VDL announcements, acks to VCL and VDL,
trimming, fencing), driven here as writer/recovery.py and writer/pipeline.py drive them over
gRPC; only the streams are simulated. Page reads, the reader's and the writers', are
sixfold/core/page_read.py's (a covering node in turn, else a read quorum), and the read point is
sixfold/core/read_point.py's. Failover is the readers' own: two reader instances (ranks 0 and 1)
run sixfold/core/takeover.py's WriterWatch on the epochs the nodes report, probe the writer, and
take over at exactly the next epoch when it is gone or silent long enough, racing each other
when their stagger is 0 (TakeoverLimits on a shorter clock). A node's commit step, restart
and gossip round are the shipping ones too (sixfold/core/node_commit.py, node_restart.py,
gossip_round.py), their local steps done on the simulated disk; so are its seal, truncation
and read gates (sixfold/core/segment.py), the coalescing plan and the GC horizon
(log_cleanup.py), and the read points readers report to it (read_point.py's ReadPointTable).
What a node keeps of its own is its disk: a dict of records and versions, walked where
storage_node/store.py walks LMDB.

Faults stay within what the design tolerates for progress (at most MAX_NODES_DOWN nodes down
at once), but the safety invariants are checked after every step whatever happens:
- every record of the durable history up to the highest durable point (acknowledged commits
  and recovered VDLs) is held by a write quorum of nodes, so any 2 nodes (an AZ, or AZ+1 for
  reads) may fail without losing an acknowledged commit (P17 §2);
- a reader's read point is a durable point on that history, and every page it reads equals
  the page materialised from that history at its read point (P18 §3);
- at most one writer receives acknowledgements in any epoch (P18 §2.4);
- no node holds or serves a record cancelled by a truncation it knows, no cancelled LSN is
  ever reused, acknowledged or made visible, and a node whose truncation set is as new as a
  completed recovery's holds that recovery's range (P17 §4.3, P18 §2.4).

A writer crashes (its port refuses: gone), is paused (a SIGSTOP, a long GC: silent) or is
cut off from the instances while it still reaches the nodes (a zombie); a reader takes over
and the old writer must be fenced. Clients with a stale view send page reads to any
writer they knew, a paused or deposed one included; every read a writer answers must be
linearizable: no older than the newest commit acknowledged anywhere before it was sent
(the writer confirms its epoch on a read quorum first: sixfold/core/read_index.py).

Nodes coalesce their logs into page versions and collect garbage with the rules that ship
(sixfold/core/log_cleanup.py): a coalescing frontier and the versions are durable, the rest is
lost in a crash, so crashes land in the middle of both. Reads are then served from versions
and the records left, and must still match the history; after the faults the logs must
drain.

Disk faults (driven mode only, DrivenCluster): a record is CRC-checked on every read from
disk and a corrupt one is never returned or applied (the read fails, and the node marks it for
repair); a periodic scrub finds the rest. At restart a corrupt or torn record above the stored
SCL is dropped and gossip fetches it again; one at or below it is rewritten in place from a
peer's intact copy, never truncated, the SCL kept. A durable LSN then counts as held while its
node re-fetches it, but at least WRITE_QUORUM - DISK_FAULTS_MAX intact copies must remain.

Replay a failing seed with: python -m sixfold.sim --seed N [--steps S]
A driven run (tests/test_state_machine.py) is replayed from the steps hypothesis prints.
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import random
import sys
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sixfold.core.commit_log import Acked, CommitLog, PageWrite, WriterLimits
from sixfold.core.durability import VolumeDurability
from sixfold.core.errors import (
    CorruptRecordError,
    EpochAheadError,
    InvalidRequestError,
    SixfoldError,
    StaleEpochError,
)
from sixfold.core.gossip_round import (
    AdoptTruncations,
    GossipLimits,
    GossipRound,
    LocalStep,
    NotePeers,
    RepairRecord,
    StoreFetched,
)
from sixfold.core.log_cleanup import (
    coalesce_point,
    node_gc_horizon,
    plan_coalesce,
    record_redundant,
    version_needed,
)
from sixfold.core.node_commit import QueuedAppend, plan_commit
from sixfold.core.node_requests import (
    Append,
    GetPage,
    GetState,
    ReadRecords,
    Seal,
    Truncate,
)
from sixfold.core.node_restart import complete_from, restore
from sixfold.core.page import EMPTY_PAGE, apply_records
from sixfold.core.page_read import NodeChoice, PageImage, read_page
from sixfold.core.quorum import COPIES, NODE_NAMES, WRITE_QUORUM, quorum_lsn
from sixfold.core.read_index import Answer as ReadAnswer
from sixfold.core.read_index import ReadIndex
from sixfold.core.read_point import ReadPointTable, advance_read_point
from sixfold.core.record import (
    RedoRecord,
    decode_record,
)
from sixfold.core.recovery import RecoveryPlan, SegmentReport, newest_truncations
from sixfold.core.recovery_machine import Recovered, Recovery
from sixfold.core.segment import SegmentState
from sixfold.core.shipping import Batch
from sixfold.core.takeover import Probe, TakeoverLimits, WriterWatch
from sixfold.core.topology import EpochView, owner_id, parse_owner
from sixfold.core.truncation import TruncationRange, is_cancelled

T = TypeVar("T")

# -- bounds (units last) ----------------------------------------------------------------------

STEPS_DEFAULT = 400  # ticks of the fault phase
QUIET_TICKS_MAX = 400  # ticks allowed, after the faults stop, for a writer to make progress
NET_DELAY_TICKS_MAX = 4  # a message is delivered 1..this many ticks after it is sent
CALL_TIMEOUT_TICKS = 12  # a request with no answer by then has failed (NodeDownError)
MAX_NODES_DOWN = COPIES - WRITE_QUORUM  # crashed at once: writes still have a quorum
NODE_DOWN_TICKS_MAX = 40
WRITERS_MAX = 8  # writers started in one run (each crash or race starts a new one)
QUIET_WRITERS_MAX = 8  # more writers the liveness phase may start (racing takeovers)
WRITER_RESTART_TICKS_MAX = 10  # ticks between a writer crash and its successor starting
WRITER_PAUSE_TICKS = (40, 120)  # a paused writer resumes after this many ticks
RECOVERY_ATTEMPTS_MAX = 6  # a writer that fails this often gives up (bounds dueling writers)
RECOVERY_RETRY_TICKS = 6
REPAIR_BATCH_RECORDS_MAX = 16
GOSSIP_PERIOD_TICKS = 5
GOSSIP_RECORDS_MAX = 32  # records fetched from one peer per gossip round
REPAIRS_MAX = 4  # damaged records repaired per gossip round
APPEND_BATCH_RECORDS_MAX = 16
TAIL_RECORDS_MAX = 64  # records the writer holds for its shippers
SENDER_BACKOFF_TICKS_MAX = 8
READER_POLL_TICKS = 4
READ_POINT_TTL_TICKS = 40  # a reader silent this long no longer holds a node's GC back
COALESCE_RECORDS_SIM = 8  # records a simulated node coalesces in one step
GC_KEYS_SIM = 8  # records (and versions) it collects in one step
DRAIN_TICKS_MAX = 400  # after the faults, ticks for every log to drain below the durable point
PAGES = 6  # pages the workload writes (and reads) most
COLD_PAGES = 60  # pages above PAGES, each written now and then: some never again
COLD_WRITE_SHARE = 0.2  # of mini-transactions, those that also write a cold page
WRITES_PER_TXN_MAX = 3  # page writes in one mini-transaction
DELTA_OFFSET_MAX = 48  # bytes: deltas land in a small window so pages overlap often
DELTA_BYTES_MAX = 8
LAL_SIM = 24  # a small LSN allocation limit, so back-pressure and truncations are exercised
DISK_FAULTS_MAX = 1  # nodes with an unrepaired disk fault at once (the driven mode's budget)
DRIVEN_WRITERS_MAX = 64  # writers a driven run may start (failovers are explicit there)
SIM_READ_RECORDS_MAX = 1_000  # records a node returns when a request sets no bound
DOWN_FOREVER = 1 << 62  # a node crashed by an explicit action stays down until restarted
# The writer's clock: one tick stands for 10 ms, so its limits keep their shipping meaning
# (a lingering batch waits 2 ticks, a VDL announcement 2, a silent node is down after 12).
SIM_TICK_S = 0.01
SIM_LIMITS = WriterLimits(
    lal=LAL_SIM,
    tail_records_max=TAIL_RECORDS_MAX,
    append_batch_records_max=APPEND_BATCH_RECORDS_MAX,
    append_timeout_s=CALL_TIMEOUT_TICKS * SIM_TICK_S,
    retry_backoff_s=SIM_TICK_S,
    retry_backoff_s_max=SENDER_BACKOFF_TICKS_MAX * SIM_TICK_S,
)  # every other limit as it ships
# Takeovers on the same clock, shortened: a writer gone for 20 ticks, or silent for 60 (a
# recovery under faults can take 30), is taken over from; a probe every 2 ticks.
SIM_TAKEOVER_LIMITS = TakeoverLimits(
    probe_interval_s=0.02,
    probe_timeout_s=0.1,
    probe_timeout_s_min=0.03,
    gone_after_s=0.2,
    silent_after_s=0.6,
)
PROBE_INTERVAL_TICKS = round(SIM_TAKEOVER_LIMITS.probe_interval_s / SIM_TICK_S)
INSTANCES = 2  # reader instances watching the writer, ranks 0 and 1


@dataclass(frozen=True, slots=True)
class Faults:
    """Per-tick fault probabilities; chosen from the seed so runs differ in character."""

    drop: float = 0.03
    node_crash: float = 0.01
    writer_crash: float = 0.008
    zombie: float = 0.3  # a crashed writer keeps running, partitioned (it must be fenced)
    pause: float = 0.3  # of the other crashes: the writer is paused, and resumes later
    client_read: float = 0.3  # a client with a stale view reads a page from some writer
    # A reader keeps its read point this many ticks before it takes a newer one (a long
    # query): it reports the point it holds, and the nodes' GC must keep what it needs.
    read_point_hold_ticks: int = 30
    # Readers' promotion stagger (sixfold/core/takeover.py): 0 races them at once.
    stagger_s: float = 0.02
    commit: float = 0.5  # a client starts a mini-transaction
    node_commit: float = 0.7  # a node syncs its queued appends (fsync latency)

    @staticmethod
    def from_rng(rng: random.Random) -> Faults:
        return Faults(
            drop=rng.choice([0.0, 0.02, 0.05, 0.1]),
            node_crash=rng.choice([0.0, 0.005, 0.01, 0.02]),
            writer_crash=rng.choice([0.0, 0.005, 0.01]),
            zombie=rng.choice([0.0, 0.3, 0.6]),
            stagger_s=rng.choice([0.0, 0.02, 0.05]),
            commit=rng.choice([0.3, 0.6]),
            node_commit=rng.choice([0.4, 0.8]),
            pause=rng.choice([0.3, 0.6, 0.9]),
            client_read=rng.choice([0.1, 0.3]),
            read_point_hold_ticks=rng.choice([0, 10, 30]),
        )


@dataclass(frozen=True, slots=True)
class Flaws:
    """Deliberate bugs, to show the invariants catch them. All off in a correct run."""

    ack_quorum: int = WRITE_QUORUM  # acknowledge a commit once this many nodes complete it
    skip_truncation: bool = False  # recover without truncating, reusing LSNs above VDL
    serve_corrupt: bool = False  # a node never checks CRCs (reads and scrub)
    unconfirmed_reads: bool = False  # a writer answers reads without confirming its epoch
    coalesce_in_memory: bool = False  # a restart takes all below the stored SCL as coalesced
    gc_without_versions: bool = False  # GC drops records below its horizon, covered or not


class InvariantViolation(AssertionError):
    pass


# -- messages -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """GetWriterState, as an instance probes the writer (sixfold/instance.py _probe)."""


@dataclass(frozen=True, slots=True)
class WriterStateReply:
    recovered: bool
    fenced: bool
    starting: bool  # still recovering: its role says starting or taking over


@dataclass(frozen=True, slots=True)
class Snapshot:
    """pb.NodeState: what a node tells peers, writers and readers about itself."""

    name: str
    epoch: int
    scl: int
    cpl_at_scl: int
    highest_lsn: int
    vdl: int
    vdl_epoch: int
    truncations: tuple[TruncationRange, ...]
    truncations_version: int
    serving: bool
    repair_floor: int = 0  # the lowest LSN it must fetch back from a peer (0: none)
    coalesced_through: int = 0  # sixfold/core/log_cleanup.py: peers collect nothing above it
    epoch_owner: str = ""  # the writer that sealed `epoch` (topology.owner_id)

    def report(self) -> SegmentReport:
        return SegmentReport(
            self.name,
            self.epoch,
            self.scl,
            self.cpl_at_scl,
            self.highest_lsn,
            self.truncations,
            self.truncations_version,
            epoch_owner=self.epoch_owner,
            serving=self.serving,
            repair_floor=self.repair_floor,
            coalesced_through=self.coalesced_through,
        )


@dataclass(frozen=True, slots=True)
class AppendAck:
    scl: int


@dataclass(frozen=True, slots=True)
class Records:
    records: tuple[RedoRecord, ...]


@dataclass(frozen=True, slots=True)
class Failure:
    error: SixfoldError


TIMEOUT = Failure(SixfoldError("no answer before the call deadline"))
REFUSED = Failure(SixfoldError("connection refused: nothing listens at that address"))


@dataclass(frozen=True, slots=True)
class Message:
    src: str
    dst: str
    call_id: int
    body: object
    is_reply: bool


# -- the network and the actors' call plumbing --------------------------------------------------


class Network:
    """Messages in flight, delivered after a random delay (hence reordered) or dropped."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.in_flight: list[tuple[int, int, Message]] = []  # (deliver_tick, seq, message)
        self.seq = 0
        self.drop = sim.faults.drop

    def send(self, message: Message) -> None:
        rng = self.sim.rng
        if rng.random() < self.drop:
            return
        self.seq += 1
        deliver = self.sim.tick + rng.randint(1, NET_DELAY_TICKS_MAX)
        bisect.insort(self.in_flight, (deliver, self.seq, message), key=lambda t: (t[0], t[1]))

    def due(self) -> list[Message]:
        count = 0
        while count < len(self.in_flight) and self.in_flight[count][0] <= self.sim.tick:
            count += 1
        out = [m for _, _, m in self.in_flight[:count]]
        del self.in_flight[:count]
        return out


def _answer(reply: object) -> object:
    """A node's reply as the core's machines take it (sixfold/node_calls.py call)."""
    if isinstance(reply, Snapshot):
        return reply.report()
    if isinstance(reply, Records):
        try:  # CRCs checked on arrival, as sixfold/node_calls.py decodes what a peer sends
            return tuple(decode_record(r.encoded) for r in reply.records)
        except CorruptRecordError as exc:
            return exc
    if isinstance(reply, AppendAck):
        return reply.scl
    if isinstance(reply, PageImage):
        return reply
    assert isinstance(reply, Failure), reply
    return reply.error


Wait = list[int]  # what a task yields: the call ids it waits for (each answers or times out)
Task = Generator[Wait, None, None]


class Actor:
    """An endpoint with outstanding calls; every call ends in a reply or TIMEOUT."""

    def __init__(self, sim: Simulation, name: str) -> None:
        self.sim = sim
        self.name = name
        self.deadlines: dict[int, int] = {}  # call id -> tick after which it timed out
        self.replies: dict[int, object] = {}
        self.tasks: list[tuple[Task, Wait]] = []

    def call(self, dst: str, body: object, timeout_ticks: int = CALL_TIMEOUT_TICKS) -> int:
        sim = self.sim
        sim.call_seq += 1
        self.deadlines[sim.call_seq] = sim.tick + timeout_ticks
        sim.network.send(Message(self.name, dst, sim.call_seq, body, is_reply=False))
        return sim.call_seq

    def reply(self, request: Message, body: object) -> None:
        self.sim.network.send(Message(self.name, request.src, request.call_id, body, True))

    def on_reply(self, message: Message) -> None:
        if self.deadlines.pop(message.call_id, None) is not None:
            self.replies[message.call_id] = message.body

    def expire_calls(self) -> None:
        tick = self.sim.tick
        for call_id in [c for c, deadline in self.deadlines.items() if deadline <= tick]:
            del self.deadlines[call_id]
            self.replies[call_id] = TIMEOUT

    def spawn(self, task: Task) -> None:
        self.tasks.append((task, next(task)))

    def run_tasks(self) -> None:
        """Resume every task whose calls have all answered (or timed out)."""
        for i, (task, wait) in enumerate(self.tasks):
            if all(c in self.replies for c in wait):
                self.tasks[i] = (task, self._resume(task))
        self.tasks = [(t, w) for t, w in self.tasks if w is not _DONE]

    @staticmethod
    def _resume(task: Task) -> Wait:
        try:
            return next(task)
        except StopIteration:
            return _DONE

    def take(self, call_id: int) -> object:
        return self.replies.pop(call_id)

    def drive(
        self, steps: Generator[Any, Any, T], local: Callable[[Any], object] | None = None
    ) -> Generator[Wait, None, T]:
        """Run a sans-I/O machine (recovery, a page read, a gossip round) over the simulated
        network, as sixfold/node_calls.py drive does over gRPC; `local` does its local steps."""
        answers: object = None
        while True:
            try:
                step = steps.send(answers)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            if not isinstance(step, dict):
                assert local is not None, step
                answers = local(step)
                continue
            calls = {n: self.call(n, request) for n, request in step.items()}
            yield list(calls.values())
            answers = {n: _answer(self.take(c)) for n, c in calls.items()}

    def sleep(self, ticks: int) -> Generator[Wait, None, None]:
        """Wait `ticks`: a call to nobody, which simply reaches its deadline."""
        self.sim.call_seq += 1
        call_id = self.sim.call_seq
        self.deadlines[call_id] = self.sim.tick + ticks
        yield [call_id]
        self.replies.pop(call_id, None)


_DONE: Wait = []


# -- storage nodes ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Meta:
    """What the node's LMDB meta database holds: survives a crash."""

    epoch: int = 0
    epoch_owner: str = ""
    truncations: tuple[TruncationRange, ...] = ()
    truncations_version: int = 0
    scl: int = 0
    cpl_at_scl: int = 0
    vdl: int = 0
    vdl_epoch: int = 0
    coalesced_through: int = 0  # sixfold/core/log_cleanup.py: stored with the versions
    gc_horizon: int = 0


@dataclass(frozen=True, slots=True)
class _Caller:
    """Who waits for a queued append (not yet durable: a crash loses it): the request to
    answer, if any, and intact copies of records found corrupt on disk, to rewrite."""

    request: Message | None = None
    repairs: tuple[RedoRecord, ...] = ()


Queued = QueuedAppend[_Caller]


class SimNode(Actor):
    def __init__(self, sim: Simulation, name: str) -> None:
        super().__init__(sim, name)
        self.up = True
        self.log: dict[int, RedoRecord] = {}  # the durable log: LSN -> record
        # Disk faults: LSN -> the damaged bytes stored in place of the record's encoding. A
        # read of such a record fails its CRC check (unless Flaws.serve_corrupt).
        self.damaged: dict[int, bytes] = {}
        self.needs_repair: set[int] = set()  # damaged LSNs this node has found (in memory)
        self.meta = _Meta()
        # Durable, as the LMDB versions and superseded databases: page -> {LSN: image}, and
        # (newer version's LSN, page, older version's LSN) waiting for the GC horizon.
        self.versions: dict[int, dict[int, bytes]] = {}
        self.superseded: list[tuple[int, int, int]] = []
        self.peer_scl: dict[str, int] = {}  # from the last gossip round (in memory)
        self.read_points = ReadPointTable(READ_POINT_TTL_TICKS)  # in memory
        self.peer_repair_floor: dict[str, int] = {}
        self.peer_coalesced: dict[str, int] = {}
        self.state = SegmentState(name)
        self.queue: list[Queued] = []
        self.down_until = 0
        self.next_gossip = sim.rng.randint(1, GOSSIP_PERIOD_TICKS)
        self.gossip = GossipRound(
            [n for n in NODE_NAMES if n != name], GossipLimits(GOSSIP_RECORDS_MAX, REPAIRS_MAX)
        )

    # -- crash and restart (storage_node/node.py _restore_state) --------------------------------

    def crash(self, until: int) -> None:
        self.up = False
        self.read_points = ReadPointTable(READ_POINT_TTL_TICKS)
        self.peer_scl.clear()
        self.peer_repair_floor.clear()
        self.peer_coalesced.clear()
        self.down_until = until
        self.queue.clear()  # received, not synced: lost
        self.needs_repair.clear()
        self.tasks.clear()
        self.deadlines.clear()
        self.replies.clear()

    def restart(self) -> None:
        """storage_node/node.py _restore_state: the shipping restore, from the simulated disk.

        A corrupt or torn record above the stored SCL is dropped: gossip fetches it again.
        Those at or below it are not scanned (start-up does not grow with the log): a read
        or the scrub finds them, and they are repaired in place, the SCL kept."""
        meta = self.meta
        st = SegmentState(self.name)
        start = complete_from(meta, lambda lsn: lsn in self.log)
        above = [
            (x, CorruptRecordError(f"LSN {x}") if x in self.damaged else self.log[x])
            for x in sorted(x for x in self.log if x > start[0])
        ]
        for lsn in restore(st, meta, start, above):
            self.sim.forget(self, lsn)
            self.sim.trace_event(f"{self.name} dropped corrupt LSN {lsn} above its SCL")
        if self.sim.flaws.coalesce_in_memory:  # the bug issue 18 found
            meta.coalesced_through = max(meta.coalesced_through, meta.scl)
        self.state = st
        self.up = True
        self.sim.dirty_nodes.append(self)

    def _save_epoch(self) -> None:
        st, meta = self.state, self.meta
        meta.epoch, meta.epoch_owner, meta.truncations = st.epoch, st.epoch_owner, st.truncations
        meta.truncations_version = st.truncations_version
        meta.scl, meta.cpl_at_scl = st.scl, st.completeness.cpl_at_scl

    def snapshot(self) -> Snapshot:
        st = self.state
        return Snapshot(
            self.name,
            st.epoch,
            st.scl,
            st.completeness.cpl_at_scl,
            st.completeness.highest_lsn,
            st.vdl,
            st.vdl_epoch,
            st.truncations,
            st.truncations_version,
            st.serving,
            self.repair_floor,
            self.meta.coalesced_through,
            st.epoch_owner,
        )

    @property
    def repair_floor(self) -> int:
        return min(self.needs_repair, default=0)

    # -- requests (storage_node/service.py) -----------------------------------------------------

    def on_request(self, message: Message) -> None:
        body = message.body
        try:
            answer = self._handle(body, message)
        except SixfoldError as exc:
            answer = Failure(exc)
        if answer is not None:
            self.reply(message, answer)

    def _handle(self, body: object, message: Message) -> object | None:
        st = self.state
        if isinstance(body, Append):
            st.check_current(body.epoch, "append")
            if not body.records:  # storage_node/node.py announce: answered at once
                st.learn_vdl(body.epoch, body.vdl)
                return AppendAck(st.scl)
            for record in body.records:
                assert record.epoch <= body.epoch, "decode_batch rejects a record from the future"
            self.queue.append(QueuedAppend(body.epoch, body.records, body.vdl, _Caller(message)))
            return None  # answered by the commit
        if isinstance(body, Seal):
            st.check_seal(body.epoch, body.owner)
            st.seal(body.epoch, body.owner)
            self._save_epoch()
            return self.snapshot()
        if isinstance(body, Truncate):
            if any(r.epoch > body.version for r in body.ranges) or body.version > body.epoch:
                raise InvalidRequestError(f"malformed truncation request {body!r}")
            self.truncate(body.epoch, body.ranges, body.version)
            return self.snapshot()
        if isinstance(body, GetState):
            if body.reader:  # storage_node/service.py GetState
                self.read_points.note(
                    body.reader, body.read_point, self.sim.tick, self.meta.gc_horizon
                )
            return self.snapshot()
        if isinstance(body, ReadRecords):
            records_max = body.records_max or SIM_READ_RECORDS_MAX
            return Records(
                self.read_records(body.after_lsn, body.through_lsn, records_max, body.page_no)
            )
        if isinstance(body, GetPage):
            st.check_page_at(body.lsn, body.min_epoch, self.meta.gc_horizon)
            return self.page_at(body.page_no, body.lsn)
        raise AssertionError(f"unknown request {body!r}")

    def truncate(self, epoch: int, ranges: tuple[TruncationRange, ...], version: int) -> None:
        """storage_node/node.py truncate: adopt the epoch and a newer set, record them, then
        delete what the set newly cancels. Ranges the new set drops cancel nothing any more."""
        st = self.state
        if not st.truncation_is_news(epoch, version):
            return
        fresh = st.truncate(epoch, ranges, version)
        self._save_epoch()
        for rng in fresh:
            # A corrupt record inside the range is deleted whatever its (unreadable) epoch.
            doomed = [
                x
                for x, r in self.log.items()
                if rng.cancels(x, r.epoch)
                or (x in self.damaged and rng.after_lsn < x <= rng.through_lsn)
            ]
            for lsn in doomed:
                self.sim.forget(self, lsn)
        self.meta.vdl, self.meta.vdl_epoch = st.vdl, st.vdl_epoch
        self.sim.dirty_nodes.append(self)

    def read_records(
        self, after: int, through: int, records_max: int, page_no: int | None = None
    ) -> tuple[RedoRecord, ...]:
        self.state.check_serving()
        # The page index (page -> LSNs) is separate from the records: it survives their damage.
        lsns = sorted(
            x
            for x, r in self.log.items()
            if after < x <= through and (page_no is None or r.page_no == page_no)
        )[:records_max]
        # A corrupt record fails the whole read.
        return tuple(self.state.servable(self.read_disk(x) for x in lsns))

    def page_at(self, page_no: int, lsn: int) -> PageImage:
        """The newest version at or below `lsn`, with the page's records above it applied
        (storage_node/store.py page_at)."""
        base_lsn = max((v for v in self.versions.get(page_no, {}) if v <= lsn), default=0)
        base = self.versions[page_no][base_lsn] if base_lsn else EMPTY_PAGE
        # The page index (page -> LSNs) is separate from the records: it survives their damage.
        lsns = sorted(
            x for x, r in self.log.items() if base_lsn < x <= lsn and r.page_no == page_no
        )
        records = [self.read_disk(x) for x in lsns]
        image = apply_records(base, records) if records else base
        return PageImage(image, records[-1].lsn if records else base_lsn, self.state.scl)

    # -- coalescing and GC (storage_node/background.py, sixfold/core/log_cleanup.py) ---------------

    def background_step(self) -> None:
        """One coalescing step and one GC step, each all or nothing (one LMDB transaction)."""
        st, meta = self.state, self.meta
        point = coalesce_point(st.scl, st.vdl, st.vdl_epoch, st.epoch)
        above = sorted((x, r.page_no) for x, r in self.log.items() if x > meta.coalesced_through)
        step = plan_coalesce(
            meta.coalesced_through, point, above[:COALESCE_RECORDS_SIM], COALESCE_RECORDS_SIM
        )
        if step is not None:
            try:
                pages = [(p, self.page_at(p, step.through)) for p in step.pages]
            except CorruptRecordError:
                pages = None  # repaired from a peer first; the step runs after that
            if pages is not None:
                for page_no, page in pages:
                    versions = self.versions.setdefault(page_no, {})
                    newest = max((v for v in versions if v <= step.through), default=0)
                    if version_needed(page.page_lsn, newest):
                        self.superseded += [(page.page_lsn, page_no, v) for v in versions]
                        versions[page.page_lsn] = page.image
                meta.coalesced_through = step.through
        self._collect_garbage()

    def _collect_garbage(self) -> None:
        meta, flaws = self.meta, self.sim.flaws
        horizon = node_gc_horizon(
            meta.coalesced_through,
            self.read_points.lowest(self.sim.tick, self.state.vdl),
            self.gossip.peers,
            self.peer_scl,
            self.peer_coalesced,
            [self.repair_floor, *self.peer_repair_floor.values()],
        )
        if horizon <= 0:
            return
        meta.gc_horizon = max(meta.gc_horizon, horizon)
        meta.scl, meta.cpl_at_scl = self.state.scl, self.state.completeness.cpl_at_scl
        for lsn in sorted(self.log)[:GC_KEYS_SIM]:
            record = self.log[lsn]
            if lsn in self.damaged:
                if lsn > horizon:
                    break
                self.sim.covered(self, lsn)  # read intact when coalesced: its versions hold it
                continue
            versions = self.versions.get(record.page_no, {})
            newest = max((v for v in versions if v <= horizon), default=0)
            covered = record_redundant(lsn, horizon, newest)
            if lsn > horizon or not (covered or flaws.gc_without_versions):
                break
            del self.log[lsn]  # covered by a version: still held, as far as the oracle cares
        due = [x for x in self.superseded if x[0] <= horizon][:GC_KEYS_SIM]
        for newer, page_no, older in due:
            self.versions.get(page_no, {}).pop(older, None)
            self.superseded.remove((newer, page_no, older))

    def read_disk(self, lsn: int) -> RedoRecord:
        """A record read from disk, CRC-checked: a corrupt one raises and is marked for repair.

        Every record a node returns or applies passes here, and the oracle checks it equals
        what the writer wrote (corrupt data is never served)."""
        record = self.log[lsn]
        bad = self.damaged.get(lsn)
        if bad is not None:
            if self.sim.flaws.serve_corrupt:
                record = replace(record, encoded=bad)
            else:
                if lsn > self.meta.coalesced_through:  # below, its versions hold it
                    self.needs_repair.add(lsn)
                try:
                    decode_record(bad)
                except CorruptRecordError as exc:
                    raise CorruptRecordError(f"{self.name}: stored {exc}") from None
                raise AssertionError(f"damaged bytes of LSN {lsn} passed the CRC check")
        self.sim.oracle.check_served(self.sim, self.name, record)
        return record

    # -- the commit path (storage_node/node.py _commit): durable, then acknowledged ---------------

    def commit(self) -> None:
        """storage_node/node.py _commit: the shipping plan_commit, then one atomic write."""
        st = self.state
        batch, self.queue = self.queue, []
        plan = plan_commit(st, batch)
        for queued, exc in plan.refused:
            if queued.token.request is not None:
                self.reply(queued.token.request, Failure(exc))
        for queued in plan.accepted:
            for record in queued.token.repairs:  # rewritten in place: the SCL does not move
                if record.lsn in self.damaged and not st.cancels(record):
                    self.sim.repair(self, record)
        if plan.records:
            meta = self.meta
            meta.scl, meta.cpl_at_scl = plan.after.scl, plan.after.cpl_at_scl
            meta.vdl, meta.vdl_epoch = st.vdl, st.vdl_epoch
            for record in plan.records:
                self.sim.store(self, record)
            st.completeness = plan.after
            self.sim.dirty_nodes.append(self)
        for queued in plan.accepted:
            if queued.token.request is not None:
                self.reply(queued.token.request, AppendAck(st.scl))

    # -- gossip (storage_node/gossip.py) ---------------------------------------------------------

    def maybe_gossip(self) -> None:
        if self.sim.tick >= self.next_gossip and not self.tasks:
            self.next_gossip = self.sim.tick + GOSSIP_PERIOD_TICKS
            self.spawn(self._gossip_round())

    def _gossip_round(self) -> Task:
        """storage_node/gossip.py: the shipping GossipRound, its local steps done here."""
        self.scrub()
        self.needs_repair &= self.damaged.keys()
        damaged = [(lsn, None) for lsn in sorted(self.needs_repair)]
        try:
            yield from self.drive(self.gossip.run(self.state, damaged), local=self._carry_out)
        except SixfoldError as exc:  # a malformed peer state: the round ends, as the node's
            self.sim.trace_event(f"{self.name} gossip round failed: {exc}")

    def scrub(self) -> None:
        """The periodic CRC check of every stored record (P17 §3.2 step 8), each gossip
        round; modelled as finding every damaged record at once. A node that never checks
        CRCs (Flaws.serve_corrupt) finds nothing."""
        if not self.sim.flaws.serve_corrupt:
            self.needs_repair.update(x for x in self.damaged if x > self.meta.coalesced_through)

    def _carry_out(self, step: LocalStep) -> None:
        """A gossip round's local step. Fetched records and repairs are queued for the next
        commit, as the node's are: a crash before it loses them."""
        if isinstance(step, NotePeers):
            self.peer_scl = {s.name: s.scl for s in step.answered}
            self.peer_repair_floor = {
                s.name: s.repair_floor for s in step.answered if s.repair_floor
            }
            self.peer_coalesced = {s.name: s.coalesced_through for s in step.answered}
        elif isinstance(step, AdoptTruncations):
            self.truncate(step.epoch, step.ranges, step.version)
        elif isinstance(step, StoreFetched):
            self.queue.append(QueuedAppend(None, step.records, 0, _Caller()))
        elif isinstance(step, RepairRecord):
            self.queue.append(QueuedAppend(None, (), 0, _Caller(repairs=(step.record,))))
        else:
            raise AssertionError(f"a simulated disk damages no page versions: {step!r}")


# -- writers ------------------------------------------------------------------------------------


class _FlawedDurability(VolumeDurability):
    """A deliberately broken VDL: acknowledges once `quorum` nodes complete a commit."""

    def __init__(self, quorum: int, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.quorum = quorum

    def on_scl(self, node: str, scl: int) -> int:
        if scl > self.node_scl[node]:
            self.node_scl[node] = scl
            self.vcl = max(self.vcl, quorum_lsn(self.node_scl.values(), self.quorum))
            while self._cpls and self._cpls[0] <= self.vcl:
                self.vdl = self._cpls.popleft()
        return self.vdl


class _SkippingRecovery(Recovery):
    """A deliberately broken recovery: no new truncation range, LSNs above VDL reused."""

    def plan(
        self, epoch: int, reports: list[SegmentReport]
    ) -> tuple[RecoveryPlan, tuple[TruncationRange, ...]]:
        plan, _ = super().plan(epoch, reports)
        return replace(plan, next_lsn=plan.vdl + 1), newest_truncations(reports).truncations


@dataclass(slots=True)
class _Stream:
    """The simulator's stand-in for one node's append stream (writer/pipeline.py
    NodeSender): its calls in flight, answered in order, or the stream is broken."""

    calls: deque[tuple[int, int]] = field(default_factory=deque)  # (call id, batch id)
    open: bool = False
    retry_at: float = 0.0  # seconds
    truncate_call: int = 0  # the node lacked the epoch's truncations: they are on the way


class SimWriter(Actor):
    """A writer: the shipping Recovery machine and CommitLog, driven over the simulated
    network and clock (the asyncio shells: writer/recovery.py, writer/pipeline.py)."""

    def __init__(self, sim: Simulation, name: str, epoch_wanted: int = 0) -> None:
        super().__init__(sim, name)
        self.owner = owner_id(name, f"sim/{name}", "0")  # says where instances probe it
        self.epoch_wanted = epoch_wanted  # promoted by a reader: only this epoch will do
        self.alive = True
        self.paused_until = 0  # a paused writer does nothing before this tick
        self.hidden = False  # a zombie: cut off from the instances, not from the nodes
        self.gave_up = False
        self.log: CommitLog | None = None
        self.streams = {n: _Stream() for n in NODE_NAMES}
        self.read_index = ReadIndex(0)
        self.choice = NodeChoice(list(NODE_NAMES))  # its PageReader's (writer/writer.py)
        self.reads_answered = 0
        self.recovered_vdl = 0
        self.spawn(self._recover())

    @property
    def fenced(self) -> bool:
        return self.log is not None and self.log.fenced is not None

    @property
    def now(self) -> float:
        return self.sim.tick * SIM_TICK_S

    # -- recovery (sixfold/core/recovery_machine.py) -----------------------------------------------

    def _recover(self) -> Task:
        flawed = self.sim.flaws.skip_truncation
        # A promotion makes one attempt (sixfold/instance.py become_writer): a reader that
        # loses goes back to watching; a writer started as such retries.
        attempts = 1 if self.epoch_wanted else RECOVERY_ATTEMPTS_MAX
        for _ in range(attempts):
            machine = (_SkippingRecovery if flawed else Recovery)(
                list(NODE_NAMES),
                self.owner,
                LAL_SIM,
                self.epoch_wanted,
                repair_batch_records_max=REPAIR_BATCH_RECORDS_MAX,
            )
            try:
                result = yield from self.drive(machine.run())
            except SixfoldError as exc:
                self.sim.trace_event(f"{self.name} recovery failed: {exc}")
                yield from self.sleep(RECOVERY_RETRY_TICKS)
                continue
            self._start_pipeline(result)
            return
        self.gave_up = True
        self.sim.trace_event(f"{self.name} gave up recovery")

    def _start_pipeline(self, result: Recovered) -> None:
        plan, flaws = result.plan, self.sim.flaws
        durability = (
            None
            if flaws.ack_quorum == WRITE_QUORUM
            else _FlawedDurability(flaws.ack_quorum, list(NODE_NAMES), plan.vdl, result.node_scls)
        )
        self.log = CommitLog.recovered(list(NODE_NAMES), result, SIM_LIMITS, durability)
        self.read_index = ReadIndex(plan.epoch)
        self.recovered_vdl = plan.vdl
        self.sim.on_recovered(self, plan.epoch, plan.vdl, plan.truncation)

    def on_probe(self, request: Message) -> None:
        """An instance's GetWriterState: answered unless paused (it answers once it resumes,
        after the probe gave up) or cut off from the instances."""
        if self.paused or self.hidden:
            return
        state = WriterStateReply(
            recovered=self.log is not None,
            fenced=self.fenced,
            starting=self.log is None and not self.gave_up,
        )
        self.reply(request, state)

    # -- client reads (writer/writer.py read_page_linearizable, writer/read_index.py) -----------

    @property
    def paused(self) -> bool:
        return self.sim.tick < self.paused_until

    def client_read(self, page_no: int, acked_floor: int) -> None:
        """A client's page read sent to this writer (it may be paused or deposed). Every
        commit acknowledged anywhere before it was sent is at or below `acked_floor`."""
        self.spawn(self._client_read(page_no, acked_floor))

    def _client_read(self, page_no: int, acked_floor: int) -> Task:
        yield []  # received now; handled once the writer runs (not while paused)
        core = self.log
        if core is None or core.fenced:
            return  # refused: not (or no longer) the writer
        round_no = self.read_index.want()
        self._start_round_if_due(core)
        point = core.vdl
        try:  # writer/writer.py read_page_linearizable: its PageReader's read
            page = yield from self.drive(read_page(self.choice, page_no, point, core.epoch))
        except SixfoldError:
            return  # failed: no node (nor a read quorum) answered in time
        if not self.sim.flaws.unconfirmed_reads:
            while not self.read_index.is_confirmed(round_no):
                if self.read_index.is_decided(round_no):
                    return  # refused: the epoch could not be confirmed
                yield from self.sleep(1)
        self.sim.oracle.check_writer_read(self.sim, self.name, page_no, point, *page, acked_floor)
        self.reads_answered += 1

    def _start_round_if_due(self, core: CommitLog) -> None:
        round_no = self.read_index.start_round()
        if round_no is not None:
            self.spawn(self._confirm_round(core, round_no))

    def _confirm_round(self, core: CommitLog, round_no: int) -> Task:
        """One read-index round: a bare append with the epoch to every node."""
        calls = {n: self.call(n, Append(core.epoch, (), core.vdl)) for n in NODE_NAMES}
        yield list(calls.values())
        for node, call_id in calls.items():
            reply = self.take(call_id)
            if isinstance(reply, AppendAck) or (
                isinstance(reply, Failure) and isinstance(reply.error, EpochAheadError)
            ):
                answer = ReadAnswer.CONFIRMS
            elif isinstance(reply, Failure) and isinstance(reply.error, StaleEpochError):
                answer = ReadAnswer.REFUSES
            else:
                answer = ReadAnswer.SILENT
            self.read_index.on_answer(round_no, node, answer)
        self._start_round_if_due(core)

    # -- the commit pipeline (sixfold/core/commit_log.py) ------------------------------------------

    def step_pipeline(self) -> None:
        core = self.log
        if core is None or core.fenced:
            return
        core.expire(self.now)  # not durable in time: the client gives up, outcome unknown
        if self.sim.rng.random() < self.sim.faults.commit and not self.sim.commits_paused:
            self._maybe_commit(core)
        client = self.sim.client_writes
        if client and self._commit_pages(core, client[0]):
            client.popleft()
        for node in NODE_NAMES:
            self._step_stream(core, node)
            if core.fenced:
                return

    def _maybe_commit(self, core: CommitLog) -> None:
        rng = self.sim.rng
        pages = rng.sample(range(PAGES), rng.randint(1, WRITES_PER_TXN_MAX))
        if rng.random() < COLD_WRITE_SHARE:
            pages[-1] = PAGES + rng.randrange(COLD_PAGES)
        self._commit_pages(core, pages)

    def _commit_pages(self, core: CommitLog, pages: list[int]) -> bool:
        """Start a mini-transaction writing `pages`; False if there is no room for it yet."""
        if not core.has_room(len(pages)):
            return False
        rng = self.sim.rng
        writes = [
            PageWrite(
                p,
                (
                    (
                        rng.randrange(DELTA_OFFSET_MAX),
                        rng.randbytes(rng.randint(1, DELTA_BYTES_MAX)),
                    ),
                ),
            )
            for p in pages
        ]
        # A page not written in this epoch links to its latest version at VDL, which the
        # real writer reads from storage; the oracle's history gives the same answer.
        links = {
            p: self.sim.oracle.page_lsn_at(p, self.recovered_vdl)
            for p in pages
            if not core.knows_page(p)
        }
        waiter = core.append(writes, links, self.now)
        tail = core.tail.records  # the commit's records end it; a deque reads its end in O(1)
        for record in (tail[i] for i in range(-len(pages), 0)):
            self.sim.oracle.on_generated(self.sim, record)
        if self.sim.driven:
            self.sim.trace_event(f"{self.name} commit {waiter.lsn} pages {pages}")
        return True

    def _step_stream(self, core: CommitLog, node: str) -> None:
        """One node's stream, as NodeSender.run: answers in order, then what to send."""
        stream, now = self.streams[node], self.now
        if stream.truncate_call:
            if stream.truncate_call not in self.replies:
                return
            if not isinstance(self.take(stream.truncate_call), Snapshot):
                stream.retry_at = core.broken(node, now)
            stream.truncate_call = 0
        while stream.calls and stream.calls[0][0] in self.replies:
            call_id, batch_id = stream.calls.popleft()
            reply = self.take(call_id)
            if isinstance(reply, AppendAck):
                self._on_acked(core, core.on_ack(node, batch_id, reply.scl))
                continue
            self._close(stream)
            error = reply.error if isinstance(reply, Failure) else None
            if isinstance(error, EpochAheadError):
                # The node lacks this epoch or its truncation set: send it, versioned with the epoch.
                body = Truncate(core.epoch, core.truncations, core.epoch)
                stream.truncate_call = self.call(node, body)
            elif isinstance(error, StaleEpochError):
                core.on_stale(node, str(error))
                if core.fenced:  # commits it had sent get no answer: their outcome is unknown
                    self.sim.trace_event(f"{self.name} fenced at epoch {core.epoch}")
            else:
                stream.retry_at = core.broken(node, now)
            return
        if core.shippers[node].stale or stream.truncate_call:
            return
        if not stream.open:
            if now < stream.retry_at:
                return
            stream.open = True
            self._send(core, node, stream, core.open(node, now))
        poll = core.poll(node, now)
        if poll.silent is not None:
            self._close(stream)
            stream.retry_at = core.broken(node, now)
            return
        for batch in poll.batches:
            self._send(core, node, stream, batch)

    def _send(self, core: CommitLog, node: str, stream: _Stream, batch: Batch) -> None:
        call_id = self.call(node, Append(core.epoch, tuple(batch.records), batch.vdl))
        stream.calls.append((call_id, batch.batch_id))

    def _close(self, stream: _Stream) -> None:
        """The stream broke: answers to what is still in flight on it are never read."""
        for call_id, _ in stream.calls:
            self.deadlines.pop(call_id, None)
            self.replies.pop(call_id, None)
        stream.calls.clear()
        stream.open = False

    def _on_acked(self, core: CommitLog, acked: Acked) -> None:
        for waiter in acked.released:
            self.sim.oracle.on_ack(self.sim, self, core.epoch, waiter.lsn)
        if acked.vdl_advanced:
            self.sim.oracle.on_vdl(self.sim, self.name, core.vdl)


# -- the reader (reader/reader.py) --------------------------------------------------------------


class SimReader(Actor):
    """A reader (reader/reader.py): its read point from the nodes' states, and its page
    reads by the shipping sixfold/core/page_read.py, single-node or from a read quorum."""

    def __init__(self, sim: Simulation, name: str) -> None:
        super().__init__(sim, name)
        self.read_point = 0
        self.epoch = 0
        self.point_taken_at = 0  # tick: a held read point is kept Faults.read_point_hold_ticks
        self.choice = NodeChoice(list(NODE_NAMES))
        self.pages_checked = 0
        self.last_read: tuple[int, int] = (-1, 0)  # (page, read point) of the last page read
        self.spawn(self._loop())

    def read_now(self, page_no: int) -> None:
        """An explicit read of one page at the newest read point (a client's query)."""
        self.spawn(self._read_once(page_no))

    def _read_once(self, page_no: int) -> Task:
        yield from self._poll()
        if self.epoch:
            yield from self._read_page(page_no)

    def _loop(self) -> Task:
        while True:  # bounded by the simulation's step count: the task dies with the run
            yield from self.sleep(READER_POLL_TICKS)
            yield from self._poll()
            if self.epoch:
                yield from self._read_page(self.sim.rng.randrange(PAGES))

    def _poll(self) -> Task:
        """reader.py poll_once and note_state: each node's SCL, and the read point."""
        asked = GetState(self.name, self.read_point)  # the point it reads at holds GC back
        calls = {n: self.call(n, asked) for n in NODE_NAMES}
        yield list(calls.values())
        states: list[Snapshot] = []
        for node, call_id in calls.items():
            state = self.take(call_id)
            if isinstance(state, Snapshot):
                states.append(state)
                self.choice.note_scl(node, state.scl if state.serving else 0)
            else:
                self.choice.note_scl(node, 0)  # note_down: covers nothing until heard again
        learned = ((s.vdl_epoch, s.vdl) for s in states)
        held = self.sim.tick - self.point_taken_at < self.sim.faults.read_point_hold_ticks
        if not (self.epoch and held):
            newer = advance_read_point((self.epoch, self.read_point), learned)
            if newer != (self.epoch, self.read_point):
                self.epoch, self.read_point = newer
                self.point_taken_at = self.sim.tick
        if self.epoch:
            self.sim.oracle.check_read_point(self.sim, self.read_point)

    def _read_page(self, page_no: int) -> Task:
        point, epoch = self.read_point, self.epoch
        try:
            image, page_lsn = yield from self.drive(read_page(self.choice, page_no, point, epoch))
        except SixfoldError:
            return  # no node, nor a read quorum, could answer in time
        self.sim.oracle.check_page(self.sim, self.name, page_no, point, image, page_lsn)
        self.pages_checked += 1
        self.last_read = (page_no, point)


# -- reader instances that take over (sixfold/instance.py, sixfold/core/takeover.py) ---------------


def _probe_answer(reply: object) -> Probe:
    """A probe's reply as sixfold/instance.py _probe reads GetWriterState's."""
    if isinstance(reply, WriterStateReply):
        if reply.recovered and not reply.fenced:
            return Probe.WRITER
        return Probe.SILENT if reply.starting else Probe.NOT_WRITER
    return Probe.GONE if reply is REFUSED else Probe.SILENT


class SimInstance(Actor):
    """A reader instance's writer watch: the shipping WriterWatch decides whom to probe and
    when to take over; a takeover starts a writer that recovers at exactly the epoch after
    the silent writer's, so of racing instances one wins."""

    def __init__(self, sim: Simulation, name: str, rank: int) -> None:
        super().__init__(sim, name)
        self.watch = WriterWatch(rank, replace(SIM_TAKEOVER_LIMITS, stagger_s=sim.faults.stagger_s))
        self.writer: SimWriter | None = None  # the writer this instance became
        self.spawn(self._loop())

    def _loop(self) -> Task:
        while True:  # bounded by the simulation's step count: the task dies with the run
            yield from self.sleep(PROBE_INTERVAL_TICKS)
            writer = self.writer
            if writer is not None and writer.alive and not writer.fenced and not writer.gave_up:
                continue  # it is the writer (a fenced one stepped down)
            self.writer = None
            views = yield from self._views()
            asked_at = self.sim.tick * SIM_TICK_S
            asked = self.watch.probe(views, asked_at)
            if asked is None:
                continue
            target = parse_owner(asked.owner).name
            timeout_ticks = max(1, round(asked.timeout_s / SIM_TICK_S))
            call_id = self.call(target, ProbeRequest(), timeout_ticks)
            yield [call_id]
            probe = _probe_answer(self.take(call_id))
            views = yield from self._views()
            now = self.sim.tick * SIM_TICK_S
            decision = self.watch.on_probe(asked, probe, views, asked_at, now)
            if decision is not None:
                self.writer = self.sim.promote(self, target, decision.epoch_wanted)

    def _views(self) -> Generator[Wait, None, list[EpochView]]:
        """The epochs the nodes report (the instance's reader hears them on its streams)."""
        calls = [self.call(n, GetState()) for n in NODE_NAMES]
        yield calls
        states = [s for c in calls if isinstance(s := self.take(c), Snapshot)]
        return [EpochView(s.epoch, s.epoch_owner) for s in states]


# -- the oracle: what really happened, and the invariants ----------------------------------------


class Oracle:
    """The volume's true history and every acknowledgement, to check the cluster against.

    The history is the chain of volume back-links from the highest durable point D (the
    highest VDL any writer announced, or recovered). Every earlier durable point must lie on
    that chain: otherwise an acknowledged commit was lost or history forked.
    """

    def __init__(self) -> None:
        self.generated: dict[int, RedoRecord] = {}
        self.durable_point = 0  # D
        self.chain: list[int] = []  # LSNs of the history up to D, ascending
        self.chain_set: set[int] = {0}
        self.page_chain: dict[int, list[int]] = {}  # page -> its history LSNs, ascending
        self.holders: dict[int, int] = {}  # LSN -> nodes whose durable log holds it
        self.ackers: dict[int, list[str]] = {}  # epoch -> writers that got an ack in it
        self.acked: list[int] = []
        self.truncations: list[TruncationRange] = []  # written by completed recoveries

    def on_generated(self, sim: Simulation, record: RedoRecord) -> None:
        if record.lsn in self.generated:
            sim.fail(
                f"LSN {record.lsn} reused at epoch {record.epoch} (first written at epoch "
                f"{self.generated[record.lsn].epoch}): a truncation missed it"
            )
        self.generated[record.lsn] = record

    def on_ack(self, sim: Simulation, writer: SimWriter, epoch: int, lsn: int) -> None:
        ackers = self.ackers.setdefault(epoch, [])
        if writer.name not in ackers:
            ackers.append(writer.name)
        if len(ackers) > 1:
            sim.fail(f"two writers {ackers} acknowledged commits in epoch {epoch}")
        record = self.generated[lsn]
        if is_cancelled(self.truncations, lsn, record.epoch):
            sim.fail(f"commit LSN {lsn} acknowledged although a truncation cancelled it")
        self.acked.append(lsn)
        sim.acked_count += 1
        self.on_vdl(sim, writer.name, lsn)

    def on_vdl(self, sim: Simulation, who: str, vdl: int) -> None:
        """A writer announced (or recovered) `vdl`: it must extend the history, not fork it."""
        if vdl <= self.durable_point:
            if vdl not in self.chain_set:
                sim.fail(
                    f"{who}'s durable point {vdl} is not on the history to "
                    f"{self.durable_point}: history forked"
                )
            return
        added: list[int] = []
        lsn = vdl
        while lsn > self.durable_point:
            record = self.generated.get(lsn)
            if record is None:
                sim.fail(f"{who}'s durable point {vdl} links back to LSN {lsn}, never written")
            added.append(lsn)
            lsn = record.prev_volume_lsn
        if lsn != self.durable_point:
            sim.fail(
                f"{who}'s durable point {vdl} does not extend durable point "
                f"{self.durable_point} (links back to {lsn}): an acknowledged commit or "
                "recovered VDL was lost"
            )
        for x in reversed(added):
            self.chain.append(x)
            self.chain_set.add(x)
            self.page_chain.setdefault(self.generated[x].page_no, []).append(x)
            if is_cancelled(self.truncations, x, self.generated[x].epoch):
                sim.fail(f"LSN {x} is durable although a truncation cancelled it")
        self.durable_point = vdl
        for x in added:
            self._check_held(sim, x)

    def _check_held(self, sim: Simulation, lsn: int) -> None:
        # Complete on 4 nodes is what made it durable; only a wrong truncation deletes it.
        # A disk fault may destroy one copy (DISK_FAULTS_MAX): that node re-fetches it, and
        # it counts towards the 4, but at least 3 intact copies remain meanwhile.
        held = self.holders.get(lsn, 0)
        refetching = sum(1 for lsns in sim.disk_faults.values() if lsn in lsns)
        if held + refetching < WRITE_QUORUM or held < WRITE_QUORUM - DISK_FAULTS_MAX:
            sim.fail(
                f"durable LSN {lsn} (history to {self.durable_point}) is held by only "
                f"{held} of {COPIES} nodes intact ({refetching} more re-fetching after a "
                f"disk fault), fewer than the write quorum of {WRITE_QUORUM} that made it "
                "durable"
            )

    def on_store(self, sim: Simulation, node: str, record: RedoRecord) -> None:
        original = self.generated.get(record.lsn)
        if original is None or original.encoded != record.encoded:
            sim.fail(f"{node} stored LSN {record.lsn} that differs from what was written")
        self.holders[record.lsn] = self.holders.get(record.lsn, 0) + 1

    def check_served(self, sim: Simulation, node: str, record: RedoRecord) -> None:
        original = self.generated.get(record.lsn)
        if original is None or (
            original.encoded is not record.encoded and original.encoded != record.encoded
        ):
            sim.fail(
                f"{node} returned LSN {record.lsn} whose bytes differ from what was "
                "written: corrupt data served"
            )

    def on_damage(self, sim: Simulation, lsn: int) -> None:
        """A node's copy of `lsn` was damaged on disk: it no longer counts as held."""
        self.holders[lsn] -= 1
        if lsn in self.chain_set:
            self._check_held(sim, lsn)

    def on_forget(self, sim: Simulation, lsn: int) -> None:
        self.holders[lsn] -= 1
        if lsn in self.chain_set:
            self._check_held(sim, lsn)

    def on_recovered(self, sim: Simulation, who: str, vdl: int, rng: TruncationRange) -> None:
        if not sim.flaws.skip_truncation:
            self.truncations.append(rng)
        # Every commit of an older epoch must survive, whenever it was acknowledged. A commit
        # of a newer epoch need not: a slow recovery may finish after a newer writer took
        # over and acknowledged commits (its pipeline is then fenced at the first append).
        for lsn in self.acked:
            if lsn > vdl and self.generated[lsn].epoch < rng.epoch:
                sim.fail(
                    f"{who} recovered VDL {vdl} at epoch {rng.epoch} below acknowledged "
                    f"commit LSN {lsn} of epoch {self.generated[lsn].epoch}"
                )
        self.on_vdl(sim, who, vdl)

    def check_read_point(self, sim: Simulation, point: int) -> None:
        if point > self.durable_point or point not in self.chain_set:
            sim.fail(
                f"reader read point {point} is not a durable point (history to "
                f"{self.durable_point})"
            )
        if point and not self.generated[point].is_cpl:
            sim.fail(f"reader read point {point} is inside a mini-transaction (not a CPL)")

    def page_lsn_at(self, page_no: int, lsn: int) -> int:
        chain = self.page_chain.get(page_no, [])
        i = bisect.bisect_right(chain, lsn)
        return chain[i - 1] if i else 0

    def page_at(self, page_no: int, lsn: int) -> bytes:
        chain = self.page_chain.get(page_no, [])
        records = [self.generated[x] for x in chain[: bisect.bisect_right(chain, lsn)]]
        return apply_records(EMPTY_PAGE, records) if records else EMPTY_PAGE

    @property
    def acked_floor(self) -> int:
        """Every commit acknowledged so far is at or below this LSN."""
        return self.acked[-1] if self.acked else 0

    def check_writer_read(
        self,
        sim: Simulation,
        writer: str,
        page_no: int,
        point: int,
        image: bytes,
        page_lsn: int,
        floor: int,
    ) -> None:
        """A writer's answer to a client read sent when every acknowledged commit was at or
        below `floor`: the page at a durable point, and none older than at `floor`."""
        self.check_page(sim, writer, page_no, point, image, page_lsn)
        newest = self.page_lsn_at(page_no, floor)
        if page_lsn < newest:
            sim.fail(
                f"{writer} answered a stale read of page {page_no}: its version at LSN "
                f"{page_lsn} (read at {point}), but the version at LSN {newest} was "
                "acknowledged before the read was sent"
            )

    def check_page(
        self, sim: Simulation, who: str, page_no: int, point: int, image: bytes, page_lsn: int
    ) -> None:
        if image != self.page_at(page_no, point):
            sim.fail(
                f"{who} served page {page_no} at read point {point} that differs from "
                "the durable history"
            )
        if page_lsn != self.page_lsn_at(page_no, point):
            sim.fail(
                f"{who} served page {page_no} at {point} with page LSN {page_lsn}, "
                f"history says {self.page_lsn_at(page_no, point)}"
            )


# -- the simulation -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimulationResult:
    seed: int
    steps: int
    trace_digest: str  # sha256 of the event trace: equal for equal seeds
    trace: tuple[str, ...]
    acked_commits: int
    writers_started: int
    recoveries: int
    node_crashes: int
    pages_checked: int
    durable_point: int
    writer_reads: int = 0
    writer_pauses: int = 0
    takeovers: int = 0  # writers started by a reader instance's writer watch


class Simulation:
    def __init__(
        self, seed: int, steps: int, flaws: Flaws | None = None, faults: Faults | None = None
    ) -> None:
        self.seed = seed
        self.steps = steps
        self.rng = random.Random(seed)
        self.faults = Faults.from_rng(self.rng)
        if faults is not None:
            self.faults = faults
        self.flaws = flaws or Flaws()
        self.tick = 0
        self.call_seq = 0
        self.network = Network(self)
        self.oracle = Oracle()
        self.trace: list[str] = []
        self.dirty_nodes: list[SimNode] = []
        self.nodes = {n: SimNode(self, n) for n in NODE_NAMES}
        self.writers: list[SimWriter] = []
        self.reader = SimReader(self, "reader1")
        self.instances: list[SimInstance] = []  # the random mode's writer watches (run())
        self.next_writer_at = 0  # tick at which a new writer starts (-1: none pending)
        self.acked_count = 0
        self.recoveries = 0
        self.node_crashes = 0
        self.writer_pauses = 0
        self.takeovers = 0
        self.commits_paused = False  # the drain check stops the workload's commits
        # The driven mode (DrivenCluster): explicit actions instead of random faults.
        self.driven = False
        self.failed = False
        self.writers_max = WRITERS_MAX
        self.client_writes: deque[list[int]] = deque()  # mini-transactions (their pages)
        self.cut: set[frozenset[str]] = set()  # endpoint pairs whose link is cut
        self.disk_faults: dict[str, set[int]] = {}  # node -> LSNs a disk fault destroyed

    # -- reporting --------------------------------------------------------------------------------

    def fail(self, what: str) -> None:
        flaws = "" if self.flaws == Flaws() else f" (with {self.flaws})"
        options = ""
        if self.flaws.ack_quorum != WRITE_QUORUM:
            options += f" --ack-quorum {self.flaws.ack_quorum}"
        if self.flaws.skip_truncation:
            options += " --skip-truncation"
        if self.flaws.unconfirmed_reads:
            options += " --unconfirmed-reads"
        if self.flaws.coalesce_in_memory:
            options += " --coalesce-in-memory"
        if self.flaws.gc_without_versions:
            options += " --gc-without-versions"
        self.failed = True
        if self.driven:
            raise InvariantViolation(
                f"driven simulation seed {self.seed} tick {self.tick}{flaws}: {what}. The "
                "state machine's printed steps replay it."
            )
        raise InvariantViolation(
            f"simulation seed {self.seed} step {self.tick}{flaws}: {what}. Replay: "
            f"python -m sixfold.sim --seed {self.seed} --steps {self.steps}{options}"
        )

    def trace_event(self, event: str) -> None:
        self.trace.append(f"{self.tick} {event}")

    def store(self, node: SimNode, record: RedoRecord) -> None:
        if record.lsn in node.log:
            if record.lsn in node.damaged:  # the store overwrites the key: repaired
                self.repair(node, record)
            return
        node.log[record.lsn] = record
        self.oracle.on_store(self, node.name, record)
        if node.name in self.disk_faults:
            self.disk_faults[node.name].discard(record.lsn)

    def forget(self, node: SimNode, lsn: int) -> None:
        del node.log[lsn]
        if node.damaged.pop(lsn, None) is not None:
            node.needs_repair.discard(lsn)
            return  # no longer counted as held since it was damaged
        self.oracle.on_forget(self, lsn)

    def repair(self, node: SimNode, record: RedoRecord) -> None:
        """An intact copy replaces a damaged one, durably (the SCL does not move)."""
        del node.damaged[record.lsn]
        node.needs_repair.discard(record.lsn)
        self.oracle.on_store(self, node.name, record)
        if node.name in self.disk_faults:
            self.disk_faults[node.name].discard(record.lsn)
        self.trace_event(f"{node.name} repaired LSN {record.lsn}")

    def covered(self, node: SimNode, lsn: int) -> None:
        """A damaged record at or below the node's coalescing frontier is dropped, not
        repaired: its content is in the node's versions, which count as a copy again."""
        assert lsn <= node.meta.coalesced_through
        del node.log[lsn]
        del node.damaged[lsn]
        node.needs_repair.discard(lsn)
        self.oracle.holders[lsn] += 1
        if node.name in self.disk_faults:
            self.disk_faults[node.name].discard(lsn)
        self.trace_event(f"{node.name} dropped damaged LSN {lsn}, covered by its versions")

    def damage(self, node: SimNode, lsn: int, bad: bytes) -> None:
        assert lsn in node.log and lsn not in node.damaged
        node.damaged[lsn] = bad
        self.disk_faults.setdefault(node.name, set()).add(lsn)
        self.oracle.on_damage(self, lsn)

    def prune_disk_faults(self) -> None:
        """A destroyed copy need not come back once the node's truncations cancel it."""
        for name, lsns in list(self.disk_faults.items()):
            st = self.nodes[name].state
            lsns -= {x for x in lsns if st.cancels(self.oracle.generated[x])}
            if not lsns:
                del self.disk_faults[name]

    def on_recovered(self, writer: SimWriter, epoch: int, vdl: int, rng: TruncationRange) -> None:
        self.recoveries += 1
        self.trace_event(f"{writer.name} recovered epoch {epoch} VDL {vdl} truncating {rng}")
        self.oracle.on_recovered(self, writer.name, vdl, rng)
        self.dirty_nodes.extend(self.nodes.values())  # every node's set is checked against it

    # -- the run ----------------------------------------------------------------------------------

    def run(self, check_liveness: bool = True) -> SimulationResult:
        """The random mode: one writer starts; after a crash, pause or partition, the reader
        instances' writer watches decide when to take over, and race to."""
        self.instances = [SimInstance(self, f"r{i + 1}", rank=i) for i in range(INSTANCES)]
        for _ in range(self.steps):
            self.step(faults=True)
        if check_liveness:
            self._quiet_phase()
        return SimulationResult(
            seed=self.seed,
            steps=self.steps,
            trace_digest=hashlib.sha256("\n".join(self.trace).encode()).hexdigest(),
            trace=tuple(self.trace),
            acked_commits=self.acked_count,
            writers_started=len(self.writers),
            recoveries=self.recoveries,
            node_crashes=self.node_crashes,
            pages_checked=self.reader.pages_checked,
            durable_point=self.oracle.durable_point,
            writer_reads=sum(w.reads_answered for w in self.writers),
            writer_pauses=self.writer_pauses,
            takeovers=self.takeovers,
        )

    def step(self, faults: bool) -> None:
        self.tick += 1
        if faults:
            self._inject_faults()
        if self.driven:
            self._manage_writers()
        self._restart_nodes()
        self._start_writer_if_due()
        self._deliver()
        for node in self.nodes.values():
            if node.up:
                self._step_node(node)
        if faults:
            self._client_read()
        for writer in self.writers:
            if writer.alive and not writer.paused:
                writer.expire_calls()
                writer.run_tasks()
                writer.step_pipeline()
        for actor in [self.reader, *self.instances]:
            actor.expire_calls()
            actor.run_tasks()
        self.check_invariants()

    def _step_node(self, node: SimNode) -> None:
        node.expire_calls()
        node.run_tasks()
        if node.queue and self.rng.random() < self.faults.node_commit:
            node.commit()
        node.maybe_gossip()
        if self.rng.random() < self.faults.node_commit:
            node.background_step()

    def _deliver(self) -> None:
        for message in self.network.due():
            if self.cut and frozenset((_side(message.src), _side(message.dst))) in self.cut:
                continue  # partitioned: lost
            if message.dst in self.nodes:
                node = self.nodes[message.dst]
                if not node.up:
                    continue
                if message.is_reply:
                    node.on_reply(message)
                else:
                    node.on_request(message)
                continue
            actor = self._endpoint(message.dst)
            if message.is_reply:
                if actor is not None:
                    actor.on_reply(message)
            elif isinstance(actor, SimWriter):
                actor.on_probe(message)
            elif any(w.name == message.dst for w in self.writers):  # a dead writer's port
                self.network.send(Message(message.dst, message.src, message.call_id, REFUSED, True))

    def _endpoint(self, name: str) -> Actor | None:
        if name == self.reader.name:
            return self.reader
        for instance in self.instances:
            if instance.name == name:
                return instance
        for writer in self.writers:
            if writer.name == name and writer.alive:
                return writer
        return None

    def _client_read(self) -> None:
        """A client with a stale view reads a page from a writer it knew: any live writer,
        paused or deposed ones included."""
        if self.rng.random() >= self.faults.client_read:
            return
        known = [w for w in self.writers if w.alive]
        if known:
            writer = self.rng.choice(known)
            writer.client_read(self.rng.randrange(PAGES), self.oracle.acked_floor)

    # -- faults ---------------------------------------------------------------------------------

    def _inject_faults(self) -> None:
        rng, faults = self.rng, self.faults
        down = [n for n in self.nodes.values() if not n.up]
        if len(down) < MAX_NODES_DOWN and rng.random() < faults.node_crash:
            node = rng.choice([n for n in self.nodes.values() if n.up])
            node.crash(self.tick + rng.randint(1, NODE_DOWN_TICKS_MAX))
            self.node_crashes += 1
            self.trace_event(f"crash {node.name} until {node.down_until}")
        if not self.recoveries:
            # No writer ever took an epoch, so no reader takes over: the designated writer's
            # supervisor starts it again (sixfold/instance.py _start_as_writer).
            self._manage_writers()
        active = [w for w in self._active_writers() if not w.hidden]
        if active and rng.random() < faults.writer_crash:
            # No successor is scheduled: the reader instances notice, and take over.
            victim = active[-1]
            if rng.random() < faults.zombie:
                victim.hidden = True
                self.trace_event(f"{victim.name} cut off from the instances (zombie)")
            elif rng.random() < faults.pause:
                victim.paused_until = self.tick + rng.randint(*WRITER_PAUSE_TICKS)
                self.writer_pauses += 1
                self.trace_event(f"{victim.name} paused until {victim.paused_until}")
            else:
                victim.alive = False
                self.trace_event(f"{victim.name} crashed")

    def _active_writers(self) -> list[SimWriter]:
        return [
            w for w in self.writers if w.alive and not w.fenced and not w.gave_up and not w.paused
        ]

    def _manage_writers(self) -> list[SimWriter]:
        """The cluster manager: it starts a writer when none runs. The driven mode's; the
        random mode has reader instances, and needs it only before a first recovery."""
        active = self._active_writers()
        if not active and self.next_writer_at < 0:
            # The writer process gave up or was fenced: the cluster manager starts another.
            self.next_writer_at = self.tick + self.rng.randint(1, WRITER_RESTART_TICKS_MAX)
        return active

    def _restart_nodes(self) -> None:
        for node in self.nodes.values():
            if not node.up and node.down_until <= self.tick:
                node.restart()
                self.trace_event(
                    f"restart {node.name} epoch {node.state.epoch} scl {node.state.scl}"
                )

    def _start_writer_if_due(self) -> None:
        if self.next_writer_at < 0 or self.tick < self.next_writer_at:
            return
        self.next_writer_at = -1
        if len(self.writers) < self.writers_max:
            self._new_writer()

    def start_first_writer(self) -> None:
        self.next_writer_at = -1
        self._new_writer()

    def _new_writer(self, epoch_wanted: int = 0) -> SimWriter:
        writer = SimWriter(self, f"writer{len(self.writers) + 1}", epoch_wanted)
        self.writers.append(writer)
        self.trace_event(f"start {writer.name}")
        return writer

    def promote(self, instance: SimInstance, silent: str, epoch_wanted: int) -> SimWriter | None:
        """`instance` takes over from `silent`: a writer that recovers at `epoch_wanted`."""
        if len(self.writers) >= self.writers_max:
            return None
        self.takeovers += 1
        self.trace_event(f"{instance.name} takes over from {silent} at epoch {epoch_wanted}")
        return self._new_writer(epoch_wanted)

    # -- liveness: with the faults gone, a writer must commit and the reader catch up ----------

    def _quiet_phase(self) -> None:
        self.network.drop = 0.0
        for node in self.nodes.values():
            node.down_until = min(node.down_until, self.tick)
        for writer in self.writers:
            writer.alive = False
        self.next_writer_at = -1
        self.writers_max = len(self.writers) + QUIET_WRITERS_MAX
        writer = self._new_writer()
        acked_before = len(self.oracle.acked)
        for _ in range(QUIET_TICKS_MAX):
            self.step(faults=False)
            acked = self.oracle.acked
            if len(acked) > acked_before and self.reader.read_point >= acked[acked_before]:
                self._drain_logs()
                return
        self.fail(
            f"no progress within {QUIET_TICKS_MAX} ticks after the faults stopped (all nodes "
            f"up): writer {'recovered' if writer.log else 'not recovered'}, "
            f"{self.acked_count - acked_before} commits acknowledged, reader read point "
            f"{self.reader.read_point}"
        )

    def _drain_logs(self) -> None:
        """Every log drains below the durable point: coalescing and GC survived the crashes
        (issue 18: after a restart they stopped for good)."""
        # No new writes: nothing the drain needs may come from pages written again later.
        self.commits_paused = True
        target = self.oracle.durable_point
        for _ in range(DRAIN_TICKS_MAX):
            left = {n.name: [x for x in n.log if x <= target] for n in self.nodes.values()}
            if not any(left.values()):
                return
            self.step(faults=False)
        stuck = {name: f"{len(lsns)} from LSN {min(lsns)}" for name, lsns in left.items() if lsns}
        self.fail(
            f"logs did not drain below the durable point {target} within "
            f"{DRAIN_TICKS_MAX} ticks after the faults: {stuck}"
        )

    # -- invariants -------------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Run after every step. The oracle checks history events as they happen; here the
        state of every node that changed this step."""
        for node in self.dirty_nodes:
            self._check_node(node)
        self.dirty_nodes.clear()

    def _check_node(self, node: SimNode) -> None:
        st = node.state
        for lsn, record in node.log.items():
            if st.cancels(record):
                self.fail(f"{node.name} holds LSN {lsn} that its truncations cancel")
        if st.scl and st.scl not in node.log and st.scl > node.meta.gc_horizon:
            self.fail(f"{node.name} has SCL {st.scl} but does not hold that record")
        if st.vdl_epoch > st.epoch:
            self.fail(f"{node.name} learned a VDL of epoch {st.vdl_epoch} above its epoch")
        if st.truncations_version > st.epoch:
            self.fail(
                f"{node.name} holds a truncation set of epoch {st.truncations_version} "
                f"above its epoch {st.epoch}"
            )
        for rng in self.oracle.truncations:
            # A completed recovery's set reached a write quorum, so every later recovery saw
            # it and built on it: no set as new as it may have dropped its range.
            if st.truncations_version >= rng.epoch and rng not in st.truncations:
                self.fail(
                    f"{node.name}'s truncation set of epoch {st.truncations_version} lacks "
                    f"{rng}, written by a completed recovery"
                )

    def check_all(self) -> None:
        """A full check of the state, beyond the per-step one: every node, every durable LSN's
        copies, the reader's read point (the state machine runs it after each action)."""
        self.prune_disk_faults()
        if len(self.disk_faults) > DISK_FAULTS_MAX:
            self.fail(f"disk faults on {sorted(self.disk_faults)} at once, over the budget")
        for node in self.nodes.values():
            self._check_node(node)
        self.dirty_nodes.clear()
        for lsn in self.oracle.chain:
            self.oracle._check_held(self, lsn)
        if self.reader.epoch:
            self.oracle.check_read_point(self, self.reader.read_point)


ENDPOINTS = (*NODE_NAMES, "writer", "reader")  # what a partition may separate


def _side(name: str) -> str:
    """The endpoint a partition cuts: every writer process is "writer"."""
    return "writer" if name.startswith("writer") else name


class DrivenCluster:
    """The simulated cluster, driven one explicit action at a time (a state machine's rules).

    Nothing random happens but message delays and fsync timing (from the seed): no drops,
    crashes or writer failures unless an action asks. Invariants are checked after every tick;
    check() runs the full check. Disk faults (tear_tail, flip_bit) are refused (return False)
    beyond the budget: one node with an unrepaired fault, on a record some other node holds.
    """

    def __init__(self, seed: int, flaws: Flaws | None = None, node_commit: float = 0.7) -> None:
        faults = Faults(
            drop=0.0,
            node_crash=0.0,
            writer_crash=0.0,
            zombie=0.0,
            commit=0.0,
            node_commit=node_commit,
        )
        self.sim = sim = Simulation(seed, 0, flaws, faults)
        sim.driven = True
        sim.writers_max = DRIVEN_WRITERS_MAX
        sim.start_first_writer()

    # -- workload -------------------------------------------------------------------------------

    def write(self, pages: list[int]) -> None:
        """Submit a mini-transaction writing each of `pages` (1-3 distinct pages)."""
        if not 1 <= len(pages) <= WRITES_PER_TXN_MAX or len(set(pages)) != len(pages):
            raise ValueError(f"a mini-transaction writes 1-{WRITES_PER_TXN_MAX} distinct pages")
        if not all(0 <= p < PAGES for p in pages):
            raise ValueError(f"pages are 0-{PAGES - 1}, got {pages}")
        self.sim.client_writes.append(list(pages))

    def write_random(self, queued_max: int = 4) -> None:
        """A background client: one mini-transaction on pages drawn from the seed, unless
        `queued_max` are already waiting for a writer."""
        sim = self.sim
        if len(sim.client_writes) < queued_max:
            self.write(sim.rng.sample(range(PAGES), sim.rng.randint(1, WRITES_PER_TXN_MAX)))

    def read(self, page_no: int) -> None:
        """The reader reads `page_no` at its newest read point (checked against history)."""
        self.sim.reader.read_now(page_no)

    def advance(self, ticks: int) -> None:
        for _ in range(ticks):
            self.sim.step(faults=False)

    # -- node faults ----------------------------------------------------------------------------

    def node(self, name: str) -> SimNode:
        return self.sim.nodes[name]

    @property
    def down(self) -> list[str]:
        return [n.name for n in self.sim.nodes.values() if not n.up]

    def crash(self, name: str) -> bool:
        """Crash a node: it loses the appends it had not synced, and stays down."""
        node = self.node(name)
        if not node.up:
            return False
        lost = sum(len(q.records) for q in node.queue)
        node.crash(DOWN_FOREVER)
        self.sim.node_crashes += 1
        self.sim.trace_event(f"crash {name} (lost {lost} unsynced records)")
        return True

    def restart(self, name: str) -> bool:
        node = self.node(name)
        if node.up:
            return False
        node.restart()
        self.sim.trace_event(f"restart {name} epoch {node.state.epoch} scl {node.state.scl}")
        return True

    def lose_unsynced(self, name: str) -> bool:
        """Power loss: the node's unsynced appends are gone; it comes straight back up."""
        return self.crash(name) and self.restart(name)

    def tear_tail(self, name: str, keep_bytes: int, power_loss: bool) -> bool:
        """The highest stored record keeps only a prefix of its bytes (keep_bytes modulo its
        length); with power_loss the node then crashes and restarts."""
        node = self.node(name)
        if not node.log:
            return False
        lsn = max(node.log)
        if not self._fault_allowed(node, lsn):
            return False
        encoded = node.log[lsn].encoded
        self.sim.damage(node, lsn, encoded[: keep_bytes % len(encoded)])
        self.sim.trace_event(f"{name} torn tail at LSN {lsn}")
        if power_loss and node.up:
            self.lose_unsynced(name)
        return True

    def flip_bit(self, name: str, index: int, bit: int) -> bool:
        """Flip one bit (modulo its size) of the stored record at `index` (modulo the count)."""
        node = self.node(name)
        if not node.log:
            return False
        lsns = sorted(node.log)
        lsn = lsns[index % len(lsns)]
        if not self._fault_allowed(node, lsn):
            return False
        bad = bytearray(node.log[lsn].encoded)
        bit %= 8 * len(bad)
        bad[bit // 8] ^= 1 << (bit % 8)
        self.sim.damage(node, lsn, bytes(bad))
        self.sim.trace_event(f"{name} bit {bit} flipped in LSN {lsn}")
        return True

    def _fault_allowed(self, node: SimNode, lsn: int) -> bool:
        """Within the budget: no other unrepaired disk fault, and some node holds the record
        intact (a record on one disk only cannot be repaired)."""
        self.sim.prune_disk_faults()
        if self.sim.disk_faults or node.damaged:
            return False
        return any(
            lsn in other.log and lsn not in other.damaged
            for other in self.sim.nodes.values()
            if other is not node
        )

    # -- network --------------------------------------------------------------------------------

    def partition(self, group: set[str], add: bool = False) -> None:
        """Cut every link between `group` and the other endpoints (ENDPOINTS; "writer" is
        every writer process), replacing the current partition unless `add`. Messages in
        flight across the cut are lost."""
        assert group <= set(ENDPOINTS), group
        rest = set(ENDPOINTS) - group
        cut = {frozenset((a, b)) for a in group for b in rest}
        self.sim.cut = self.sim.cut | cut if add else cut
        self.sim.trace_event(f"partition {sorted(group)} from the rest")

    def partition_writer(self, nodes: set[str], add: bool = False) -> None:
        """Cut the links between the writer(s) and `nodes` (replacing, unless `add`)."""
        cut = {frozenset(("writer", n)) for n in nodes}
        self.sim.cut = self.sim.cut | cut if add else cut
        self.sim.trace_event(f"partition writer from {sorted(nodes)}")

    def heal(self) -> None:
        self.sim.cut.clear()
        self.sim.trace_event("heal")

    # -- writers --------------------------------------------------------------------------------

    def failover(self, zombie: bool = False) -> None:
        """Crash the newest writer (or, with zombie, leave it running unfenced) and start a new
        one, which recovers a new epoch."""
        sim = self.sim
        active = [w for w in sim.writers if w.alive and not w.fenced and not w.gave_up]
        if active and not zombie:
            active[-1].alive = False
        sim.trace_event(f"failover from {active[-1].name if active else 'none'} zombie={zombie}")
        sim.next_writer_at = -1
        sim._new_writer()

    # -- checks ---------------------------------------------------------------------------------

    def check(self) -> None:
        self.sim.check_all()

    def check_liveness(self, ticks_max: int = QUIET_TICKS_MAX) -> None:
        """Heal everything, restart every node, replace the writers by a fresh one: within
        ticks_max a write must commit and be read back, and every disk fault be repaired
        (each durable LSN intact on a write quorum again)."""
        sim = self.sim
        self.heal()
        for node in sim.nodes.values():
            if not node.up:
                self.restart(node.name)
        for writer in sim.writers:
            writer.alive = False
        sim.client_writes.clear()
        sim.next_writer_at = -1
        writer = sim._new_writer()
        page = 0
        self.write([page])
        acked_before = len(sim.oracle.acked)
        lsn = 0
        asked = audited = False
        for _ in range(ticks_max):
            sim.step(faults=False)
            acked = sim.oracle.acked
            if not lsn and len(acked) > acked_before:
                lsn = acked[acked_before]
            if lsn and sim.reader.read_point >= lsn and not asked:
                self.read(page)
                asked = True
            page_read = asked and sim.reader.last_read[0] == page
            if page_read and sim.reader.last_read[1] >= lsn and not audited:
                self.audit_reads()
                audited = True
            if audited and self._repaired():
                sim.check_all()
                return
        sim.check_all()
        sim.fail(
            f"no progress within {ticks_max} ticks after healing: writer {writer.name} "
            f"{'recovered' if writer.log else 'not recovered'}, commit "
            f"{lsn or 'not acknowledged'}, reader read point {sim.reader.read_point}, last "
            f"read {sim.reader.last_read}, disk faults unrepaired {sim.disk_faults}, damaged "
            f"{ {n.name: sorted(n.damaged) for n in sim.nodes.values() if n.damaged} }"
        )

    def audit_reads(self) -> None:
        """Ask every serving node for every page at the reader's read point, and for all its
        records: each answer must match the history, or be a refusal (a corrupt record the
        node has not repaired yet, a truncation set it lacks, an SCL below the point)."""
        sim = self.sim
        point, epoch = sim.reader.read_point, sim.reader.epoch
        for node in sim.nodes.values():
            if not node.up:
                continue
            for page_no in range(PAGES):
                try:
                    node.state.check_covers(point, epoch)
                    page = node.page_at(page_no, point)
                except SixfoldError:
                    continue
                sim.oracle.check_page(sim, node.name, page_no, point, page.image, page.page_lsn)
            try:
                node.read_records(0, node.state.scl, len(node.log))  # checked as served
            except SixfoldError:
                continue

    def _repaired(self) -> bool:
        sim = self.sim
        sim.prune_disk_faults()
        if sim.disk_faults or any(n.damaged for n in sim.nodes.values()):
            return False
        return all(sim.oracle.holders.get(x, 0) >= WRITE_QUORUM for x in sim.oracle.chain)


def run_simulation(
    seed: int,
    steps: int = STEPS_DEFAULT,
    flaws: Flaws | None = None,
    faults: Faults | None = None,
    check_liveness: bool = True,
) -> SimulationResult:
    """Run one seeded simulation; raise InvariantViolation (naming seed and step) on a bug.

    `faults` overrides the fault mix the seed would choose (for targeted searches).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    sim = Simulation(seed, steps, flaws, faults)
    sim.start_first_writer()
    return sim.run(check_liveness)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sixfold.sim", description="Replay a seeded simulation."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="run this many seeds from --seed")
    parser.add_argument("--steps", type=int, default=STEPS_DEFAULT, help="ticks of faults")
    parser.add_argument("--trace", action="store_true", help="print the event trace")
    parser.add_argument(
        "--ack-quorum", type=int, default=WRITE_QUORUM, help="flaw: acknowledge at N nodes"
    )
    parser.add_argument("--skip-truncation", action="store_true", help="flaw: no truncation")
    parser.add_argument(
        "--unconfirmed-reads",
        action="store_true",
        help="flaw: writers answer reads without confirming their epoch",
    )
    parser.add_argument(
        "--coalesce-in-memory",
        action="store_true",
        help="flaw: a restart takes everything below the stored SCL as coalesced",
    )
    parser.add_argument(
        "--gc-without-versions",
        action="store_true",
        help="flaw: GC drops records below its horizon whether covered or not",
    )
    args = parser.parse_args(argv)
    flaws = Flaws(
        ack_quorum=args.ack_quorum,
        skip_truncation=args.skip_truncation,
        unconfirmed_reads=args.unconfirmed_reads,
        coalesce_in_memory=args.coalesce_in_memory,
        gc_without_versions=args.gc_without_versions,
    )
    for seed in range(args.seed, args.seed + args.seeds):
        try:
            liveness = flaws == Flaws() or flaws.coalesce_in_memory  # the drain is the check
            result = run_simulation(seed, args.steps, flaws, check_liveness=liveness)
        except InvariantViolation as exc:
            print(exc, file=sys.stderr)
            return 1
        if args.trace:
            print("\n".join(result.trace))
        print(
            f"seed {seed}: ok, {result.acked_commits} commits acknowledged, "
            f"{result.recoveries} recoveries by {result.writers_started} writers, "
            f"{result.node_crashes} node crashes, {result.writer_pauses} writer pauses, "
            f"{result.takeovers} takeovers, "
            f"{result.pages_checked} pages checked, {result.writer_reads} writer reads, "
            f"durable point {result.durable_point}, trace {result.trace_digest[:12]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
