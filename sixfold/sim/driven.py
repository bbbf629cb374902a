"""The simulated cluster driven one explicit action at a time, for hypothesis's state
machine (tests/test_state_machine.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sixfold.core.errors import SixfoldError
from sixfold.core.quorum import WRITE_QUORUM
from sixfold.sim.faults import (
    DOWN_FOREVER,
    DRIVEN_WRITERS_MAX,
    PAGES,
    QUIET_TICKS_MAX,
    WRITES_PER_TXN_MAX,
    Faults,
)
from sixfold.sim.network import ENDPOINTS
from sixfold.sim.simulation import Simulation

if TYPE_CHECKING:
    from sixfold.sim.faults import Flaws
    from sixfold.sim.node import SimNode


class DrivenCluster:
    """The simulated cluster, driven one explicit action at a time (a state machine's rules).

    Nothing random happens but message delays and fsync timing (from the seed): no drops,
    crashes or writer failures unless an action asks. Invariants are checked after every tick;
    check() runs the full check. Disk faults (tear_tail, flip_bit) are refused (return False)
    beyond the budget: one node with an unrepaired fault, on a record some other node holds.
    """

    def __init__(self, seed: int, flaws: Flaws | None = None, node_commit: float = 0.7) -> None:
        faults = Faults(
            drop=0.0,
            node_crash=0.0,
            writer_crash=0.0,
            zombie=0.0,
            commit=0.0,
            node_commit=node_commit,
        )
        self.sim = sim = Simulation(seed, 0, flaws, faults)
        sim.driven = True
        sim.writers_max = DRIVEN_WRITERS_MAX
        sim.start_first_writer()

    # -- workload -------------------------------------------------------------------------------

    def write(self, pages: list[int]) -> None:
        """Submit a mini-transaction writing each of `pages` (1-3 distinct pages)."""
        if not 1 <= len(pages) <= WRITES_PER_TXN_MAX or len(set(pages)) != len(pages):
            raise ValueError(f"a mini-transaction writes 1-{WRITES_PER_TXN_MAX} distinct pages")
        if not all(0 <= p < PAGES for p in pages):
            raise ValueError(f"pages are 0-{PAGES - 1}, got {pages}")
        self.sim.client_writes.append(list(pages))

    def write_random(self, queued_max: int = 4) -> None:
        """A background client: one mini-transaction on pages drawn from the seed, unless
        `queued_max` are already waiting for a writer."""
        sim = self.sim
        if len(sim.client_writes) < queued_max:
            self.write(sim.rng.sample(range(PAGES), sim.rng.randint(1, WRITES_PER_TXN_MAX)))

    def read(self, page_no: int) -> None:
        """The reader reads `page_no` at its newest read point (checked against history)."""
        self.sim.reader.read_now(page_no)

    def advance(self, ticks: int) -> None:
        for _ in range(ticks):
            self.sim.step(faults=False)

    # -- node faults ----------------------------------------------------------------------------

    def node(self, name: str) -> SimNode:
        return self.sim.nodes[name]

    @property
    def down(self) -> list[str]:
        return [n.name for n in self.sim.nodes.values() if not n.up]

    def crash(self, name: str) -> bool:
        """Crash a node: it loses the appends it had not synced, and stays down."""
        node = self.node(name)
        if not node.up:
            return False
        lost = sum(len(q.records) for q in node.queue)
        node.crash(DOWN_FOREVER)
        self.sim.node_crashes += 1
        self.sim.trace_event(f"crash {name} (lost {lost} unsynced records)")
        return True

    def restart(self, name: str) -> bool:
        node = self.node(name)
        if node.up:
            return False
        node.restart()
        self.sim.trace_event(f"restart {name} epoch {node.state.epoch} scl {node.state.scl}")
        return True

    def lose_unsynced(self, name: str) -> bool:
        """Power loss: the node's unsynced appends are gone; it comes straight back up."""
        return self.crash(name) and self.restart(name)

    def tear_tail(self, name: str, keep_bytes: int, power_loss: bool) -> bool:
        """The highest stored record keeps only a prefix of its bytes (keep_bytes modulo its
        length); with power_loss the node then crashes and restarts."""
        node = self.node(name)
        if not node.log:
            return False
        lsn = max(node.log)
        if not self._fault_allowed(node, lsn):
            return False
        encoded = node.log[lsn].encoded
        self.sim.damage(node, lsn, encoded[: keep_bytes % len(encoded)])
        self.sim.trace_event(f"{name} torn tail at LSN {lsn}")
        if power_loss and node.up:
            self.lose_unsynced(name)
        return True

    def flip_bit(self, name: str, index: int, bit: int) -> bool:
        """Flip one bit (modulo its size) of the stored record at `index` (modulo the count)."""
        node = self.node(name)
        if not node.log:
            return False
        lsns = sorted(node.log)
        lsn = lsns[index % len(lsns)]
        if not self._fault_allowed(node, lsn):
            return False
        bad = bytearray(node.log[lsn].encoded)
        bit %= 8 * len(bad)
        bad[bit // 8] ^= 1 << (bit % 8)
        self.sim.damage(node, lsn, bytes(bad))
        self.sim.trace_event(f"{name} bit {bit} flipped in LSN {lsn}")
        return True

    def _fault_allowed(self, node: SimNode, lsn: int) -> bool:
        """Within the budget: no other unrepaired disk fault, and some node holds the record
        intact (a record on one disk only cannot be repaired)."""
        self.sim.prune_disk_faults()
        if self.sim.disk_faults or node.damaged:
            return False
        return any(
            lsn in other.log and lsn not in other.damaged
            for other in self.sim.nodes.values()
            if other is not node
        )

    # -- network --------------------------------------------------------------------------------

    def partition(self, group: set[str], add: bool = False) -> None:
        """Cut every link between `group` and the other endpoints (ENDPOINTS; "writer" is
        every writer process), replacing the current partition unless `add`. Messages in
        flight across the cut are lost."""
        assert group <= set(ENDPOINTS), group
        rest = set(ENDPOINTS) - group
        cut = {frozenset((a, b)) for a in group for b in rest}
        self.sim.cut = self.sim.cut | cut if add else cut
        self.sim.trace_event(f"partition {sorted(group)} from the rest")

    def partition_writer(self, nodes: set[str], add: bool = False) -> None:
        """Cut the links between the writer(s) and `nodes` (replacing, unless `add`)."""
        cut = {frozenset(("writer", n)) for n in nodes}
        self.sim.cut = self.sim.cut | cut if add else cut
        self.sim.trace_event(f"partition writer from {sorted(nodes)}")

    def heal(self) -> None:
        self.sim.cut.clear()
        self.sim.trace_event("heal")

    # -- writers --------------------------------------------------------------------------------

    def failover(self, zombie: bool = False) -> None:
        """Crash the newest writer (or, with zombie, leave it running unfenced) and start a new
        one, which recovers a new epoch."""
        sim = self.sim
        active = [w for w in sim.writers if w.alive and not w.fenced and not w.gave_up]
        if active and not zombie:
            active[-1].alive = False
        sim.trace_event(f"failover from {active[-1].name if active else 'none'} zombie={zombie}")
        sim.next_writer_at = -1
        sim._new_writer()

    # -- checks ---------------------------------------------------------------------------------

    def check(self) -> None:
        self.sim.check_all()

    def check_liveness(self, ticks_max: int = QUIET_TICKS_MAX) -> None:
        """Heal everything, restart every node, replace the writers by a fresh one: within
        ticks_max a write must commit and be read back, and every disk fault be repaired
        (each durable LSN intact on a write quorum again)."""
        sim = self.sim
        self.heal()
        for node in sim.nodes.values():
            if not node.up:
                self.restart(node.name)
        for writer in sim.writers:
            writer.alive = False
        sim.client_writes.clear()
        sim.next_writer_at = -1
        writer = sim._new_writer()
        page = 0
        self.write([page])
        acked_before = len(sim.oracle.acked)
        lsn = 0
        asked = audited = False
        for _ in range(ticks_max):
            sim.step(faults=False)
            acked = sim.oracle.acked
            if not lsn and len(acked) > acked_before:
                lsn = acked[acked_before]
            if lsn and sim.reader.read_point >= lsn and not asked:
                self.read(page)
                asked = True
            page_read = asked and sim.reader.last_read[0] == page
            if page_read and sim.reader.last_read[1] >= lsn and not audited:
                self.audit_reads()
                audited = True
            if audited and self._repaired():
                sim.check_all()
                return
        sim.check_all()
        sim.fail(
            f"no progress within {ticks_max} ticks after healing: writer {writer.name} "
            f"{'recovered' if writer.log else 'not recovered'}, commit "
            f"{lsn or 'not acknowledged'}, reader read point {sim.reader.read_point}, last "
            f"read {sim.reader.last_read}, disk faults unrepaired {sim.disk_faults}, damaged "
            f"{ {n.name: sorted(n.damaged) for n in sim.nodes.values() if n.damaged} }"
        )

    def audit_reads(self) -> None:
        """Ask every serving node for every page at the reader's read point, and for all its
        records: each answer must match the history, or be a refusal (a corrupt record the
        node has not repaired yet, a truncation set it lacks, an SCL below the point)."""
        sim = self.sim
        point, epoch = sim.reader.read_point, sim.reader.epoch
        for node in sim.nodes.values():
            if not node.up:
                continue
            for page_no in range(PAGES):
                try:
                    node.state.check_covers(point, epoch)
                    page = node.page_at(page_no, point)
                except SixfoldError:
                    continue
                sim.oracle.check_page(sim, node.name, page_no, point, page.image, page.page_lsn)
            try:
                node.read_records(0, node.state.scl, len(node.log))  # checked as served
            except SixfoldError:
                continue

    def _repaired(self) -> bool:
        sim = self.sim
        sim.prune_disk_faults()
        if sim.disk_faults or any(n.damaged for n in sim.nodes.values()):
            return False
        return all(sim.oracle.holders.get(x, 0) >= WRITE_QUORUM for x in sim.oracle.chain)
