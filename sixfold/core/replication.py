"""Storage-tier replication to a secondary region (issue 16; Aurora Global Database), the
pure part: what the replication agent ships, where the secondary's durable point is, and how
far behind the primary it lags.

A secondary region is a whole volume of its own (six storage nodes in three AZs, its own
readers) with no writer. Its replication agent reads the primary's committed log from the
primary's storage nodes (records at or below the primary's VDL, which no recovery ever
truncates) and appends the very same records, CRCs and LSNs unchanged, to the secondary's
nodes. It counts a chunk durable at a write quorum of them (4 of 6, as the writer does) and
announces the chunk's end as the secondary's VDL; its readers read at that point. Every
chunk ends at a commit boundary (a CPL), so every durable point is a consistent volume.

The primary's writer never waits for any of this: the agent pulls.

The agent appends at the primary's epoch, which it seals on the secondary's nodes itself
(`epoch_to_seal`): records of epoch E are taken only by a node sealed at E or newer. A node
sealed newer by someone else means the region was promoted: the agent stops (fenced).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sixfold.core.errors import RegionError, RegionFencedError
from sixfold.core.quorum import WRITE_QUORUM, quorum_lsn
from sixfold.core.record import RedoRecord

REGIONS_SECONDARY_MAX = 5  # Aurora Global Database: up to five secondary regions
# An append to a secondary node ends at the first CPL after either bound: with a commit of
# at most 1,024 records (writer.PAGE_WRITES_MAX) it stays under the node's batch bounds.
CHUNK_RECORDS_MAX = 1_024
CHUNK_BYTES_MAX = 2 << 20
# Primary durable points remembered for the lag in seconds: about 80 s of rounds. A region
# further behind shows the age of the oldest point remembered, a lower bound.
LAG_SAMPLES_MAX = 4_096
RATE_WINDOW_S = 10.0  # the replication rate is measured over this window


def agent_owner(region: str) -> str:
    """The owner the agent seals the secondary's epochs as: the same across its restarts,
    so sealing an epoch it already holds again is a no-op."""
    return f"region-{region}-agent"


def chunks(
    records: Sequence[RedoRecord],
    records_max: int = CHUNK_RECORDS_MAX,
    bytes_max: int = CHUNK_BYTES_MAX,
) -> list[list[RedoRecord]]:
    """The records in appends of about `records_max` or `bytes_max`, each ending at a commit
    boundary (a CPL), so the end of each is a consistent point. Records after the last CPL
    are left out: their commit is not whole yet (the next round reads them again)."""
    out: list[list[RedoRecord]] = []
    current: list[RedoRecord] = []
    size = 0
    for record in records:
        current.append(record)
        size += len(record.encoded)
        if record.is_cpl and (len(current) >= records_max or size >= bytes_max):
            out.append(current)
            current, size = [], 0
    last_cpl = max((i for i, r in enumerate(current) if r.is_cpl), default=-1)
    if last_cpl >= 0:
        out.append(current[: last_cpl + 1])
    return out


def secondary_durable(acked_scls: Iterable[int], chunk_end: int) -> bool:
    """Whether a chunk ending at `chunk_end` is durable: a write quorum of the secondary's
    nodes acknowledged an SCL at or past it."""
    return quorum_lsn(list(acked_scls), WRITE_QUORUM) >= chunk_end


@dataclass(frozen=True, slots=True)
class SecondaryNode:
    """What the agent needs of one secondary node's state."""

    name: str
    epoch: int
    epoch_owner: str
    scl: int
    cpl_at_scl: int
    vdl: int  # the VDL it learned (the agent's announcements)
    vdl_epoch: int = 0  # the epoch it learned it at


def epoch_to_seal(primary_epoch: int, nodes: Sequence[SecondaryNode], region: str) -> int:
    """The epoch the agent must seal on the secondary's nodes before it appends records of
    `primary_epoch` (0: every node reachable already holds it). Refused when a node holds a
    newer epoch, or the same one sealed by another owner: the region was promoted."""
    owner = agent_owner(region)
    for node in nodes:
        if node.epoch > primary_epoch or (
            node.epoch == primary_epoch and node.epoch_owner not in ("", owner)
        ):
            raise RegionFencedError(
                f"secondary node {node.name} is sealed at epoch {node.epoch} by "
                f"{node.epoch_owner!r}, not by this region's agent at the primary's epoch "
                f"{primary_epoch}: the region was promoted, and replication into it stops"
            )
    if all(n.epoch == primary_epoch and n.epoch_owner == owner for n in nodes):
        return 0
    return primary_epoch


def resume_point(nodes: Sequence[SecondaryNode]) -> int:
    """Where the agent resumes after any break (it keeps nothing of its own): the newest VDL
    it announced that a node learned (it announces only points a write quorum stored), or
    the newest commit a write quorum of nodes holds whole, if higher (a seeded region starts
    there, and a chunk stored before the agent could announce it counts)."""
    learned = max((n.vdl for n in nodes), default=0)
    return max(learned, quorum_lsn([n.cpl_at_scl for n in nodes], WRITE_QUORUM))


class Lag:
    """How far the secondary is behind: in LSNs, and in seconds since the oldest primary
    durable point it does not have yet was seen. Times are the caller's clock."""

    def __init__(self, samples_max: int = LAG_SAMPLES_MAX) -> None:
        self.samples: deque[tuple[float, int]] = deque(maxlen=samples_max)
        self.shipped: deque[tuple[float, int]] = deque(maxlen=samples_max)
        self.primary = 0
        self.secondary = 0
        self.records_total = 0

    def saw_primary(self, durable: int, now: float) -> None:
        if durable > self.primary:
            self.primary = durable
            self.samples.append((now, durable))

    def replicated(self, durable: int, records: int, now: float) -> None:
        self.secondary = max(self.secondary, durable)
        self.records_total += records
        self.shipped.append((now, self.records_total))
        while self.samples and self.samples[0][1] <= self.secondary:
            self.samples.popleft()

    def lsns(self) -> int:
        return max(0, self.primary - self.secondary)

    def seconds(self, now: float) -> float:
        return now - self.samples[0][0] if self.samples else 0.0

    def rate(self, now: float, window_s: float = RATE_WINDOW_S) -> float:
        """Records a second over the last `window_s`."""
        recent = [(t, n) for t, n in self.shipped if now - t <= window_s]
        if len(recent) < 2 or recent[-1][0] <= recent[0][0]:
            return 0.0
        return (recent[-1][1] - recent[0][1]) / (recent[-1][0] - recent[0][0])


@dataclass(frozen=True, slots=True)
class RegionStatus:
    """What the agent reports of its region: the status file and its metrics."""

    region: str
    primary_durable: int  # the primary's durable point, as last seen
    durable: int  # the secondary's
    lag_lsns: int
    lag_s: float
    rate: float  # records replicated a second, lately
    epoch: int  # the epoch the agent appends at
    fenced: bool  # the region was promoted: the agent stopped
    error: str  # the last round's, if it failed
    updated_at: float  # seconds since the epoch


def check_new_region(name: str, existing: Sequence[str], primary: str) -> None:
    """A region to add: a new name, and room under the limit."""
    if not name or not name.replace("-", "").isalnum():
        raise RegionError(f"region name {name!r}: use letters, digits and '-'")
    if name == primary or name in existing:
        raise RegionError(f"a region named {name!r} already exists; choose another name")
    if len(existing) >= REGIONS_SECONDARY_MAX:
        raise RegionError(
            f"the volume already has {len(existing)} secondary regions "
            f"({', '.join(existing)}); REGIONS_SECONDARY_MAX={REGIONS_SECONDARY_MAX}: remove one "
            "first (`sixfold global remove-region NAME`)"
        )
