"""The simulator's bounds (in ticks, records and pages), the fault mix each seed chooses,
and the deliberate flaws that show the invariants catch bugs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from sixfold.core.commit_log import WriterLimits
from sixfold.core.quorum import COPIES, WRITE_QUORUM
from sixfold.core.takeover import TakeoverLimits

# -- bounds (units last) ----------------------------------------------------------------------

STEPS_DEFAULT = 400  # ticks of the fault phase
QUIET_TICKS_MAX = 400  # ticks allowed, after the faults stop, for a writer to make progress
NET_DELAY_TICKS_MAX = 4  # a message is delivered 1..this many ticks after it is sent
CALL_TIMEOUT_TICKS = 12  # a request with no answer by then has failed (NodeDownError)
MAX_NODES_DOWN = COPIES - WRITE_QUORUM  # crashed at once: writes still have a quorum
NODE_DOWN_TICKS_MAX = 40
WRITERS_MAX = 8  # writers started in one run (each crash or race starts a new one)
QUIET_WRITERS_MAX = 8  # more writers the liveness phase may start (racing takeovers)
WRITER_RESTART_TICKS_MAX = 10  # ticks between a writer crash and its successor starting
WRITER_PAUSE_TICKS = (40, 120)  # a paused writer resumes after this many ticks
RECOVERY_ATTEMPTS_MAX = 6  # a writer that fails this often gives up (bounds dueling writers)
RECOVERY_RETRY_TICKS = 6
REPAIR_BATCH_RECORDS_MAX = 16
GOSSIP_PERIOD_TICKS = 5
GOSSIP_RECORDS_MAX = 32  # records fetched from one peer per gossip round
REPAIRS_MAX = 4  # damaged records repaired per gossip round
APPEND_BATCH_RECORDS_MAX = 16
TAIL_RECORDS_MAX = 64  # records the writer holds for its shippers
SENDER_BACKOFF_TICKS_MAX = 8
READER_POLL_TICKS = 4
READ_POINT_TTL_TICKS = 40  # a reader silent this long no longer holds a node's GC back
COALESCE_RECORDS_SIM = 8  # records a simulated node coalesces in one step
GC_KEYS_SIM = 8  # records (and versions) it collects in one step
DRAIN_TICKS_MAX = 400  # after the faults, ticks for every log to drain below the durable point
PAGES = 6  # pages the workload writes (and reads) most
COLD_PAGES = 60  # pages above PAGES, each written now and then: some never again
COLD_WRITE_SHARE = 0.2  # of mini-transactions, those that also write a cold page
WRITES_PER_TXN_MAX = 3  # page writes in one mini-transaction
DELTA_OFFSET_MAX = 48  # bytes: deltas land in a small window so pages overlap often
DELTA_BYTES_MAX = 8
LAL_SIM = 24  # a small LSN allocation limit, so back-pressure and truncations are exercised
DISK_FAULTS_MAX = 1  # nodes with an unrepaired disk fault at once (a lost disk is one)
DISK_LOSS_CHOICES = (0.0, 0.0, 0.3)  # a seed's Faults.disk_loss, drawn from its own stream
SETTLE_POLL_TICKS = 5  # a membership change in progress checks the new and old nodes this often
REPLACE_CHOICES = (0.0, 0.0, 0.01)  # a seed's Faults.replace, drawn from its own stream
DRIVEN_WRITERS_MAX = 64  # writers a driven run may start (failovers are explicit there)
SIM_READ_RECORDS_MAX = 1_000  # records a node returns when a request sets no bound
DOWN_FOREVER = 1 << 62  # a node crashed by an explicit action stays down until restarted
# The writer's clock: one tick stands for 10 ms, so its limits keep their shipping meaning
# (a lingering batch waits 2 ticks, a VDL announcement 2, a silent node is down after 12).
SIM_TICK_S = 0.01
SIM_LIMITS = WriterLimits(
    lal=LAL_SIM,
    tail_records_max=TAIL_RECORDS_MAX,
    append_batch_records_max=APPEND_BATCH_RECORDS_MAX,
    append_timeout_s=CALL_TIMEOUT_TICKS * SIM_TICK_S,
    retry_backoff_s=SIM_TICK_S,
    retry_backoff_s_max=SENDER_BACKOFF_TICKS_MAX * SIM_TICK_S,
)  # every other limit as it ships
# Takeovers on the same clock, shortened: a writer gone for 20 ticks, or silent for 60 (a
# recovery under faults can take 30), is taken over from; a probe every 2 ticks.
SIM_TAKEOVER_LIMITS = TakeoverLimits(
    probe_interval_s=0.02,
    probe_timeout_s=0.1,
    probe_timeout_s_min=0.03,
    gone_after_s=0.2,
    silent_after_s=0.6,
)
PROBE_INTERVAL_TICKS = round(SIM_TAKEOVER_LIMITS.probe_interval_s / SIM_TICK_S)
INSTANCES = 2  # reader instances watching the writer, ranks 0 and 1
# A planned switchover (instance/services.py, DRAIN_HOLD_S and DRAIN_TIMEOUT_S shortened): the
# drained writer takes no commits for DRAIN_HOLD_TICKS, the promoting instance waits at most
# DRAIN_TIMEOUT_TICKS for its answer, and the writer gives up after DRAIN_WAIT_TICKS_MAX if
# its commits are not all durable by then (writer/writer.py drain).
DRAIN_HOLD_TICKS = 60
DRAIN_TIMEOUT_TICKS = 40
DRAIN_WAIT_TICKS_MAX = 30


@dataclass(frozen=True, slots=True)
class Faults:
    """Per-tick fault probabilities; chosen from the seed so runs differ in character."""

    drop: float = 0.03
    node_crash: float = 0.01
    writer_crash: float = 0.008
    zombie: float = 0.3  # a crashed writer keeps running, partitioned (it must be fenced)
    pause: float = 0.3  # of the other crashes: the writer is paused, and resumes later
    client_read: float = 0.3  # a client with a stale view reads a page from some writer
    # A reader keeps its read point this many ticks before it takes a newer one (a long
    # query): it reports the point it holds, and the nodes' GC must keep what it needs.
    read_point_hold_ticks: int = 30
    # Readers' promotion stagger (sixfold/core/takeover.py): 0 races them at once.
    stagger_s: float = 0.02
    switchover: float = 0.005  # an operator asks an idle reader instance for a switchover
    commit: float = 0.5  # a client starts a mini-transaction
    node_commit: float = 0.7  # a node syncs its queued appends (fsync latency)
    # Of node crashes, those whose disk is replaced by an empty one: the node hydrates from
    # its peers when it comes back (sixfold/core/hydration.py). Chosen apart from the rest
    # of the mix (Simulation), so seeds without it replay as before.
    disk_loss: float = 0.0
    # Per tick, an operator replaces a member with its AZ's spare (a3 b3 c3, each used once;
    # sixfold/core/replacement.py). Drawn from a stream of its own, as disk_loss: seeds
    # without it have no spares, and replay as before.
    replace: float = 0.0

    @staticmethod
    def from_rng(rng: random.Random) -> Faults:
        return Faults(
            drop=rng.choice([0.0, 0.02, 0.05, 0.1]),
            node_crash=rng.choice([0.0, 0.005, 0.01, 0.02]),
            writer_crash=rng.choice([0.0, 0.005, 0.01]),
            zombie=rng.choice([0.0, 0.3, 0.6]),
            stagger_s=rng.choice([0.0, 0.02, 0.05]),
            commit=rng.choice([0.3, 0.6]),
            node_commit=rng.choice([0.4, 0.8]),
            pause=rng.choice([0.3, 0.6, 0.9]),
            client_read=rng.choice([0.1, 0.3]),
            read_point_hold_ticks=rng.choice([0, 10, 30]),
            switchover=rng.choice([0.0, 0.005, 0.01]),
        )


@dataclass(frozen=True, slots=True)
class Flaws:
    """Deliberate bugs, to show the invariants catch them. All off in a correct run."""

    ack_quorum: int = WRITE_QUORUM  # acknowledge a commit once this many nodes complete it
    skip_truncation: bool = False  # recover without truncating, reusing LSNs above VDL
    serve_corrupt: bool = False  # a node never checks CRCs (reads and scrub)
    unconfirmed_reads: bool = False  # a writer answers reads without confirming its epoch
    coalesce_in_memory: bool = False  # a restart takes all below the stored SCL as coalesced
    gc_without_versions: bool = False  # GC drops records below its horizon, covered or not
    drain_without_wait: bool = False  # a drained writer answers before its commits are durable
    drain_lifts_all: bool = False  # a failed drain lifts every drain's hold, not its own
    no_hydration: bool = False  # a node that lost its disk waits for records (before issue 14)


class InvariantViolation(AssertionError):
    pass
