"""How long a storage node rests between gossip rounds.

Gossip fills a node's holes from its peers (P17 §3.2). On a healthy volume there are none:
the writer sends every record to every node, and a round only asks each peer its state and
learns nothing. Those rounds were most of an idle node's CPU, and a tenth of a busy one's
(docs/BENCHMARKS.md, "Gossip rests while it finds nothing"). So a quiet round (nothing
fetched, the node's own signals below unchanged, and the node serving) doubles the rest
before the next, up to `rest_max`; any other round brings it back to `rest_min`, or to
nothing after a fetch (the node may still be behind). A change of those signals between
rounds makes the next round due `rest_min` after the last one ended, however long the rest.

What this gives up: a node that fell behind without a signal (its peers moved on while it
missed records, and nothing more comes to it) sees it in a round within `rest_max`, and
fetches in the round after (a fetch only reaches what a peer held one round earlier); and
what a round learns of its peers (their SCLs and coalescing frontiers, which bound GC) may
be `rest_max` old. Both were `rest_min` before.

The units are the caller's: seconds in storage_node/gossip.py, ticks in the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from sixfold.core.hydration import HydrationProgress
from sixfold.core.membership import Membership
from sixfold.core.segment import SegmentState

RESTS_DOUBLED_MAX = 3  # the longest rest is rest_min x 2**3


@dataclass(frozen=True, slots=True)
class GossipSignals:
    """What in a node's own state may call for a round: a new epoch or truncation set (a
    recovery reached it, or passed it by), a membership, a hole above its SCL (or another
    one), damaged records to repair, a hydration, a change in whether it serves."""

    epoch: int
    truncations_version: int
    membership: tuple[int, int] | None
    hole: tuple[int, int] | None
    damaged: int
    hydrating: bool
    serving: bool

    @classmethod
    def of(
        cls,
        st: SegmentState,
        damaged: int,
        hydration: HydrationProgress | None,
        membership: Membership | None,
    ) -> GossipSignals:
        return cls(
            st.epoch,
            st.truncations_version,
            membership.rank if membership is not None else None,
            st.completeness.first_hole(),
            damaged,
            hydration is not None,
            st.serving,
        )


class GossipPacing:
    """One node's rest between gossip rounds, from how its last rounds went."""

    def __init__(self, rest_min: float) -> None:
        assert rest_min > 0, rest_min
        self.rest_min = rest_min
        self.rest_max = rest_min * 2**RESTS_DOUBLED_MAX
        self.rest = rest_min
        self.signals: GossipSignals | None = None  # as the last round left them

    def after_round(self, fetched: bool, signals: GossipSignals) -> None:
        """A round ended. One that fetched records is followed at once by the next (the node
        may still be behind); a quiet one doubles the rest; any other rests `rest_min`."""
        if fetched:
            self.rest = 0.0
        elif signals == self.signals and signals.serving:  # quiet
            self.rest = min(max(self.rest * 2, self.rest_min), self.rest_max)
        else:  # news, or a node that must still hear from its peers before it serves
            self.rest = self.rest_min
        self.signals = signals

    def due(self, rested: float, signals: GossipSignals) -> bool:
        """Whether the next round is due, `rested` after the last one ended: after the rest
        the last round chose, or after at most `rest_min` if the signals changed since."""
        rest = self.rest if signals == self.signals else min(self.rest, self.rest_min)
        return rested >= rest
