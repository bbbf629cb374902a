"""The simulated network and the actors' call plumbing.

Messages arrive 1..NET_DELAY_TICKS_MAX ticks after they are sent, in any order, or not at all;
a partition cuts endpoints apart. An actor's tasks are generators that yield the call ids
they wait for; each call is answered or times out (CALL_TIMEOUT_TICKS), as a gRPC call
with a deadline would be.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sixfold.core.errors import CorruptRecordError, SixfoldError
from sixfold.core.hydration import PageImages
from sixfold.core.membership import Membership
from sixfold.core.page_read import PageImage
from sixfold.core.quorum import NODE_NAMES
from sixfold.core.record import RedoRecord, decode_record
from sixfold.core.recovery import SegmentReport
from sixfold.core.truncation import TruncationRange
from sixfold.sim.faults import CALL_TIMEOUT_TICKS, NET_DELAY_TICKS_MAX

if TYPE_CHECKING:
    from sixfold.sim.simulation import Simulation

T = TypeVar("T")

# -- messages -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    """GetWriterState, as an instance probes the writer (instance/host.py _probe)."""


@dataclass(frozen=True, slots=True)
class DrainRequest:
    """Instance/Drain: take no commits for `hold_ticks`; answer once all taken are durable."""

    hold_ticks: int


@dataclass(frozen=True, slots=True)
class DrainReply:
    vdl: int


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
    gc_horizon: int = 0  # sixfold/core/hydration.py: below it, only page images are left
    membership: Membership | None = None  # the newest the node knows
    records_stored: int = 0
    page_versions_stored: int = 0

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
            gc_horizon=self.gc_horizon,
            membership=self.membership,
            records_stored=self.records_stored,
            page_versions_stored=self.page_versions_stored,
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
    if isinstance(reply, PageImage | PageImages):
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


ENDPOINTS = (*NODE_NAMES, "writer", "reader")  # what a partition may separate


def partition_side(name: str) -> str:
    """The endpoint a partition cuts: every writer process is "writer"."""
    return "writer" if name.startswith("writer") else name
