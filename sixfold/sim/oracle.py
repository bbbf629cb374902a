"""The oracle: what really happened to the volume, and the invariants checked against it."""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from sixfold.core.hydration import HydratedPage
from sixfold.core.page import EMPTY_PAGE, apply_records
from sixfold.core.quorum import COPIES, WRITE_QUORUM
from sixfold.core.record import RedoRecord
from sixfold.core.truncation import TruncationRange, is_cancelled
from sixfold.sim.faults import DISK_FAULTS_MAX

if TYPE_CHECKING:
    from sixfold.sim.simulation import Simulation
    from sixfold.sim.writer import SimWriter

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
        # page -> its image after each LSN of its chain, built as asked (the chain only grows)
        self.page_images: dict[int, list[bytes]] = {}
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

    def check_hydrated(self, sim: Simulation, node: str, page: HydratedPage, target: int) -> None:
        """A hydrated page image must be the page as the history has it at the target."""
        if target > self.durable_point or target not in self.chain_set:
            sim.fail(
                f"{node} hydrates to {target}, not a durable point (history to {self.durable_point})"
            )
        if (page.image, page.page_lsn) != (
            self.page_at(page.page_no, target),
            self.page_lsn_at(page.page_no, target),
        ):
            sim.fail(
                f"{node} hydrated page {page.page_no} as of {target} with LSN {page.page_lsn}, "
                f"which differs from the history (page LSN {self.page_lsn_at(page.page_no, target)})"
            )

    def page_lsn_at(self, page_no: int, lsn: int) -> int:
        chain = self.page_chain.get(page_no, [])
        i = bisect.bisect_right(chain, lsn)
        return chain[i - 1] if i else 0

    def page_at(self, page_no: int, lsn: int) -> bytes:
        """The page as the history has it at `lsn`. Each image is built once, from the one
        before it: every GC step and read checks pages against this."""
        chain = self.page_chain.get(page_no, [])
        count = bisect.bisect_right(chain, lsn)
        if not count:
            return EMPTY_PAGE
        images = self.page_images.setdefault(page_no, [])
        while len(images) < count:
            before = images[-1] if images else EMPTY_PAGE
            images.append(apply_records(before, [self.generated[chain[len(images)]]]))
        return images[count - 1]

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
