"""`sixfold bench-region`: a secondary region's replication lag under the kv load, and the
primary's commit rate with and without it (issue 16).

A fresh primary (six nodes and the writer process) in a temporary directory. First
--seconds of kv load with no secondary: --committers clients write 600-byte values to their
own pages through `Writer/WritePages`. Then a secondary region is added (seeded, six more
nodes, two readers, its agent) and the same load runs again, with a probe committing a
marker every 0.1 s; a watcher polls the region's durable point (the VDL a read quorum of
its nodes learned, where its readers read) and notes when each marker is covered. A
marker's lag runs from its acknowledgement on the primary to that moment. On one machine
the region's processes share the primary's CPUs, which a real second region would not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import tempfile
import time
from pathlib import Path

from sixfold import cluster
from sixfold.clients import WriterClient
from sixfold.core.errors import RegionError
from sixfold.core.quorum import NODE_NAMES
from sixfold.tools.bench import percentile, wait_nodes_serving, wait_writer_ready
from sixfold.tools.regions import add_region, durable_point, remove_region
from sixfold.tools.restartbench import READY_LIMIT_S, print_machine
from sixfold.tools.rpobench import committer, probe, watch_markers


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=20.0, help="each run's load (default 20)")
    p.add_argument("--committers", type=int, default=64, help="kv clients (default 64)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")


async def _load(layout: cluster.ClusterLayout, seconds: float, committers: int, region=None):
    address = layout.find_writer_address()
    await wait_writer_ready(address, READY_LIMIT_S)
    client = WriterClient(address)
    try:
        end = time.monotonic() + seconds
        done, acked, lags = [0], [], []
        started = time.monotonic()
        work = [committer(client, i, end, done) for i in range(committers)]
        if region is not None:

            async def newest() -> int:
                return await durable_point(region.nodes) or 0

            work += [probe(client, end, acked), watch_markers(newest, acked, lags, end)]
        await asyncio.gather(*work)
        return done[0] / (end - started), acked, lags
    finally:
        await client.close()


def main(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="sixfold-bench-region-"))
    layout = cluster.new_layout(root / "primary")
    layout.save()
    try:
        cluster.start_processes(layout, [*NODE_NAMES, cluster.WRITER_NAME])
        asyncio.run(wait_nodes_serving(layout, READY_LIMIT_S))
        alone, _, _ = asyncio.run(_load(layout, args.seconds, args.committers))
        seeded = add_region(root / "primary", "b", root / "region-b", None, READY_LIMIT_S)
        region = cluster.ClusterLayout.load(root / "region-b")
        with_region, acked, lags = asyncio.run(_load(layout, args.seconds, args.committers, region))
    finally:
        with contextlib.suppress(RegionError):  # never added: nothing to stop
            remove_region(root / "primary", "b")
        cluster.stop_all(cluster.ClusterLayout.load(root / "primary"))
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    lags.sort()
    print_machine()
    print(f"region b seeded with {seeded.pages:,} pages as of LSN {seeded.lsn}")
    print(
        f"primary kv, {args.committers} clients, {args.seconds:g} s each: {alone:,.0f} commits/s "
        f"alone, {with_region:,.0f} with region b replicating ({with_region / alone - 1:+.1%}; "
        "goal: within 10%)"
    )
    print(
        f"replication lag of {len(lags)} of {len(acked)} markers: p50 "
        f"{percentile(lags, 0.5):.3f} s, p99 {percentile(lags, 0.99):.3f} s, max "
        f"{lags[-1] if lags else float('nan'):.3f} s (goal: p99 < 1 s)"
    )
    return 0
