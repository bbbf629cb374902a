"""`sixfold up --region NAME --replica-of DIR` and `sixfold global add-region | remove-region
| status` (issue 16): secondary regions of a process cluster, side by side on this machine.

A secondary is a cluster directory of its own: six storage nodes seeded with the primary's
pages as of a durable point, two readers that never take over, and a replication agent in
place of a writer. The primary's cluster.json names its secondaries, which is how the
limits are kept (a name used once, at most REGIONS_SECONDARY_MAX).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

from sixfold import cluster
from sixfold.clients import NodeClient, ReaderClient
from sixfold.committed_log import learned_durable_point, serving_states
from sixfold.core.errors import RegionError, SixfoldError
from sixfold.core.quorum import NODE_NAMES, READ_QUORUM
from sixfold.core.replication import agent_owner, check_new_region
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.tools.seed import Seeded, seed

STATE_TIMEOUT_S = 1.0
STATUS_STALE_S = 5.0  # an agent status file older than this: the agent is not running


def add_region(
    primary_dir: Path, name: str, into: Path, base_port: int | None, timeout_s: float
) -> Seeded:
    """Create secondary region `name` of the cluster in `primary_dir`, in `into`, seeded
    from the primary now, and start it; the point it was seeded at."""
    primary = _running_primary(primary_dir)
    check_new_region(name, list(primary.regions), primary.region_name)
    if into.exists() and any(into.iterdir()):
        raise RegionError(f"{into} is not empty: a new region goes into a new directory")
    if base_port is not None:
        cluster.check_base_port(base_port)
    layout = cluster.replica_layout(into, primary, name, base_port)
    cluster.share_security(layout, primary)
    cluster.ensure_metrics_ports(layout)
    cluster.check_ports_free(layout)
    try:
        seeded = asyncio.run(seed(primary.nodes, into, name, primary.volume_id))
    except BaseException:
        shutil.rmtree(into, ignore_errors=True)
        raise
    layout.save()
    primary.regions[name] = layout.directory
    primary.save()
    start_region(layout, timeout_s)
    return seeded


def start_region(layout: cluster.ClusterLayout, timeout_s: float) -> None:
    """Start a secondary's nodes, readers and agent, and wait until its readers read."""
    cluster.start_processes(layout, list(NODE_NAMES))
    cluster.start_processes(layout, [cluster.AGENT_NAME, *cluster.READER_NAMES])
    try:
        asyncio.run(wait_region_ready(layout, timeout_s))
    except SixfoldError:
        cluster.stop_all(layout)
        raise


async def wait_region_ready(layout: cluster.ClusterLayout, timeout_s: float) -> None:
    """Every node serves and each reader has a read point from the agent's announcements."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        nodes = await _serving(layout.nodes)
        readers = await _reader_states(layout)
        nodes_ok = len(nodes) == len(NODE_NAMES)
        readers_ok = len(readers) == len(cluster.READER_NAMES) and all(r.epoch for r in readers)
        if nodes_ok and readers_ok:
            return
        await asyncio.sleep(0.2)
    raise RegionError(
        f"region {layout.region} not ready after {timeout_s:g} s: see {layout.directory}/logs "
        f"(the agent's in {cluster.AGENT_NAME}.log)"
    )


def remove_region(primary_dir: Path, name: str) -> Path:
    """Stop secondary `name` and forget it; its directory (with its data) stays."""
    primary = cluster.ClusterLayout.load(primary_dir)
    if name not in primary.regions:
        known = ", ".join(primary.regions) or "none"
        raise RegionError(f"no secondary region named {name!r} (the secondaries: {known})")
    directory = Path(primary.regions[name])
    with contextlib.suppress(cluster.NoClusterError):  # removed by hand: only the name is left
        cluster.stop_all(cluster.ClusterLayout.load(directory))
    asyncio.run(release_read_point(primary.nodes, agent_owner(name)))
    del primary.regions[name]
    primary.save()
    return directory


async def release_read_point(nodes: dict[str, str], owner: str) -> None:
    """Let go of `owner`'s read point on the nodes that answer (a point of 0 drops it): a
    removed region's agent no longer holds their GC back for AGENT_READ_POINT_HOLD_S. A
    node down keeps it until the hold runs out."""
    clients = [NodeClient(n, a) for n, a in nodes.items()]
    try:
        await serving_states(clients, pb.GetStateRequest(reader=owner, read_point=0))
    finally:
        for c in clients:
            await c.close()


def global_status(primary_dir: Path) -> dict[str, Any]:
    """The primary's durable point and each secondary's, with its lag and rate."""
    primary = cluster.ClusterLayout.load(primary_dir)
    if primary.replica_of:
        raise RegionError(
            f"{primary_dir} is secondary region {primary.region} of {primary.replica_of}: "
            "ask the primary (`sixfold --dir PRIMARY global status`)"
        )
    primary_vdl = asyncio.run(durable_point(primary.nodes))
    regions = [_region_status(name, Path(d), primary_vdl) for name, d in primary.regions.items()]
    return {
        "primary": {"region": primary.region_name, "durable_lsn": primary_vdl},
        "regions": regions,
    }


def _region_status(name: str, directory: Path, primary_vdl: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"region": name, "directory": str(directory)}
    try:
        layout = cluster.ClusterLayout.load(directory)
    except cluster.NoClusterError as exc:
        return {**out, "up": False, "error": str(exc)}
    durable = asyncio.run(durable_point(layout.nodes))
    agent = agent_status(directory)
    alive = cluster.is_running(layout.processes[cluster.AGENT_NAME])
    fresh = alive and agent is not None and time.time() - agent["updated_at"] <= STATUS_STALE_S
    lag = None if durable is None or primary_vdl is None else max(primary_vdl - durable, 0)
    return {
        **out,
        "up": durable is not None,
        "durable_lsn": durable,
        "lag_lsns": lag,
        "lag_s": agent["lag_s"] if fresh else None,
        "rate_records_per_s": agent["rate"] if fresh else None,
        "agent": "fenced" if agent and agent["fenced"] else "running" if fresh else "not running",
        "error": (agent or {}).get("error", ""),
    }


def agent_status(directory: Path) -> dict[str, Any] | None:
    """The region's agent's last status file (sixfold/region/agent.py), if readable."""
    path = directory / cluster.REGION_STATUS_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def render_global_status(status: dict[str, Any]) -> str:
    p = status["primary"]
    point = "unknown (fewer than a read quorum of its nodes answer)"
    lines = [f"primary region {p['region']}: durable LSN {p['durable_lsn'] or point}"]
    if not status["regions"]:
        lines.append("no secondary region (`sixfold global add-region NAME` adds one)")
    for r in status["regions"]:
        if not r["up"]:
            lines.append(f"region {r['region']}: down ({r.get('error') or 'no node answers'})")
            continue
        lag_s = "-" if r["lag_s"] is None else f"{r['lag_s']:.2f} s"
        rate = "-" if r["rate_records_per_s"] is None else f"{r['rate_records_per_s']:,.0f}"
        lines.append(
            f"region {r['region']}: durable LSN {r['durable_lsn']}, lag {r['lag_lsns']} LSNs / "
            f"{lag_s}, {rate} records/s, agent {r['agent']}"
            + (f" (last error: {r['error']})" if r["error"] else "")
        )
    return "\n".join(lines)


def _running_primary(directory: Path) -> cluster.ClusterLayout:
    primary = cluster.ClusterLayout.load(directory)
    if primary.replica_of:
        raise RegionError(
            f"{directory} is itself secondary region {primary.region}: a region replicates "
            "from the primary"
        )
    if not any(cluster.is_running(primary.processes[n]) for n in NODE_NAMES):
        raise RegionError(f"no node of the primary in {directory} runs: start it first")
    return primary


async def _serving(nodes: dict[str, str]) -> dict[str, Any]:
    """The serving states of the six nodes at `nodes`."""
    clients = [NodeClient(n, a) for n, a in nodes.items() if n in NODE_NAMES]
    try:
        return await serving_states(clients)
    finally:
        for c in clients:
            await c.close()


async def durable_point(nodes: dict[str, str]) -> int | None:
    """The newest VDL a read quorum of the nodes learned (None: fewer answer)."""
    states = await _serving(nodes)
    if len(states) < READ_QUORUM:
        return None
    return learned_durable_point(states) or 0


async def _reader_states(layout: cluster.ClusterLayout) -> list[Any]:
    clients = [ReaderClient(layout.processes[n].address, n) for n in cluster.READER_NAMES]
    try:
        results = await asyncio.gather(
            *(c.state(timeout=STATE_TIMEOUT_S) for c in clients), return_exceptions=True
        )
    finally:
        for c in clients:
            await c.close()
    return [r for r in results if not isinstance(r, BaseException)]
