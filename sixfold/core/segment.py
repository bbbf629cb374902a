"""The pure core of a storage node: epochs, truncations, completeness, admission.

The LMDB store and the gRPC service are a shell around this: they ask it whether a request
may proceed, store what it admits, then tell it what became durable. No I/O happens here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from sixfold.core.completeness import SegmentCompleteness
from sixfold.core.errors import EpochAheadError, NotServingError, StaleEpochError
from sixfold.core.quorum import READ_QUORUM
from sixfold.core.record import RedoRecord
from sixfold.core.truncation import TruncationRange, is_cancelled, merge

# A restarted node must hear from this many peers before it serves reads or gossip: with
# itself that is a read quorum, which overlaps every quorum that recorded a truncation.
PEERS_TO_HEAR_BEFORE_SERVING = READ_QUORUM - 1


@dataclass(slots=True)
class SegmentState:
    name: str
    epoch: int = 0
    epoch_owner: str = ""
    truncations: tuple[TruncationRange, ...] = ()
    # The epoch of the recovery that wrote this set of truncations. A node only ever takes a
    # newer set, never merges an older one in: a recovery that died before its truncation
    # reached a write quorum may never have counted, and a later recovery, which may not
    # have seen it, decides what stands (P18 §2.4).
    truncations_version: int = 0
    completeness: SegmentCompleteness = field(default_factory=SegmentCompleteness)
    vdl: int = 0
    vdl_epoch: int = 0
    peers_heard: set[str] = field(default_factory=set)

    # -- epochs (P17 §4.3, P18 §2.4) --------------------------------------------------------

    def check_current(self, request_epoch: int, what: str) -> None:
        """An append must carry the node's epoch, and the node must know its truncations."""
        if request_epoch < self.epoch:
            raise StaleEpochError(request_epoch, self.epoch, what)
        if request_epoch > self.epoch or self.truncations_version < request_epoch:
            raise EpochAheadError(request_epoch, self.epoch, self.truncations_version)

    def check_seal(self, epoch: int, owner: str) -> None:
        """A new epoch is won by being strictly newer; re-sealing one's own epoch is idempotent."""
        if epoch < self.epoch or (epoch == self.epoch and owner != self.epoch_owner):
            raise StaleEpochError(epoch, self.epoch, f"seal by {owner!r}")

    def seal(self, epoch: int, owner: str) -> None:
        self.check_seal(epoch, owner)
        self.epoch, self.epoch_owner = epoch, owner

    def check_truncate(self, epoch: int) -> None:
        if epoch < self.epoch:
            raise StaleEpochError(epoch, self.epoch, "truncation")

    def truncation_is_news(self, epoch: int, version: int) -> bool:
        """Whether a truncation request (checked by check_truncate) changes anything: a newer
        epoch, or a newer set. A repeat is answered without storing anything."""
        self.check_truncate(epoch)
        return epoch > self.epoch or version > self.truncations_version

    def new_truncations(
        self, ranges: tuple[TruncationRange, ...], version: int
    ) -> list[TruncationRange]:
        """Ranges a truncation set of `version` would newly cancel (none if it is not newer)."""
        if version <= self.truncations_version:
            return []
        return [r for r in ranges if r not in self.truncations]

    def truncate(
        self, epoch: int, ranges: tuple[TruncationRange, ...], version: int
    ) -> list[TruncationRange]:
        """Adopt `epoch` and, if newer than ours, the truncation set written at `version`.

        Returns the ranges whose records must now be deleted. Ranges of the old set missing
        from the new one cancel nothing any more: their records may be fetched again.
        """
        self.check_truncate(epoch)
        assert version <= epoch, "a truncation set is written by a recovery at its epoch"
        fresh = self.new_truncations(ranges, version)
        if epoch > self.epoch:
            self.epoch, self.epoch_owner = epoch, ""
        if version > self.truncations_version:
            self.truncations = merge(ranges)
            self.truncations_version = version
        for rng in fresh:
            self.completeness.truncate(rng)
            if rng.after_lsn < self.vdl <= rng.through_lsn:  # a learned VDL is never cancelled
                self.vdl = rng.after_lsn
        return fresh

    # -- records ------------------------------------------------------------------------------

    def admits(self, record: RedoRecord) -> bool:
        """Whether a record may be stored: not cancelled, not from a future epoch, not a dup."""
        if record.epoch > self.epoch:
            return False
        if is_cancelled(self.truncations, record.lsn, record.epoch):
            return False
        return record.lsn > self.completeness.scl

    def cancels(self, record: RedoRecord) -> bool:
        return is_cancelled(self.truncations, record.lsn, record.epoch)

    def servable(self, records: Iterable[RedoRecord]) -> list[RedoRecord]:
        """Records read from the log, less any cancelled one: belt and braces, a cancelled
        record is never served even if it is not yet deleted."""
        return [r for r in records if not self.cancels(r)]

    def on_durable(self, records: list[RedoRecord]) -> None:
        for record in records:
            self.completeness.add(record.lsn, record.prev_volume_lsn, record.is_cpl)

    def learn_vdl(self, epoch: int, vdl: int) -> None:
        """The writer's VDL, piggybacked on an append of the node's current epoch."""
        assert epoch == self.epoch
        if (epoch, vdl) > (self.vdl_epoch, self.vdl):
            self.vdl_epoch, self.vdl = epoch, vdl

    # -- serving gate -------------------------------------------------------------------------

    def heard_from(self, peer: str) -> None:
        self.peers_heard.add(peer)

    @property
    def serving(self) -> bool:
        return len(self.peers_heard) >= PEERS_TO_HEAR_BEFORE_SERVING

    def check_serving(self) -> None:
        if not self.serving:
            raise NotServingError(
                f"storage node {self.name} is syncing truncations with its peers (heard from "
                f"{len(self.peers_heard)} of {PEERS_TO_HEAR_BEFORE_SERVING} needed)"
            )

    def check_covers(self, lsn: int, min_epoch: int) -> None:
        self.check_serving()
        if self.truncations_version < min_epoch:
            raise NotServingError(
                f"storage node {self.name} knows the truncations of epoch "
                f"{self.truncations_version}, not yet those of the reader's epoch {min_epoch}"
            )
        if self.completeness.scl < lsn:
            raise NotServingError(
                f"storage node {self.name} is complete only to LSN {self.completeness.scl}, "
                f"below the asked LSN {lsn}"
            )

    def check_page_at(self, lsn: int, min_epoch: int, gc_horizon: int) -> None:
        """A page read at `lsn` must be covered (check_covers) and at or above the node's GC
        horizon: the versions a read below it needs may be gone (P17 §3.2, step 7), so it is
        refused rather than built from what is left."""
        self.check_covers(lsn, min_epoch)
        if lsn < gc_horizon:
            raise NotServingError(
                f"storage node {self.name} collected garbage up to LSN {gc_horizon}; it "
                f"cannot build a page at the older LSN {lsn}: read at a newer read point"
            )

    @property
    def scl(self) -> int:
        return self.completeness.scl
