"""Writer recovery as a sans-I/O machine (P17 §4.3): it yields requests, and takes answers.

1. Read every node's state; choose the next epoch.
2. Seal it on every reachable node; at least a write quorum must accept, or another writer
   won (or too few nodes are up) and recovery fails with a message saying which. Unless
   the volume never changed its membership, store the newest again at the next membership
   epoch in this writer's name (Membership.restamped), so that no node keeps another that
   an earlier writer stored on it alone.
3. Push the newest truncation set any sealed node holds to those that hold an older one
   (a node may take a newer one from gossip meanwhile: repeat, a bounded number of times).
4. Plan: VDL, the truncation range and the first new LSN (sixfold/core/recovery.py).
5. Write the new truncation set, versioned with this epoch, to the sealed nodes (a write
   quorum must take it).
6. Repair: copy records up to VDL from the most complete node to sealed nodes that lack
   them, all lagging nodes at once; a write quorum must then be complete to VDL.
Nothing here replays redo: the work is bounded by the LAL, not by the length of the log.

`Recovery.run()` is a generator. Each step yields `{node: request}` (sixfold/core/node_requests.py)
and is sent back `{node: answer}`: a SegmentReport for GetState, Seal and Truncate, the
records for ReadRecords, the SCL for Append, or the exception the call ended with. The
writer's asyncio shell (writer/recovery.py) and the simulator both drive it.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

from sixfold.core.errors import QuorumUnavailableError, RecoveryError, StaleEpochError
from sixfold.core.membership import Membership, describe, newest_membership
from sixfold.core.node_requests import Append, GetState, NodeRequest, ReadRecords, Seal, Truncate
from sixfold.core.quorum import COPIES, WRITE_QUORUM
from sixfold.core.record import RedoRecord
from sixfold.core.recovery import (
    RecoveryPlan,
    SegmentReport,
    newest_truncations,
    next_epoch,
    plan_recovery,
)
from sixfold.core.replacement import store
from sixfold.core.truncation import TruncationRange, merge

TRUNCATION_SYNC_ROUNDS_MAX = 3
REPAIR_BATCH_RECORDS_MAX = 2_000

Requests = dict[str, NodeRequest]
Answer = SegmentReport | tuple[RedoRecord, ...] | int | Exception
Answers = dict[str, Answer]
Steps = Generator[Requests, Answers, "Recovered"]


@dataclass(frozen=True, slots=True)
class Recovered:
    plan: RecoveryPlan
    truncations: tuple[TruncationRange, ...]
    node_scls: dict[str, int]
    membership: Membership  # the newest the nodes knew, stored again in this writer's name


def _reports(answers: Answers) -> dict[str, SegmentReport]:
    return {n: a for n, a in answers.items() if isinstance(a, SegmentReport)}


class Recovery:
    """One recovery attempt by writer `owner` at the next epoch, or only at `epoch_wanted`
    when given: a reader taking over from the writer of epoch E asks for E + 1, so that of
    several readers racing, the one that seals E + 1 first wins and the others give up
    rather than fence it with E + 2."""

    def __init__(
        self,
        nodes: list[str],
        owner: str,
        lal: int,
        epoch_wanted: int = 0,
        repair_batch_records_max: int = REPAIR_BATCH_RECORDS_MAX,
        membership: Membership | None = None,
    ) -> None:
        self.nodes = nodes
        self.membership = membership or Membership.initial()  # whose answers make a quorum
        self.owner = owner
        self.lal = lal
        self.epoch_wanted = epoch_wanted
        self.repair_batch_records_max = repair_batch_records_max
        self.notes: list[str] = []  # what happened, for the shell's log

    def run(self) -> Steps:
        answered = _reports((yield {n: GetState() for n in self.nodes}))
        # The newest membership any node knows: a change stored on a write quorum of the
        # old set is seen by any write quorum of it (4 + 4 > 6). Only its nodes take part.
        self.membership = newest_membership(
            [self.membership, *(r.membership for r in answered.values())]
        )
        reachable = {n: r for n, r in answered.items() if n in self.membership.nodes}
        if not self.membership.is_write_quorum(reachable):
            raise QuorumUnavailableError("write", len(reachable), WRITE_QUORUM, COPIES)
        epoch = next_epoch(list(reachable.values()))
        if self.epoch_wanted and epoch != self.epoch_wanted:
            newest = max(reachable.values(), key=lambda r: r.epoch)
            raise RecoveryError(
                f"lost the race for volume epoch {self.epoch_wanted}: {newest.epoch_owner!r} "
                f"already holds epoch {newest.epoch}"
            )
        sealed = yield from self._seal(list(reachable), epoch)
        yield from self._settle_membership(sealed, epoch)
        sealed = yield from self._sync_truncations(sealed, epoch)
        plan, truncations = self.plan(epoch, list(sealed.values()))
        self.notes.append(
            f"recovery plan: VDL {plan.vdl}, truncate ({plan.truncation.after_lsn}, "
            f"{plan.truncation.through_lsn}], next LSN {plan.next_lsn}"
        )
        sealed = yield from self._truncate_all(list(sealed), epoch, truncations, epoch)
        if plan.source not in sealed:
            raise RecoveryError(f"{plan.source}, the most complete node, failed during truncation")
        node_scls = {n: r.scl for n, r in sealed.items()}
        yield from self._repair(plan, node_scls)
        complete = [n for n, scl in node_scls.items() if scl >= plan.vdl]
        if not self.membership.is_write_quorum(complete):
            raise RecoveryError(
                f"only {len(complete)} of {COPIES} nodes are complete to the recovered VDL "
                f"{plan.vdl}; {WRITE_QUORUM} needed"
            )
        return Recovered(plan, truncations, node_scls, self.membership)

    def plan(
        self, epoch: int, reports: list[SegmentReport]
    ) -> tuple[RecoveryPlan, tuple[TruncationRange, ...]]:
        """The plan, and the truncation set to write: the newest set plus the new range."""
        plan = plan_recovery(epoch, reports, self.lal)
        return plan, merge(newest_truncations(reports).truncations, [plan.truncation])

    def _seal(
        self, names: list[str], epoch: int
    ) -> Generator[Requests, Answers, dict[str, SegmentReport]]:
        answers = yield {n: Seal(epoch, self.owner, self.membership.epoch) for n in names}
        sealed = _reports(answers)
        if not self.membership.is_write_quorum(sealed):
            lost = [str(e) for e in answers.values() if isinstance(e, StaleEpochError)]
            if lost:
                raise RecoveryError(
                    f"lost the race for volume epoch {epoch}: another writer sealed it first "
                    f"({lost[0]}); only {len(sealed)} of {COPIES} nodes accepted this one"
                )
            raise QuorumUnavailableError("write", len(sealed), WRITE_QUORUM, COPIES)
        self.notes.append(f"sealed epoch {epoch} on {', '.join(sorted(sealed))}")
        return sealed

    def _settle_membership(
        self, sealed: dict[str, SegmentReport], epoch: int
    ) -> Generator[Requests, Answers, None]:
        """Make the membership this writer ships by newer than any a node holds.

        Once a write quorum is sealed, no writer before this one can bring a membership into
        force, and any it did is on one of the sealed nodes (4 + 4 > 6). But a deposed
        writer may have stored one on a node or two, at the same epoch as another writer's
        (P18 §2.3's epochs assume one writer at a time), and gossip spreads either to nodes
        that never heard of the other. Nodes at one epoch do not take another's rival, so
        they need never agree, and a node that keeps a spare in its membership never
        collects its log (simulator seed 1178). Which copies a writer stored and which came
        by gossip cannot be told apart, so the newest is always stored again, one epoch on,
        in this writer's name: newer than any other, it replaces them all. The initial
        membership has no rival (no writer makes one at epoch 1): it is kept as it is."""
        newest = newest_membership([self.membership, *(r.membership for r in sealed.values())])
        if newest != self.membership:  # stored between the states read and the seal
            if not newest.is_write_quorum(sealed):
                raise RecoveryError(
                    f"the membership changed during recovery, to {describe(newest)}, and the "
                    f"nodes sealed ({', '.join(sorted(sealed))}) are no write quorum of it"
                )
            self.membership = newest
        if newest == Membership.initial():
            return
        restamped = newest.restamped(epoch)
        # To the sealed nodes only: one that did not answer would hold recovery up for its
        # deadline, and gossip brings it the new one anyway.
        yield from store(restamped, frozenset(sealed), newest.old_set, epoch)
        self.notes.append(f"stored {describe(restamped)} in this writer's name")
        self.membership = restamped

    def _sync_truncations(
        self, sealed: dict[str, SegmentReport], epoch: int
    ) -> Generator[Requests, Answers, dict[str, SegmentReport]]:
        for _ in range(TRUNCATION_SYNC_ROUNDS_MAX):
            newest = newest_truncations(list(sealed.values()))
            if all(
                r.truncations_version == newest.truncations_version
                and set(r.truncations) == set(newest.truncations)
                for r in sealed.values()
            ):
                return sealed
            sealed = yield from self._truncate_all(
                list(sealed), epoch, newest.truncations, newest.truncations_version
            )
        raise RecoveryError(
            f"the sealed nodes' truncation sets did not agree after {TRUNCATION_SYNC_ROUNDS_MAX} "
            "rounds"
        )

    def _truncate_all(
        self, names: list[str], epoch: int, ranges: tuple[TruncationRange, ...], version: int
    ) -> Generator[Requests, Answers, dict[str, SegmentReport]]:
        answers = yield {n: Truncate(epoch, ranges, version, self.membership.epoch) for n in names}
        done = {n: r for n, r in _reports(answers).items() if r.epoch == epoch}
        if not self.membership.is_write_quorum(done):
            errors = "; ".join(str(e) for e in answers.values() if isinstance(e, Exception))
            raise RecoveryError(
                f"truncation at epoch {epoch} reached only {len(done)} of {COPIES} nodes, "
                f"{WRITE_QUORUM} needed: {errors}"
            )
        return done

    def _repair(
        self, plan: RecoveryPlan, node_scls: dict[str, int]
    ) -> Generator[Requests, Answers, None]:
        """Copy records (SCL, VDL] from the most complete node to every node that lacks
        them: each batch is read once, from just above the lowest lagging SCL, and appended
        to all lagging nodes at once, each taking what lies above its own SCL. So a
        recovery with several lagging nodes costs the round trips of the one furthest
        behind, not their sum. A failed call ends that node's repair: gossip completes it
        later."""
        source = plan.source
        lagging = [n for n in plan.lagging if n in node_scls]
        while lagging:
            start = min(node_scls[n] for n in lagging)
            read = ReadRecords(start, plan.vdl, self.repair_batch_records_max)
            records = (yield {source: read})[source]
            if isinstance(records, Exception):
                self.notes.append(f"repair of {', '.join(lagging)} from {source} failed: {records}")
                return
            if not isinstance(records, tuple) or not records:
                return
            appends: Requests = {}
            for name in lagging:
                above = tuple(r for r in records if r.lsn > node_scls[name])
                if above:
                    appends[name] = Append(plan.epoch, above)
            if not appends:
                return  # the source sent nothing above any lagging SCL: gossip fills in
            answers = yield appends
            for name in appends:
                scl = answers[name]
                if isinstance(scl, Exception):
                    self.notes.append(f"repair of {name} from {source} failed: {scl}")
                    lagging.remove(name)
                elif not isinstance(scl, int) or scl <= node_scls[name]:
                    lagging.remove(name)  # a hole the source cannot fill either: gossip may
                else:
                    node_scls[name] = scl
            lagging = [n for n in lagging if node_scls[n] < plan.vdl]
