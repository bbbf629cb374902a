"""A deterministic simulation of the whole volume: six nodes, writers and a reader, one seed.

The simulator runs the code that ships wherever it is free of I/O, and replaces only what the
asyncio shells do: the network is a queue of messages with delay, drop and reorder; a node's
disk is a dict of records, made durable by a commit step that a crash may forestall (the real
node acknowledges only after fsync, so a crash loses exactly the appends queued but not yet
committed). Time is a logical clock in ticks (SIM_TICK_S each for the writer's limits); every
random choice comes from one random.Random(seed), so a seed replays the same trace exactly
(the approach of TigerBeetle's VOPR and FoundationDB's simulator).

The writer IS the shipping one: recovery is sixfold/core/recovery_machine.py's Recovery (seal on
>= 4, sync the newest truncation set, plan, write the new set versioned with the epoch,
repair), and the commit pipeline is sixfold/core/commit_log.py's CommitLog with a NodeShipper per
node (batching, the window in flight, lingering, VDL announcements, acks to VCL and VDL,
trimming, fencing), driven here as writer/recovery.py and writer/pipeline.py drive them over
gRPC; only the streams are simulated. Page reads, the reader's and the writers', are
sixfold/core/page_read.py's (a covering node in turn, else a read quorum), and the read point is
sixfold/core/read_point.py's. Failover is the readers' own: two reader instances (ranks 0 and 1)
run sixfold/core/takeover.py's WriterWatch on the epochs the nodes report, probe the writer, and
take over at exactly the next epoch when it is gone or silent long enough, racing each other
when their stagger is 0 (TakeoverLimits on a shorter clock). An operator's planned
switchover drains the writer (no new commits, and an answer once every commit it took is
durable, as writer/writer.py's drain) and promotes an idle instance: the drain must leave
no commit with an unknown outcome, and the new writer recovers at or above its VDL. A node's commit step, restart
and gossip round are the shipping ones too (sixfold/core/node_commit.py, node_restart.py,
gossip_round.py), their local steps done on the simulated disk; so are its seal, truncation
and read gates (sixfold/core/segment.py), the coalescing plan and the GC horizon
(log_cleanup.py), and the read points readers report to it (read_point.py's ReadPointTable).
What a node keeps of its own is its disk: a dict of records and versions, walked where
storage_node/store.py walks LMDB.

Faults stay within what the design tolerates for progress (at most MAX_NODES_DOWN nodes down
at once), but the safety invariants are checked after every step whatever happens:
- every record of the durable history up to the highest durable point (acknowledged commits
  and recovered VDLs) is held by a write quorum of nodes, so any 2 nodes (an AZ, or AZ+1 for
  reads) may fail without losing an acknowledged commit (P17 §2);
- a reader's read point is a durable point on that history, and every page it reads equals
  the page materialised from that history at its read point (P18 §3);
- at most one writer receives acknowledgements in any epoch (P18 §2.4);
- no node holds or serves a record cancelled by a truncation it knows, no cancelled LSN is
  ever reused, acknowledged or made visible, and a node whose truncation set is as new as a
  completed recovery's holds that recovery's range (P17 §4.3, P18 §2.4).

A writer crashes (its port refuses: gone), is paused (a SIGSTOP, a long GC: silent) or is
cut off from the instances while it still reaches the nodes (a zombie); a reader takes over
and the old writer must be fenced. Clients with a stale view send page reads to any
writer they knew, a paused or deposed one included; every read a writer answers must be
linearizable: no older than the newest commit acknowledged anywhere before it was sent
(the writer confirms its epoch on a read quorum first: sixfold/core/read_index.py).

Nodes coalesce their logs into page versions and collect garbage with the rules that ship
(sixfold/core/log_cleanup.py): a coalescing frontier and the versions are durable, the rest is
lost in a crash, so crashes land in the middle of both. Reads are then served from versions
and the records left, and must still match the history; after the faults the logs must
drain.

Disk faults (driven mode only, DrivenCluster): a record is CRC-checked on every read from
disk and a corrupt one is never returned or applied (the read fails, and the node marks it for
repair); a periodic scrub finds the rest. At restart a corrupt or torn record above the stored
SCL is dropped and gossip fetches it again; one at or below it is rewritten in place from a
peer's intact copy, never truncated, the SCL kept. A durable LSN then counts as held while its
node re-fetches it, but at least WRITE_QUORUM - DISK_FAULTS_MAX intact copies must remain.

The simulator's rooms: network.py (messages, partitions, the actors' call plumbing),
node.py, writer.py and reader.py (the actors hosting the shipping core), oracle.py (the true
history and the invariants), faults.py (bounds, the fault mix, deliberate flaws), this module
(the seeded run) and driven.py (the cluster driven one explicit action at a time).

Replay a failing seed with: python -m sixfold.sim --seed N [--steps S]
A driven run (tests/test_state_machine.py) is replayed from the steps hypothesis prints.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import random
import sys
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sixfold.core.membership import Membership, describe
from sixfold.core.quorum import NODE_AZ, NODE_NAMES, SPARE_NAMES, WRITE_QUORUM
from sixfold.core.record import RedoRecord
from sixfold.core.truncation import TruncationRange
from sixfold.sim.faults import (
    DISK_FAULTS_MAX,
    DISK_LOSS_CHOICES,
    DRAIN_TICKS_MAX,
    GOSSIP_PERIOD_TICKS,
    INSTANCES,
    MAX_NODES_DOWN,
    NODE_DOWN_TICKS_MAX,
    PAGES,
    QUIET_TICKS_MAX,
    QUIET_WRITERS_MAX,
    REPLACE_CHOICES,
    STEPS_DEFAULT,
    WRITER_PAUSE_TICKS,
    WRITER_RESTART_TICKS_MAX,
    WRITERS_MAX,
    Faults,
    Flaws,
    InvariantViolation,
)
from sixfold.sim.network import REFUSED, Message, Network, partition_side
from sixfold.sim.node import SimNode
from sixfold.sim.oracle import Oracle
from sixfold.sim.reader import SimInstance, SimReader
from sixfold.sim.writer import SimWriter

if TYPE_CHECKING:
    from sixfold.sim.network import Actor

# -- the simulation -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SimulationResult:
    seed: int
    steps: int
    trace_digest: str  # sha256 of the event trace: equal for equal seeds
    trace: tuple[str, ...]
    acked_commits: int
    writers_started: int
    recoveries: int
    node_crashes: int
    pages_checked: int
    durable_point: int
    writer_reads: int = 0
    writer_pauses: int = 0
    takeovers: int = 0  # writers started by a reader instance's writer watch
    switchovers: int = 0  # writers started by a planned switchover, after a drain
    disk_losses: int = 0  # crashed nodes whose disk was replaced by an empty one
    hydrations: int = 0  # hydrations completed (sixfold/core/hydration.py)
    replacements: int = 0  # membership changes completed (sixfold/core/replacement.py)
    reverted: int = 0  # ... and reverted (the old node came back complete first)


class Simulation:
    def __init__(
        self, seed: int, steps: int, flaws: Flaws | None = None, faults: Faults | None = None
    ) -> None:
        self.seed = seed
        self.steps = steps
        self.rng = random.Random(seed)
        # Lost disks draw from a stream of their own: the main stream, and so every seed
        # without them, replays as before they were added.
        self.disk_rng = random.Random(f"disk-loss/{seed}")
        self.faults = Faults.from_rng(self.rng)
        self.faults = dataclasses.replace(
            self.faults, disk_loss=self.disk_rng.choice(DISK_LOSS_CHOICES)
        )
        # So do membership changes (an operator's replacements), for the same reason.
        self.membership_rng = random.Random(f"membership/{seed}")
        self.faults = dataclasses.replace(
            self.faults, replace=self.membership_rng.choice(REPLACE_CHOICES)
        )
        if faults is not None:
            self.faults = faults
        self.flaws = flaws or Flaws()
        self.tick = 0
        self.call_seq = 0
        self.network = Network(self)
        self.oracle = Oracle()
        self.trace: list[str] = []
        self.dirty_nodes: list[SimNode] = []
        self.nodes = self._make_nodes()
        self.membership = Membership.initial()  # the newest a writer shipped by
        self.replacements: dict[str, int] = {"completed": 0, "reverted": 0}
        self.writers: list[SimWriter] = []
        self.reader = SimReader(self, "reader1")
        self.instances: list[SimInstance] = []  # the random mode's writer watches (run())
        self.next_writer_at = 0  # tick at which a new writer starts (-1: none pending)
        self.acked_count = 0
        self.recoveries = 0
        self.node_crashes = 0
        self.writer_pauses = 0
        self.takeovers = 0
        self.switchovers = 0
        self.disk_losses = 0
        self.hydrations = 0
        self.commits_paused = False  # the drain check stops the workload's commits
        # The driven mode (DrivenCluster): explicit actions instead of random faults.
        self.driven = False
        self.failed = False
        self.writers_max = WRITERS_MAX
        self.client_writes: deque[list[int]] = deque()  # mini-transactions (their pages)
        self.cut: set[frozenset[str]] = set()  # endpoint pairs whose link is cut
        self.disk_faults: dict[str, set[int]] = {}  # node -> LSNs a disk fault destroyed

    def _make_nodes(self) -> dict[str, SimNode]:
        """The six nodes, and a spare per AZ when the seed replaces nodes. Each gossips with
        every other; the spares' first rounds are drawn from their own stream."""
        names = [*NODE_NAMES, *(SPARE_NAMES if self.faults.replace else ())]
        offsets = [
            (self.rng if n in NODE_NAMES else self.membership_rng).randint(1, GOSSIP_PERIOD_TICKS)
            for n in names
        ]
        return {
            n: SimNode(self, n, [p for p in names if p != n], offset)
            for n, offset in zip(names, offsets, strict=True)
        }

    # -- reporting --------------------------------------------------------------------------------

    def fail(self, what: str) -> None:
        flaws = "" if self.flaws == Flaws() else f" (with {self.flaws})"
        options = ""
        if self.flaws.ack_quorum != WRITE_QUORUM:
            options += f" --ack-quorum {self.flaws.ack_quorum}"
        if self.flaws.skip_truncation:
            options += " --skip-truncation"
        if self.flaws.unconfirmed_reads:
            options += " --unconfirmed-reads"
        if self.flaws.coalesce_in_memory:
            options += " --coalesce-in-memory"
        if self.flaws.gc_without_versions:
            options += " --gc-without-versions"
        if self.flaws.drain_without_wait:
            options += " --drain-without-wait"
        if self.flaws.drain_lifts_all:
            options += " --drain-lifts-all"
        if self.flaws.no_hydration:
            options += " --no-hydration"
        self.failed = True
        if self.driven:
            raise InvariantViolation(
                f"driven simulation seed {self.seed} tick {self.tick}{flaws}: {what}. The "
                "state machine's printed steps replay it."
            )
        raise InvariantViolation(
            f"simulation seed {self.seed} step {self.tick}{flaws}: {what}. Replay: "
            f"python -m sixfold.sim --seed {self.seed} --steps {self.steps}{options}"
        )

    def trace_event(self, event: str) -> None:
        self.trace.append(f"{self.tick} {event}")

    def store(self, node: SimNode, record: RedoRecord) -> None:
        if record.lsn in node.log:
            if record.lsn in node.damaged:  # the store overwrites the key: repaired
                self.repair(node, record)
            return
        node.log[record.lsn] = record
        self.oracle.on_store(self, node.name, record)
        if node.name in self.disk_faults:
            self.disk_faults[node.name].discard(record.lsn)

    def forget(self, node: SimNode, lsn: int) -> None:
        del node.log[lsn]
        if node.damaged.pop(lsn, None) is not None:
            node.needs_repair.discard(lsn)
            return  # no longer counted as held since it was damaged
        self.oracle.on_forget(self, lsn)

    def repair(self, node: SimNode, record: RedoRecord) -> None:
        """An intact copy replaces a damaged one, durably (the SCL does not move)."""
        del node.damaged[record.lsn]
        node.needs_repair.discard(record.lsn)
        self.oracle.on_store(self, node.name, record)
        if node.name in self.disk_faults:
            self.disk_faults[node.name].discard(record.lsn)
        self.trace_event(f"{node.name} repaired LSN {record.lsn}")

    def on_membership(self, membership: Membership) -> None:
        """A writer ships by `membership`: a change that settled is counted once."""
        if not membership.is_newer_than(self.membership):
            return
        before, self.membership = self.membership, membership
        if before.change is not None and membership.change is None:
            settled = "completed" if before.change.new in membership.holders else "reverted"
            self.replacements[settled] += 1
        self.trace_event(f"membership epoch {membership.epoch} in force")

    def _maybe_replace(self) -> None:
        """An operator replaces a member with its AZ's spare, if that is still empty: with
        --force when the member is up (`sixfold replace`), while the other faults run."""
        rng = self.membership_rng
        if not self.faults.replace or rng.random() >= self.faults.replace:
            return
        writers = self._active_writers()
        if not writers:
            return
        writer = writers[-1]
        membership = writer.log.membership if writer.log is not None else self.membership
        old = rng.choice(membership.holders)
        spares = [
            n
            for n in SPARE_NAMES
            if NODE_AZ[n] == NODE_AZ[old] and n not in membership.nodes and self.nodes[n].empty
        ]
        if spares:
            force = self.nodes[old].up
            self.trace_event(f"operator: replace {old} with {spares[0]} (force {force})")
            writer.replace(old, spares[0], force)

    def _maybe_lose_disk(self, node: SimNode) -> None:
        """A crashed node's disk is replaced by an empty one, within the disk fault budget."""
        lose = self.faults.disk_loss and not self.disk_faults
        if lose and self.disk_rng.random() < self.faults.disk_loss:
            node.lose_disk()
            self.disk_losses += 1
            self.trace_event(f"{node.name} lost its disk")

    def lose_copies(self, node: SimNode, lsns: set[int]) -> None:
        """Every copy `node` held is gone: each must come back (records by gossip, or page
        images by hydration) before another disk fault may strike."""
        damaged = self.disk_faults.setdefault(node.name, set())
        fresh = sorted(lsns - damaged)
        damaged |= lsns  # first: each is re-fetching when the oracle counts its copies
        for lsn in fresh:
            self.oracle.on_damage(self, lsn)

    def hydrated(self, node: SimNode, target: int) -> None:
        """`node` holds every page as of `target`: the copies at or below it are back."""
        self.hydrations += 1
        self.trace_event(f"{node.name} hydrated to {target}")
        lost = self.disk_faults.get(node.name, set())
        back = {x for x in lost if x <= target}
        for lsn in back:
            self.oracle.holders[lsn] += 1
            node.held_in_versions.add(lsn)
        lost -= back

    def covered(self, node: SimNode, lsn: int) -> None:
        """A damaged record at or below the node's coalescing frontier is dropped, not
        repaired: its content is in the node's versions, which count as a copy again."""
        assert lsn <= node.meta.coalesced_through
        del node.log[lsn]
        del node.damaged[lsn]
        node.needs_repair.discard(lsn)
        self.oracle.holders[lsn] += 1
        node.held_in_versions.add(lsn)
        if node.name in self.disk_faults:
            self.disk_faults[node.name].discard(lsn)
        self.trace_event(f"{node.name} dropped damaged LSN {lsn}, covered by its versions")

    def damage(self, node: SimNode, lsn: int, bad: bytes) -> None:
        assert lsn in node.log and lsn not in node.damaged
        node.damaged[lsn] = bad
        self.disk_faults.setdefault(node.name, set()).add(lsn)
        self.oracle.on_damage(self, lsn)

    def prune_disk_faults(self) -> None:
        """A destroyed copy need not come back once the node's truncations cancel it."""
        for name, lsns in list(self.disk_faults.items()):
            st = self.nodes[name].state
            lsns -= {x for x in lsns if st.cancels(self.oracle.generated[x])}
            if not lsns:
                del self.disk_faults[name]

    def on_recovered(self, writer: SimWriter, epoch: int, vdl: int, rng: TruncationRange) -> None:
        self.recoveries += 1
        self.trace_event(f"{writer.name} recovered epoch {epoch} VDL {vdl} truncating {rng}")
        if vdl < writer.drained_vdl:  # instance/services.py _promote asserts the same
            self.fail(
                f"{writer.name} recovered at VDL {vdl}, below the VDL {writer.drained_vdl} of "
                "the writer it switched over from: a planned switchover lost commits"
            )
        self.oracle.on_recovered(self, writer.name, vdl, rng)
        self.dirty_nodes.extend(self.nodes.values())  # every node's set is checked against it

    # -- the run ----------------------------------------------------------------------------------

    def run(self, check_liveness: bool = True) -> SimulationResult:
        """The random mode: one writer starts; after a crash, pause or partition, the reader
        instances' writer watches decide when to take over, and race to."""
        self.instances = [SimInstance(self, f"r{i + 1}", rank=i) for i in range(INSTANCES)]
        for _ in range(self.steps):
            self.step(faults=True)
        if check_liveness:
            self._quiet_phase()
        return SimulationResult(
            seed=self.seed,
            steps=self.steps,
            trace_digest=hashlib.sha256("\n".join(self.trace).encode()).hexdigest(),
            trace=tuple(self.trace),
            acked_commits=self.acked_count,
            writers_started=len(self.writers),
            recoveries=self.recoveries,
            node_crashes=self.node_crashes,
            pages_checked=self.reader.pages_checked,
            durable_point=self.oracle.durable_point,
            writer_reads=sum(w.reads_answered for w in self.writers),
            writer_pauses=self.writer_pauses,
            takeovers=self.takeovers,
            switchovers=self.switchovers,
            disk_losses=self.disk_losses,
            hydrations=self.hydrations,
            replacements=self.replacements["completed"],
            reverted=self.replacements["reverted"],
        )

    def step(self, faults: bool) -> None:
        self.tick += 1
        if faults:
            self._inject_faults()
        if self.driven:
            self._manage_writers()
        self._restart_nodes()
        self._start_writer_if_due()
        self._deliver()
        for node in self.nodes.values():
            if node.up:
                self._step_node(node)
        if faults:
            self._client_read()
        for writer in self.writers:
            if writer.alive and not writer.paused:
                writer.expire_calls()
                writer.run_tasks()
                writer.step_pipeline()
        for actor in [self.reader, *self.instances]:
            actor.expire_calls()
            actor.run_tasks()
        self.check_invariants()

    def _step_node(self, node: SimNode) -> None:
        node.expire_calls()
        node.run_tasks()
        if node.queue and self.rng.random() < self.faults.node_commit:
            node.commit()
        node.maybe_gossip()
        if self.rng.random() < self.faults.node_commit:
            node.background_step()

    def _deliver(self) -> None:
        for message in self.network.due():
            if (
                self.cut
                and frozenset((partition_side(message.src), partition_side(message.dst)))
                in self.cut
            ):
                continue  # partitioned: lost
            if message.dst in self.nodes:
                node = self.nodes[message.dst]
                if not node.up:
                    continue
                if message.is_reply:
                    node.on_reply(message)
                else:
                    node.on_request(message)
                continue
            actor = self._endpoint(message.dst)
            if message.is_reply:
                if actor is not None:
                    actor.on_reply(message)
            elif isinstance(actor, SimWriter):
                actor.on_instance_call(message)
            elif any(w.name == message.dst for w in self.writers):  # a dead writer's port
                self.network.send(Message(message.dst, message.src, message.call_id, REFUSED, True))

    def _endpoint(self, name: str) -> Actor | None:
        if name == self.reader.name:
            return self.reader
        for instance in self.instances:
            if instance.name == name:
                return instance
        for writer in self.writers:
            if writer.name == name and writer.alive:
                return writer
        return None

    def _client_read(self) -> None:
        """A client with a stale view reads a page from a writer it knew: any live writer,
        paused or deposed ones included."""
        if self.rng.random() >= self.faults.client_read:
            return
        known = [w for w in self.writers if w.alive]
        if known:
            writer = self.rng.choice(known)
            writer.client_read(self.rng.randrange(PAGES), self.oracle.acked_floor)

    # -- faults ---------------------------------------------------------------------------------

    def _inject_faults(self) -> None:
        rng, faults = self.rng, self.faults
        down = [n for n in self.nodes.values() if not n.up]
        if len(down) < MAX_NODES_DOWN and rng.random() < faults.node_crash:
            node = rng.choice([n for n in self.nodes.values() if n.up])
            node.crash(self.tick + rng.randint(1, NODE_DOWN_TICKS_MAX))
            self.node_crashes += 1
            self.trace_event(f"crash {node.name} until {node.down_until}")
            self._maybe_lose_disk(node)
        self._maybe_replace()
        if not self.recoveries:
            # No writer ever took an epoch, so no reader takes over: the designated writer's
            # supervisor starts it again (instance/host.py _start_as_writer).
            self._manage_writers()
        active = [w for w in self._active_writers() if not w.hidden]
        idle = [i for i in self.instances if not i.is_writer]
        if faults.switchover and idle and rng.random() < faults.switchover:
            rng.choice(idle).switch_over()
        if active and rng.random() < faults.writer_crash:
            # No successor is scheduled: the reader instances notice, and take over.
            victim = active[-1]
            if rng.random() < faults.zombie:
                victim.hidden = True
                self.trace_event(f"{victim.name} cut off from the instances (zombie)")
            elif rng.random() < faults.pause:
                victim.paused_until = self.tick + rng.randint(*WRITER_PAUSE_TICKS)
                self.writer_pauses += 1
                self.trace_event(f"{victim.name} paused until {victim.paused_until}")
            else:
                victim.alive = False
                self.trace_event(f"{victim.name} crashed")

    def _active_writers(self) -> list[SimWriter]:
        return [
            w for w in self.writers if w.alive and not w.fenced and not w.gave_up and not w.paused
        ]

    def _manage_writers(self) -> list[SimWriter]:
        """The cluster manager: it starts a writer when none runs. The driven mode's; the
        random mode has reader instances, and needs it only before a first recovery."""
        active = self._active_writers()
        if not active and self.next_writer_at < 0:
            # The writer process gave up or was fenced: the cluster manager starts another.
            self.next_writer_at = self.tick + self.rng.randint(1, WRITER_RESTART_TICKS_MAX)
        return active

    def _restart_nodes(self) -> None:
        for node in self.nodes.values():
            if not node.up and node.down_until <= self.tick:
                node.restart()
                self.trace_event(
                    f"restart {node.name} epoch {node.state.epoch} scl {node.state.scl}"
                )

    def _start_writer_if_due(self) -> None:
        if self.next_writer_at < 0 or self.tick < self.next_writer_at:
            return
        self.next_writer_at = -1
        if len(self.writers) < self.writers_max:
            self._new_writer()

    def start_first_writer(self) -> None:
        self.next_writer_at = -1
        self._new_writer()

    def _new_writer(self, epoch_wanted: int = 0) -> SimWriter:
        writer = SimWriter(self, f"writer{len(self.writers) + 1}", epoch_wanted)
        self.writers.append(writer)
        self.trace_event(f"start {writer.name}")
        return writer

    def promote(self, instance: SimInstance, silent: str, epoch_wanted: int) -> SimWriter | None:
        """`instance` takes over from `silent`: a writer that recovers at `epoch_wanted`."""
        if len(self.writers) >= self.writers_max:
            return None
        self.takeovers += 1
        self.trace_event(f"{instance.name} takes over from {silent} at epoch {epoch_wanted}")
        return self._new_writer(epoch_wanted)

    def switch_over(self, instance: SimInstance, drained: str, vdl: int) -> SimWriter | None:
        """`instance` takes over from `drained`, whose commits were all durable at `vdl`."""
        if len(self.writers) >= self.writers_max:
            return None
        self.switchovers += 1
        self.trace_event(f"{instance.name} switches over from {drained}, drained at VDL {vdl}")
        old = next(w for w in self.writers if w.name == drained)
        if old.log is not None and vdl < old.log.last_commit_lsn:
            self.fail(
                f"{drained} answered a switchover's drain at VDL {vdl}, but it had taken a "
                f"commit at LSN {old.log.last_commit_lsn}: its outcome is unknown after the "
                "switchover, which must lose nothing"
            )
        writer = self._new_writer()
        writer.drained_vdl = vdl
        return writer

    # -- liveness: with the faults gone, a writer must commit and the reader catch up ----------

    def _quiet_phase(self) -> None:
        self.network.drop = 0.0
        for node in self.nodes.values():
            node.down_until = min(node.down_until, self.tick)
        for writer in self.writers:
            writer.alive = False
        self.next_writer_at = -1
        self.writers_max = len(self.writers) + QUIET_WRITERS_MAX
        writer = self._new_writer()
        acked_before = len(self.oracle.acked)
        for _ in range(QUIET_TICKS_MAX):
            self.step(faults=False)
            acked = self.oracle.acked
            if len(acked) > acked_before and self.reader.read_point >= acked[acked_before]:
                self._drain_logs()
                return
        self.fail(
            f"no progress within {QUIET_TICKS_MAX} ticks after the faults stopped (all nodes "
            f"up): writer {'recovered' if writer.log else 'not recovered'}, "
            f"{self.acked_count - acked_before} commits acknowledged, reader read point "
            f"{self.reader.read_point}"
        )

    def _drain_logs(self) -> None:
        """Every log drains below the durable point: coalescing and GC survived the crashes
        (issue 18: after a restart they stopped for good)."""
        # No new writes: nothing the drain needs may come from pages written again later.
        self.commits_paused = True
        target = self.oracle.durable_point
        for _ in range(DRAIN_TICKS_MAX):
            left = {
                n.name: [x for x in n.log if x <= target]
                for n in self.nodes.values()
                if n.name in self.membership.nodes  # a spare or a replaced node keeps its log
            }
            if not any(left.values()):
                break
            self.step(faults=False)
        else:
            stuck = {n: f"{len(lsns)} from LSN {min(lsns)}" for n, lsns in left.items() if lsns}
            self.fail(
                f"logs did not drain below the durable point {target} within "
                f"{DRAIN_TICKS_MAX} ticks after the faults: {stuck}"
            )
        self._settle_membership()

    def _settle_membership(self) -> None:
        """A membership change in progress settles once the faults stop: every node is up."""
        for _ in range(DRAIN_TICKS_MAX):
            if self.membership.change is None:
                return
            self.step(faults=False)
        self.fail(
            f"the membership change of epoch {self.membership.epoch} did not settle within "
            f"{DRAIN_TICKS_MAX} ticks after the faults ({describe(self.membership)})"
        )

    # -- invariants -------------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Run after every step. The oracle checks history events as they happen; here the
        state of every node that changed this step."""
        for node in self.dirty_nodes:
            self._check_node(node)
        self.dirty_nodes.clear()

    def _check_node(self, node: SimNode) -> None:
        st = node.state
        for lsn, record in node.log.items():
            if st.cancels(record):
                self.fail(f"{node.name} holds LSN {lsn} that its truncations cancel")
        if st.scl and st.scl not in node.log and st.scl > node.meta.gc_horizon:
            self.fail(f"{node.name} has SCL {st.scl} but does not hold that record")
        if st.vdl_epoch > st.epoch:
            self.fail(f"{node.name} learned a VDL of epoch {st.vdl_epoch} above its epoch")
        if st.truncations_version > st.epoch:
            self.fail(
                f"{node.name} holds a truncation set of epoch {st.truncations_version} "
                f"above its epoch {st.epoch}"
            )
        for rng in self.oracle.truncations:
            # A completed recovery's set reached a write quorum, so every later recovery saw
            # it and built on it: no set as new as it may have dropped its range.
            if st.truncations_version >= rng.epoch and rng not in st.truncations:
                self.fail(
                    f"{node.name}'s truncation set of epoch {st.truncations_version} lacks "
                    f"{rng}, written by a completed recovery"
                )

    def check_all(self) -> None:
        """A full check of the state, beyond the per-step one: every node, every durable LSN's
        copies, the reader's read point (the state machine runs it after each action)."""
        self.prune_disk_faults()
        if len(self.disk_faults) > DISK_FAULTS_MAX:
            self.fail(f"disk faults on {sorted(self.disk_faults)} at once, over the budget")
        for node in self.nodes.values():
            self._check_node(node)
        self.dirty_nodes.clear()
        for lsn in self.oracle.chain:
            self.oracle._check_held(self, lsn)
        if self.reader.epoch:
            self.oracle.check_read_point(self, self.reader.read_point)


def run_simulation(
    seed: int,
    steps: int = STEPS_DEFAULT,
    flaws: Flaws | None = None,
    faults: Faults | None = None,
    check_liveness: bool = True,
) -> SimulationResult:
    """Run one seeded simulation; raise InvariantViolation (naming seed and step) on a bug.

    `faults` overrides the fault mix the seed would choose (for targeted searches).
    """
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    sim = Simulation(seed, steps, flaws, faults)
    sim.start_first_writer()
    return sim.run(check_liveness)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sixfold.sim", description="Replay a seeded simulation."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="run this many seeds from --seed")
    parser.add_argument("--steps", type=int, default=STEPS_DEFAULT, help="ticks of faults")
    parser.add_argument("--trace", action="store_true", help="print the event trace")
    parser.add_argument(
        "--ack-quorum", type=int, default=WRITE_QUORUM, help="flaw: acknowledge at N nodes"
    )
    parser.add_argument("--skip-truncation", action="store_true", help="flaw: no truncation")
    parser.add_argument(
        "--unconfirmed-reads",
        action="store_true",
        help="flaw: writers answer reads without confirming their epoch",
    )
    parser.add_argument(
        "--coalesce-in-memory",
        action="store_true",
        help="flaw: a restart takes everything below the stored SCL as coalesced",
    )
    parser.add_argument(
        "--gc-without-versions",
        action="store_true",
        help="flaw: GC drops records below its horizon whether covered or not",
    )
    parser.add_argument(
        "--drain-without-wait",
        action="store_true",
        help="flaw: a switchover's drain answers before the writer's commits are durable",
    )
    parser.add_argument(
        "--drain-lifts-all",
        action="store_true",
        help="flaw: a failed drain lifts every drain's hold, not its own",
    )
    parser.add_argument(
        "--no-hydration",
        action="store_true",
        help="flaw: a node that lost its disk never hydrates, waiting for records peers collected",
    )
    args = parser.parse_args(argv)
    flaws = Flaws(
        ack_quorum=args.ack_quorum,
        skip_truncation=args.skip_truncation,
        unconfirmed_reads=args.unconfirmed_reads,
        coalesce_in_memory=args.coalesce_in_memory,
        gc_without_versions=args.gc_without_versions,
        drain_without_wait=args.drain_without_wait,
        drain_lifts_all=args.drain_lifts_all,
        no_hydration=args.no_hydration,
    )
    for seed in range(args.seed, args.seed + args.seeds):
        try:
            # The drain is the check of these flaws.
            liveness = flaws == Flaws() or flaws.coalesce_in_memory or flaws.no_hydration
            result = run_simulation(seed, args.steps, flaws, check_liveness=liveness)
        except InvariantViolation as exc:
            print(exc, file=sys.stderr)
            return 1
        if args.trace:
            print("\n".join(result.trace))
        print(
            f"seed {seed}: ok, {result.acked_commits} commits acknowledged, "
            f"{result.recoveries} recoveries by {result.writers_started} writers, "
            f"{result.node_crashes} node crashes, {result.writer_pauses} writer pauses, "
            f"{result.takeovers} takeovers, {result.switchovers} switchovers, "
            f"{result.disk_losses} disks lost, {result.hydrations} hydrations, "
            f"{result.replacements} replacements ({result.reverted} reverted), "
            f"{result.pages_checked} pages checked, {result.writer_reads} writer reads, "
            f"durable point {result.durable_point}, trace {result.trace_digest[:12]}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
