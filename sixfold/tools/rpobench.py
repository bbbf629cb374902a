"""`sixfold bench-backup --rpo-seconds N`: the backup's lag behind acknowledged commits
(its RPO) under the kv load, measured from outside as a user would see it.

A fresh local cluster (six nodes and the writer process) and a backup agent process
(`sixfold backup run --interval I` to a directory). For N seconds, --committers clients
write 600-byte values to their own pages through `Writer/WritePages`, as `sixfold bench
--via-grpc` does; a probe commits a marker on a page of its own every PROBE_EVERY_S and
notes when it was acknowledged; a watcher reads the backup's newest manifest every
POLL_EVERY_S and notes when each marker's LSN is first in it. A marker's lag is the time
from its acknowledgement to that moment: how much acknowledged work a restore would lose
if the cluster were lost then. Prints its p50, p99 and max, and the kv rate meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from sixfold import cluster
from sixfold.backup.store import open_store
from sixfold.clients import WriterClient
from sixfold.core.errors import SixfoldError
from sixfold.core.quorum import NODE_NAMES
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.tools.bench import percentile, wait_nodes_serving, wait_writer_ready
from sixfold.tools.restartbench import READY_LIMIT_S, print_machine

PROBE_EVERY_S = 0.1
POLL_EVERY_S = 0.05
PROBE_PAGE = 1 << 20  # far from the committers' pages
RECORD_BYTES = 600
DRAIN_LIMIT_S = 60.0  # after the load, the last markers must be backed up within this


async def committer(client: WriterClient, page: int, end: float, done: list[int]) -> None:
    data = os.urandom(RECORD_BYTES)
    while time.monotonic() < end:
        try:
            await client.write_pages([pb.PageChange(page_no=page, data=data)], timeout=10.0)
            done[0] += 1
        except SixfoldError:
            pass


async def probe(client: WriterClient, end: float, acked: list[tuple[int, float]]) -> None:
    while time.monotonic() < end:
        change = pb.PageChange(page_no=PROBE_PAGE, data=str(len(acked)).encode())
        lsn = await client.write_pages([change], timeout=10.0)
        acked.append((lsn, time.time()))
        await asyncio.sleep(PROBE_EVERY_S)


async def watch_markers(
    newest_lsn: Callable[[], Awaitable[int]],
    acked: list[tuple[int, float]],
    lags: list[float],
    stop: float,
) -> None:
    """Note each marker's lag once `newest_lsn()` (the backup's, or a region's durable
    point) covers it; until every marker is (or the drain limit passes) after the load."""
    while True:
        newest = await newest_lsn()
        now = time.time()
        while len(lags) < len(acked) and acked[len(lags)][0] <= newest:
            lags.append(now - acked[len(lags)][1])
        if time.monotonic() > stop and (
            len(lags) == len(acked) or time.monotonic() > stop + DRAIN_LIMIT_S
        ):
            return
        await asyncio.sleep(POLL_EVERY_S)


async def _run(layout: cluster.ClusterLayout, url: str, args: argparse.Namespace) -> dict:
    await wait_nodes_serving(layout, READY_LIMIT_S)
    address = layout.find_writer_address()
    await wait_writer_ready(address, READY_LIMIT_S)
    client = WriterClient(address)
    try:
        end = time.monotonic() + args.rpo_seconds
        done, acked, lags = [0], [], []
        started = time.monotonic()
        store = open_store(url)

        async def newest() -> int:
            return (await asyncio.to_thread(store.latest_manifest)).newest_lsn

        await asyncio.gather(
            *(committer(client, i, end, done) for i in range(args.committers)),
            probe(client, end, acked),
            watch_markers(newest, acked, lags, end),
        )
        return {"kv": done[0] / (end - started), "acked": acked, "lags": lags}
    finally:
        await client.close()


def measure_rpo(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="sixfold-bench-rpo-"))
    url = f"file://{root / 'store'}"
    layout = cluster.new_layout(root / "source")
    layout.save()
    names = [*NODE_NAMES, cluster.WRITER_NAME]
    agent = None
    try:
        cluster.start_processes(layout, names)
        run = ["backup", "run", "--to", url, "--interval", str(args.interval)]
        agent = subprocess.Popen(
            [sys.executable, "-m", "sixfold.tools.cli", "--dir", str(root / "source"), *run],
            stdout=subprocess.DEVNULL,
        )
        result = asyncio.run(_run(layout, url, args))
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait(timeout=30)
        cluster.stop_all(cluster.ClusterLayout.load(root / "source"))
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    lags = sorted(result["lags"])
    print_machine()
    print(
        f"kv load: {args.committers} clients, {result['kv']:,.0f} commits/s for "
        f"{args.rpo_seconds:g} s; backup agent every {args.interval:g} s"
    )
    print(
        f"backup lag (RPO) of {len(lags)} of {len(result['acked'])} markers: p50 "
        f"{percentile(lags, 0.5):.2f} s, p99 {percentile(lags, 0.99):.2f} s, max "
        f"{lags[-1] if lags else float('nan'):.2f} s (goal: p99 <= 5 s)"
    )
    if len(lags) < len(result["acked"]):
        print(
            f"{len(result['acked']) - len(lags)} markers were not backed up within {DRAIN_LIMIT_S:g} s"
        )
    return 0
