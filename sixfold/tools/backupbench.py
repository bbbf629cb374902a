"""`sixfold bench-backup`: a backup's first round and a restore, on a fresh cluster.

A fresh local cluster (six nodes and the writer process) is loaded with one record on each
of --size-mib worth of 4 KiB pages. One backup round then ships the base (every page's
image, from a storage node) to a directory, and a restore builds a new cluster from it
(page images into all six nodes' stores). Prints the time and rate of each.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path

from sixfold import cluster
from sixfold.backup.store import open_store
from sixfold.core.backup import plan_restore
from sixfold.core.errors import SixfoldError
from sixfold.core.record import PAGE_SIZE_BYTES
from sixfold.targets import ProcessTarget
from sixfold.tools import backup
from sixfold.tools.bench import wait_nodes_serving, wait_writer_ready
from sixfold.tools.restartbench import READY_LIMIT_S, load, print_machine
from storage_node.restore import restore


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size-mib", type=int, default=1024, help="volume size (default 1024)")
    p.add_argument(
        "--rpo-seconds",
        type=float,
        default=0.0,
        help="instead: measure the backup lag (RPO) for this many seconds of kv load",
    )
    p.add_argument(
        "--committers", type=int, default=64, help="kv clients in the RPO run (default 64)"
    )
    p.add_argument(
        "--interval", type=float, default=1.0, help="the agent's --interval (default 1.0)"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")


async def loaded(layout: cluster.ClusterLayout, pages: int) -> float:
    """Seconds to load a fresh cluster with one record on each of `pages` pages."""
    await wait_nodes_serving(layout, READY_LIMIT_S)
    await wait_writer_ready(layout.find_writer_address(), READY_LIMIT_S)
    started = time.monotonic()
    await load(layout, pages, pages)
    return time.monotonic() - started


def main(args: argparse.Namespace) -> int:
    if args.size_mib < 1:
        raise SixfoldError("--size-mib must be positive")
    if args.rpo_seconds:
        from sixfold.tools.rpobench import measure_rpo

        return measure_rpo(args)
    root = Path(tempfile.mkdtemp(prefix="sixfold-bench-backup-"))
    pages = (args.size_mib << 20) // PAGE_SIZE_BYTES
    url = f"file://{root / 'store'}"
    layout = cluster.new_layout(root / "source")
    layout.save()
    try:
        cluster.start_processes(layout, list(layout.processes))
        try:
            load_s = asyncio.run(loaded(layout, pages))
            started = time.monotonic()
            asyncio.run(backup.run(ProcessTarget(root / "source"), url, 0.0, 1))
            base_s = time.monotonic() - started
        finally:
            cluster.stop_all(cluster.ClusterLayout.load(root / "source"))
        store = open_store(url)
        manifest = store.latest_manifest()
        stored = manifest.stored[1]
        started = time.monotonic()
        restored = restore(
            store,
            plan_restore(manifest, to_lsn=manifest.newest_lsn, read_chapter=store.read_chapter),
            root / "r",
        )
        restore_s = time.monotonic() - started
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print_machine()
    print(f"volume: {args.size_mib} MiB, {pages:,} pages, loaded in {load_s:.1f} s")
    print(
        f"backup, first round (the base): {base_s:.1f} s, {stored / 1e6:,.1f} MB, {stored / 1e6 / base_s:.1f} MB/s"
    )
    print(
        f"restore: {restore_s:.1f} s, {restored.pages:,} pages into six nodes, "
        f"{stored / 1e6 / restore_s:.1f} MB/s of backup (goal for 1 GiB: 120 s)"
    )
    if args.keep:
        print(f"kept: {root}")
    return 0
