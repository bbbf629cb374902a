"""`sixfold bench-restart` and `sixfold bench-idle`: costs that must not grow with the volume.

bench-restart: for each log size, a fresh local cluster is loaded with that many records
(600 bytes, over --pages pages, through the writer's WritePages API), stopped at once, so the
nodes have not coalesced or collected it, and started cold again. It measures, from the
processes' start, the first write the writer acknowledges and the first page read a reader
answers at a read point that covers it (P17 §4.3: recovery does not replay the log, so
neither should grow with it).

bench-idle: for each page count, a fresh cluster gets one record on each page, coalesces and
collects them, and then sits idle; the CPU each node uses over --seconds is the cost of
background work that is not proportional to change.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sixfold import cluster
from sixfold.clients import NodeClient, ReaderClient, WriterClient
from sixfold.core.errors import SixfoldError
from sixfold.core.quorum import NODE_NAMES
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.tools.bench import cpu_seconds, machine_info

LOAD_BATCH_PAGES = 1_000  # page changes per WritePages call while loading
RECORD_BYTES = 600
READY_LIMIT_S = 120.0
DRAIN_LIMIT_S = 600.0
POLL_S = 0.02


def sizes(text: str) -> list[int]:
    try:
        values = [int(float(x)) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of counts"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("counts must be positive")
    return values


def add_restart_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--records",
        type=sizes,
        default=[10_000, 300_000],
        help="log sizes to restart with, comma-separated (default 10000,300000)",
    )
    p.add_argument("--pages", type=int, default=5_000, help="pages the records spread over")
    p.add_argument("--runs", type=int, default=1, help="cold restarts per size (default 1)")


def add_idle_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pages",
        type=sizes,
        default=[1_000, 100_000],
        help="page counts to compare, comma-separated (default 1000,100000)",
    )
    p.add_argument("--seconds", type=float, default=30.0, help="idle seconds measured")


@dataclass
class Restart:
    records: int
    records_stored: int  # in the fullest node's log when it was stopped
    first_write_s: float
    first_read_s: float


async def load(layout: cluster.ClusterLayout, records: int, pages: int) -> None:
    client = WriterClient(layout.find_writer_address())
    payload = os.urandom(RECORD_BYTES)
    try:
        for first in range(0, records, LOAD_BATCH_PAGES):
            count = min(LOAD_BATCH_PAGES, records - first)
            changes = [
                pb.PageChange(page_no=(first + i) % pages, offset=0, data=payload)
                for i in range(count)
            ]
            await client.write_pages(changes, timeout=60.0)
    finally:
        await client.close()


async def first_write_and_read(
    layout: cluster.ClusterLayout, started: float
) -> tuple[float, float]:
    """Seconds from `started` to the first acknowledged write, and to the first reader
    answer at a read point at or above it."""
    lsn, first_write = await _first(lambda: _write(layout), started)
    reader = ReaderClient(layout.reader_address("r1"), "r1")
    try:

        async def read() -> int:
            response = await reader.read_page(1, timeout=2.0)
            if response.read_point < lsn:
                raise SixfoldError("read point below the first write")
            return response.read_point

        _, first_read = await _first(read, started)
    finally:
        await reader.close()
    return first_write, first_read


async def _write(layout: cluster.ClusterLayout) -> int:
    client = WriterClient(layout.processes[cluster.WRITER_NAME].address)
    try:
        return await client.write_pages([pb.PageChange(page_no=1, offset=0, data=b"x")], 2.0)
    finally:
        await client.close()


async def _first(attempt, started: float) -> tuple[int, float]:
    deadline = started + READY_LIMIT_S
    while time.monotonic() < deadline:
        try:
            return await attempt(), time.monotonic() - started
        except SixfoldError:
            await asyncio.sleep(POLL_S)
    raise SixfoldError(f"no answer within {READY_LIMIT_S:g} s of the restart")


async def stored_records(layout: cluster.ClusterLayout) -> list[int]:
    async def one(name: str) -> int:
        client = NodeClient(name, layout.processes[name].address)
        try:
            return (await client.get_state(timeout=5.0)).records_stored
        finally:
            await client.close()

    return list(await asyncio.gather(*(one(n) for n in NODE_NAMES)))


def restart_once(records: int, pages: int) -> Restart:
    directory = Path(tempfile.mkdtemp(prefix="sixfold-restart-"))
    layout = cluster.new_layout(directory)
    try:
        cluster.start_processes(layout, list(layout.processes))
        asyncio.run(cluster.wait_healthy(layout, READY_LIMIT_S))
        asyncio.run(load(layout, records, pages))
        stored = max(asyncio.run(stored_records(layout)))
        cluster.stop_all(layout)
        started = time.monotonic()
        cluster.start_processes(layout, list(layout.processes))
        first_write, first_read = asyncio.run(first_write_and_read(layout, started))
        return Restart(records, stored, first_write, first_read)
    finally:
        cluster.stop_all(layout)
        shutil.rmtree(directory, ignore_errors=True)


def main_restart(args: argparse.Namespace) -> int:
    print_machine()
    results = [restart_once(n, args.pages) for n in args.records for _ in range(args.runs)]
    print(
        f"{'records loaded':>15} {'in a log at stop':>17} {'first write s':>14} {'first read s':>13}"
    )
    for r in results:
        print(
            f"{r.records:>15,} {r.records_stored:>17,} {r.first_write_s:>14.2f} {r.first_read_s:>13.2f}"
        )
    smallest = [r for r in results if r.records == min(args.records)]
    largest = [r for r in results if r.records == max(args.records)]
    if smallest != largest:
        write_ratio = median(r.first_write_s for r in largest) / median(
            r.first_write_s for r in smallest
        )
        read_ratio = median(r.first_read_s for r in largest) / median(
            r.first_read_s for r in smallest
        )
        print(
            f"ratio largest/smallest (medians): first write {write_ratio:.2f}, first read "
            f"{read_ratio:.2f} (goal <= 1.2)"
        )
    return 0


def median(values) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def idle_once(pages: int, seconds: float) -> dict[str, float]:
    directory = Path(tempfile.mkdtemp(prefix="sixfold-idle-"))
    layout = cluster.new_layout(directory)
    try:
        cluster.start_processes(layout, list(layout.processes))
        asyncio.run(cluster.wait_healthy(layout, READY_LIMIT_S))
        asyncio.run(load(layout, pages, pages))
        deadline = time.monotonic() + DRAIN_LIMIT_S
        while any(asyncio.run(stored_records(layout))):
            if time.monotonic() > deadline:
                raise SixfoldError(f"the log did not drain within {DRAIN_LIMIT_S:g} s")
            time.sleep(1.0)
        time.sleep(2.0)  # the last steps settle
        pids = {n: layout.processes[n].pid for n in NODE_NAMES}
        before = {n: cpu_seconds(p) for n, p in pids.items()}
        time.sleep(seconds)
        return {n: 100 * (cpu_seconds(p) - before[n]) / seconds for n, p in pids.items()}
    finally:
        cluster.stop_all(layout)
        shutil.rmtree(directory, ignore_errors=True)


def main_idle(args: argparse.Namespace) -> int:
    print_machine()
    print(f"{'pages':>9}  idle CPU per node over {args.seconds:g} s (% of one core)")
    for pages in args.pages:
        cpu = idle_once(pages, args.seconds)
        values = "  ".join(f"{n} {v:.1f}" for n, v in cpu.items())
        print(f"{pages:>9,}  {values}  (mean {sum(cpu.values()) / len(cpu):.1f})")
    return 0


def print_machine() -> None:
    m = machine_info()
    print(
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['implementation']} {m['python']}, "
        f"Linux {m['kernel']}"
    )
