"""`sixfold bench-clone`: how long a clone takes, against the size of its volume.

For each size in --sizes-mib, a fresh local cluster (six nodes and the writer process) is
loaded with one record on each of that many MiB of 4 KiB pages and left --settle-s for its
nodes to coalesce and collect. Then --clones clones are made of it one after another, each
timed from the command's start to its directory being ready (the holds on the six source
nodes, six empty stores, the layout). The first clone is then started and the time to its
first page read is printed too, with the disk each clone uses against the source's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from sixfold import cluster
from sixfold.clients import WriterClient
from sixfold.core.errors import SixfoldError
from sixfold.core.record import PAGE_SIZE_BYTES
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.tools import clone
from sixfold.tools.backupbench import loaded
from sixfold.tools.bench import wait_nodes_serving, wait_writer_ready
from sixfold.tools.restartbench import READY_LIMIT_S, print_machine

WARMUP_S = 3.0  # the writers run this long before the first clone


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--sizes-mib",
        default="100,1024",
        help="volume sizes, comma-separated (default %(default)s)",
    )
    p.add_argument("--clones", type=int, default=3, help="clones per size (default 3)")
    p.add_argument("--settle-s", type=float, default=10.0, help="rest after loading (default 10)")
    p.add_argument(
        "--under-load",
        type=int,
        default=0,
        metavar="CLIENTS",
        help="make the clones while CLIENTS write 600-byte values to the source (default 0)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")


def _disk_bytes(path: Path) -> int:
    """Bytes the files under `path` take on disk (LMDB's map is sparse)."""
    used = subprocess.run(["du", "-sB1", str(path)], capture_output=True, text=True, check=True)
    return int(used.stdout.split()[0])


async def _first_read(layout: cluster.ClusterLayout) -> float:
    started = time.monotonic()
    await wait_nodes_serving(layout, READY_LIMIT_S)
    await wait_writer_ready(layout.find_writer_address(), READY_LIMIT_S)
    client = WriterClient(layout.find_writer_address())
    try:
        await client.read_page(7, timeout=30.0)
    finally:
        await client.close()
    return time.monotonic() - started


class _Writes:
    """`clients` writing 600-byte values to the source's pages from a thread of their own,
    while the clones are made (none: nothing)."""

    def __init__(self, layout: cluster.ClusterLayout, clients: int, pages: int) -> None:
        self.layout, self.clients, self.pages = layout, clients, pages
        self.stop = threading.Event()
        self.done = 0
        self.seconds = 0.0
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> _Writes:
        if self.clients:
            self.thread.start()
            time.sleep(WARMUP_S)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.clients:
            self.thread.join(timeout=60)

    async def _run(self) -> None:
        client = WriterClient(self.layout.find_writer_address())
        data = os.urandom(600)
        started = time.monotonic()

        async def one(i: int) -> None:
            while not self.stop.is_set():
                change = pb.PageChange(page_no=(i * 7919) % self.pages, data=data)
                await client.write_pages([change], timeout=30.0)
                self.done += 1

        try:
            await asyncio.gather(*(one(i) for i in range(self.clients)))
        finally:
            self.seconds = time.monotonic() - started
            await client.close()

    def describe(self) -> str:
        if not self.clients:
            return ""
        rate = self.done / self.seconds if self.seconds else 0.0
        return f", under {self.clients} writers ({rate:,.0f} commits/s)"


def _one_size(root: Path, size_mib: int, args: argparse.Namespace) -> None:
    pages = (size_mib << 20) // PAGE_SIZE_BYTES
    source = root / f"source-{size_mib}"
    layout = cluster.new_layout(source)
    layout.save()
    cluster.start_processes(layout, list(layout.processes))
    try:
        load_s = asyncio.run(loaded(layout, pages))
        time.sleep(args.settle_s)
        writes = _Writes(layout, args.under_load, pages)
        with writes:
            made = [
                asyncio.run(clone.create(source, root / f"clone-{size_mib}-{i}"))
                for i in range(args.clones)
            ]
        first = cluster.ClusterLayout.load(made[0].directory)
        cluster.start_processes(first, list(first.processes))
        try:
            read_s = asyncio.run(_first_read(first))
        finally:
            cluster.stop_all(cluster.ClusterLayout.load(made[0].directory))
        times = [m.took_s for m in made]
        print(
            f"{size_mib} MiB ({pages:,} pages, loaded in {load_s:.0f} s): clone "
            f"{min(times):.2f} / {statistics.median(times):.2f} / {max(times):.2f} s "
            f"(min / median / max of {len(times)}), versions written by the holds "
            f"{sum(m.versions_written for m in made)}{writes.describe()}; first clone up and "
            "read in "
            f"{read_s:.1f} s; disk: source {_disk_bytes(source) / 1e6:,.0f} MB, "
            f"a clone {_disk_bytes(made[0].directory) / 1e6:,.1f} MB"
        )
        for m in made:
            clone.drop(m.directory)
    finally:
        cluster.stop_all(cluster.ClusterLayout.load(source))


def main(args: argparse.Namespace) -> int:
    try:
        sizes = [int(x) for x in args.sizes_mib.split(",")]
    except ValueError as exc:
        raise SixfoldError(f"--sizes-mib {args.sizes_mib!r}: give sizes such as 100,1024") from exc
    if not sizes or min(sizes) < 1 or args.clones < 1:
        raise SixfoldError("--sizes-mib and --clones must be positive")
    root = Path(tempfile.mkdtemp(prefix="sixfold-bench-clone-"))
    print_machine()
    try:
        for size in sizes:
            _one_size(root, size, args)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"kept: {root}")
    return 0
