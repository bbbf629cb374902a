"""The membership core (sixfold/core/membership.py, issue 14): transitional quorums against
every read and write quorum of the old and new sets, and the refusals of a replacement."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.clients import NodeDownError
from sixfold.core.errors import InvalidRequestError, MembershipError, SixfoldError, StaleEpochError
from sixfold.core.membership import (
    POSITIONS,
    Membership,
    Spare,
    membership_is_news,
    newest_membership,
    plan_replacement,
    settle,
)
from sixfold.core.node_requests import Seal, SetMembership
from sixfold.core.quorum import NODE_AZ, READ_QUORUM, WRITE_QUORUM
from sixfold.core.recovery import SegmentReport
from sixfold.core.replacement import Begin, Begun, Settle, SwitchMembership

EXAMPLES_MAX = 300


def _moving(position: str) -> Membership:
    return Membership.initial().begin(position, "spare", 1)


def _naive_write_quorums(members: frozenset[str]) -> list[frozenset[str]]:
    """Every set of WRITE_QUORUM or more members: written out, not computed by the rule."""
    nodes = sorted(members)
    return [
        frozenset(c)
        for k in range(WRITE_QUORUM, len(nodes) + 1)
        for c in itertools.combinations(nodes, k)
    ]


def _naive_read_quorums(members: frozenset[str]) -> list[frozenset[str]]:
    nodes = sorted(members)
    return [frozenset(c) for c in itertools.combinations(nodes, READ_QUORUM)]


@settings(max_examples=EXAMPLES_MAX)
@given(st.sampled_from(POSITIONS), st.sets(st.sampled_from([*POSITIONS, "spare"])))
def test_a_transitional_write_meets_every_read_of_both_sets(position: str, acked: set[str]):
    moving = _moving(position)
    if not moving.is_write_quorum(acked):
        return
    for members in (moving.old_set, moving.new_set):
        for read in _naive_read_quorums(members):
            assert read & acked, (position, sorted(acked), sorted(read))
        for write in _naive_write_quorums(members):
            assert write & acked  # a writer at either stable membership cannot also win


def test_the_transitional_write_quorum_is_both_sets_quorums() -> None:
    moving = _moving("c2")
    assert moving.is_write_quorum({"a1", "a2", "b1", "b2"})  # 4 of both sets
    assert not moving.is_write_quorum({"a1", "a2", "b1", "c2"})  # 4 of the old, 3 of the new
    assert moving.is_write_quorum({"a1", "a2", "b1", "c2", "spare"})
    assert moving.is_read_quorum({"c1", "spare", "a1"})  # 3 of the new set
    assert not moving.is_read_quorum({"c2", "spare"})


def test_the_vcl_of_a_change_is_what_both_sets_have() -> None:
    moving = _moving("c2")
    scls = {"a1": 10, "a2": 10, "b1": 10, "b2": 4, "c1": 4, "c2": 10, "spare": 0}
    assert moving.write_quorum_lsn(scls) == 4  # the new set has 10 on three nodes only
    scls["spare"] = 10
    assert moving.write_quorum_lsn(scls) == 10


def test_a_change_completes_or_reverts_each_at_a_new_epoch() -> None:
    stable = Membership.initial()
    moving = stable.begin("b2", "b3", 2)
    assert moving.epoch == stable.epoch + 1 and moving.nodes == stable.nodes | {"b3"}
    assert settle(moving, new_scl=40, old_scl=None, durable_point=50, writer_epoch=2) is None
    done = settle(moving, new_scl=50, old_scl=None, durable_point=50, writer_epoch=2)
    assert done is not None and done.epoch == moving.epoch + 1 and done.change is None
    assert done.holders[POSITIONS.index("b2")] == "b3" and done.position_of("b3") == "b2"
    back = settle(
        moving, new_scl=10, old_scl=55, durable_point=50, writer_epoch=2
    )  # b2 returned first
    assert back is not None and back.holders == stable.holders and back.epoch == moving.epoch + 1


def test_replacements_are_refused_with_nothing_changed() -> None:
    stable = Membership.initial()
    spare = Spare("a3", "a")
    with pytest.raises(MembershipError, match="in AZ b, but position a2 is in AZ a"):
        plan_replacement(stable, "a2", Spare("b3", "b"), "vol-1", old_in_sync=False, writer_epoch=2)
    with pytest.raises(MembershipError, match="holds data of another volume"):
        plan_replacement(
            stable, "a2", Spare("a3", "a", "vol-2"), "vol-1", old_in_sync=False, writer_epoch=2
        )
    with pytest.raises(MembershipError, match=r"alive and in sync.*--force"):
        plan_replacement(stable, "a2", spare, "vol-1", old_in_sync=True, writer_epoch=2)
    moving = plan_replacement(
        stable, "a2", spare, "vol-1", old_in_sync=True, writer_epoch=2, force=True
    )
    with pytest.raises(MembershipError, match="a membership change is in progress"):
        plan_replacement(moving, "b1", Spare("b3", "b"), "vol-1", old_in_sync=False, writer_epoch=2)
    with pytest.raises(MembershipError, match="holds no position"):
        plan_replacement(stable, "z9", spare, "vol-1", old_in_sync=False, writer_epoch=2)
    with pytest.raises(MembershipError, match="already holds position"):
        stable.begin("a2", "b1", 2)
    with pytest.raises(MembershipError, match="no membership change is in progress"):
        stable.complete(2)
    ok = plan_replacement(
        stable, "a2", Spare("a3", "a", "vol-1"), "vol-1", old_in_sync=False, writer_epoch=2
    )
    assert ok.change is not None and ok.az_of("a3") == NODE_AZ["a2"]


def test_losing_an_az_mid_change_leaves_writes_and_az_plus_one_leaves_reads() -> None:
    for position in POSITIONS:
        moving = _moving(position)
        for az in {NODE_AZ[p] for p in POSITIONS}:
            left = {n for n in moving.nodes if moving.az_of(n) != az}
            assert moving.is_write_quorum(left)
            assert all(moving.is_read_quorum(left - {n}) for n in left)


# -- the core's quorum decisions go by the membership ------------------------------------------


def test_a_transitional_vcl_needs_a_write_quorum_of_both_sets() -> None:
    from sixfold.core.durability import VolumeDurability

    moving = _moving("c2")  # c2 -> spare
    nodes = sorted(moving.nodes)
    dur = VolumeDurability(nodes, 0, {}, moving)
    dur.note_cpl(10)
    for node in ("a1", "a2", "b1", "c2"):  # 4 of the old set, only 3 of the new
        dur.on_scl(node, 10)
    assert dur.vcl == 0 and dur.vdl == 0
    assert dur.on_scl("spare", 10) == 10  # now 4 of the new set too


def test_a_transitional_recovery_needs_a_write_quorum_of_both_sets() -> None:
    from sixfold.core.errors import QuorumUnavailableError
    from sixfold.core.recovery import SegmentReport
    from sixfold.core.recovery_machine import Recovery

    moving = _moving("c2")
    recovery = Recovery(sorted(moving.nodes), "w", 10, membership=moving)
    steps = recovery.run()
    asked = steps.send(None)
    answers = {
        n: SegmentReport(n, 1, 0, 0, 0, ()) if n in ("a1", "a2", "b1", "c2") else OSError(n)
        for n in asked
    }
    with pytest.raises(QuorumUnavailableError):
        steps.send(answers)  # 4 of the old set answered, 3 of the new


def _transitional_log(moving: Membership):
    """A fresh writer's commit log shipping by `moving` (no commit yet)."""
    from sixfold.core.commit_log import CommitLog, WriterLimits
    from sixfold.core.durability import VolumeDurability

    nodes = sorted(moving.nodes)
    return CommitLog(
        nodes,
        epoch=1,
        vdl=0,
        next_lsn=1,
        node_scls={},
        truncations=(),
        limits=WriterLimits(),
        durability=VolumeDurability(nodes, 0, {}, moving),
    )


def test_a_transitional_commit_log_waits_for_both_sets_to_be_reachable() -> None:
    log = _transitional_log(_moving("c2"))
    assert log.quorum_live()
    for node in ("b2", "c1", "spare"):  # the old set keeps 4 (a1 a2 b1 c2), the new 3
        log.shippers[node].stale = True
    log._recount_live()
    assert not log.quorum_live() and not log.has_room(1)


def test_a_completed_change_makes_durable_what_the_new_set_already_holds() -> None:
    from sixfold.core.commit_log import PageWrite

    moving = _moving("c2")
    log = _transitional_log(moving)
    log.append([PageWrite(1, ((0, b"x"),))], {1: 0}, 0.0, "token")
    for node in ("a1", "a2", "b1", "spare"):  # 3 of the old set, 4 of the new
        log.on_scl(node, 1)
    assert log.vdl == 0 and len(log.waiters) == 1
    joined, left, acked = log.change_membership(moving.complete(2))
    assert (joined, left) == ([], ["c2"])
    assert log.vdl == 1 and acked.vdl_advanced and [w.lsn for w in acked.released] == [1]


# -- the writer's machines (sixfold/core/replacement.py), driven by hand ---------------------------


def _report(name: str, scl: int = 0, epoch: int = 0, **more: object) -> SegmentReport:
    return SegmentReport(name, epoch, scl, 0, scl, (), **more)  # type: ignore[arg-type]


def _run(machine, answer):  # type: ignore[no-untyped-def]
    """Drive a machine: each request answered by `answer(node, request)`; a switch returns
    the VDL 100. Returns (its result, the memberships switched to)."""
    switched, sent = [], None
    try:
        while True:
            step = machine.send(sent)
            if isinstance(step, SwitchMembership):
                switched.append(step.membership)
                sent = 100
            else:
                sent = {n: answer(n, r) for n, r in step.items()}
    except StopIteration as done:
        return done.value, switched


def test_begin_stores_the_transitional_membership_on_a_quorum_then_ships_by_it() -> None:
    stored: set[str] = set()

    def answer(node: str, request: object) -> object:
        if isinstance(request, SetMembership):
            stored.add(node)
        return _report(node, scl=0 if node == "c3" else 90)

    begin = Begin(Membership.initial(), 2, 90, "c2", "c3", force=True)
    begun, switched = _run(begin.run(), answer)
    assert begun == Begun(switched[0], 100) and switched[0].change is not None
    assert stored == {"a1", "a2", "b1", "b2", "c1", "c2", "c3"}


def test_begin_refuses_a_spare_with_data_and_a_store_short_of_a_quorum() -> None:
    with pytest.raises(MembershipError, match="spare c3 already holds data"):
        _run(Begin(Membership.initial(), 2, 90, "c2", "c3", True).run(), lambda n, r: _report(n, 5))

    def three_store(node: str, request: object) -> object:
        if isinstance(request, SetMembership) and node not in ("a1", "a2", "c3"):
            return NodeDownError(f"{node} is down")
        return _report(node, scl=0 if node == "c3" else 90)

    with pytest.raises(MembershipError, match="needs 4 of"):
        _run(Begin(Membership.initial(), 2, 90, "c2", "c3", True).run(), three_store)


def test_settle_keeps_its_outcome_across_rounds() -> None:
    moving = Membership.initial().begin("c2", "c3", 2)
    settling = Settle(durable_point=50, revertible=True, choices={})
    fail_store = {"yes": True}

    def answer(node: str, request: object) -> object:
        if isinstance(request, SetMembership) and fail_store["yes"]:
            return NodeDownError(f"{node} is down")
        return _report(node, scl={"c3": 10, "c2": 60}.get(node, 60))

    with pytest.raises(MembershipError):  # the old node is back first: revert, not stored
        _run(settling.round(moving, 2), answer)
    fail_store["yes"] = False
    answer_new = lambda n, r: _report(n, scl=80)  # noqa: E731  now the new node is complete too
    done, switched = _run(settling.round(moving, 2), answer_new)
    assert done and switched == [moving.revert(2)]  # the chosen outcome, not a completion


def test_a_second_settle_keeps_the_outcome_the_first_chose() -> None:
    """A writer may start settling a change again (an adoption from the nodes, a recovery
    carrying it on) while its first settle's stores are still on their way: the second must
    store the outcome the first chose, never the other one at the same epoch (the simulator
    found two outcomes at one membership epoch on different nodes so)."""
    moving = Membership.initial().begin("c2", "c3", 2)
    choices: dict[tuple[int, int], Membership] = {}

    def old_back_first(node: str, request: object) -> object:
        if isinstance(request, SetMembership):
            return NodeDownError(f"{node}: deadline exceeded")  # it may land later, though
        return _report(node, scl={"c3": 10, "c2": 60}.get(node, 60))

    with pytest.raises(MembershipError):  # revert chosen, its store not confirmed
        _run(Settle(50, True, choices).round(moving, 2), old_back_first)
    now_new_complete = lambda n, r: _report(n, scl=80)  # noqa: E731
    done, switched = _run(Settle(50, True, choices).round(moving, 2), now_new_complete)
    assert done and switched == [moving.revert(2)]


def test_two_settles_running_at_once_store_one_outcome() -> None:
    """An adoption's settle and the operator's run side by side: the one that chooses while
    the other waits for its answers decides for both (seed 80 of the simulator stored the
    revert on five nodes and the completion on one, at one membership epoch)."""
    moving = Membership.initial().begin("c2", "c3", 2)
    choices: dict[tuple[int, int], Membership] = {}
    first = Settle(50, True, choices).round(moving, 2)
    asked = first.send(None)  # waits for the new and old nodes' SCLs
    assert set(asked) == {"c2", "c3"}
    now_new_complete = lambda n, r: _report(n, scl=80)  # noqa: E731
    done, switched = _run(Settle(50, True, choices).round(moving, 2), now_new_complete)
    assert done and switched == [moving.complete(2)]
    stores = first.send({"c3": _report("c3", scl=10), "c2": _report("c2", scl=60)})
    assert {r.membership for r in stores.values()} == {moving.complete(2)}  # not a revert


class _Volume:
    """Each node's stored membership and sealed volume epoch, refusing as a node does."""

    def __init__(self, membership: Membership, sealed: dict[str, int]) -> None:
        self.held = {n: membership for n in membership.nodes}
        self.sealed = sealed

    def answer(self, node: str, request: object) -> object:
        if isinstance(request, SetMembership):
            try:
                if membership_is_news(
                    self.held[node], request.membership, request.volume_epoch, self.sealed[node]
                ):
                    self.held[node] = request.membership
            except SixfoldError as exc:
                return exc
        return _report(node, scl=80, membership=self.held[node])


def test_a_deposed_writers_outcome_on_one_node_never_rivals_its_successors() -> None:
    """The writer of volume epoch 2 chose to revert a change, and its store reached only a1
    (the others were sealed at 3 by then). Its successor, finding the change at recovery,
    must not settle at the same membership epoch: a later recovery that hears from a1 would
    take either outcome as the newest. It stores the change again one epoch on first."""
    moving = Membership.initial().begin("c2", "c3", 2)
    volume = _Volume(moving, sealed={n: 3 for n in moving.nodes} | {"a1": 2})
    old_back = lambda n, r: _report(n, scl={"c3": 10}.get(n, 60))  # noqa: E731
    deposed = Settle(50, True, {}).round(moving, 2)
    asked = deposed.send(None)
    stores = deposed.send({n: old_back(n, r) for n, r in asked.items()})
    assert {r.membership for r in stores.values()} == {moving.revert(2)}
    with pytest.raises(MembershipError, match="reached only a1"):
        deposed.send({n: volume.answer(n, r) for n, r in stores.items()})

    successor = Settle(60, True, {})
    membership, rounds = moving, []
    for _ in range(3):
        done, switched = _run(successor.round(membership, 3), volume.answer)
        rounds.append(done)
        membership = switched[-1] if switched else membership
        if done:
            break
    assert rounds == [False, True] and membership == moving.renewed(3).complete(3)
    later = newest_membership(volume.held[n] for n in ("a1", "a2", "b1", "b2"))
    assert later == membership  # not a1's revert


def test_memberships_at_one_epoch_are_ordered_by_the_writer_that_made_them() -> None:
    """Two writers can each make a membership at one epoch (a deposed writer's outcome on a
    node its successor had not sealed). The newer writer's wins, on a node and by gossip."""
    moving = Membership(3, POSITIONS, None, 2).begin("b2", "b3", 2)  # epoch 4, writer 2
    rival = Membership(3, POSITIONS, None, 2).restamped(3)  # epoch 4, writer 3
    assert rival.is_newer_than(moving) and not moving.is_newer_than(rival)
    assert newest_membership([moving, rival, None]) == rival
    assert membership_is_news(moving, rival, 0, 3)  # gossip brings the newer writer's
    with pytest.raises(InvalidRequestError, match="names other holders"):
        membership_is_news(rival, moving, 0, 3)  # ... never the older one back
    with pytest.raises(InvalidRequestError, match="made by the writer of volume epoch 3"):
        membership_is_news(moving, rival, 4, 4)  # a writer storing another's as its own


class _Node:
    """A node as recovery sees it: its sealed volume epoch and stored membership."""

    def __init__(self, name: str, epoch: int, membership: Membership) -> None:
        self.name, self.epoch, self.membership = name, epoch, membership

    def answer(self, request: object) -> object:
        if isinstance(request, Seal):
            if request.epoch <= self.epoch:
                return StaleEpochError(request.epoch, self.epoch, "seal")
            self.epoch = request.epoch
        elif isinstance(request, SetMembership):
            try:
                if membership_is_news(
                    self.membership, request.membership, request.volume_epoch, self.epoch
                ):
                    self.membership = request.membership
            except SixfoldError as exc:
                return exc
        return SegmentReport(self.name, self.epoch, 0, 0, 0, (), membership=self.membership)


def _recover(nodes: dict[str, _Node], down: set[str]) -> Membership:
    """Writer recovery (the shipping machine) over `nodes`, those in `down` unreachable."""
    from sixfold.core.recovery_machine import Recovery

    steps, sent = Recovery(sorted(nodes), "w", 10).run(), None
    try:
        while True:
            asked = steps.send(sent)
            sent = {
                n: NodeDownError(n) if n in down else nodes[n].answer(r) for n, r in asked.items()
            }
    except StopIteration as done:
        return done.value.membership


def test_a_recovery_stores_the_membership_again_so_a_rival_left_on_one_node_is_replaced() -> None:
    """Simulator seed 1178, before the fix: writer 2, deposed, reverted a change (b2 to b3)
    at membership epoch 4 on a1 alone, and gossip copied it to every node but c2; writer 3
    renewed the change at epoch 4 on c2 alone, and crashed. Writer 4, not hearing from c2,
    took the revert as the volume's membership and stored nothing, and c2 kept b3 in its
    membership (so never collected its log) while refusing the others' epoch 4 as a rival.
    Now writer 4 stores its membership again at epoch 5, which c2 takes once it is back."""
    in_force = Membership(3, POSITIONS, None, 2).begin("b2", "b3", 2)  # epoch 4, writer 2
    in_force = Membership(3, POSITIONS, in_force.change, 3)  # the change, renewed by writer 3
    revert, renewal = in_force.revert(2), in_force.renewed(3)  # both at epoch 4
    nodes = {n: _Node(n, 3, revert) for n in ("a1", "a2", "b1", "b2", "c1")}
    nodes["c2"] = _Node("c2", 3, renewal)
    nodes["b3"] = _Node("b3", 3, in_force)
    recovered = _recover(nodes, down={"c2"})
    assert recovered == revert.restamped(4) and recovered.epoch == 5
    assert all(nodes[n].membership == recovered for n in ("a1", "a2", "b1", "b2", "c1"))
    assert membership_is_news(nodes["c2"].membership, recovered, 0, 3)  # gossip, once back
