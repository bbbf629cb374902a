"""Unit and property tests of the pure core: quorums, completeness, durability, recovery, records.

Each property is checked against a naive model written for clarity, not speed (the way
etcd-io/raft checks quorum/majority.go against a naive version in quorum/quick_test.go).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sixfold.core.allocation import LsnAllocator
from sixfold.core.completeness import SegmentCompleteness
from sixfold.core.drain import DrainHolds
from sixfold.core.durability import VolumeDurability
from sixfold.core.errors import (
    CorruptRecordError,
    EpochAheadError,
    NotServingError,
    StaleEpochError,
)
from sixfold.core.page import EMPTY_PAGE, apply_records
from sixfold.core.quorum import (
    AZS,
    COPIES,
    NODE_AZ,
    NODE_NAMES,
    READ_QUORUM,
    WRITE_QUORUM,
    nodes_in_az,
    quorum_lsn,
)
from sixfold.core.read_point import ReadPointTable
from sixfold.core.record import (
    HEADER_BYTES,
    PAGE_SIZE_BYTES,
    Delta,
    RecordFlags,
    decode_deltas,
    decode_record,
    encode_deltas,
    encode_record,
)
from sixfold.core.recovery import (
    RecoveryPlan,
    SegmentReport,
    newest_truncations,
    next_epoch,
    plan_recovery,
)
from sixfold.core.segment import SegmentState
from sixfold.core.truncation import TruncationRange, is_cancelled, merge

EXAMPLES_MAX = 300  # hypothesis examples per property: enough to matter, fast in CI

lsns = st.integers(min_value=0, max_value=50)

# -- quorum arithmetic (P17 §2) -----------------------------------------------------------------


def test_quorum_rules() -> None:
    assert (COPIES, WRITE_QUORUM, READ_QUORUM) == (6, 4, 3)
    assert READ_QUORUM + WRITE_QUORUM > COPIES  # a read quorum sees the latest write
    assert 2 * WRITE_QUORUM > COPIES  # two write quorums overlap: one writer wins
    for az in AZS:
        survivors = [n for n in NODE_NAMES if NODE_AZ[n] != az]
        assert len(survivors) >= WRITE_QUORUM  # lose an AZ: writes go on
        assert len(survivors) - 1 >= READ_QUORUM  # lose an AZ + 1: reads go on
        assert len(nodes_in_az(az)) == 2
    with pytest.raises(ValueError, match="unknown availability zone"):
        nodes_in_az("d")


def naive_quorum_lsn(points: list[int], quorum: int) -> int:
    """The highest candidate LSN that at least `quorum` points have reached."""
    best = 0
    for candidate in [0, *points]:
        if sum(1 for p in points if p >= candidate) >= quorum:
            best = max(best, candidate)
    return best if len(points) >= quorum else 0


@settings(max_examples=EXAMPLES_MAX * 3)
@given(st.lists(lsns, max_size=COPIES), st.integers(min_value=1, max_value=COPIES))
def test_quorum_lsn_matches_naive(points: list[int], quorum: int) -> None:
    assert quorum_lsn(points, quorum) == naive_quorum_lsn(points, quorum)


@settings(max_examples=EXAMPLES_MAX)
@given(st.lists(lsns, min_size=COPIES, max_size=COPIES))
def test_write_quorum_points_are_seen_by_every_read_quorum(points: list[int]) -> None:
    """What 4 nodes reached, every 3 nodes include one that reached it (4 + 3 > 6)."""
    vcl = quorum_lsn(points, WRITE_QUORUM)
    for trio in itertools.combinations(points, READ_QUORUM):
        assert max(trio) >= vcl


# -- segment completeness (P17 §4.1) ------------------------------------------------------------


@st.composite
def chains(draw: st.DrawFn) -> list[tuple[int, int, bool]]:
    """A volume's records (lsn, prev_volume_lsn, is_cpl): LSNs ascending, with gaps."""
    steps = draw(st.lists(st.integers(min_value=1, max_value=3), min_size=1, max_size=25))
    out, prev = [], 0
    for step in steps:
        lsn = prev + step
        out.append((lsn, prev, draw(st.booleans())))
        prev = lsn
    return out


def naive_scl(chain: list[tuple[int, int, bool]], present: set[int]) -> tuple[int, int]:
    """(SCL, highest CPL at or below it): walk the chain while every record is present."""
    scl = cpl = 0
    for lsn, _, is_cpl in chain:
        if lsn not in present:
            break
        scl = lsn
        cpl = lsn if is_cpl else cpl
    return scl, cpl


@settings(max_examples=EXAMPLES_MAX)
@given(chains(), st.data())
def test_scl_with_holes_duplicates_and_any_order(chain, data) -> None:
    arrivals = data.draw(st.permutations(chain + data.draw(st.lists(st.sampled_from(chain)))))
    comp = SegmentCompleteness()
    present: set[int] = set()
    for lsn, prev, is_cpl in arrivals:
        comp.add(lsn, prev, is_cpl)
        present.add(lsn)
        assert (comp.scl, comp.cpl_at_scl) == naive_scl(chain, present)
        assert comp.highest_lsn == max(present)
        assert comp.has_hole() == (comp.scl < max(present))
    assert comp.scl == chain[-1][0] and not comp.pending


def test_first_hole_names_the_missing_range() -> None:
    comp = SegmentCompleteness()
    comp.add(1, 0, True)
    comp.add(4, 3, False)
    comp.add(6, 4, True)
    assert comp.first_hole() == (1, 4)  # records 2 and 3 are missing
    comp.add(3, 2, False)
    comp.add(2, 1, False)
    assert comp.first_hole() is None and (comp.scl, comp.cpl_at_scl) == (6, 6)


def test_truncate_cancels_above_the_range_start_and_resumes_from_it() -> None:
    comp = SegmentCompleteness()
    for lsn in range(1, 11):
        comp.add(lsn, lsn - 1, lsn in (5, 10))
    comp.add(13, 12, True)  # pending above a hole, inside the range
    comp.add(30, 12, True)  # back-link inside the range: also cancelled
    comp.truncate(TruncationRange(epoch=2, after_lsn=5, through_lsn=20))
    assert (comp.scl, comp.cpl_at_scl, comp.highest_lsn) == (5, 5, 5)
    assert not comp.pending
    comp.add(21, 5, True)  # the new writer's first record links back to the VDL
    assert (comp.scl, comp.cpl_at_scl) == (21, 21)


def test_truncate_below_the_scl_only_leaves_it() -> None:
    comp = SegmentCompleteness()
    comp.add(1, 0, True)
    comp.truncate(TruncationRange(epoch=2, after_lsn=4, through_lsn=10))
    assert (comp.scl, comp.highest_lsn) == (1, 1)


# -- truncation ranges ------------------------------------------------------------------------


def test_a_range_cancels_only_older_epochs_inside_it() -> None:
    rng = TruncationRange(epoch=3, after_lsn=10, through_lsn=20)
    assert rng.cancels(11, 2) and rng.cancels(20, 1)
    assert not rng.cancels(10, 2) and not rng.cancels(21, 2)
    assert not rng.cancels(15, 3)  # the truncating writer's own records are not cancelled
    assert is_cancelled([rng], 15, 2) and not is_cancelled([], 15, 2)
    assert merge([rng], [rng], ()) == (rng,)
    with pytest.raises(AssertionError):
        TruncationRange(epoch=1, after_lsn=5, through_lsn=4)


# -- the segment core: epochs and admission (P18 §2.4) ------------------------------------------


def _record(lsn: int, prev: int, epoch: int = 1, cpl: bool = True, page_no: int = 0):
    return encode_record(
        lsn=lsn,
        prev_volume_lsn=prev,
        prev_page_lsn=0,
        page_no=page_no,
        epoch=epoch,
        flags=RecordFlags.CPL if cpl else RecordFlags(0),
        payload=encode_deltas([Delta(0, lsn.to_bytes(4, "little"))]),
    )


def test_segment_epochs_fence_older_writers() -> None:
    seg = SegmentState("a1")
    seg.seal(1, "w1")
    seg.seal(1, "w1")  # idempotent for its owner
    with pytest.raises(StaleEpochError):
        seg.seal(1, "w2")  # the same epoch cannot be won twice
    seg.truncate(1, (), 1)
    seg.check_current(1, "append")
    with pytest.raises(EpochAheadError):
        seg.check_current(2, "append")
    seg.seal(2, "w2")
    with pytest.raises(StaleEpochError):
        seg.check_current(1, "append")
    with pytest.raises(StaleEpochError):
        seg.check_truncate(1)


def test_segment_truncation_refuses_cancelled_records_and_lowers_vdl() -> None:
    seg = SegmentState("a1")
    seg.seal(1, "w1")
    seg.on_durable([_record(1, 0), _record(2, 1), _record(3, 2)])
    seg.learn_vdl(1, 3)
    fresh = seg.truncate(2, (TruncationRange(2, 2, 30),), 2)
    assert fresh and seg.epoch == 2 and seg.scl == 2 and seg.vdl == 2
    assert seg.truncations_version == 2 and seg.epoch_owner == ""
    assert not seg.admits(_record(3, 2, epoch=1))  # cancelled: never comes back
    assert not seg.admits(_record(31, 2, epoch=3))  # from a future epoch
    assert seg.admits(_record(31, 2, epoch=2))
    assert seg.truncate(2, (TruncationRange(2, 2, 30),), 2) == []  # idempotent
    with pytest.raises(AssertionError, match="written by a recovery"):
        seg.truncate(2, (), 3)  # a set is never newer than the epoch that carries it


def test_truncation_sets_are_replaced_only_by_a_newer_version() -> None:
    seg = SegmentState("a1")
    seg.seal(2, "w2")
    seg.on_durable([_record(lsn, lsn - 1) for lsn in range(1, 7)])
    first = (TruncationRange(2, 4, 10),)
    assert seg.new_truncations(first, 2) == list(first)
    assert seg.truncate(2, first, 2) == list(first)
    assert (seg.truncations, seg.truncations_version, seg.scl) == (first, 2, 4)
    # An older or an equal version is ignored, whatever it holds: nothing merged in.
    older = (TruncationRange(1, 2, 9),)
    assert seg.new_truncations(older, 1) == [] and seg.truncate(2, older, 1) == []
    other = (TruncationRange(2, 1, 9),)
    assert seg.new_truncations(other, 2) == [] and seg.truncate(2, other, 2) == []
    assert (seg.truncations, seg.truncations_version, seg.scl) == (first, 2, 4)
    # An older set may still carry a newer epoch: the epoch is adopted, the set is not.
    assert seg.truncate(3, older, 1) == []
    assert (seg.epoch, seg.truncations, seg.truncations_version) == (3, first, 2)
    # A newer set replaces ours; the range it drops cancels nothing any more.
    newer = (TruncationRange(3, 6, 16),)
    assert seg.new_truncations(newer, 3) == list(newer)
    assert seg.truncate(3, newer, 3) == list(newer)
    assert (seg.truncations, seg.truncations_version, seg.epoch) == (newer, 3, 3)
    assert not seg.cancels(_record(5, 4)) and seg.admits(_record(5, 4))  # may come back
    assert seg.cancels(_record(7, 6)) and not seg.admits(_record(7, 6))
    seg.on_durable([_record(5, 4), _record(6, 5)])
    assert seg.scl == 6
    # A set that keeps our ranges newly cancels only what it adds.
    newest = merge(newer, [TruncationRange(4, 6, 20)])
    assert seg.truncate(4, newest, 4) == [TruncationRange(4, 6, 20)]
    assert (seg.truncations, seg.truncations_version) == (newest, 4)
    with pytest.raises(StaleEpochError):
        seg.truncate(3, newest, 3)


def test_an_append_needs_its_epochs_truncation_set() -> None:
    seg = SegmentState("a1")
    seg.seal(2, "w2")  # sealed, but the recovery has not written its set here yet
    with pytest.raises(EpochAheadError, match="truncations of epoch 0"):
        seg.check_current(2, "append")
    prior = (TruncationRange(1, 0, 5),)
    seg.truncate(2, prior, 1)  # recovery's sync pushes the newest older set first
    with pytest.raises(EpochAheadError, match="truncations of epoch 1"):
        seg.check_current(2, "append")
    seg.truncate(2, merge(prior, [TruncationRange(2, 0, 10)]), 2)  # the epoch's own set
    seg.check_current(2, "append")
    with pytest.raises(StaleEpochError):
        seg.check_current(1, "append")
    with pytest.raises(EpochAheadError):
        seg.check_current(3, "append")


def test_reads_need_the_truncation_set_of_the_readers_epoch() -> None:
    seg = SegmentState("a1")
    seg.seal(3, "w3")
    seg.on_durable([_record(1, 0)])
    with pytest.raises(NotServingError, match="syncing"):
        seg.check_covers(1, 0)  # not yet heard from enough peers
    seg.heard_from("b1")
    seg.heard_from("c1")
    epoch2 = (TruncationRange(2, 1, 9),)
    seg.truncate(3, epoch2, 2)  # the node has epoch 3, but only epoch 2's truncations
    with pytest.raises(NotServingError, match="not yet those of the reader's epoch 3"):
        seg.check_covers(1, 3)
    seg.check_covers(1, 2)
    seg.truncate(3, merge(epoch2, [TruncationRange(3, 1, 12)]), 3)
    seg.check_covers(1, 3)
    with pytest.raises(NotServingError, match="complete only to LSN 1"):
        seg.check_covers(2, 3)


def test_page_reads_below_the_gc_horizon_are_refused() -> None:
    seg = SegmentState("a1")
    seg.truncate(1, (), 1)
    seg.on_durable([_record(lsn, lsn - 1) for lsn in range(1, 6)])
    seg.heard_from("b1")
    seg.heard_from("c1")
    seg.check_page_at(3, 1, gc_horizon=3)
    with pytest.raises(NotServingError, match="collected garbage up to LSN 4"):
        seg.check_page_at(3, 1, gc_horizon=4)
    with pytest.raises(NotServingError, match="complete only to LSN 5"):
        seg.check_page_at(6, 1, gc_horizon=0)


def test_a_repeated_truncation_is_no_news() -> None:
    seg = SegmentState("a1")
    seg.seal(2, "w2")
    assert seg.truncation_is_news(3, 0)  # a newer epoch
    assert seg.truncation_is_news(2, 2) and not seg.truncation_is_news(2, 0)
    seg.truncate(2, (TruncationRange(2, 4, 9),), 2)
    assert not seg.truncation_is_news(2, 2)
    with pytest.raises(StaleEpochError):
        seg.truncation_is_news(1, 1)


def test_read_points_hold_gc_until_they_expire() -> None:
    table = ReadPointTable(ttl=10.0, readers_max=2)
    table.note("r1", 30, now=0.0, gc_horizon=0)
    table.note("r2", 50, now=5.0, gc_horizon=0)
    table.note("r3", 20, now=5.0, gc_horizon=0)  # beyond readers_max: not remembered
    assert table.lowest(now=6.0, vdl=100) == 30
    assert table.lowest(now=6.0, vdl=25) == 25  # never above the learned VDL
    assert table.lowest(now=12.0, vdl=100) == 50  # r1 stopped reporting
    table.note("r2", 40, now=13.0, gc_horizon=45)  # too late: nothing kept for it
    assert table.lowest(now=13.0, vdl=100) == 100


def test_an_agent_asks_its_read_point_kept_longer_within_the_bound() -> None:
    table = ReadPointTable(ttl=10.0, hold_max=600.0)
    table.note("agent", 30, now=0.0, gc_horizon=0, hold=300.0)
    table.note("r1", 50, now=0.0, gc_horizon=0, hold=1.0)  # never less than the TTL
    table.note("greedy", 40, now=0.0, gc_horizon=0, hold=1e9)  # never more than hold_max
    assert table.lowest(now=9.0, vdl=100) == 30
    assert set(table.points) == {"agent", "r1", "greedy"}
    assert table.lowest(now=11.0, vdl=100) == 30 and "r1" not in table.points
    assert table.lowest(now=301.0, vdl=100) == 40  # the agent's hold is up
    assert table.lowest(now=601.0, vdl=100) == 100


def test_a_failed_drain_releases_only_its_own_hold() -> None:
    holds = DrainHolds(drains_max=2)
    first, second = holds.hold(now=0.0, hold=10.0), holds.hold(now=1.0, hold=10.0)
    assert first is not None and second is not None and holds.refusing(5.0)
    assert holds.hold(now=2.0, hold=10.0) is None  # drains_max at once
    holds.release(first)
    assert holds.refusing(5.0)  # the second drain still holds the writer
    assert not holds.refusing(11.0)  # until its own time is up
    holds.release(second)
    assert not holds.refusing(5.0) and holds.hold(now=5.0, hold=1.0) is not None


def test_serving_gate_needs_a_read_quorum_with_itself() -> None:
    seg = SegmentState("a1")
    assert not seg.serving
    seg.heard_from("b1")
    seg.heard_from("b1")
    assert not seg.serving
    seg.heard_from("c1")
    assert seg.serving and 1 + len(seg.peers_heard) >= READ_QUORUM


# -- volume durability (P17 §4.1) ---------------------------------------------------------------


@settings(max_examples=EXAMPLES_MAX)
@given(
    st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=12),
    st.lists(st.tuples(st.sampled_from(NODE_NAMES), lsns), max_size=40),
)
def test_vdl_is_the_highest_cpl_at_or_below_vcl(cpl_steps: list[int], acks) -> None:
    cpls = list(itertools.accumulate(cpl_steps))
    dur = VolumeDurability(NODE_NAMES, 0, {})
    for cpl in cpls:
        dur.note_cpl(cpl)
    highest = dict.fromkeys(NODE_NAMES, 0)  # acks may arrive out of order: keep the highest
    for node, scl in acks:
        vdl = dur.on_scl(node, scl)
        highest[node] = max(highest[node], scl)
        vcl = naive_quorum_lsn(list(highest.values()), WRITE_QUORUM)
        assert dur.vcl == vcl and dur.node_scl == highest
        assert vdl == max([0, *(c for c in cpls if c <= vcl)])


def test_vdl_needs_four_nodes() -> None:
    dur = VolumeDurability(NODE_NAMES, 0, {})
    dur.note_cpl(5)
    for node in NODE_NAMES[:3]:
        assert dur.on_scl(node, 5) == 0
    assert dur.nodes_at_or_above(5) == 3
    assert dur.on_scl(NODE_NAMES[3], 5) == 5


def test_stale_scl_is_ignored() -> None:
    dur = VolumeDurability(NODE_NAMES, 0, {})
    dur.note_cpl(4)
    dur.note_cpl(9)
    for node in NODE_NAMES[:4]:
        dur.on_scl(node, 9)
    assert dur.vdl == 9
    assert dur.on_scl(NODE_NAMES[0], 3) == 9  # a late ack from an older append
    assert dur.node_scl[NODE_NAMES[0]] == 9 and dur.vcl == 9


def test_vdl_moves_only_to_cpls() -> None:
    dur = VolumeDurability(NODE_NAMES, 10, {n: 10 for n in NODE_NAMES})
    dur.note_cpl(14)
    for node in NODE_NAMES[:4]:
        dur.on_scl(node, 13)  # complete, but not to a consistency point
    assert dur.vdl == 10 and dur.vcl == 13
    with pytest.raises(AssertionError):
        dur.note_cpl(14)  # CPLs must ascend


# -- LSN allocation (P17 §4.2.1) ----------------------------------------------------------------


def test_allocation_stops_at_the_lal() -> None:
    alloc = LsnAllocator(last_lsn=0, epoch_base=0, lal=3)
    assert [alloc.allocate(0) for _ in range(3)] == [(1, 0), (2, 1), (3, 2)]
    assert alloc.available(0) == 0 and alloc.limit(0) == 3
    with pytest.raises(AssertionError, match="LAL"):
        alloc.allocate(0)
    assert alloc.available(2) == 2  # VDL advanced: room again
    assert alloc.allocate(2) == (4, 3) and alloc.last_allocated == 4


def test_allocation_after_recovery_starts_above_the_truncation() -> None:
    # Recovered VDL 10, truncation (10, 40]: LSNs restart at 41, linking back to 10.
    alloc = LsnAllocator(last_lsn=10, epoch_base=40, lal=5)
    assert alloc.limit(10) == 45 and alloc.available(10) == 5
    assert alloc.allocate(10) == (41, 10)
    assert alloc.allocate(10) == (42, 41)
    assert alloc.limit(40) == 45  # the limit counts from the epoch base until VDL passes it
    assert alloc.limit(42) == 47
    with pytest.raises(AssertionError):
        LsnAllocator(last_lsn=11, epoch_base=10, lal=5)


# -- recovery planning (P17 §4.3, P18 §2.4) -----------------------------------------------------


@st.composite
def crashed_volumes(draw: st.DrawFn):
    """A crashed writer's volume: a chain, what each node holds complete, the old LAL state."""
    chain = draw(chains())
    lal = draw(st.integers(min_value=1, max_value=20))
    # Each node is complete to some prefix of the chain (it may hold more above a hole).
    prefix = st.integers(min_value=0, max_value=len(chain))
    complete = {n: draw(prefix) for n in NODE_NAMES}
    extra = {n: draw(st.integers(min_value=0, max_value=lal)) for n in NODE_NAMES}
    return chain, lal, complete, extra


@settings(max_examples=EXAMPLES_MAX)
@given(crashed_volumes(), st.data())
def test_plan_recovery_keeps_every_acknowledged_commit(volume, data) -> None:
    chain, lal, complete, extra = volume
    states = {}
    for name in NODE_NAMES:
        comp = SegmentCompleteness()
        for lsn, prev, is_cpl in chain[: complete[name]]:
            comp.add(lsn, prev, is_cpl)
        states[name] = comp
    # The old writer acknowledged a CPL once 4 nodes were complete to it (its VDL).
    scls = [states[n].scl for n in NODE_NAMES]
    vcl = quorum_lsn(scls, WRITE_QUORUM)
    cpls = [lsn for lsn, _, is_cpl in chain if is_cpl]
    old_vdl = max([0, *(c for c in cpls if c <= vcl)])
    acked = [c for c in cpls if c <= old_vdl]
    # It may have allocated up to old_vdl + LAL; nodes may hold records that high.
    allocated_max = old_vdl + lal
    sealed = data.draw(
        st.lists(st.sampled_from(NODE_NAMES), min_size=WRITE_QUORUM, max_size=COPIES, unique=True)
    )
    prior = (TruncationRange(1, 0, 0),)
    reports = [
        SegmentReport(
            name=n,
            epoch=2,
            scl=states[n].scl,
            cpl_at_scl=states[n].cpl_at_scl,
            highest_lsn=max(states[n].scl, min(states[n].scl + extra[n], allocated_max)),
            truncations=prior,
            truncations_version=1,
        )
        for n in sealed
    ]
    plan = plan_recovery(2, reports, lal)
    assert all(c <= plan.vdl for c in acked), (acked, plan.vdl)
    assert plan.vdl == 0 or plan.vdl in cpls  # a consistency point: a whole mini-transaction
    assert plan.truncation == TruncationRange(2, plan.vdl, plan.truncation.through_lsn)
    # Everything the old writer could have allocated above VDL is cancelled, none reused.
    assert plan.truncation.through_lsn >= max(allocated_max, *(r.highest_lsn for r in reports))
    assert plan.next_lsn == plan.truncation.through_lsn + 1
    best = next(r for r in reports if r.name == plan.source)
    assert best.scl == max(r.scl for r in reports) >= plan.vdl
    assert set(plan.lagging) == {r.name for r in reports if r.scl < plan.vdl}


def test_plan_recovery_truncates_above_every_earlier_truncation() -> None:
    prior = (TruncationRange(2, 5, 40),)
    reports = [SegmentReport(n, 3, 5, 5, 5, prior, 2) for n in NODE_NAMES[:4]]
    plan = plan_recovery(3, reports, lal=10)
    assert plan.vdl == 5 and plan.truncation.through_lsn == 50 and plan.next_lsn == 51


def test_plan_recovery_preconditions() -> None:
    ok = [SegmentReport(n, 2, 0, 0, 0, ()) for n in NODE_NAMES[:4]]
    assert next_epoch(ok) == 3 and next_epoch([]) == 1
    with pytest.raises(AssertionError, match="read quorum"):
        plan_recovery(2, ok[:2], 10)
    with pytest.raises(AssertionError, match="sealed"):
        plan_recovery(3, ok, 10)
    unsynced = [*ok[:3], SegmentReport("c2", 2, 0, 0, 0, (TruncationRange(1, 0, 9),), 1)]
    with pytest.raises(AssertionError, match="truncation sets not synced"):
        plan_recovery(2, unsynced, 10)
    # The same ranges under different versions are different sets, not yet synced.
    rng = TruncationRange(1, 0, 9)
    same_ranges = [SegmentReport(n, 2, 0, 0, 0, (rng,), 1) for n in NODE_NAMES[:3]]
    versions = [*same_ranges, SegmentReport("c2", 2, 0, 0, 0, (rng,), 0)]
    with pytest.raises(AssertionError, match="truncation sets not synced"):
        plan_recovery(2, versions, 10)
    # The same version with different ranges: a set was corrupted or mis-pushed.
    forked = [*same_ranges, SegmentReport("c2", 2, 0, 0, 0, (TruncationRange(1, 0, 8),), 1)]
    with pytest.raises(AssertionError, match="truncation sets not synced"):
        plan_recovery(2, forked, 10)
    plan = plan_recovery(2, [*same_ranges, SegmentReport("c2", 2, 0, 0, 0, (rng,), 1)], 10)
    assert plan.truncation == TruncationRange(2, 0, 19)  # above the synced set's range


def test_newest_truncations_is_the_newest_set_not_the_union() -> None:
    failed = SegmentReport("a1", 4, 2, 2, 2, (TruncationRange(2, 2, 40),), 2)
    later = SegmentReport("b1", 4, 4, 4, 4, (TruncationRange(3, 4, 14),), 3)
    empty = SegmentReport("c1", 4, 4, 4, 4, (), 0)
    assert newest_truncations([failed, later, empty]) is later
    assert newest_truncations([empty, failed]) is failed
    assert newest_truncations([empty]) is empty
    # Once synced to the newest set, the failed recovery's range no longer raises the plan:
    # its writer never ran, so no LSN in (14, 40] was ever allocated.
    synced = [replace(later, name=n) for n in ("a1", "b1", "c1")]
    plan = plan_recovery(4, synced, lal=10)
    assert plan.vdl == 4 and plan.truncation == TruncationRange(4, 4, 24)


# -- records (P17 §3.2) ----------------------------------------------------------------------


deltas = st.lists(
    st.integers(min_value=0, max_value=PAGE_SIZE_BYTES - 1).flatmap(
        lambda off: st.builds(
            Delta, st.just(off), st.binary(max_size=min(64, PAGE_SIZE_BYTES - off))
        )
    ),
    max_size=4,
)


@st.composite
def records(draw: st.DrawFn):
    lsn = draw(st.integers(min_value=1, max_value=2**63))
    full = draw(st.booleans())
    flags = (RecordFlags.CPL if draw(st.booleans()) else RecordFlags(0)) | (
        RecordFlags.FULL_IMAGE if full else RecordFlags(0)
    )
    payload = (
        draw(st.binary(min_size=PAGE_SIZE_BYTES, max_size=PAGE_SIZE_BYTES))
        if full
        else encode_deltas(draw(deltas))
    )
    return encode_record(
        lsn=lsn,
        prev_volume_lsn=draw(st.integers(min_value=0, max_value=lsn - 1)),
        prev_page_lsn=draw(st.integers(min_value=0, max_value=lsn - 1)),
        page_no=draw(st.integers(min_value=0, max_value=2**64 - 1)),
        epoch=draw(st.integers(min_value=1, max_value=2**32)),
        flags=flags,
        payload=payload,
    )


@settings(max_examples=EXAMPLES_MAX)
@given(records())
def test_record_round_trip(record) -> None:
    assert decode_record(record.encoded) == record
    if not record.is_full_image:
        assert encode_deltas(record.deltas()) == record.payload


@settings(max_examples=EXAMPLES_MAX)
@given(records(), st.data())
def test_any_flipped_bit_is_detected(record, data) -> None:
    bit = data.draw(st.integers(min_value=0, max_value=len(record.encoded) * 8 - 1))
    damaged = bytearray(record.encoded)
    damaged[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(CorruptRecordError):
        decode_record(bytes(damaged))


@settings(max_examples=EXAMPLES_MAX)
@given(records(), st.data())
def test_truncated_or_extended_bytes_are_detected(record, data) -> None:
    cut = data.draw(st.integers(min_value=0, max_value=len(record.encoded) - 1))
    with pytest.raises(CorruptRecordError):
        decode_record(record.encoded[:cut])
    with pytest.raises(CorruptRecordError):
        decode_record(record.encoded + b"\x00")


def test_bad_deltas_are_detected_even_with_a_good_crc() -> None:
    overrun = encode_deltas([Delta(PAGE_SIZE_BYTES - 2, b"abcd")])
    with pytest.raises(CorruptRecordError, match="overruns"):
        decode_deltas(overrun)
    cut_header = encode_deltas([Delta(0, b"ab")]) + b"\x01\x00"
    with pytest.raises(CorruptRecordError, match="cut short"):
        decode_deltas(cut_header)
    for payload in (overrun, cut_header):
        bad = encode_record(
            lsn=2,
            prev_volume_lsn=1,
            prev_page_lsn=0,
            page_no=0,
            epoch=1,
            flags=RecordFlags.CPL,
            payload=payload,
        )
        with pytest.raises(CorruptRecordError):
            decode_record(bad.encoded)  # the CRC is right; the content is not


def test_corrupt_header_fields_are_named() -> None:
    record = _record(5, 4)
    wrong_encoding = b"\x02" + record.encoded[1:]
    with pytest.raises(CorruptRecordError):
        decode_record(wrong_encoding)
    with pytest.raises(CorruptRecordError, match="shorter"):
        decode_record(record.encoded[: HEADER_BYTES - 1])


def test_apply_records_in_lsn_order() -> None:
    a = _record(1, 0)
    b = encode_record(
        lsn=2,
        prev_volume_lsn=1,
        prev_page_lsn=1,
        page_no=0,
        epoch=1,
        flags=RecordFlags.CPL,
        payload=encode_deltas([Delta(2, b"zz")]),
    )
    page = apply_records(EMPTY_PAGE, [a, b])
    assert page[:4] == b"\x01\x00zz" and len(page) == PAGE_SIZE_BYTES
    with pytest.raises(AssertionError):
        apply_records(EMPTY_PAGE, [b, a])


def test_truncation_of_a_failed_recovery_never_cancels_a_later_durable_point() -> None:
    """Recovery at epoch 2 truncates one node and dies; recovery at epoch 3 never sees it.

    Nodes a1 a2 b1 b2 hold records 1..2 and c1 c2 hold 1..4 (CPLs at 2 and 4). Epoch 2 seals
    a1 a2 b1 b2 (VDL 2) and writes its set {(2, 12]} on a1 only before it crashes. Epoch 3
    seals b1 b2 c1 c2 (a1, a2 down): VDL 4, set {(4, 14]} of version 3, b1 b2 repaired to 4.
    When a1 comes back, gossip moves sets only from older to newer versions: b1 never takes
    a1's epoch-2 set (version 2 < 3), and a1 takes epoch 3's set, dropping its epoch-2 range,
    so records 3..4 stay on b1 and may be fetched again by a1.
    """
    chain = [_record(1, 0, cpl=False), _record(2, 1), _record(3, 2, cpl=False), _record(4, 3)]
    nodes = {n: SegmentState(n) for n in NODE_NAMES}
    for name, seg in nodes.items():
        seg.seal(1, "w1")
        seg.truncate(1, (), 1)  # the first writer's (empty) set
        seg.on_durable(chain if name.startswith("c") else chain[:2])
    lal = 10

    def report(seg: SegmentState) -> SegmentReport:
        c = seg.completeness
        return SegmentReport(
            seg.name,
            seg.epoch,
            c.scl,
            c.cpl_at_scl,
            c.highest_lsn,
            seg.truncations,
            seg.truncations_version,
        )

    def gossip(seg: SegmentState, peers: list[str]) -> None:
        """storage_node/gossip.py _adopt_truncations: the newest peer set, if newer."""
        newest = max((nodes[p] for p in peers), key=lambda p: p.truncations_version)
        if newest.truncations_version > seg.truncations_version:
            version = newest.truncations_version
            seg.truncate(max(seg.epoch, version), newest.truncations, version)

    def recover(epoch: int, sealed: list[str]) -> tuple[RecoveryPlan, tuple]:
        for name in sealed:
            nodes[name].seal(epoch, f"w{epoch}")
        reports = [report(nodes[n]) for n in sealed]
        plan = plan_recovery(epoch, reports, lal)  # the sets are already in sync here
        return plan, merge(newest_truncations(reports).truncations, [plan.truncation])

    plan2, set2 = recover(2, ["a1", "a2", "b1", "b2"])
    assert plan2.vdl == 2 and set2 == (TruncationRange(2, 2, 12),)
    nodes["a1"].truncate(2, set2, 2)  # ...and writer 2 crashes here
    assert nodes["a1"].scl == 2

    second = ["b1", "b2", "c1", "c2"]
    plan3, set3 = recover(3, second)
    assert plan3.vdl == 4 and set3 == (TruncationRange(3, 4, 14),)  # 3 and 4 are durable
    for name in second:
        nodes[name].truncate(3, set3, 3)
    for name in ("b1", "b2"):
        nodes[name].check_current(3, "append")  # repair appends at epoch 3
        nodes[name].on_durable([r for r in chain[2:] if nodes[name].admits(r)])
    assert all(nodes[n].scl == 4 for n in second)

    a1, b1 = nodes["a1"], nodes["b1"]
    gossip(b1, ["a1", "a2", "b2", "c1", "c2"])  # a1 is back with its epoch-2 set
    assert b1.new_truncations(a1.truncations, a1.truncations_version) == []
    assert (b1.truncations, b1.truncations_version, b1.scl) == (set3, 3, 4)
    gossip(a1, ["a2", "b1", "b2", "c1", "c2"])
    assert (a1.epoch, a1.truncations, a1.truncations_version) == (3, set3, 3)
    assert all(a1.admits(r) for r in chain[2:])  # its epoch-2 range cancels nothing now
    a1.on_durable(chain[2:])  # hole filling from b1, which holds the same set
    assert a1.scl == 4
    gossip(b1, ["a1", "a2", "b2", "c1", "c2"])
    assert b1.scl >= plan3.vdl, "a durable record was cancelled by a failed recovery's range"

    # A later recovery that meets a node still on an older set builds on the newest one.
    nodes["a2"].truncate(2, set2, 2)  # a2 got epoch 2's set late, by gossip from a1
    reports = [report(nodes[n]) for n in ("a1", "a2", "b1", "c1")]
    assert newest_truncations(reports).truncations == set3
