"""`sixfold global switchover REGION` and `global failover REGION` (issue 16): a secondary
region becomes the primary; and the old primary's way back as a secondary.

Switchover (both regions up, nothing lost): drain the primary's writer (it takes no new
commit, and answers once every commit it took is durable), wait until the region's durable
point reaches the drained VDL, stop the region's agent, start a writer in the region (its
recovery seals a new epoch there), fence the old primary's nodes by sealing that epoch on
them as the agent that will replicate into them, then turn the old primary into a secondary
of the new one in place: its data is the same up to the drained VDL. The pause is from the
drain to the new writer accepting writes.

Failover (the primary is gone): stop the agent and start a writer in the region at once; it
recovers at what the region holds. Commits the primary acknowledged past that are lost: the
RPO, reported from the agent's last view. The old primary's directory is marked: when it is
started again it is fenced (its reachable nodes were sealed at the new epoch, and `up` will
not start it as a primary), its data past the divergence point is set aside, and it rejoins
as a secondary seeded from the new primary.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sixfold import cluster
from sixfold.clients import NodeClient, drain_writer
from sixfold.core.errors import RegionError
from sixfold.core.quorum import NODE_NAMES, WRITE_QUORUM
from sixfold.core.replication import agent_owner
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.tools import regions
from sixfold.tools.bench import wait_writer_ready
from sixfold.tools.seed import seed

DRAIN_HOLD_S = 30.0  # the old writer takes no commit for this long: the switchover's budget
CATCH_UP_LIMIT_S = 20.0  # a switchover waits this long for the region to reach the drain
SWITCHOVER_LAG_S_MAX = 10.0  # a region further behind than this is refused a switchover
WRITER_READY_LIMIT_S = 60.0


@dataclass(frozen=True, slots=True)
class Promoted:
    region: str
    epoch: int  # the new writer's
    vdl: int  # the new primary's recovered VDL: everything it holds
    pause_s: float  # switchover: from the drain to accepting writes; failover: to accepting
    lost_lsns: int | None  # failover: LSNs durable on the old primary not in the region
    lost_s: float | None  # failover: seconds of commits the region had not received


def switchover(primary_dir: Path, name: str) -> Promoted:
    primary = cluster.ClusterLayout.load(primary_dir)
    region = _region_of(primary, name)
    lag = regions.global_status(primary_dir)
    view = {r["region"]: r for r in lag["regions"]}[name]
    if not view["up"] or view["agent"] != "running":
        raise RegionError(f"region {name} is not replicating ({view}): nothing changed")
    if view["lag_s"] is not None and view["lag_s"] > SWITCHOVER_LAG_S_MAX:
        raise RegionError(
            f"region {name} lags {view['lag_lsns']} LSNs / {view['lag_s']:.1f} s, more than "
            f"SWITCHOVER_LAG_S_MAX={SWITCHOVER_LAG_S_MAX:g} s: wait for it, or fail over"
        )
    started = time.monotonic()
    address = primary.find_writer_address()
    drained = asyncio.run(drain_writer(address, DRAIN_HOLD_S, DRAIN_HOLD_S))
    _wait_caught_up(region, drained)
    cluster.kill_processes(region, [cluster.AGENT_NAME])
    promoted = _promote(region, primary)
    pause = time.monotonic() - started
    asyncio.run(_fence(primary.nodes, promoted.epoch, primary.region_name))
    _demote(primary, region, rewind=False)
    regions.start_region(cluster.ClusterLayout.load(primary_dir), WRITER_READY_LIMIT_S)
    _repoint_others(primary, region, rewind=False)
    return Promoted(name, promoted.epoch, promoted.vdl, pause, 0, 0.0)


def failover(primary_dir: Path, name: str) -> Promoted:
    primary = cluster.ClusterLayout.load(primary_dir)
    region = _region_of(primary, name)
    agent = regions.agent_status(Path(region.directory))
    cluster.kill_processes(region, [cluster.AGENT_NAME])
    started = time.monotonic()
    promoted = _promote(region, primary)
    pause = time.monotonic() - started
    # Whatever of the old primary still answers is fenced now; the rest when it returns.
    asyncio.run(_fence(primary.nodes, promoted.epoch, primary.region_name, required=False))
    cluster.stop_all(primary)
    _demote(primary, region, rewind=True)
    _repoint_others(primary, region, rewind=True)
    lost_lsns = max(agent["primary_durable"] - promoted.vdl, 0) if agent else None
    lost_s = agent["lag_s"] if agent else None
    return Promoted(name, promoted.epoch, promoted.vdl, pause, lost_lsns, lost_s)


def rejoin(directory: Path, timeout_s: float) -> int:
    """Start a former primary as a secondary of the new one: when it was failed over from,
    its data is set aside (it may hold commits past the divergence point) and it is seeded
    again. The LSN it was seeded at (0: it kept its data)."""
    layout = cluster.ClusterLayout.load(directory)
    primary = cluster.ClusterLayout.load(Path(layout.replica_of))
    seeded = 0
    if layout.rewind_pending:
        aside = directory / f"diverged-{time.strftime('%Y%m%dT%H%M%S')}"
        aside.mkdir()
        for name in NODE_NAMES:
            if (directory / name).exists():
                shutil.move(str(directory / name), aside / name)
        seeded = asyncio.run(seed(primary.nodes, directory, layout.region, primary.volume_id)).lsn
        layout.rewind_pending = False
        layout.save()
    regions.start_region(layout, timeout_s)
    return seeded


# -- steps ----------------------------------------------------------------------------------------


def _region_of(primary: cluster.ClusterLayout, name: str) -> cluster.ClusterLayout:
    if primary.replica_of:
        raise RegionError(
            f"{primary.directory} is itself a secondary of {primary.replica_of}: run this "
            "against the primary's directory"
        )
    if name not in primary.regions:
        known = ", ".join(primary.regions) or "none"
        raise RegionError(f"no secondary region named {name!r} (the secondaries: {known})")
    return cluster.ClusterLayout.load(Path(primary.regions[name]))


def _wait_caught_up(region: cluster.ClusterLayout, lsn: int) -> None:
    deadline = time.monotonic() + CATCH_UP_LIMIT_S
    while (asyncio.run(regions.durable_point(region.nodes)) or 0) < lsn:
        if time.monotonic() > deadline:
            raise RegionError(
                f"region {region.region} did not reach the drained VDL {lsn} within "
                f"{CATCH_UP_LIMIT_S:g} s: nothing changed (the primary takes writes again "
                f"within {DRAIN_HOLD_S:g} s)"
            )
        time.sleep(0.05)


def _promote(region: cluster.ClusterLayout, primary: cluster.ClusterLayout) -> pb.WriterState:
    """The region's layout gets a writer in place of its agent and becomes the primary,
    listing the old primary's other secondaries; the writer starts and recovers."""
    agent = region.processes.pop(cluster.AGENT_NAME)
    region.processes[cluster.WRITER_NAME] = cluster.ProcessInfo(
        cluster.WRITER_NAME, "writer", agent.port, metrics_port=cluster.free_port()
    )
    region.replica_of = ""
    region.regions = {n: d for n, d in primary.regions.items() if n != region.region}
    region.regions[primary.region_name] = primary.directory
    region.save()
    cluster.start_processes(region, [cluster.WRITER_NAME])
    address = region.processes[cluster.WRITER_NAME].address
    state = asyncio.run(wait_writer_ready(address, WRITER_READY_LIMIT_S))
    # Its readers were started never to take over: now they may.
    cluster.stop_processes(region, list(cluster.READER_NAMES))
    cluster.start_processes(region, list(cluster.READER_NAMES))
    return state


async def _fence(nodes: dict[str, str], epoch: int, region: str, required: bool = True) -> None:
    """Seal `epoch` on the old primary's nodes as the agent that will replicate into them: its
    writer can no longer reach a write quorum (P17 §4.3), and the agent appends there later."""
    clients = [NodeClient(n, a) for n, a in nodes.items() if n in NODE_NAMES]
    try:
        results = await asyncio.gather(
            *(c.seal(epoch, agent_owner(region), timeout=5.0) for c in clients),
            return_exceptions=True,
        )
    finally:
        for c in clients:
            await c.close()
    sealed = sum(1 for r in results if not isinstance(r, BaseException))
    if required and sealed < WRITE_QUORUM:
        raise RegionError(
            f"fenced only {sealed} of the old primary's nodes at epoch {epoch}; "
            f"{WRITE_QUORUM} needed: {[str(r) for r in results if isinstance(r, BaseException)]}"
        )


def _demote(
    primary: cluster.ClusterLayout, new_primary: cluster.ClusterLayout, rewind: bool
) -> None:
    """The old primary's layout becomes a secondary of the new primary: an agent in place of
    its writer, readers that never take over."""
    names = [n for n in (cluster.WRITER_NAME, *cluster.READER_NAMES) if n in primary.processes]
    cluster.stop_processes(primary, names)
    writer = primary.processes.pop(cluster.WRITER_NAME)
    primary.processes[cluster.AGENT_NAME] = cluster.ProcessInfo(
        cluster.AGENT_NAME, "agent", writer.port
    )
    primary.region = primary.region_name
    primary.replica_of = new_primary.directory
    primary.regions = {}
    primary.rewind_pending = rewind
    primary.save()


def _repoint_others(
    old: cluster.ClusterLayout, new_primary: cluster.ClusterLayout, rewind: bool
) -> None:
    """The old primary's other secondaries replicate from the new primary. After a failover
    one may hold commits the new primary lost: each is stopped and seeded again when it is
    next started (`up`); after a switchover nothing diverged, and only the agent restarts."""
    for directory in new_primary.regions.values():
        layout = cluster.ClusterLayout.load(Path(directory))
        if layout.directory == old.directory or not layout.replica_of:
            continue
        cluster.stop_processes(layout, [cluster.AGENT_NAME])
        layout.replica_of = new_primary.directory
        if rewind:
            cluster.stop_all(layout)
            layout.rewind_pending = True
            layout.save()
        else:
            layout.save()
            cluster.start_processes(layout, [cluster.AGENT_NAME])
