"""The read-index rule (sixfold/core/read_index.py) and the takeover timing
(sixfold/core/takeover.py): pure, against naive models."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from sixfold.core.quorum import COPIES, NODE_NAMES, READ_QUORUM, WRITE_QUORUM
from sixfold.core.read_index import Answer, ReadIndex, RoundOutcome
from sixfold.core.takeover import (
    PROBE_TIMEOUT_S,
    PROBE_TIMEOUT_S_MIN,
    PROMOTION_STAGGER_S,
    WRITER_GONE_AFTER_S,
    WRITER_SILENT_AFTER_S,
    Probe,
    TakeoverDetector,
)


def run_round(index: ReadIndex, answers: list[tuple[str, Answer]]) -> RoundOutcome | None:
    round_no = index.start_round()
    assert round_no is not None
    outcome = None
    for node, answer in answers:
        outcome = index.on_answer(round_no, node, answer) or outcome
    return outcome


@given(
    sealed=st.sets(st.sampled_from(NODE_NAMES), min_size=WRITE_QUORUM),
    data=st.data(),
)
def test_no_round_confirms_once_a_newer_epoch_is_sealed_on_a_write_quorum(sealed, data) -> None:
    """A newer writer sealed its epoch on `sealed` (>= 4 nodes) before the round was sent:
    those nodes refuse or say nothing, whatever the others answer, in any order."""
    answers = [
        (n, data.draw(st.sampled_from([Answer.REFUSES, Answer.SILENT])))
        if n in sealed
        else (n, data.draw(st.sampled_from(list(Answer))))
        for n in NODE_NAMES
    ]
    order = data.draw(st.permutations(answers))
    index = ReadIndex(epoch=3)
    index.want()
    outcome = run_round(index, order)
    assert outcome in (RoundOutcome.SUPERSEDED, RoundOutcome.NO_QUORUM)
    assert not index.is_confirmed(1)


@given(answers=st.lists(st.sampled_from(list(Answer)), min_size=COPIES, max_size=COPIES))
def test_a_round_is_decided_as_a_naive_count_says(answers: list[Answer]) -> None:
    index = ReadIndex(epoch=1)
    index.want()
    outcome = run_round(index, list(zip(NODE_NAMES, answers, strict=True)))
    confirms = answers.count(Answer.CONFIRMS)
    # Decided at the earliest answer that settles it: count the prefix up to that point.
    prefix_confirms = prefix_others = 0
    expected = None
    for answer in answers:
        prefix_confirms += answer is Answer.CONFIRMS
        prefix_others += answer is not Answer.CONFIRMS
        if prefix_confirms >= READ_QUORUM:
            expected = RoundOutcome.CONFIRMED
            break
        if prefix_others > COPIES - READ_QUORUM:
            expected = "not confirmed"
            break
    assert expected is not None, "six answers always decide a round"
    if expected is RoundOutcome.CONFIRMED:
        assert outcome is RoundOutcome.CONFIRMED and confirms >= READ_QUORUM
    else:
        assert outcome in (RoundOutcome.SUPERSEDED, RoundOutcome.NO_QUORUM)
    assert not index.in_flight


def test_reads_arriving_during_a_round_wait_for_the_next_and_share_it() -> None:
    index = ReadIndex(epoch=2)
    first = index.want()
    assert index.start_round() == first == 1
    assert index.start_round() is None  # one round in flight at a time
    # Sent before these reads arrived, round 1 cannot confirm them: they need round 2.
    assert index.want() == index.want() == 2
    for node in NODE_NAMES[:READ_QUORUM]:
        index.on_answer(1, node, Answer.CONFIRMS)
    assert index.is_confirmed(1) and not index.is_confirmed(2)
    assert index.start_round() == 2  # one round for both waiting reads
    assert index.start_round() is None
    late = index.on_answer(1, NODE_NAMES[-1], Answer.REFUSES)
    assert late is None, "an answer to a decided round changes nothing"


def test_an_az_plus_one_still_confirms() -> None:
    """Three nodes down (an AZ and one more): the other three confirm, as a read quorum."""
    index = ReadIndex(epoch=1)
    index.want()
    answers = [(n, Answer.SILENT) for n in ("a1", "a2", "b1")]
    answers += [(n, Answer.CONFIRMS) for n in ("b2", "c1", "c2")]
    assert run_round(index, answers) is RoundOutcome.CONFIRMED


def test_no_round_is_sent_when_no_read_waits() -> None:
    index = ReadIndex(epoch=1)
    assert index.start_round() is None
    index.want()
    assert index.start_round() == 1
    for node in NODE_NAMES:
        index.on_answer(1, node, Answer.CONFIRMS)
    assert index.start_round() is None


# -- takeover timing -----------------------------------------------------------------------


def takeover_time(rank: int, probes: list[Probe], interval_s: float = 0.2) -> float | None:
    """Drive a detector with probes of the given outcomes, each taking its allowed timeout
    when silent and no time when answered or refused; the time at which it takes over."""
    detector = TakeoverDetector(rank)
    now = 0.0
    for probe in probes:
        asked = now
        if probe is Probe.SILENT:
            now += detector.probe_timeout(asked)
        if detector.on_probe("w@h:1#n", probe, asked, now):
            return now
        now += interval_s
    return None


def test_a_silent_writer_is_replaced_after_five_seconds_plus_the_stagger() -> None:
    for rank in range(3):
        at = takeover_time(rank, [Probe.SILENT] * 100)
        assert at is not None
        due = WRITER_SILENT_AFTER_S + rank * PROMOTION_STAGGER_S
        assert due <= at <= due + PROBE_TIMEOUT_S_MIN + 1e-9, (rank, at)


def test_a_dead_writer_is_replaced_after_one_second_plus_the_stagger() -> None:
    for rank in range(3):
        at = takeover_time(rank, [Probe.GONE] * 100)
        assert at is not None
        due = WRITER_GONE_AFTER_S + rank * PROMOTION_STAGGER_S
        assert due <= at <= due + 0.2 + 1e-9, (rank, at)


def test_any_answer_starts_the_silence_over() -> None:
    """Load that leaves the writer silent for up to 4 s at a time never moves it."""
    stalls = [[Probe.SILENT] * 4 + [Probe.WRITER]] * 20
    assert takeover_time(0, list(itertools.chain(*stalls))) is None


def test_a_new_writer_starts_the_silence_over() -> None:
    detector = TakeoverDetector(0)
    assert not detector.on_probe("old", Probe.SILENT, 0.0, 1.0)
    assert not detector.on_probe("old", Probe.SILENT, 1.2, 4.9)
    assert not detector.on_probe("new", Probe.SILENT, 5.0, 5.2)  # another writer took over
    assert detector.deadline() == 5.0 + WRITER_SILENT_AFTER_S


def test_probe_timeouts_stay_within_their_bounds() -> None:
    detector = TakeoverDetector(1)
    assert detector.probe_timeout(0.0) == PROBE_TIMEOUT_S
    detector.on_probe("w", Probe.SILENT, 0.0, 1.0)
    for now in (1.0, 3.0, 5.4, 5.6, 9.0):
        assert PROBE_TIMEOUT_S_MIN <= detector.probe_timeout(now) <= PROBE_TIMEOUT_S


def test_an_owner_that_answers_as_a_reader_is_replaced_as_soon_as_a_dead_one() -> None:
    """A recovery that sealed the epoch on some nodes and then lost leaves a reader as the
    epoch's owner: nobody is the writer, so no silent writer's grace applies."""
    for rank in range(2):
        at = takeover_time(rank, [Probe.NOT_WRITER] * 100)
        assert at is not None
        due = WRITER_GONE_AFTER_S + rank * PROMOTION_STAGGER_S
        assert due <= at <= due + 0.2 + 1e-9, (rank, at)


def test_a_read_point_moves_only_where_a_read_quorum_of_nodes_agrees() -> None:
    """One node told a bogus VDL (anyone who reaches its port can tell it one) moves no
    reader; three that learned it from the writer do (issue 19)."""
    from sixfold.core.read_point import advance_read_point

    bogus = (2, 2**63 - 1)
    assert advance_read_point((2, 100), [bogus, (2, 100), (2, 100), (2, 90)]) == (2, 100)
    # The bogus one counts as having 110: two honest nodes learned 120 and 110 from the writer.
    assert advance_read_point((2, 100), [bogus, (2, 120), (2, 110), (2, 105)]) == (2, 110)
    assert advance_read_point((1, 100), [(2, 50), (2, 50)]) == (1, 100)  # two: not enough
    assert advance_read_point((1, 100), [(2, 50), (2, 50), (1, 200)]) == (1, 200)
