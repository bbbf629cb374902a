"""Hypothesis drives the deterministic simulator one explicit action at a time.

Rules: writes (mini-transactions over 1-3 pages), reads, node crashes and restarts, power loss
(unsynced appends lost), partitions (any group of endpoints, or the writer from some nodes)
and heal, disk faults (a torn tail, a flipped bit) and writer failover (the old writer crashed
or left running as a zombie). The simulator checks its invariants after every tick; the
@invariant runs the full check after every rule; teardown heals everything and demands that a
write commits and is read back, and every disk fault is repaired, within bounded ticks.

The fault budget keeps liveness reachable: at most MAX_NODES_DOWN nodes crashed at once, one
node with an unrepaired disk fault (DrivenCluster refuses more). Safety must hold regardless.

The same machine against a deliberately broken simulator must fail: that shows it can.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from sixfold.core.quorum import NODE_NAMES
from sixfold.sim.driven import DrivenCluster
from sixfold.sim.faults import (
    MAX_NODES_DOWN,
    PAGES,
    WRITES_PER_TXN_MAX,
    Flaws,
    InvariantViolation,
)
from sixfold.sim.network import ENDPOINTS

EXAMPLES = (
    200  # state machine runs in CI: with STEPS, ~45 s wall (~23 s CPU) on a busy 2-core machine
)
STEPS = 50  # rules per run (at most; hypothesis varies the length)
FLAW_EXAMPLES = 60  # runs allowed to find a deliberately broken simulator's failure
WRITES_PER_RULE_MAX = 4  # mini-transactions one write rule submits
START_TICKS_MAX = 60
ACTION_TICKS = 3  # time passing after every action (messages delivered, fsyncs done)
ADVANCE_TICKS_MAX = 30  # a longer quiet stretch, as its own rule
WRITERS_PER_RUN_MAX = 12  # failovers are bounded so a run stays short
FAILOVER_GAP_TICKS = 30  # a failover waits for the last one's recovery, or this long

nodes = st.sampled_from(NODE_NAMES)
pages = st.lists(st.integers(0, PAGES - 1), min_size=1, max_size=WRITES_PER_TXN_MAX, unique=True)


class ClusterMachine(RuleBasedStateMachine):
    flaws: Flaws | None = None

    def __init__(self) -> None:
        super().__init__()
        self.cluster: DrivenCluster | None = None
        self.failover_tick = 0

    @property
    def c(self) -> DrivenCluster:
        assert self.cluster is not None
        return self.cluster

    @initialize(seed=st.integers(0, 2**16))
    def start(self, seed: int) -> None:
        self.cluster = DrivenCluster(seed, self.flaws)
        for _ in range(START_TICKS_MAX):  # a healthy start: the first writer recovers
            self.c.advance(1)
            if self.c.sim.writers[0].log is not None:
                break

    # -- workload ---------------------------------------------------------------------------------

    @rule(txns=st.lists(pages, min_size=1, max_size=WRITES_PER_RULE_MAX))
    def write(self, txns: list[list[int]]) -> None:
        for txn in txns:
            self.c.write(txn)

    @rule(page=st.integers(0, PAGES - 1))
    def read(self, page: int) -> None:
        self.c.read(page)

    @rule(ticks=st.integers(1, ADVANCE_TICKS_MAX))
    def advance(self, ticks: int) -> None:
        self.c.advance(ticks)

    # -- nodes ------------------------------------------------------------------------------------

    @precondition(lambda self: len(self.c.down) < MAX_NODES_DOWN)
    @rule(node=nodes)
    def crash(self, node: str) -> None:
        self.c.crash(node)

    @precondition(lambda self: self.c.down)
    @rule(i=st.integers(0, MAX_NODES_DOWN - 1))
    def restart(self, i: int) -> None:
        down = self.c.down
        self.c.restart(down[i % len(down)])

    @precondition(lambda self: len(self.c.down) < MAX_NODES_DOWN)
    @rule(node=nodes)
    def lose_unsynced(self, node: str) -> None:
        self.c.lose_unsynced(node)

    # -- disk faults (DrivenCluster refuses them beyond the budget) ------------------------------

    @rule(node=nodes, keep_bytes=st.integers(0, 200), power_loss=st.booleans())
    def tear_tail(self, node: str, keep_bytes: int, power_loss: bool) -> None:
        if power_loss and len(self.c.down) >= MAX_NODES_DOWN:
            power_loss = False
        self.c.tear_tail(node, keep_bytes, power_loss)

    @rule(node=nodes, index=st.integers(0, 1000), bit=st.integers(0, 10_000))
    def flip_bit(self, node: str, index: int, bit: int) -> None:
        self.c.flip_bit(node, index, bit)

    # -- network ----------------------------------------------------------------------------------

    @rule(group=st.sets(st.sampled_from(ENDPOINTS), min_size=1, max_size=3))
    def partition(self, group: set[str]) -> None:
        self.c.partition(group)

    @rule(cut=st.sets(nodes, min_size=1, max_size=3))
    def partition_writer(self, cut: set[str]) -> None:
        self.c.partition_writer(cut)

    @rule()
    def heal(self) -> None:
        self.c.heal()

    # -- writers ----------------------------------------------------------------------------------

    def _may_fail_over(self) -> bool:
        sim = self.c.sim
        newest = sim.writers[-1]
        settled = newest.log is not None or newest.gave_up or not newest.alive
        return len(sim.writers) < WRITERS_PER_RUN_MAX and (
            settled or sim.tick >= self.failover_tick + FAILOVER_GAP_TICKS
        )

    @precondition(_may_fail_over)
    @rule(zombie=st.booleans())
    def failover(self, zombie: bool) -> None:
        self.c.failover(zombie)
        self.failover_tick = self.c.sim.tick

    # -- checks -----------------------------------------------------------------------------------

    @invariant()
    def holds_every_invariant(self) -> None:
        """After every rule: a client writes, time passes (the simulator checks every tick),
        then the full check."""
        if self.cluster is not None:
            self.c.write_random()  # a steady client load, whatever the rules chose
            self.c.advance(ACTION_TICKS)
            self.c.check()

    def teardown(self) -> None:
        # After a failure hypothesis still calls teardown: report that failure, not this one.
        if self.cluster is not None and not self.c.sim.failed:
            sim = self.c.sim
            trace = "\n".join(sim.trace)
            event(f"commits acknowledged before teardown: {_bucket(sim.acked_count)}")
            event(f"writer recoveries: {_bucket(sim.recoveries)}")
            event(f"disk faults repaired: {_bucket(trace.count(' repaired LSN '))}")
            event(f"corrupt records dropped at restart: {_bucket(trace.count('dropped corrupt'))}")
            self.c.check_liveness()


def _bucket(n: int) -> str:
    return "0" if n == 0 else "1-4" if n < 5 else "5-19" if n < 20 else "20+"


ClusterMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TestCluster = ClusterMachine.TestCase


def _broken(flaws: Flaws) -> type[ClusterMachine]:
    return type(f"Broken{ClusterMachine.__name__}", (ClusterMachine,), {"flaws": flaws})


FLAW_SETTINGS = settings(
    max_examples=FLAW_EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.generate],  # finding it is the point; shrinking would only cost time
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize(
    ("flaws", "expected"),
    [
        (Flaws(ack_quorum=3), "held by only"),  # the writer acknowledges at 3 nodes
        (Flaws(serve_corrupt=True), "corrupt data served"),  # no CRC check on disk reads
        (Flaws(skip_truncation=True), "reused"),  # recovery cancels nothing above the VDL
    ],
    ids=["ack-at-3", "serve-corrupt", "skip-truncation"],
)
def test_machine_catches_a_broken_simulator(flaws: Flaws, expected: str) -> None:
    with pytest.raises(InvariantViolation, match=expected):
        run_state_machine_as_test(_broken(flaws), settings=FLAW_SETTINGS)
