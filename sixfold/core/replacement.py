"""Replacing a storage node with a spare, the writer's side, as sans-I/O machines (P18 §2.3;
issue 14). The rules are in sixfold/core/membership.py; these are the steps.

1. `Begin`: the spare must answer and be empty, the old node's SCL is asked, and the
   transitional membership planned (plan_replacement): a refusal changes nothing. It is
   stored on a write quorum of the old set and the spare (SetMembership): a later recovery
   reaches 4 of the old set, so it finds the change whatever happens to this writer. Then the
   writer ships by it to all seven nodes, and a commit needs 4 of 6 of both sets. The
   volume's durable point once it does is what the new node must reach.
2. The spare hydrates from its peers (sixfold/core/hydration.py).
3. `Settle`: once the new node is complete to that point the change completes, or reverts if
   the old node is back and complete first. The outcome is stored on a write quorum of the
   settled set, then the writer ships by it. Once chosen it is kept: a retry stores the same
   membership, never the other.
`adopt_newest`: a node refused the writer's membership epoch, so some change was stored only
in part or this writer missed it: ship by the newest membership the nodes know.

Each is a generator that yields `{node: request}` (sixfold/core/node_requests.py) and is
sent `{node: answer}` (a SegmentReport, or the exception the call ended with), or yields
SwitchMembership for the writer to carry out (sent back the VDL once it ships by it, or None
when it is no longer the writer). writer/replacement.py and the simulator drive them.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import dataclass
from typing import Any

from sixfold.core.errors import MembershipError
from sixfold.core.membership import (
    Membership,
    Spare,
    describe,
    newest_membership,
    plan_replacement,
    settle,
)
from sixfold.core.node_requests import GetState, NodeRequest, SetMembership
from sixfold.core.quorum import NODE_AZ, WRITE_QUORUM
from sixfold.core.recovery import SegmentReport


@dataclass(frozen=True, slots=True)
class SwitchMembership:
    """The writer ships by `membership` from now on (CommitLog.change_membership)."""

    membership: Membership


Step = dict[str, NodeRequest] | SwitchMembership
Machine = Generator[Step, Any, Any]


@dataclass(frozen=True, slots=True)
class Begun:
    membership: Membership  # the transitional one, in force
    durable_point: int  # the new node must be complete to it


def check_spare(name: str, answer: object) -> Spare:
    """The spare's AZ, or MembershipError when it did not answer or holds data (maybe
    another volume's: a spare must be empty)."""
    if not isinstance(answer, SegmentReport):
        raise MembershipError(f"spare {name} is unreachable: {answer}")
    a = answer
    if a.epoch or a.scl or a.highest_lsn or a.records_stored or a.page_versions_stored:
        raise MembershipError(
            f"spare {name} already holds data (volume epoch {a.epoch}, SCL {a.scl}, "
            f"{a.records_stored} records, {a.page_versions_stored} page versions), maybe "
            "another volume's: empty its data directory, or use another spare"
        )
    return Spare(name, NODE_AZ.get(name, "?"))


def serving_scl(answer: object) -> int | None:
    """A node's SCL if it answered and serves (None: unreachable or not serving yet)."""
    if isinstance(answer, SegmentReport) and answer.serving:
        return answer.scl
    return None


def store(
    membership: Membership, targets: frozenset[str], quorum_set: frozenset[str], volume_epoch: int
) -> Generator[dict[str, NodeRequest], Any, None]:
    """Store `membership` on `targets` in the name of the writer of `volume_epoch`; it must
    reach a write quorum of `quorum_set` (six nodes), or MembershipError."""
    answers = yield {n: SetMembership(membership, volume_epoch) for n in sorted(targets)}
    stored = {n for n, a in answers.items() if isinstance(a, SegmentReport)}
    if len(stored & quorum_set) < WRITE_QUORUM:
        failed = "; ".join(f"{n}: {a}" for n, a in sorted(answers.items()) if n not in stored)
        raise MembershipError(
            f"membership epoch {membership.epoch} reached only {', '.join(sorted(stored))}: "
            f"it needs 4 of {', '.join(sorted(quorum_set))} ({failed})"
        )


class Begin:
    """Step 1 for writer of volume epoch `volume_epoch` at `membership`, whose VDL is `vdl`:
    replace `old` with the spare `new` (`force`: even if `old` is alive and in sync)."""

    def __init__(
        self, membership: Membership, volume_epoch: int, vdl: int, old: str, new: str, force: bool
    ) -> None:
        self.membership, self.volume_epoch, self.vdl = membership, volume_epoch, vdl
        self.old, self.new, self.force = old, new, force

    def run(self) -> Generator[Step, Any, Begun]:
        answers = yield {self.new: GetState(), self.old: GetState()}
        spare = check_spare(self.new, answers[self.new])
        old_scl = serving_scl(answers[self.old])
        old_in_sync = old_scl is not None and old_scl >= self.vdl
        transitional = plan_replacement(
            self.membership, self.old, spare, "", old_in_sync, self.volume_epoch, self.force
        )
        yield from store(transitional, transitional.nodes, transitional.old_set, self.volume_epoch)
        # Stored on a quorum, it is in force: the nodes refuse the older epoch from now on.
        durable_point = yield SwitchMembership(transitional)
        if durable_point is None:
            raise MembershipError(
                f"{describe(transitional)} was stored, but this writer was deposed"
            )
        return Begun(transitional, durable_point)


class Settle:
    """Step 3 for a change in progress that began at `durable_point` (`revertible`: the old
    node's return reverts it; not after `--force`, which replaces a node that is up).

    `choices` is the writer's (CommitLog.settle_choices): what it stores next for each
    transitional membership (by Membership.rank), shared by every Settle it runs, the first choice standing.
    A settle whose store failed may still land on some nodes later; another settle that
    chose anew (the old node back first, then the new one complete) would store the other
    outcome at the same membership epoch, and the nodes would then disagree about who holds
    the position.

    A change another writer made (adopted from the nodes: its `writer_epoch` is not this
    writer's; one found at recovery was already stored again in this writer's name) is
    renewed first: a writer before this one may have
    chosen an outcome and stored it on a node or two, so this one stores the change again at
    the next epoch (Membership.renewed) and chooses at that one."""

    def __init__(
        self, durable_point: int, revertible: bool, choices: dict[tuple[int, int], Membership]
    ) -> None:
        self.durable_point = durable_point
        self.revertible = revertible
        self.choices = choices
        self.rank: tuple[int, int] | None = None  # the transitional membership it settles

    def round(self, membership: Membership, volume_epoch: int) -> Generator[Step, Any, bool]:
        """One attempt; True once the change is settled (or none is in progress)."""
        change = membership.change
        if self.rank is None:
            self.rank = membership.rank
        if change is None or membership.rank != self.rank:
            return True  # settled meanwhile (by another writer, or adopted from the nodes)
        chosen = self.choices.get(membership.rank)
        # Renewed once: the renewal is this writer's own, so is not renewed again when
        # adopted back from the nodes.
        if chosen is None and membership.writer_epoch != volume_epoch:
            chosen = self.choices.setdefault(membership.rank, membership.renewed(volume_epoch))
        if chosen is None:
            asked = [change.new, *([change.old] if self.revertible else [])]
            answers = yield {n: GetState() for n in asked}
            new_scl = serving_scl(answers[change.new]) or 0
            old_scl = serving_scl(answers[change.old]) if self.revertible else None
            choice = settle(membership, new_scl, old_scl, self.durable_point, volume_epoch)
            if choice is None:
                return False
            # Kept: a retry stores the same one. Another settle may have chosen while this
            # one waited for the answers (an adoption runs one beside the operator's): the
            # first choice stands.
            chosen = self.choices.setdefault(membership.rank, choice)
        # The node leaving learns it too, if it answers: it is no longer a member.
        targets = chosen.nodes | membership.nodes
        yield from store(chosen, targets, chosen.old_set, volume_epoch)
        yield SwitchMembership(chosen)
        if chosen.change is not None:  # renewed: settle it at its new epoch
            self.rank = chosen.rank
            return False
        return True


def adopt_newest(
    membership: Membership, nodes: list[str], known: frozenset[str]
) -> Generator[Step, Any, Membership | None]:
    """Ship by the newest membership `nodes` know if it is newer than `membership`; returns
    it (None: nothing newer). MembershipError if it names a node outside `known` (the
    nodes this writer has an address for)."""
    answers: Mapping[str, object] = yield {n: GetState() for n in nodes}
    reports = [a for a in answers.values() if isinstance(a, SegmentReport)]
    newest = newest_membership(r.membership for r in reports)
    if not newest.is_newer_than(membership):
        return None
    if not newest.nodes <= known:
        raise MembershipError(f"{describe(newest)} names nodes this writer has no address for")
    if (yield SwitchMembership(newest)) is None:
        return None
    return newest
