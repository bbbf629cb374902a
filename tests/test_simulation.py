"""The deterministic simulation in CI: hundreds of seeds, each a different fault history.

A failure names its seed and the command that replays it exactly.
"""

from __future__ import annotations

import dataclasses
import functools
import random

import pytest

from sixfold.sim.faults import Faults, Flaws, InvariantViolation
from sixfold.sim.simulation import SimulationResult, main, run_simulation

SEEDS = 300  # about 60 s on a 2-core CI machine (measured: ~0.2 s per seed)
FAST_LANE_SEEDS = 100  # of them, those make check runs (the rest are marked slow)
SEEDS_PER_TEST = 50  # seeds per test case, so a failure shows which block and runs in parallel
STEPS = 400  # ticks of faults per seed, before the quiet phase checks progress
FLAW_SEEDS_MAX = 60  # a deliberately broken cluster must be caught within this many seeds


@functools.cache  # at most SEEDS runs: the tests below count faults in the blocks' runs
def _simulated(seed: int) -> SimulationResult:
    return run_simulation(seed, STEPS)


def _run_block(first: int, count: int) -> None:
    for seed in range(first, first + count):
        try:
            _simulated(seed)
        except InvariantViolation:
            raise
        except Exception as exc:  # an assertion inside the core is a bug too: name the seed
            raise AssertionError(
                f"simulation seed {seed} crashed with {type(exc).__name__}: {exc}. Replay: "
                f"python -m sixfold.sim --seed {seed} --steps {STEPS}"
            ) from exc


@pytest.mark.parametrize(
    "first",
    [
        pytest.param(first, marks=[pytest.mark.slow] if first >= FAST_LANE_SEEDS else [])
        for first in range(0, SEEDS, SEEDS_PER_TEST)
    ],
)
def test_seeds_hold_every_invariant(first: int) -> None:
    _run_block(first, SEEDS_PER_TEST)


def test_seed_1178_two_memberships_at_one_epoch() -> None:
    """Failed from ff01edd until the memberships were ordered by their writer and every
    recovery stored its own (tests/test_membership.py replays the failure as it was: this
    seed now takes another path, and is kept as one more)."""
    run_simulation(1178, STEPS)


def test_lost_disks_hydrate_under_the_seeds() -> None:
    """Some seeds replace a crashed node's disk with an empty one; the node hydrates from its
    peers' page images (the oracle checks each image against the history) or, before any GC,
    catches up by gossip, and every invariant holds."""
    results = [_simulated(seed) for seed in range(4, 24)]
    assert sum(r.disk_losses for r in results) >= 3
    assert sum(r.hydrations for r in results) >= 2


def test_membership_changes_run_under_the_seeds() -> None:
    """Some seeds have spares, and an operator replaces members with them while the other
    faults run (sixfold/core/replacement.py, as the writer drives it): writers die mid-change
    and their successors settle it, old nodes come back and the change reverts, and every
    invariant holds, the drain of every member's log included."""
    results = [_simulated(seed) for seed in range(12)]
    assert sum(r.replacements for r in results) >= 1
    assert sum(r.reverted for r in results) >= 1


def test_drain_check_catches_a_lost_disk_that_never_hydrates() -> None:
    """Before issue 14 a node whose disk was replaced waited for records its peers had
    collected: it never caught up, and every peer's GC waited for it, so no log drained."""
    _assert_drain_check_catches(Flaws(no_hydration=True), "--no-hydration")


def test_same_seed_same_trace() -> None:
    a = run_simulation(7, STEPS)
    b = run_simulation(7, STEPS)
    assert a == b and a.trace_digest == b.trace_digest
    assert a.acked_commits > 0 and a.pages_checked > 0
    c = run_simulation(8, STEPS)
    assert c.trace_digest != a.trace_digest


def test_runs_exercise_the_faults() -> None:
    """The seeds must actually crash nodes and writers, race takeovers and read pages."""
    results = [_simulated(seed) for seed in range(20)]
    assert sum(r.node_crashes for r in results) >= 20
    assert sum(r.recoveries for r in results) >= 40  # each run's first writer, and successors
    assert sum(1 for r in results if r.writers_started > 2) >= 5
    assert sum(r.pages_checked for r in results) >= 200
    assert sum(r.acked_commits for r in results) >= 1000
    assert sum(r.writer_pauses for r in results) >= 10  # deposed while paused (issue 10)
    assert sum(r.writer_reads for r in results) >= 500  # stale clients' reads on writers
    # Failover runs the shipping WriterWatch: readers take over, and race each other to.
    assert sum(r.takeovers for r in results) >= 20
    assert sum(1 for r in results if _raced(r.trace)) >= 3
    # Planned switchovers: a drain, then an instance takes over (instance/services.py).
    assert sum(r.switchovers for r in results) >= 5


def _raced(trace: tuple[str, ...]) -> bool:
    """Two reader instances took over at the same epoch."""
    wanted = [e.rpartition(" at epoch ")[2] for e in trace if " takes over from " in e]
    return len(wanted) != len(set(wanted))


def _first_caught(flaws: Flaws, faults: Faults | None = None) -> InvariantViolation:
    for seed in range(FLAW_SEEDS_MAX):
        try:
            run_simulation(seed, STEPS, flaws=flaws, faults=faults, check_liveness=False)
        except InvariantViolation as exc:
            return exc
    raise AssertionError(f"{flaws} went unnoticed for {FLAW_SEEDS_MAX} seeds")


def test_checker_catches_acknowledging_at_three_nodes() -> None:
    caught = _first_caught(Flaws(ack_quorum=3))
    message = str(caught)
    assert "simulation seed" in message and "python -m sixfold.sim --seed" in message
    assert "held by only" in message  # an acknowledged commit on fewer than 4 nodes


def test_checker_catches_recovery_without_truncation() -> None:
    caught = _first_caught(Flaws(skip_truncation=True))
    assert "python -m sixfold.sim --seed" in str(caught)


def test_checker_catches_a_deposed_writer_answering_reads() -> None:
    """Today's bug before issue 10: a paused writer, deposed meanwhile, resumes and answers
    a stale client's read from its old VDL without confirming its epoch."""
    caught = _first_caught(Flaws(unconfirmed_reads=True))
    assert "answered a stale read" in str(caught), caught
    assert "--unconfirmed-reads" in str(caught)


def test_checker_catches_gc_of_records_no_version_covers() -> None:
    # After every GC step the oracle builds each page it collected from at the node's GC
    # horizon (the oldest point it serves): a record dropped without a covering version shows
    # at once. A reader's page read alone found it in 4 of 40 seeds.
    caught = _first_caught(Flaws(gc_without_versions=True))
    assert "differs from the durable history" in str(caught), caught


def test_checker_catches_a_switchover_that_leaves_commits_in_flight() -> None:
    busy = Faults(switchover=0.05, commit=0.6, drop=0.0, node_crash=0.0, writer_crash=0.0)
    caught = _first_caught(Flaws(drain_without_wait=True), busy)
    assert "a switchover's drain" in str(caught) and "--drain-without-wait" in str(caught)


def test_a_failed_drain_keeps_the_other_drains_hold() -> None:
    # Two switchovers drain writer1 at once; the first times out. When its failure lifted
    # every hold (as writer/writer.py did), writer1 took commits while the second drain's
    # switchover went ahead, leaving their outcome unknown. Seed 31298 found it; since gossip
    # rests while quiet the schedules differ, and seed 171 (switchovers six times as often, no
    # lost disks) is one that meets it now: a loop like this test's over seeds finds others.
    found = dataclasses.replace(Faults.from_rng(random.Random(171)), disk_loss=0.0, switchover=0.03)
    assert run_simulation(171, STEPS, faults=found).switchovers >= 2
    with pytest.raises(InvariantViolation, match="a switchover's drain"):
        flaws = Flaws(drain_lifts_all=True)
        run_simulation(171, STEPS, flaws=flaws, faults=found, check_liveness=False)


def test_drain_check_catches_coalescing_that_forgets_its_place_on_restart() -> None:
    """The bug of issue 18: a restart took everything below the stored SCL as coalesced, so
    those records were never coalesced, and GC, stopped at them, collected nothing more."""
    _assert_drain_check_catches(Flaws(coalesce_in_memory=True), "--coalesce-in-memory")


def _assert_drain_check_catches(flaws: Flaws, option: str) -> None:
    """Some seed's final drain check (every log drains below the durable point) fails."""
    for seed in range(FLAW_SEEDS_MAX):
        try:
            run_simulation(seed, STEPS, flaws=flaws, check_liveness=True)
        except InvariantViolation as exc:
            assert "logs did not drain" in str(exc) and option in str(exc)
            return
    raise AssertionError(f"{flaws} went unnoticed for {FLAW_SEEDS_MAX} seeds")


def test_failure_replays_identically() -> None:
    flaws = Flaws(ack_quorum=3)
    first = str(_first_caught(flaws))
    assert str(_first_caught(flaws)) == first


def test_quiet_cluster_commits_and_reads() -> None:
    calm = Faults(drop=0.0, node_crash=0.0, writer_crash=0.0, zombie=0.0)
    result = run_simulation(1, 200, faults=calm)
    # The first writer and the quiet phase's; a third when that one's recovery, repairing
    # lagging nodes one by one, outlasts a reader's takeover deadline (seed 1 does).
    assert result.recoveries in (2, 3) and result.node_crashes == 0
    assert result.acked_commits >= 50 and result.pages_checked >= 10


def test_main_replays_a_seed(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "3", "--steps", "100"]) == 0
    assert "seed 3: ok" in capsys.readouterr().out
