"""One gossip round of a storage node, sans I/O (P17 §3.2, steps 3-4 and 8).

The node asks every peer for its state. From a peer holding a newer truncation set it adopts
that set first: a node that was down during recovery learns the truncation before it serves
reads or passes records on. Then it repairs damaged records and page versions from peers
that hold them (repaired in place, never truncated: a damaged record at or below the SCL is
durable history). Then, if a peer is complete further than this node, it fetches the records
above its own SCL from that peer. The writer never resends what a node missed.

`GossipRound.run` is a generator: it yields `{peer: request}` (sixfold/core/node_requests.py) and
is sent the answers, or yields a local step (NotePeers, AdoptTruncations, StoreFetched,
RepairRecord, RepairVersion, StoreImages, FinishHydration, DropHydration) for the node to
carry out, and is sent None or the error.
storage_node/gossip.py and the simulator's nodes both drive it.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from sixfold.core.errors import InvalidRequestError, SixfoldError
from sixfold.core.hydration import (
    HYDRATE_PAGES_MAX,
    HYDRATE_RUNS_PER_ROUND,
    HydratedPage,
    HydrationProgress,
    PageImages,
    check_images,
    hydration_sources,
    hydration_target,
)
from sixfold.core.membership import Membership, newest_membership
from sixfold.core.node_requests import GetPage, GetState, NodeRequest, ReadPageImages, ReadRecords
from sixfold.core.page_read import PageImage
from sixfold.core.record import RedoRecord
from sixfold.core.recovery import SegmentReport
from sixfold.core.segment import SegmentState
from sixfold.core.truncation import TruncationRange


@dataclass(frozen=True, slots=True)
class NotePeers:
    """The peers that answered this round: GC and coalescing go by them."""

    answered: tuple[SegmentReport, ...]


@dataclass(frozen=True, slots=True)
class AdoptTruncations:
    epoch: int
    ranges: tuple[TruncationRange, ...]
    version: int


@dataclass(frozen=True, slots=True)
class AdoptMembership:
    """A peer knows a newer membership: take it (a node that was down during a change)."""

    membership: Membership


@dataclass(frozen=True, slots=True)
class StoreFetched:
    """Append records fetched from `source` (as an append of no epoch: checked against the
    node's own), and wait until they are durable."""

    source: str
    records: tuple[RedoRecord, ...]
    # The node's SCL when it asked (the writer's appends may have moved it since).
    asked_after: int


def fork_below(asked_after: int, fetched: Sequence[RedoRecord]) -> int | None:
    """Where this node's log leaves the volume's history, if the records a peer sent from
    above the node's SCL (`asked_after`, when it asked) show it: the first of them links back
    past that SCL, to the LSN returned.

    A writer links its first record after recovery to the VDL it truncated at, and every
    other record to the one before it (P17 §2.4), so the first record above an honest SCL
    links to that SCL. One that links below it says this node holds records in (that LSN,
    SCL] that no peer's chain has: appended by something other than the writer, since no
    writer allocates an LSN twice. Gossip can then never complete this node's segment, and
    its SCL holds back every peer's GC."""
    if fetched and fetched[0].prev_volume_lsn < asked_after:
        return fetched[0].prev_volume_lsn
    return None


@dataclass(frozen=True, slots=True)
class RepairRecord:
    record: RedoRecord


@dataclass(frozen=True, slots=True)
class RepairVersion:
    page_no: int
    lsn: int
    image: bytes


@dataclass(frozen=True, slots=True)
class StoreImages:
    """Store hydrated page images from `source` and, in the same transaction, `progress`."""

    source: str
    pages: tuple[HydratedPage, ...]
    progress: HydrationProgress


@dataclass(frozen=True, slots=True)
class FinishHydration:
    """Every page's image as of `target_lsn` is stored: take it as the SCL, the coalescing
    frontier and the GC horizon, and catch up above it as any lagging node."""

    target_lsn: int


@dataclass(frozen=True, slots=True)
class DropHydration:
    """Forget a hydration that is no longer needed (the node is complete past its target)."""


LocalStep = (
    NotePeers
    | AdoptMembership
    | AdoptTruncations
    | StoreFetched
    | RepairRecord
    | RepairVersion
    | StoreImages
    | FinishHydration
    | DropHydration
)
Step = dict[str, NodeRequest] | LocalStep
Round = Generator[Step, Any, bool]  # sent: {peer: answer} after requests, else None or an error
Damaged = tuple[int, int | None]  # (LSN, None): a record; (LSN, page): a page version


@dataclass(frozen=True, slots=True)
class GossipLimits:
    records_max: int  # records fetched from one peer per round
    repairs_max: int  # damaged items repaired per round


class GossipRound:
    """A node's gossip, round after round: it remembers each peer's SCL one round ago and
    fetches only that far, so gossip does not race the writer for records it is about to
    deliver anyway."""

    def __init__(self, peers: Sequence[str], limits: GossipLimits) -> None:
        self.peers = list(peers)
        self.limits = limits
        self.prev_peer_scl: dict[str, int] = {}

    def run(
        self,
        st: SegmentState,
        damaged: Sequence[Damaged],
        hydration: HydrationProgress | None = None,
        membership: Membership | None = None,
    ) -> Round:
        """One round; returns True when it fetched records or page images and the node may
        still be behind. `hydration`: the node's stored progress, if it is hydrating;
        `membership`: the newest it knows (None: the initial one, and it is a member)."""
        answers = yield {p: GetState() for p in self.peers}
        answered = [a for p in self.peers if isinstance(a := answers[p], SegmentReport)]
        for state in answered:
            st.heard_from(state.name)
        # Only peers that answered this round: GC waits while any peer is unreachable, so a
        # node that comes back (maybe with a damaged disk) can still fetch what it lacks.
        yield NotePeers(tuple(answered))
        known = newest_membership(s.membership for s in answered)
        if membership is not None and known.is_newer_than(membership):
            yield AdoptMembership(known)
            membership = known
        if membership is not None and st.name not in membership.nodes:
            return False  # a spare: it takes nothing until a change makes it a member
        yield from self._adopt_truncations(st, answered)
        yield from self._repair(st, answered, damaged)
        hydrated = yield from self._hydrate(st, answered, hydration)
        if hydrated is not None:
            return hydrated
        return (yield from self._fill_holes(st, answered))

    def _adopt_truncations(
        self, st: SegmentState, answered: list[SegmentReport]
    ) -> Generator[Step, Any, None]:
        """Take a peer's truncation set when it is newer than ours (never merge an older one).
        A bare epoch is not spread this way: a recovery must win its epoch's seal itself."""
        newest = max(answered, key=lambda s: s.truncations_version, default=None)
        if newest is None or newest.truncations_version <= st.truncations_version:
            return
        version = newest.truncations_version
        if any(r.epoch > version for r in newest.truncations):
            raise InvalidRequestError(
                f"{newest.name}'s truncation set of version {version} holds a newer range: "
                f"{newest.truncations}"
            )
        yield AdoptTruncations(max(st.epoch, version), newest.truncations, version)

    def _repair(
        self, st: SegmentState, answered: list[SegmentReport], damaged: Sequence[Damaged]
    ) -> Generator[Step, Any, None]:
        """Fetch good copies of damaged records and versions from peers that hold them."""
        for lsn, page_no in sorted(damaged)[: self.limits.repairs_max]:
            sources = [
                s.name
                for s in answered
                if s.serving and s.truncations_version == st.truncations_version and s.scl >= lsn
            ]
            for peer in sources:
                if page_no is None:
                    step: LocalStep | None = yield from self._fetch_record(peer, lsn)
                else:
                    step = yield from self._fetch_version(peer, page_no, lsn)
                if step is not None and (yield step) is None:
                    break

    def _fetch_record(self, peer: str, lsn: int) -> Generator[Step, Any, RepairRecord | None]:
        got = (yield {peer: ReadRecords(lsn - 1, lsn, 1)})[peer]
        if not isinstance(got, tuple) or not got or got[0].lsn != lsn:
            return None  # it failed, or does not hold that LSN
        return RepairRecord(got[0])

    def _fetch_version(
        self, peer: str, page_no: int, lsn: int
    ) -> Generator[Step, Any, RepairVersion | None]:
        got = (yield {peer: GetPage(page_no, lsn, 0)})[peer]
        if not isinstance(got, PageImage) or got.page_lsn != lsn:
            return None  # it failed, or its version there is another one
        return RepairVersion(page_no, lsn, got.image)

    def _hydrate(
        self, st: SegmentState, answered: list[SegmentReport], progress: HydrationProgress | None
    ) -> Generator[Step, Any, bool | None]:
        """One run of pages towards the hydration target; None when the node need not
        hydrate (gossip's record fetch then catches it up)."""
        if progress is not None and progress.target_lsn <= st.scl:
            yield DropHydration()
            progress = None
        if progress is None or not hydration_sources(st, answered, progress.target_lsn):
            # None yet, or no peer can build pages at the old target any more: start over.
            target = hydration_target(st, answered)
            if target is None:
                return None
            progress = HydrationProgress(target)
        sources = hydration_sources(st, answered, progress.target_lsn)
        if not sources:  # a peer's state that contradicts itself (horizon above its frontier)
            return None
        for run in range(HYDRATE_RUNS_PER_ROUND):
            # Each run from the next source in turn: no one peer is waited on.
            start = (progress.pages_done // HYDRATE_PAGES_MAX + run) % len(sources)
            got = yield from self._page_run(st, sources[start:] + sources[:start], progress)
            if got is None:
                return run > 0
            peer, images = got
            progress = progress.after(images)
            if (yield StoreImages(peer, images.pages, progress)) is not None:
                return False
            if images.done:
                yield FinishHydration(progress.target_lsn)
                return True
        return True

    def _page_run(
        self, st: SegmentState, sources: list[str], progress: HydrationProgress
    ) -> Generator[Step, Any, tuple[str, PageImages] | None]:
        """The next run of pages from the first source that answers well (None: none did)."""
        for peer in sources:
            request = ReadPageImages(
                progress.target_lsn, progress.next_page, HYDRATE_PAGES_MAX, st.truncations_version
            )
            got = (yield {peer: request})[peer]
            if not isinstance(got, PageImages):
                continue  # it failed: the next source
            try:
                check_images(got, progress, HYDRATE_PAGES_MAX, peer)
            except SixfoldError:
                continue
            return peer, got
        return None

    def _fill_holes(self, st: SegmentState, answered: list[SegmentReport]) -> Round:
        prev, self.prev_peer_scl = self.prev_peer_scl, {s.name: s.scl for s in answered}
        if not st.serving:
            return False
        # Only peers that cancel exactly what this node cancels may fill its holes, and only
        # those still holding the record above its SCL (not collected below their horizon).
        ahead = [
            (s.name, min(s.scl, prev.get(s.name, 0)))
            for s in answered
            if s.serving
            and s.truncations_version == st.truncations_version
            and s.gc_horizon <= st.scl
        ]
        ahead = [(peer, through) for peer, through in ahead if through > st.scl]
        # Furthest ahead first, then the next: a peer that cannot serve the range (a damaged
        # record its page versions cover, so it never repairs it) must not stall this node,
        # whose SCL in turn holds back every peer's GC.
        ahead.sort(key=lambda pt: -pt[1])
        for peer, through in ahead:
            request = ReadRecords(st.scl, through, self.limits.records_max)
            got = (yield {peer: request})[peer]
            if isinstance(got, tuple) and got:
                before = st.scl
                yield StoreFetched(peer, got, request.after_lsn)
                return st.scl > before
        return False
