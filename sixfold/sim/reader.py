"""Simulated readers and reader instances: the read point and page reads of
sixfold/core/read_point.py and page_read.py, and the takeover watch of takeover.py.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import replace
from typing import TYPE_CHECKING

from sixfold.core.errors import SixfoldError
from sixfold.core.membership import newest_membership
from sixfold.core.node_requests import GetState
from sixfold.core.page_read import NodeChoice, read_page
from sixfold.core.read_point import advance_read_point
from sixfold.core.takeover import Probe, WriterWatch
from sixfold.core.topology import EpochView, newest_epoch, parse_owner
from sixfold.sim.faults import (
    DRAIN_HOLD_TICKS,
    DRAIN_TIMEOUT_TICKS,
    PAGES,
    PROBE_INTERVAL_TICKS,
    READER_POLL_TICKS,
    SIM_TAKEOVER_LIMITS,
    SIM_TICK_S,
)
from sixfold.sim.network import (
    REFUSED,
    Actor,
    DrainReply,
    DrainRequest,
    ProbeRequest,
    Snapshot,
    WriterStateReply,
)

if TYPE_CHECKING:
    from sixfold.sim.network import Task, Wait
    from sixfold.sim.simulation import Simulation
    from sixfold.sim.writer import SimWriter

# -- the reader (reader/reader.py) --------------------------------------------------------------


class SimReader(Actor):
    """A reader (reader/reader.py): its read point from the nodes' states, and its page
    reads by the shipping sixfold/core/page_read.py, single-node or from a read quorum."""

    def __init__(self, sim: Simulation, name: str) -> None:
        super().__init__(sim, name)
        self.read_point = 0
        self.epoch = 0
        self.point_taken_at = 0  # tick: a held read point is kept Faults.read_point_hold_ticks
        self.choice = NodeChoice(list(sim.nodes))
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
        calls = {n: self.call(n, asked) for n in self.sim.nodes}
        yield list(calls.values())
        states: list[Snapshot] = []
        for node, call_id in calls.items():
            state = self.take(call_id)
            if isinstance(state, Snapshot):
                states.append(state)
                self.choice.note_scl(node, state.scl if state.serving else 0)
            else:
                self.choice.note_scl(node, 0)  # note_down: covers nothing until heard again
        # page_reader.py note_membership: quorum reads count by the newest membership heard.
        newest = newest_membership(s.membership for s in states)
        if newest.is_newer_than(self.choice.membership):
            self.choice.membership = newest
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


# -- reader instances that take over (instance/host.py, sixfold/core/takeover.py) ---------------


def _probe_answer(reply: object) -> Probe:
    """A probe's reply as instance/host.py _probe reads GetWriterState's."""
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
            if self.is_writer:
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

    @property
    def is_writer(self) -> bool:
        writer = self.writer
        return writer is not None and writer.alive and not writer.fenced and not writer.gave_up

    def switch_over(self) -> None:
        """An operator's planned switchover to this instance (`sixfold switchover NAME`,
        instance/services.py _promote): drain the writer, then take over at any newer epoch."""
        self.spawn(self._switch_over())

    def _switch_over(self) -> Task:
        newest = newest_epoch((yield from self._views()))
        target = parse_owner(newest.owner).name
        if not target or self.is_writer:
            return
        call_id = self.call(target, DrainRequest(DRAIN_HOLD_TICKS), DRAIN_TIMEOUT_TICKS)
        yield [call_id]
        reply = self.take(call_id)
        if not isinstance(reply, DrainReply):
            self.sim.trace_event(f"{self.name}: switchover from {target} refused: {reply}")
            return
        if not self.is_writer:  # its watch may have taken over meanwhile
            self.writer = self.sim.switch_over(self, target, reply.vdl)

    def _views(self) -> Generator[Wait, None, list[EpochView]]:
        """The epochs the nodes report (the instance's reader hears them on its streams)."""
        calls = [self.call(n, GetState()) for n in self.sim.nodes]
        yield calls
        states = [s for c in calls if isinstance(s := self.take(c), Snapshot)]
        return [EpochView(s.epoch, s.epoch_owner) for s in states]
