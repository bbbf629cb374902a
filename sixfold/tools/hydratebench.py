"""`sixfold bench-hydrate`: how fast a node that lost its disk hydrates from its peers.

A fresh local cluster (six nodes and the writer process) is loaded with one record on each
of --size-mib worth of 4 KiB pages, and left until every node has coalesced and collected
its log, so a node that comes back empty can only hydrate (sixfold/core/hydration.py). Then
a1 is killed, its data directory removed, and a1 started again. It measures the hydration
(from its first page image to its last) in MB/s and pages/s, and the time from a1's start
until it is complete to the writer's VDL. With --load, committers write 600-byte pages
through the writer's WritePages API all along: commit p99 is reported for --seconds before
a1 is killed (six nodes up) and over the hydration. With --replace, a1 is not started again
but replaced by the spare a3 (`sixfold replace`, issue 14): it also reports the time from the
replace call to the new membership being in force.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sixfold import cluster
from sixfold.clients import NodeClient, WriterClient
from sixfold.core.errors import SixfoldError
from sixfold.core.quorum import NODE_NAMES
from sixfold.core.record import PAGE_SIZE_BYTES
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.tools import membership as membership_tool
from sixfold.tools.bench import percentile, wait_nodes_serving, wait_writer_ready
from sixfold.tools.restartbench import READY_LIMIT_S, load, print_machine, stored_records

VICTIM, SPARE = "a1", "a3"
LOAD_RECORD_BYTES = 600
DRAIN_LIMIT_S = 1200.0
HYDRATE_LIMIT_S = 1200.0
POLL_S = 0.1


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size-mib", type=int, default=1024, help="volume size (default 1024)")
    p.add_argument(
        "--hydrate-mib-per-s",
        type=float,
        default=None,
        help="the nodes' hydration throttle (default: the nodes' own default; 0: none)",
    )
    p.add_argument("--load", action="store_true", help="commit under a kv load meanwhile")
    p.add_argument("--committers", type=int, default=32, help="with --load (default 32)")
    p.add_argument(
        "--seconds", type=float, default=10.0, help="with --load: the baseline (default 10)"
    )
    p.add_argument(
        "--replace", action="store_true", help="replace the emptied a1 with the spare a3"
    )
    p.add_argument("--keep", action="store_true", help="keep the cluster directory")


@dataclass
class Load:
    """Commits and their (start, latency) while the load runs."""

    done: list[tuple[float, float]] = field(default_factory=list)
    errors: int = 0
    last_error: str = ""
    stop: bool = False

    def p99_ms(self, start: float, end: float) -> tuple[float, int]:
        inside = sorted(lat for t, lat in self.done if start <= t and t + lat <= end)
        return 1e3 * percentile(inside, 0.99), len(inside)


async def _committer(client: WriterClient, page_no: int, load: Load) -> None:
    data = os.urandom(LOAD_RECORD_BYTES)
    while not load.stop:
        t0 = time.monotonic()
        try:
            await client.write_pages([pb.PageChange(page_no=page_no, offset=0, data=data)])
        except SixfoldError as exc:
            load.errors += 1
            load.last_error = str(exc)
            await asyncio.sleep(POLL_S)  # the writer is failing over, or overloaded
            continue
        load.done.append((t0, time.monotonic() - t0))


async def _state(layout: cluster.ClusterLayout, name: str) -> pb.NodeState | None:
    client = NodeClient(name, layout.processes[name].address)
    try:
        return await client.get_state(timeout=2.0)
    except SixfoldError:
        return None
    finally:
        await client.close()


async def _vdl(layout: cluster.ClusterLayout) -> int:
    client = WriterClient(layout.find_writer_address())
    try:
        return (await client.state(timeout=2.0)).vdl
    finally:
        await client.close()


async def _drained(layout: cluster.ClusterLayout) -> None:
    deadline = time.monotonic() + DRAIN_LIMIT_S
    while any(await stored_records(layout)):
        if time.monotonic() > deadline:
            raise SixfoldError(f"the log did not drain within {DRAIN_LIMIT_S:g} s")
        await asyncio.sleep(1.0)


async def _hydrate(layout: cluster.ClusterLayout, replace: bool) -> dict[str, float]:
    """Empty a1 and start it (or replace it with a3); times of the start, the first and
    last images, the catch-up (and the new membership in force)."""
    cluster.kill_processes(layout, [VICTIM])
    shutil.rmtree(Path(layout.directory) / VICTIM)
    started = time.monotonic()
    hydrating = SPARE if replace else VICTIM
    if replace:
        await membership_tool.begin(layout.find_writer_address(), VICTIM, SPARE, force=False)
    else:
        cluster.start_processes(layout, [VICTIM])
    first = last = None
    deadline = started + HYDRATE_LIMIT_S
    while time.monotonic() < deadline:
        if replace:
            view = await membership_tool.writer_membership(layout.find_writer_address())
            if not view.change_position and SPARE in view.holders:
                now = time.monotonic()
                return {
                    "started": started,
                    "first": first or now,
                    "last": last or now,
                    "complete": now,
                }
        state = await _state(layout, hydrating)
        now = time.monotonic()
        if state is not None and state.hydrating_to and first is None:
            first = now
        if state is not None and first is not None and not state.hydrating_to:
            last = last or now
            if not replace and state.scl >= await _vdl(layout):
                return {"started": started, "first": first, "last": last, "complete": now}
        await asyncio.sleep(POLL_S)
    raise SixfoldError(f"{VICTIM} did not hydrate within {HYDRATE_LIMIT_S:g} s")


async def run(args: argparse.Namespace, layout: cluster.ClusterLayout) -> dict[str, float]:
    await wait_nodes_serving(layout, READY_LIMIT_S)
    await wait_writer_ready(layout.find_writer_address(), READY_LIMIT_S)
    pages = (args.size_mib << 20) // PAGE_SIZE_BYTES
    t0 = time.monotonic()
    await load(layout, pages, pages)
    loaded_s = time.monotonic() - t0
    await _drained(layout)
    out: dict[str, float] = {"pages": pages, "load_s": loaded_s}
    client = WriterClient(layout.find_writer_address())
    traffic = Load()
    tasks = []
    if args.load:
        tasks = [
            asyncio.create_task(_committer(client, pages + i, traffic))  # above the volume
            for i in range(args.committers)
        ]
        base_start = time.monotonic()
        await asyncio.sleep(args.seconds)
        out["p99_before_ms"], out["commits_before"] = traffic.p99_ms(base_start, time.monotonic())
    try:
        times = await _hydrate(layout, args.replace)
    finally:
        traffic.stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()
    out.update(times)
    if args.load:
        during = traffic.p99_ms(times["first"], times["last"])
        out["p99_during_ms"], out["commits_during"] = during
        out["load_errors"] = traffic.errors
        if traffic.last_error:
            print(f"last load error: {traffic.last_error}")
    return out


def main(args: argparse.Namespace) -> int:
    if args.size_mib < 1 or args.committers < 1 or args.seconds <= 0:
        raise SixfoldError("--size-mib, --committers and --seconds must be positive")
    directory = Path(tempfile.mkdtemp(prefix="sixfold-hydrate-"))
    layout = cluster.new_layout(directory)
    if args.hydrate_mib_per_s is not None:
        layout.extra_args["node"] = ["--hydrate-mib-per-s", str(args.hydrate_mib_per_s)]
        layout.save()
    names = [*NODE_NAMES, cluster.WRITER_NAME]
    if args.replace:
        names += cluster.add_spares(layout)
        layout.save()
    try:
        cluster.start_processes(layout, names)
        r = asyncio.run(run(args, layout))
    finally:
        cluster.stop_all(layout)
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    print_machine()
    size = r["pages"] * PAGE_SIZE_BYTES
    hydrate_s = r["last"] - r["first"]
    throttle = "default" if args.hydrate_mib_per_s is None else f"{args.hydrate_mib_per_s:g} MiB/s"
    print(f"volume            : {r['pages']:,.0f} pages of 4 KiB = {size / (1 << 20):,.0f} MiB")
    print(f"loaded in         : {r['load_s']:.1f} s, then coalesced and collected on every node")
    print(
        f"hydration         : {hydrate_s:.1f} s = {size / hydrate_s / 1e6:.1f} MB/s, "
        f"{r['pages'] / hydrate_s:,.0f} pages/s (throttle {throttle})"
    )
    if args.replace:
        print(f"replace to in force: {r['complete'] - r['started']:.1f} s (a3 holds a1's position)")
    else:
        print(
            f"start to complete : {r['complete'] - r['started']:.1f} s (a1's start to SCL >= VDL)"
        )
    if args.load:
        print(
            f"commit p99        : {r['p99_before_ms']:.1f} ms before ({r['commits_before']:,.0f}"
            f" commits, 6 nodes up), {r['p99_during_ms']:.1f} ms while hydrating "
            f"({r['commits_during']:,.0f} commits, {r['load_errors']:.0f} errors)"
        )
    return 0
