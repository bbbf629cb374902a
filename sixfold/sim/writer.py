"""A simulated writer: the shipping recovery (sixfold/core/recovery_machine.py) and commit
pipeline (commit_log.py, shipping.py), driven as writer/recovery.py and writer/pipeline.py
drive them, over simulated append streams.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from sixfold.core.commit_log import Acked, CommitLog, PageWrite
from sixfold.core.drain import DrainHolds
from sixfold.core.durability import VolumeDurability
from sixfold.core.errors import (
    CommitTimeoutError,
    EpochAheadError,
    MembershipError,
    NotWriterError,
    SixfoldError,
    StaleEpochError,
    StaleMembershipError,
)
from sixfold.core.membership import describe
from sixfold.core.node_requests import Append, Truncate
from sixfold.core.page_read import NodeChoice, read_page
from sixfold.core.quorum import WRITE_QUORUM, quorum_lsn
from sixfold.core.read_index import Answer as ReadAnswer
from sixfold.core.read_index import ReadIndex
from sixfold.core.recovery import RecoveryPlan, SegmentReport, newest_truncations
from sixfold.core.recovery_machine import Recovered, Recovery
from sixfold.core.replacement import Begin, Settle, SwitchMembership, adopt_newest
from sixfold.core.shipping import Batch
from sixfold.core.topology import owner_id
from sixfold.core.truncation import TruncationRange
from sixfold.sim.faults import (
    COLD_PAGES,
    COLD_WRITE_SHARE,
    DELTA_BYTES_MAX,
    DELTA_OFFSET_MAX,
    DRAIN_WAIT_TICKS_MAX,
    LAL_SIM,
    PAGES,
    RECOVERY_ATTEMPTS_MAX,
    RECOVERY_RETRY_TICKS,
    REPAIR_BATCH_RECORDS_MAX,
    SETTLE_POLL_TICKS,
    SIM_LIMITS,
    SIM_TICK_S,
    WRITES_PER_TXN_MAX,
)
from sixfold.sim.network import (
    Actor,
    AppendAck,
    DrainReply,
    DrainRequest,
    Failure,
    Snapshot,
    WriterStateReply,
)

if TYPE_CHECKING:
    from sixfold.sim.network import Message, Task
    from sixfold.sim.simulation import Simulation

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
        self.drain_holds = DrainHolds()  # planned switchovers' holds on new commits, in ticks
        self.drained_vdl = 0  # promoted by a switchover: the drained writer's VDL
        self.gave_up = False
        self.log: CommitLog | None = None
        self.streams = {n: _Stream() for n in sim.nodes}
        self.read_index = ReadIndex(0)
        self.choice = NodeChoice(list(sim.nodes))  # its PageReader's (writer/writer.py)
        self.adopting = False  # a look for the nodes' newer membership is under way
        self.replacing = False  # a replacement's first step is under way
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
        # A promotion makes one attempt (instance/host.py become_writer): a reader that
        # loses goes back to watching; a writer started as such retries.
        attempts = 1 if self.epoch_wanted else RECOVERY_ATTEMPTS_MAX
        for _ in range(attempts):
            machine = (_SkippingRecovery if flawed else Recovery)(
                list(self.sim.nodes),
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
        nodes = sorted(result.membership.nodes)
        durability = (
            None
            if flaws.ack_quorum == WRITE_QUORUM
            else _FlawedDurability(flaws.ack_quorum, nodes, plan.vdl, result.node_scls)
        )
        self.log = CommitLog.recovered(nodes, result, SIM_LIMITS, durability)
        self.read_index = ReadIndex(plan.epoch)
        self.recovered_vdl = plan.vdl
        self.choice.membership = result.membership
        self.sim.on_recovered(self, plan.epoch, plan.vdl, plan.truncation)
        self.sim.on_membership(result.membership)
        if result.membership.change is not None:  # writer/writer.py: carry the change on
            self.spawn(self._settle(Settle(plan.vdl, True, self.log.settle_choices)))

    def on_instance_call(self, request: Message) -> None:
        """An instance's GetWriterState or Drain: answered unless paused (it answers once it
        resumes, after the caller gave up) or cut off from the instances."""
        if self.paused or self.hidden:
            return
        if isinstance(request.body, DrainRequest):
            self._on_drain(request, request.body)
            return
        state = WriterStateReply(
            recovered=self.log is not None,
            fenced=self.fenced,
            starting=self.log is None and not self.gave_up,
        )
        self.reply(request, state)

    # -- a planned switchover (instance/host.py drain, writer/writer.py drain) ----------------

    @property
    def draining(self) -> bool:
        return self.drain_holds.refusing(self.sim.tick)

    def _on_drain(self, request: Message, drain: DrainRequest) -> None:
        core = self.log
        if core is None or core.fenced:
            self.reply(request, Failure(NotWriterError(f"{self.name} is not the writer")))
            return
        held = self.drain_holds.hold(self.sim.tick, drain.hold_ticks)
        if held is None:
            self.reply(request, Failure(NotWriterError(f"{self.name}: too many drains")))
            return
        self.spawn(self._drain(request, core, held))

    def _drain(self, request: Message, core: CommitLog, held: int) -> Task:
        """Answer once every commit taken is durable; a drain that fails releases its own
        hold (sixfold/core/drain.py) and answers with the error."""
        yield []  # received now; answered once the writer runs
        give_up_at = self.sim.tick + DRAIN_WAIT_TICKS_MAX
        while not (core.drained() or self.sim.flaws.drain_without_wait):
            if core.fenced or self.sim.tick >= give_up_at:
                if not self.sim.flaws.drain_lifts_all:
                    self.drain_holds.release(held)
                else:  # the bug seed 31298 found: every hold lifted
                    self.drain_holds = DrainHolds()
                failure = CommitTimeoutError(f"{self.name}: commits still not durable")
                self.reply(request, Failure(failure))
                return
            yield from self.sleep(1)
        self.reply(request, DrainReply(core.vdl))

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
        # writer/read_index.py EpochConfirmer: the membership's holders confirm the epoch.
        holders = core.membership.holders
        calls = {
            n: self.call(n, Append(core.epoch, (), core.vdl, core.membership.epoch))
            for n in holders
        }
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

    # -- membership changes (sixfold/core/replacement.py, driven as writer/replacement.py) -------

    def replace(self, old: str, new: str, force: bool) -> None:
        """An operator's `sixfold replace OLD --with NEW` sent to this writer."""
        self.spawn(self._replace(old, new, force))

    def _replace(self, old: str, new: str, force: bool) -> Task:
        yield []  # received now; handled once the writer runs
        core = self.log
        if core is None or core.fenced or self.replacing:
            return
        self.replacing = True  # writer/writer.py membership_lock: one change at a time
        machine = Begin(core.membership, core.epoch, core.vdl, old, new, force)
        try:
            begun = yield from self.drive(machine.run(), local=self._switch)
        except MembershipError as exc:
            self.sim.trace_event(f"{self.name}: replacing {old} with {new} refused: {exc}")
            yield from self._adopt()  # stored on some nodes only, it may be in force there
            return
        finally:
            self.replacing = False
        self.sim.trace_event(f"{self.name}: {describe(begun.membership)}")
        yield from self._settle(Settle(begun.durable_point, not force, core.settle_choices))

    def _settle(self, settling: Settle) -> Task:
        """writer/replacement.py settle_change: a round every few ticks until it settles."""
        while (core := self.log) is not None and not core.fenced and self.alive:
            if core.membership.change is None:
                return
            try:
                done = yield from self.drive(
                    settling.round(core.membership, core.epoch), local=self._switch
                )
            except MembershipError as exc:
                self.sim.trace_event(f"{self.name}: membership change not settled yet: {exc}")
                done = False
            if done:
                self.sim.trace_event(f"{self.name}: {describe(core.membership)}")
                return
            yield from self.sleep(SETTLE_POLL_TICKS)

    def _adopt_newest(self) -> None:
        """pipeline.refresh_membership: one look at a time for the nodes' newer membership."""
        if not self.adopting:
            self.spawn(self._adopt())

    def _adopt(self) -> Task:
        core = self.log
        if core is None or core.fenced or self.adopting:
            return
        self.adopting = True
        try:
            newest = yield from self.drive(
                adopt_newest(core.membership, list(self.sim.nodes), frozenset(self.sim.nodes)),
                local=self._switch,
            )
        except MembershipError:
            newest = None
        finally:
            self.adopting = False
        if newest is not None:
            self.sim.trace_event(f"{self.name}: adopted {describe(newest)}")
            if newest.change is not None:
                yield from self._settle(Settle(core.vdl, True, core.settle_choices))

    def _switch(self, step: SwitchMembership) -> int | None:
        """The machines' local step (writer/replacement.py _switcher): ship by the membership
        (pipeline.change_membership: streams to nodes leaving stop first)."""
        core = self.log
        if core is None or core.fenced or not self.alive:
            return None
        if not step.membership.is_newer_than(core.membership):
            return core.vdl  # in force already (a settle and an adoption raced to it)
        for name in sorted(core.shippers.keys() - step.membership.nodes):
            self._close(self.streams[name])
        _, _, acked = core.change_membership(step.membership)
        self._on_acked(core, acked)
        self.choice.membership = step.membership
        self.sim.on_membership(step.membership)
        return core.vdl

    # -- the commit pipeline (sixfold/core/commit_log.py) ------------------------------------------

    def step_pipeline(self) -> None:
        core = self.log
        if core is None or core.fenced:
            return
        core.expire(self.now)  # not durable in time: the client gives up, outcome unknown
        # The draw comes first: a drained writer refuses new commits (NotWriterError).
        sim = self.sim
        if sim.rng.random() < sim.faults.commit and not sim.commits_paused and not self.draining:
            self._maybe_commit(core)
        client = self.sim.client_writes
        if client and not self.draining and self._commit_pages(core, client[0]):
            client.popleft()
        for node in list(core.shippers):
            self._step_stream(core, node)
            if core.fenced or self.log is not core:
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
                body = Truncate(core.epoch, core.truncations, core.epoch, core.membership.epoch)
                stream.truncate_call = self.call(node, body)
            elif isinstance(error, StaleEpochError):
                if core.on_stale(node, str(error)) is not None:
                    # Commits it had sent get no answer: their outcome is unknown.
                    self.sim.trace_event(f"{self.name} fenced at epoch {core.epoch}")
            elif isinstance(error, StaleMembershipError):  # a change it did not ship by yet
                stream.retry_at = core.broken(node, now)
                self._adopt_newest()
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
        append = Append(core.epoch, tuple(batch.records), batch.vdl, core.membership.epoch)
        call_id = self.call(node, append)
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
