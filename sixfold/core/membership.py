"""The volume's membership: which node holds each of the six positions, versioned by epoch,
and how a dead node is replaced without stopping writes (P18 §2.3, issue 14).

Positions are fixed: a1 a2 b1 b2 c1 c2, two in each AZ (sixfold/core/quorum.py). A node
holds a position; replacing the holder F of a position with a spare G in the same AZ goes
through a transitional membership, each step a new membership epoch:

    ABCDEF  --begin-->  ABCDEF/G  --complete-->  ABCDEG
                            \\--revert-->  ABCDEF  (F came back before G caught up)

While transitional, a write needs 4 of 6 of ABCDEF *and* 4 of 6 of ABCDEG, and a read 3 of
6 of either. Every step is then safe on its own, whatever the others' order:
- a transitional write quorum holds 4 of the old set, so it meets every read quorum of the
  old set (4 + 3 > 6) and every write quorum of it (2 x 4 > 6); the same for the new set;
- so a reader or a recovery that uses either set, before or after the change completes,
  sees every write made in the transitional membership, and two writers, one of them at
  the old membership, cannot both succeed.
These are asserted below over every subset of the seven nodes, and checked by hypothesis
in tests/test_membership.py.

Pure: the shells keep the membership with the epochs (the nodes store it; the writer and
readers carry its epoch on every request and are refused with StaleMembershipError when a
node has a newer one).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from sixfold.core.errors import (
    InvalidRequestError,
    MembershipError,
    NotAMemberError,
    StaleEpochError,
    StaleMembershipError,
)
from sixfold.core.quorum import COPIES, NODE_AZ, NODE_NAMES, READ_QUORUM, WRITE_QUORUM, quorum_lsn

POSITIONS = NODE_NAMES  # the six positions, named after their first holders
NODE_NAME_CHARS_MAX = 64


@dataclass(frozen=True, slots=True)
class Change:
    """Replacing `old`, the holder of `position`, with `new`."""

    position: str
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Membership:
    """The holders of the six positions at membership `epoch`, a change in progress, and
    `writer_epoch`: the volume epoch of the writer that made it (0: the initial membership,
    or one stored before nodes kept it)."""

    epoch: int
    holders: tuple[str, ...]  # the node at each position, in POSITIONS order
    change: Change | None = None
    writer_epoch: int = 0

    def __post_init__(self) -> None:
        assert len(self.holders) == COPIES and len(set(self.holders)) == COPIES, self.holders
        if self.change is not None:
            c = self.change
            assert self.holders[POSITIONS.index(c.position)] == c.old, (self.holders, c)
            assert c.new not in self.holders, c

    @staticmethod
    def initial() -> Membership:
        return Membership(1, POSITIONS)

    @property
    def rank(self) -> tuple[int, int]:
        """The order of memberships: by epoch, then by the writer that made it. Two writers
        can each make one at the same epoch: a deposed writer's outcome stored on a node its
        successor has not sealed yet, beside the successor's own (P18 §2.3 orders changes by
        epoch alone; with overlapping writers the newer writer must win the tie, or the
        nodes holding each refuse the other's and never agree)."""
        return (self.epoch, self.writer_epoch)

    def is_newer_than(self, other: Membership) -> bool:
        return self.rank > other.rank

    # -- the sets -----------------------------------------------------------------------------

    @property
    def old_set(self) -> frozenset[str]:
        return frozenset(self.holders)

    @property
    def new_set(self) -> frozenset[str]:
        """The set once the change completes (the old set when there is none)."""
        if self.change is None:
            return self.old_set
        return (self.old_set - {self.change.old}) | {self.change.new}

    @property
    def nodes(self) -> frozenset[str]:
        """Every node a writer ships to: six, or seven during a change."""
        return self.old_set | self.new_set

    def position_of(self, node: str) -> str | None:
        if node in self.holders:
            return POSITIONS[self.holders.index(node)]
        if self.change is not None and node == self.change.new:
            return self.change.position
        return None

    def az_of(self, node: str) -> str | None:
        position = self.position_of(node)
        return None if position is None else NODE_AZ[position]

    # -- quorums ------------------------------------------------------------------------------

    def is_write_quorum(self, nodes: Iterable[str]) -> bool:
        acked = set(nodes)
        return (
            len(acked & self.old_set) >= WRITE_QUORUM and len(acked & self.new_set) >= WRITE_QUORUM
        )

    def is_read_quorum(self, nodes: Iterable[str]) -> bool:
        answered = set(nodes)
        return (
            len(answered & self.old_set) >= READ_QUORUM
            or len(answered & self.new_set) >= READ_QUORUM
        )

    def write_quorum_lsn(self, points: Mapping[str, int]) -> int:
        """The highest LSN a write quorum has reached (the VCL, from per-node SCLs): during a
        change, the lower of the two sets' (both must have it)."""
        old = quorum_lsn([points.get(n, 0) for n in self.holders], WRITE_QUORUM)
        if self.change is None:  # the commit path's case: one set
            return old
        return min(old, quorum_lsn([points.get(n, 0) for n in self.new_set], WRITE_QUORUM))

    # -- changes (each a new membership epoch) --------------------------------------------------

    def begin(self, old: str, new: str, writer_epoch: int) -> Membership:
        """Start replacing `old` with `new`, by the writer of volume epoch `writer_epoch` (so
        for each transition below). Raises MembershipError, nothing changed, if a
        change is in progress, `old` holds no position or `new` already takes part."""
        if self.change is not None:
            c = self.change
            raise MembershipError(
                f"a membership change is in progress (replacing {c.old} with {c.new} at "
                f"position {c.position}, membership epoch {self.epoch}): let it complete or "
                "revert before starting another"
            )
        if old not in self.holders:
            raise MembershipError(
                f"{old} holds no position in the volume (members: {', '.join(self.holders)})"
            )
        if new in self.holders:
            raise MembershipError(f"{new} already holds position {self.position_of(new)}")
        if not new or len(new) > NODE_NAME_CHARS_MAX:
            raise MembershipError(f"bad node name {new!r}")
        position = POSITIONS[self.holders.index(old)]
        return Membership(self.epoch + 1, self.holders, Change(position, old, new), writer_epoch)

    def complete(self, writer_epoch: int) -> Membership:
        """The new node holds the position (it has hydrated to the volume's durable point)."""
        c = self._in_progress()
        holders = tuple(c.new if h == c.old else h for h in self.holders)
        return Membership(self.epoch + 1, holders, None, writer_epoch)

    def revert(self, writer_epoch: int) -> Membership:
        """Back to the old set (the old node returned before the new one caught up)."""
        self._in_progress()
        return replace(self, epoch=self.epoch + 1, change=None, writer_epoch=writer_epoch)

    def renewed(self, writer_epoch: int) -> Membership:
        """The same change at the next epoch, in `writer_epoch`'s name: a writer that
        adopted a change another writer made stores this before it settles. A deposed
        writer's outcome may still reach a node or two at the epoch after the old one; it is
        then older than anything this writer stores (Membership.rank)."""
        self._in_progress()
        return self.restamped(writer_epoch)

    def restamped(self, writer_epoch: int) -> Membership:
        """The same holders and change at the next epoch, made by `writer_epoch`'s writer:
        every recovery stores this (sixfold/core/recovery_machine.py), so that whatever other
        memberships a node or two hold (from writers before it), its own is newer than all
        of them."""
        return replace(self, epoch=self.epoch + 1, writer_epoch=writer_epoch)

    def _in_progress(self) -> Change:
        if self.change is None:
            raise MembershipError(f"no membership change is in progress at epoch {self.epoch}")
        return self.change


# -- on the wire and on a node ------------------------------------------------------------------


def checked_membership(
    epoch: int, holders: tuple[str, ...], change: Change | None, writer_epoch: int = 0
) -> Membership:
    """A membership from outside (the wire, a disk): MembershipError if it is malformed."""
    names = [*holders, *([change.new] if change else [])]
    if len(holders) != COPIES or len(set(names)) != len(names):
        raise MembershipError(f"need {COPIES} distinct holders, got {list(holders)}")
    if any(not n or len(n) > NODE_NAME_CHARS_MAX for n in names):
        raise MembershipError(f"bad node name among {names}")
    if change is not None and (
        change.position not in POSITIONS or holders[POSITIONS.index(change.position)] != change.old
    ):
        raise MembershipError(f"change {change} does not match the holders {list(holders)}")
    return Membership(epoch, holders, change, writer_epoch)


def check_request_epoch(node: Membership, request_epoch: int, what: str) -> None:
    """A request from a sender at an older membership epoch is refused (it may count the
    wrong nodes towards its quorum); 0 is a sender that gives none (tools, gossip). A newer
    one is taken: the node lags, and gossip brings it the newer membership."""
    if request_epoch and request_epoch < node.epoch:
        raise StaleMembershipError(request_epoch, node.epoch, what)


def check_member(node: Membership, name: str, request_epoch: int, what: str) -> None:
    """A node that takes no part in the membership its sender also holds refuses what only
    members take (appends, seals, truncations): a spare stays empty until a change names
    it. A sender at a newer epoch may know a change this node has not learnt yet."""
    if request_epoch <= node.epoch and name not in node.nodes:
        raise NotAMemberError(
            f"storage node {name} is not a member of the volume at membership epoch "
            f"{node.epoch} ({describe(node)}): it takes no {what}"
        )


def membership_is_news(
    current: Membership, proposed: Membership, volume_epoch: int, node_volume_epoch: int
) -> bool:
    """Whether a node at `current` (sealed at `node_volume_epoch`) stores `proposed`, sent by
    the writer of `volume_epoch` (0: a sender that gives none, such as gossip). The same one
    again is no news. Refused: one a writer made in another's name (InvalidRequestError), an
    older epoch (StaleMembershipError), another one at the same epoch from the same or an
    older writer (InvalidRequestError), and one sent by a writer older than the node's seal
    (StaleEpochError): a deposed writer cannot store a change on a node its successor
    sealed. (Gossip gives no volume epoch: what a deposed writer stored on a node its
    successor did not seal may spread, and is then older than what the successor stores at
    recovery.) One at the same epoch from a newer writer replaces the node's
    (Membership.rank): the older writer's never reached a write quorum, or the newer one
    would have found it."""
    if volume_epoch and volume_epoch != proposed.writer_epoch:
        raise InvalidRequestError(
            f"a membership made by the writer of volume epoch {proposed.writer_epoch} was "
            f"sent by the writer of volume epoch {volume_epoch}"
        )
    if volume_epoch and volume_epoch < node_volume_epoch:
        raise StaleEpochError(volume_epoch, node_volume_epoch, "membership change")
    if proposed.epoch < current.epoch:
        raise StaleMembershipError(proposed.epoch, current.epoch, "SetMembership")
    if proposed == current:
        return False
    if proposed.rank <= current.rank:
        raise InvalidRequestError(
            f"membership epoch {proposed.epoch} names other holders here: "
            f"{describe(current)}, not {describe(proposed)}"
        )
    return True


def newest_membership(memberships: Iterable[Membership | None]) -> Membership:
    """The newest membership among those given (Membership.rank; the initial one if none)."""
    known = [m for m in memberships if m is not None]
    return max(known, key=lambda m: m.rank, default=Membership.initial())


def describe(membership: Membership) -> str:
    """One line for status and logs."""
    text = f"membership epoch {membership.epoch}: {' '.join(membership.holders)}"
    if membership.writer_epoch:
        text += f" (by the writer of volume epoch {membership.writer_epoch})"
    c = membership.change
    if c is not None:
        text += f"; replacing {c.old} with {c.new} at position {c.position}"
    return text


# -- an operator's replacement, and when a change settles --------------------------------------


@dataclass(frozen=True, slots=True)
class Spare:
    """A node that holds no position: its AZ, and the volume whose data it holds ("" when
    it is empty)."""

    name: str
    az: str
    volume_id: str = ""


def plan_replacement(
    membership: Membership,
    old: str,
    spare: Spare,
    volume_id: str,
    old_in_sync: bool,
    writer_epoch: int,
    force: bool = False,
) -> Membership:
    """The transitional membership replacing `old` with `spare`. Raises MembershipError,
    nothing changed, for a change in progress, a spare in another AZ (it would break AZ+1),
    a spare holding another volume's data, or an `old` node that is alive and in sync
    (unless `force`)."""
    transitional = membership.begin(
        old, spare.name, writer_epoch
    )  # refuses a second change, bad names
    position = transitional.position_of(old)
    assert position is not None
    if spare.az != NODE_AZ[position]:
        raise MembershipError(
            f"spare {spare.name} is in AZ {spare.az}, but position {position} is in AZ "
            f"{NODE_AZ[position]}: a spare in another AZ would leave AZ {spare.az} with three "
            f"copies, and losing it would stop writes (AZ+1 needs two per AZ); use a spare in "
            f"AZ {NODE_AZ[position]}"
        )
    if spare.volume_id and spare.volume_id != volume_id:
        raise MembershipError(
            f"spare {spare.name} holds data of another volume ({spare.volume_id}, not "
            f"{volume_id}): empty its data directory, or use another spare"
        )
    if old_in_sync and not force:
        raise MembershipError(
            f"{old} is alive and in sync: replacing it would lower the volume's margin while "
            "the spare hydrates, for nothing; pass --force to replace it anyway"
        )
    return transitional


def overdue(down_since: Mapping[str, float], now: float, after_s: float) -> list[str]:
    """Members unreachable for `after_s` or longer (automatic replacement; `after_s` 0: off)."""
    if after_s <= 0:
        return []
    return sorted(n for n, since in down_since.items() if now - since >= after_s)


def settle(
    membership: Membership, new_scl: int, old_scl: int | None, durable_point: int, writer_epoch: int
) -> Membership | None:
    """The next membership of a change in progress, or None while it must wait.

    It completes once the new node is complete to `durable_point` (the volume's durable
    point when the change began: everything acknowledged before it), and reverts if the old
    node is back and complete to it first (`old_scl` None: the old node is unreachable).
    """
    if membership.change is None:
        return None
    if new_scl >= durable_point:
        return membership.complete(writer_epoch)
    if old_scl is not None and old_scl >= durable_point:
        return membership.revert(writer_epoch)
    return None


# -- the rules, checked once over every subset of seven nodes (the most a change involves) -----


def _subsets(nodes: tuple[str, ...]) -> list[frozenset[str]]:
    return [frozenset(c) for k in range(len(nodes) + 1) for c in itertools.combinations(nodes, k)]


def _check_rules() -> None:
    stable = Membership.initial()
    moving = stable.begin(POSITIONS[-1], "spare", 1)
    done = moving.complete(1)
    subsets = _subsets(tuple(sorted(moving.nodes)))
    writes = [s for s in subsets if moving.is_write_quorum(s)]
    for view in (stable, done, moving):
        reads = [s for s in subsets if view.is_read_quorum(s)]
        other_writes = [s for s in subsets if view.is_write_quorum(s)]
        assert all(w & r for w in writes for r in reads), "a read must see the latest write"
        assert all(w & o for w in writes for o in other_writes), "two writes must overlap"
    # Losing any AZ leaves a transitional write quorum when the spare sits in the AZ of the
    # position it fills (issue 14: a spare in another AZ would break AZ+1).
    az_of = {n: moving.az_of(n) for n in moving.nodes}
    for az in set(NODE_AZ.values()):
        left = {n for n in moving.nodes if az_of[n] != az}
        assert moving.is_write_quorum(left), "losing an AZ must leave writes"
        # ... and losing one more node as well (AZ+1) must leave reads.
        assert all(moving.is_read_quorum(left - {n}) for n in left), "AZ+1 must leave reads"


_check_rules()
