"""Gossip pacing (sixfold/core/gossip_pacing.py): quiet rounds rest longer, news in the
node's own state calls a round after the shortest rest. (That a node catches up by gossip on real processes
is tests/test_processes.py's; the simulator runs the same pacing.)"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sixfold.core.gossip_pacing import RESTS_DOUBLED_MAX, GossipPacing, GossipSignals
from sixfold.core.membership import Membership
from sixfold.core.segment import SegmentState

QUIET = GossipSignals(
    epoch=1,
    truncations_version=1,
    membership=(0, 0),
    hole=None,
    damaged=0,
    hydrating=False,
    serving=True,
)


def rest_after(pacing: GossipPacing, signals: GossipSignals) -> float:
    """The shortest rest after which the next round is due."""
    return next(r / 4 for r in itertools.count() if pacing.due(r / 4, signals))


def test_quiet_rounds_double_the_rest_up_to_its_bound() -> None:
    pacing = GossipPacing(1.0)
    rests = []
    for _ in range(6):
        pacing.after_round(False, QUIET)
        rests.append(rest_after(pacing, QUIET))
    assert rests == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert pacing.rest_max == 2**RESTS_DOUBLED_MAX


@pytest.mark.parametrize(
    "news",
    [
        {"epoch": 2},
        {"truncations_version": 2},
        {"membership": (1, 1)},
        {"hole": (3, 5)},
        {"damaged": 1},
        {"hydrating": True},
        {"serving": False},
    ],
)
def test_news_in_the_nodes_own_state_calls_a_round_after_the_shortest_rest(news: dict) -> None:
    pacing = GossipPacing(1.0)
    for _ in range(5):
        pacing.after_round(False, QUIET)
    changed = replace(QUIET, **news)
    assert rest_after(pacing, QUIET) == 8.0
    assert rest_after(pacing, changed) == 1.0  # between rounds: due after the shortest rest
    pacing.after_round(False, changed)  # and the round it called starts the count again
    assert rest_after(pacing, changed) == 1.0
    pacing.after_round(False, changed)
    assert rest_after(pacing, changed) == (2.0 if changed.serving else 1.0)


def test_a_node_not_serving_yet_does_not_rest_longer() -> None:
    """It must hear from enough peers first: a cold start before its peers keeps asking."""
    pacing = GossipPacing(1.0)
    alone = replace(QUIET, serving=False)
    for _ in range(5):
        pacing.after_round(False, alone)
        assert rest_after(pacing, alone) == 1.0


def test_a_round_that_fetched_is_followed_at_once() -> None:
    pacing = GossipPacing(1.0)
    for _ in range(5):
        pacing.after_round(False, QUIET)
    pacing.after_round(True, QUIET)
    assert pacing.due(0.0, QUIET)
    pacing.after_round(False, QUIET)  # caught up: the shortest rest, then doubling again
    assert rest_after(pacing, QUIET) == 1.0


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 2)), max_size=30))
def test_the_rest_stays_within_its_bounds(rounds: list[tuple[bool, int]]) -> None:
    pacing = GossipPacing(0.25)
    for fetched, epoch in rounds:
        signals = replace(QUIET, epoch=epoch)
        pacing.after_round(fetched, signals)
        assert pacing.due(pacing.rest_max, signals)
        assert pacing.due(0.0, signals) == fetched


def test_signals_read_the_segment_and_the_membership() -> None:
    st_ = SegmentState("a1")
    signals = GossipSignals.of(st_, 0, None, Membership.initial())
    assert signals.membership == Membership.initial().rank
    assert signals.hole is None and not signals.serving and not signals.hydrating
    st_.completeness.add(5, 3, True)  # a record above a gap: LSNs 1-3 are missing
    assert GossipSignals.of(st_, 0, None, None).hole == (0, 5)
