"""A simulated storage node: the shipping node core (sixfold/core/segment.py, node_commit.py,
node_restart.py, gossip_round.py, log_cleanup.py, read_point.py) over a simulated disk
that a crash may cut short.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from sixfold.core.errors import CorruptRecordError, InvalidRequestError, SixfoldError
from sixfold.core.gossip_pacing import GossipPacing, GossipSignals
from sixfold.core.gossip_round import (
    AdoptMembership,
    AdoptTruncations,
    DropHydration,
    FinishHydration,
    GossipLimits,
    GossipRound,
    LocalStep,
    NotePeers,
    RepairRecord,
    StoreFetched,
    StoreImages,
    fork_below,
)
from sixfold.core.hydration import HydratedPage, HydrationProgress, PageImages
from sixfold.core.log_cleanup import (
    coalesce_point,
    node_gc_horizon,
    plan_coalesce,
    record_redundant,
    version_needed,
)
from sixfold.core.membership import (
    Membership,
    check_member,
    check_request_epoch,
    membership_is_news,
)
from sixfold.core.node_commit import QueuedAppend, plan_commit
from sixfold.core.node_requests import (
    Append,
    GetPage,
    GetState,
    ReadPageImages,
    ReadRecords,
    Seal,
    SetMembership,
    Truncate,
)
from sixfold.core.node_restart import complete_from, restore
from sixfold.core.page import EMPTY_PAGE, apply_records
from sixfold.core.page_read import PageImage
from sixfold.core.read_point import ReadPointTable
from sixfold.core.record import RedoRecord, decode_record
from sixfold.core.segment import SegmentState
from sixfold.core.truncation import TruncationRange
from sixfold.sim.faults import (
    COALESCE_RECORDS_SIM,
    GC_KEYS_SIM,
    GOSSIP_PERIOD_TICKS,
    GOSSIP_RECORDS_MAX,
    READ_POINT_TTL_TICKS,
    REPAIRS_MAX,
    SIM_READ_RECORDS_MAX,
)
from sixfold.sim.network import Actor, AppendAck, Failure, Records, Snapshot

if TYPE_CHECKING:
    from sixfold.sim.network import Message, Task
    from sixfold.sim.simulation import Simulation

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
    hydration: HydrationProgress | None = None  # stored with the images it counts
    membership: Membership = field(default_factory=Membership.initial)  # newest it learnt


@dataclass(frozen=True, slots=True)
class _Caller:
    """Who waits for a queued append (not yet durable: a crash loses it): the request to
    answer, if any, and intact copies of records found corrupt on disk, to rewrite."""

    request: Message | None = None
    repairs: tuple[RedoRecord, ...] = ()


Queued = QueuedAppend[_Caller]


class SimNode(Actor):
    def __init__(self, sim: Simulation, name: str, peers: list[str], gossip_offset: int) -> None:
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
        # LSNs whose record GC dropped while a version covers it: still a copy to the oracle
        # (it counts copies), so a lost disk loses these too.
        self.held_in_versions: set[int] = set()
        self.peer_scl: dict[str, int] = {}  # from the last gossip round (in memory)
        self.read_points = ReadPointTable(READ_POINT_TTL_TICKS)  # in memory
        self.peer_repair_floor: dict[str, int] = {}
        self.peer_coalesced: dict[str, int] = {}
        self.state = SegmentState(name)
        self.queue: list[Queued] = []
        self.down_until = 0
        self.gossip = GossipRound(peers, GossipLimits(GOSSIP_RECORDS_MAX, REPAIRS_MAX))
        self.gossip_pacing = GossipPacing(GOSSIP_PERIOD_TICKS)
        self.gossip_ended = gossip_offset - GOSSIP_PERIOD_TICKS  # the first round is due then
        self.gossip_fetched = False  # the round under way stored records it fetched

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
        # A new process: its gossip remembers no peer's SCL from before, its pacing starts
        # afresh, and its first round comes at once.
        self.gossip = GossipRound(self.gossip.peers, self.gossip.limits)
        self.gossip_pacing = GossipPacing(GOSSIP_PERIOD_TICKS)
        self.gossip_ended = self.sim.tick - GOSSIP_PERIOD_TICKS

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
            self.meta.gc_horizon,
            self.meta.membership,
            len(self.log),
            sum(len(v) for v in self.versions.values()),
        )

    @property
    def empty(self) -> bool:
        """Holds nothing of any volume (a spare ready to be used)."""
        return not self.log and not self.versions and not self.meta.epoch

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
        st, membership = self.state, self.meta.membership
        if isinstance(body, Append | Seal | Truncate):  # storage_node/service.py: members only
            what = type(body).__name__.lower()
            check_request_epoch(membership, body.membership_epoch, what)
            check_member(membership, self.name, body.membership_epoch, what)
        elif isinstance(body, ReadRecords | GetPage):
            check_request_epoch(membership, body.membership_epoch, "read")
        if isinstance(body, SetMembership):
            if membership_is_news(membership, body.membership, body.volume_epoch, st.epoch):
                self.meta.membership = body.membership  # durably, before the answer
            return self.snapshot()
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
        if isinstance(body, ReadPageImages):
            st.check_page_at(body.at_lsn, body.min_epoch, self.meta.gc_horizon)
            return self.page_images(body.at_lsn, body.from_page, body.pages_max)
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

    def page_images(self, at_lsn: int, from_page: int, pages_max: int) -> PageImages:
        """storage_node/store.py page_images_at: pages with a version or a record, in order."""
        stored = {p for p, versions in self.versions.items() if versions}
        stored |= {r.page_no for r in self.log.values()}
        ahead = sorted(p for p in stored if p >= from_page)
        pages: list[HydratedPage] = []
        for page_no in ahead[:pages_max]:
            page = self.page_at(page_no, at_lsn)
            if page.page_lsn:  # a page whose changes all lie above `at_lsn` is not sent
                pages.append(HydratedPage(page_no, page.page_lsn, page.image))
        done = len(ahead) <= pages_max
        next_page = ahead[pages_max - 1] + 1 if not done else max(ahead, default=from_page) + 1
        return PageImages(tuple(pages), max(next_page, from_page), done, len(stored))

    # -- a lost disk and hydration (sixfold/core/hydration.py) -------------------------------------

    def lose_disk(self) -> None:
        """The node's disk is replaced by an empty one (it is down): everything it held goes."""
        assert not self.up
        lost = {x for x in self.log if x not in self.damaged} | self.held_in_versions
        self.sim.lose_copies(self, lost)
        self.log.clear()
        self.damaged.clear()
        self.needs_repair.clear()
        self.versions.clear()
        self.superseded.clear()
        self.held_in_versions.clear()
        self.meta = _Meta()
        self.state = SegmentState(self.name)  # what a restart finds on the empty disk

    def store_images(self, step: StoreImages) -> None:
        """storage_node/store.py put_hydrated: the images and the progress, durably at once."""
        target = step.progress.target_lsn
        for page in step.pages:
            self.sim.oracle.check_hydrated(self.sim, self.name, page, target)
            versions = self.versions.setdefault(page.page_no, {})
            self.superseded += [
                (page.page_lsn, page.page_no, v) for v in versions if v < page.page_lsn
            ]
            versions[page.page_lsn] = page.image
        self.meta.hydration = step.progress

    def finish_hydration(self, target: int) -> None:
        """storage_node/node.py finish_hydration: the target is the SCL, frontier and horizon;
        the state is rebuilt from the disk as a restart rebuilds it."""
        meta = self.meta
        if meta.scl < target:
            meta.scl, meta.cpl_at_scl = target, 0
        meta.coalesced_through = max(meta.coalesced_through, target)
        meta.gc_horizon = max(meta.gc_horizon, target)
        meta.hydration = None
        self.sim.hydrated(self, target)
        peers_heard = self.state.peers_heard
        self.restart()
        self.state.peers_heard = peers_heard

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
            self.meta.membership.nodes,
            self.gossip.peers,
            self.peer_scl,
            self.peer_coalesced,
            self.repair_floor,
            self.peer_repair_floor,
        )
        if horizon <= 0:
            return
        meta.gc_horizon = max(meta.gc_horizon, horizon)
        meta.scl, meta.cpl_at_scl = self.state.scl, self.state.completeness.cpl_at_scl
        collected: set[int] = set()  # pages that lost a record or a version
        for lsn in sorted(self.log)[:GC_KEYS_SIM]:
            record = self.log[lsn]
            versions = self.versions.get(record.page_no, {})
            newest = max((v for v in versions if v <= horizon), default=0)
            covered = record_redundant(lsn, horizon, newest)
            if lsn > horizon or not (covered or flaws.gc_without_versions):
                break
            if lsn in self.damaged:  # dropped once a version covers it, as any record (its
                self.sim.covered(self, lsn)  # page from the index: store.py _collect_records)
            else:
                del self.log[lsn]  # covered by a version: still held, as far as the oracle cares
                self.held_in_versions.add(lsn)
            collected.add(record.page_no)
        due = [x for x in self.superseded if x[0] <= horizon][:GC_KEYS_SIM]
        for newer, page_no, older in due:
            self.versions.get(page_no, {}).pop(older, None)
            self.superseded.remove((newer, page_no, older))
            collected.add(page_no)
        self._check_servable(collected, meta.gc_horizon)

    def _check_servable(self, pages: set[int], point: int) -> None:
        """The oracle's check that GC kept what a read at its horizon (the oldest point the
        node still serves) needs: each page it collected from builds as the history says."""
        for page_no in sorted(pages):
            try:
                page = self.page_at(page_no, point)
            except CorruptRecordError:
                continue  # a damaged record fails the read: the page is never served
            who = f"{self.name} after GC"
            self.sim.oracle.check_page(self.sim, who, page_no, point, page.image, page.page_lsn)

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
        """storage_node/gossip.py run: a round when the shipping GossipPacing says it is due."""
        rested = self.sim.tick - self.gossip_ended
        if not self.tasks and self.gossip_pacing.due(rested, self.gossip_signals()):
            self.spawn(self._gossip_round())

    def gossip_signals(self) -> GossipSignals:
        return GossipSignals.of(
            self.state, len(self.needs_repair), self.meta.hydration, self.meta.membership
        )

    def _gossip_round(self) -> Task:
        """storage_node/gossip.py: the shipping GossipRound, its local steps done here."""
        self.scrub()
        self.needs_repair &= self.damaged.keys()
        damaged = [(lsn, None) for lsn in sorted(self.needs_repair)]
        behind = self.gossip_fetched = False
        try:
            rounds = self.gossip.run(self.state, damaged, self.meta.hydration, self.meta.membership)
            behind = yield from self.drive(rounds, local=self._carry_out)
        except SixfoldError as exc:  # a malformed peer state: the round ends, as the node's
            self.sim.trace_event(f"{self.name} gossip round failed: {exc}")
        # The node's round waits for the commit of what it fetched, and says whether the SCL
        # moved; here the records wait in the commit queue, so having fetched them counts.
        self.gossip_pacing.after_round(behind or self.gossip_fetched, self.gossip_signals())
        self.gossip_ended = self.sim.tick

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
        elif isinstance(step, AdoptMembership):
            self.meta.membership = step.membership
        elif isinstance(step, AdoptTruncations):
            self.truncate(step.epoch, step.ranges, step.version)
        elif isinstance(step, StoreFetched):
            fork = fork_below(step.asked_after, step.records)
            if fork is not None:  # the shell logs it; in an honest cluster it never happens
                self.sim.fail(
                    f"{self.name}'s log left the volume's history: {step.source}'s records "
                    f"above LSN {step.asked_after} (its SCL when it asked) follow LSN {fork}"
                )
            self.queue.append(QueuedAppend(None, step.records, 0, _Caller()))
            self.gossip_fetched = True
        elif isinstance(step, RepairRecord):
            self.queue.append(QueuedAppend(None, (), 0, _Caller(repairs=(step.record,))))
        elif self.sim.flaws.no_hydration and isinstance(step, StoreImages | FinishHydration):
            pass  # the node before issue 14: it waits for records its peers collected
        elif isinstance(step, StoreImages):
            self.store_images(step)
        elif isinstance(step, FinishHydration):
            self.finish_hydration(step.target_lsn)
        elif isinstance(step, DropHydration):
            self.meta.hydration = None
        else:
            raise AssertionError(f"a simulated disk damages no page versions: {step!r}")
