"""Hydration: a node rebuilds its segment from page images when no log is left to catch up
from (P18 §2.3: repair is fast, so the window of double faults stays small; issue 14).

A node that lost its disk, or a new node, is complete to some LSN (0 when empty). Gossip
catches a lagging node up by fetching the records above its SCL. But peers collect their
log below their GC horizon once every peer has passed it, so a node that comes back *below*
every peer's horizon (its disk was replaced) would wait forever for records nobody holds,
and, since GC waits for the slowest peer, would stop every peer's GC with it.

Such a node hydrates instead:
- It picks a target T: the highest coalescing frontier among the peers ahead of it. Every
  peer's horizon is at or below its own frontier, so T is at or above every horizon, and
  T is at or below a VDL (coalescing never passes one, sixfold/core/log_cleanup.py), so no
  truncation can cancel what the images hold.
- It copies every page's image as of T, a bounded run of pages per request, from any peer
  that can build pages at T (horizon <= T <= SCL, the same truncations). A peer that fails
  is skipped for the next; no one peer is waited on.
- Progress (T and the next page) is stored with the images, so a crash resumes there.
- Once every page is copied the node takes T as its SCL, its coalescing frontier and its GC
  horizon; gossip then fetches the records above T as for any lagging node. Meanwhile its
  low SCL holds the peers' GC back, so the records above T are still there.

Pure: storage_node/gossip.py and the simulator drive it inside the gossip round
(sixfold/core/gossip_round.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from sixfold.core.errors import CorruptPageImageError
from sixfold.core.record import PAGE_SIZE_BYTES
from sixfold.core.recovery import SegmentReport
from sixfold.core.segment import SegmentState

HYDRATE_PAGES_MAX = 256  # pages asked of a peer per request: 1 MiB of 4 KiB pages
# Runs of pages copied in one gossip round: a round first asks every peer's state, and one
# that is down may take its call timeout to say so, so a round does many runs, not one.
HYDRATE_RUNS_PER_ROUND = 64


@dataclass(frozen=True, slots=True)
class HydrationProgress:
    """How far a hydration got: pages below `next_page` hold their image as of `target_lsn`.
    Stored with the images it counts (storage_node/store.py), so a restart resumes."""

    target_lsn: int
    next_page: int = 0
    pages_done: int = 0
    bytes_done: int = 0
    pages_total_estimate: int = 0  # the source's count of page versions: for progress only

    def after(self, images: PageImages) -> HydrationProgress:
        return replace(
            self,
            next_page=images.next_page,
            pages_done=self.pages_done + len(images.pages),
            bytes_done=self.bytes_done + sum(len(p.image) for p in images.pages),
            pages_total_estimate=max(self.pages_total_estimate, images.pages_total_estimate),
        )

    @property
    def fraction(self) -> float:
        """Rough progress in [0, 1): pages copied over the source's count of versions."""
        total = max(self.pages_total_estimate, self.pages_done, 1)
        return min(self.pages_done / total, 0.99)


@dataclass(frozen=True, slots=True)
class HydratedPage:
    page_no: int
    page_lsn: int  # the LSN of the page's newest change at or below the target
    image: bytes


@dataclass(frozen=True, slots=True)
class PageImages:
    """A peer's answer to ReadPageImages: pages from the asked one on, in page order."""

    pages: tuple[HydratedPage, ...]
    next_page: int  # where the next request starts
    done: bool  # no page at or above next_page
    pages_total_estimate: int = 0


def peers_in_step(st: SegmentState, answered: Sequence[SegmentReport]) -> list[SegmentReport]:
    """Peers that serve and cancel exactly what this node cancels: the only ones to copy from."""
    return [s for s in answered if s.serving and s.truncations_version == st.truncations_version]


def hydration_target(st: SegmentState, answered: Sequence[SegmentReport]) -> int | None:
    """The LSN this node must hydrate to, or None when gossip can catch it up (or nothing
    is ahead of it). It must when every peer ahead of it has collected the record above its
    SCL."""
    if not st.serving:
        return None
    ahead = [s for s in peers_in_step(st, answered) if s.scl > st.scl]
    if not ahead or any(s.gc_horizon <= st.scl for s in ahead):
        return None
    target = max(s.coalesced_through for s in ahead)
    return target if target > st.scl else None


def hydration_sources(
    st: SegmentState, answered: Sequence[SegmentReport], target: int
) -> list[str]:
    """Peers that can build every page as of `target`."""
    return [s.name for s in peers_in_step(st, answered) if s.gc_horizon <= target <= s.scl]


def check_images(images: PageImages, asked: HydrationProgress, pages_max: int, source: str) -> None:
    """A peer's answer must be well formed before anything of it is stored: pages in order
    from the asked one, whole pages, each last changed at or below the target, no more than
    asked."""
    pages, from_page = images.pages, asked.next_page
    if len(pages) > pages_max:
        raise CorruptPageImageError(
            f"{source} sent {len(pages)} page images, more than {pages_max}"
        )
    previous = from_page - 1
    for page in pages:
        if page.page_no <= previous or len(page.image) != PAGE_SIZE_BYTES:
            raise CorruptPageImageError(
                f"{source} sent a malformed page image (page {page.page_no} after page "
                f"{previous}, {len(page.image)} bytes)"
            )
        if not 0 < page.page_lsn <= asked.target_lsn:
            raise CorruptPageImageError(
                f"{source} sent page {page.page_no} as of LSN {page.page_lsn}, not in "
                f"(0, {asked.target_lsn}]"
            )
        previous = page.page_no
    if images.next_page <= previous:
        raise CorruptPageImageError(f"{source} sent next page {images.next_page} after {previous}")
