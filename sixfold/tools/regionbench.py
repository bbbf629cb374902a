"""`sixfold bench-region`: a secondary region's replication lag under the kv load, the
primary's commit rate with and without it, a switchover's pause and a failover's RTO and
RPO (issue 16).

A fresh primary (six nodes and the writer process) in a temporary directory. First
--seconds of load with no secondary (with `--workload sql`, bench-sql's: 32 clients commit
single-row INSERTs and UPDATEs through `Sql/Execute`, a commit every 0.1 s taken as a marker,
and no switchover or failover after): --committers clients write 600-byte values to their
own pages through `Writer/WritePages`. Then a secondary region is added (seeded, six more
nodes, two readers, its agent) and the same load runs again, with a probe committing a
marker every 0.1 s; a watcher polls the region's durable point (the VDL a read quorum of
its nodes learned, where its readers read) and notes when each marker is covered. A
marker's lag runs from its acknowledgement on the primary to that moment. On one machine
the region's processes share the primary's CPUs, which a real second region would not.

Then, under the same load: a planned switchover to region b (the pause it reports: from the
drain to the new writer accepting writes); and, with the load on the new primary, a kill of
every process of it followed at once by a failover back to the old primary, now its
secondary. The failover's time runs from its start to the promoted writer accepting writes
(the RTO less the time to decide to fail over); its RPO counts the commits acknowledged
before the kill that the promoted region lacks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sixfold import cluster
from sixfold.clients import WriterClient
from sixfold.core.errors import SixfoldError
from sixfold.core.quorum import NODE_NAMES
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.tools import promotion
from sixfold.tools.bench import percentile, wait_nodes_serving, wait_writer_ready
from sixfold.tools.regions import add_region, durable_point
from sixfold.tools.restartbench import READY_LIMIT_S, print_machine
from sixfold.tools.rpobench import PROBE_EVERY_S, RECORD_BYTES, committer, probe, watch_markers
from sixfold.tools.sqlbench import COMMITS_PER_CLIENT_MAX, ERROR_PAUSE_S, SqlLoad

UNDER_LOAD_FIRST_S = 2.0  # the load runs this long before a switchover or a kill


SQL_CLIENTS_DEFAULT = 32  # bench-sql's closed-loop clients
SQL_ROWS = 1_000  # the rows UPDATEs pick from (bench-sql's default)
SQL_VALUE_BYTES = 100
SQL_TIMEOUT_S = 10.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seconds", type=float, default=20.0, help="each run's load (default 20)")
    p.add_argument(
        "--committers",
        type=int,
        default=0,
        help="clients (default 64 for kv, 32 for sql)",
    )
    p.add_argument(
        "--workload",
        choices=("kv", "sql"),
        default="kv",
        help="kv: 600-byte WritePages; sql: bench-sql's single-row INSERT/UPDATE commits "
        "through Sql/Execute, each commit a marker (no switchover or failover then)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directories")


async def _load(
    layout: cluster.ClusterLayout,
    seconds: float,
    committers: int,
    region: cluster.ClusterLayout | None = None,
) -> tuple[float, list[tuple[int, float]], list[float]]:
    address = layout.find_writer_address()
    await wait_writer_ready(address, READY_LIMIT_S)
    client = WriterClient(address)
    try:
        end = time.monotonic() + seconds
        done: list[int] = [0]
        acked: list[tuple[int, float]] = []
        lags: list[float] = []
        started = time.monotonic()
        work = [committer(client, i, end, done) for i in range(committers)]
        if region is not None:
            nodes = region.nodes

            async def newest() -> int:
                return await durable_point(nodes) or 0

            work += [probe(client, end, acked), watch_markers(newest, acked, lags, end)]
        await asyncio.gather(*work)
        return done[0] / (end - started), acked, lags
    finally:
        await client.close()


async def _sql_load(
    layout: cluster.ClusterLayout,
    seconds: float,
    clients: int,
    region: cluster.ClusterLayout | None = None,
) -> tuple[float, list[tuple[int, float]], list[float]]:
    """bench-sql's closed-loop load: its commits a second, and with `region`, a commit's
    LSN and acknowledgement time every PROBE_EVERY_S as a marker and each marker's lag."""
    load = SqlLoad(layout.find_writer_address(), _sql_args())
    try:
        end = time.monotonic() + seconds
        done: list[int] = [0]
        acked: list[tuple[int, float]] = []  # (commit LSN, acknowledged at)
        lags: list[float] = []
        started = time.monotonic()

        async def client(index: int) -> None:
            for n in range(index, index + COMMITS_PER_CLIENT_MAX):
                if time.monotonic() >= end:
                    return
                try:
                    lsn = await load.transaction(insert=n % 2 == 0)
                except SixfoldError:
                    await asyncio.sleep(ERROR_PAUSE_S)
                    continue
                done[0] += 1
                if region is not None and (
                    not acked or time.time() - acked[-1][1] >= PROBE_EVERY_S
                ):
                    acked.append((lsn, time.time()))

        work = [client(i) for i in range(clients)]
        if region is not None:
            nodes = region.nodes

            async def newest() -> int:
                return await durable_point(nodes) or 0

            work.append(watch_markers(newest, acked, lags, end))
        await asyncio.gather(*work)
        return done[0] / (end - started), acked, lags
    finally:
        await load.close()


async def _sql_preload(layout: cluster.ClusterLayout) -> None:
    await wait_writer_ready(layout.find_writer_address(), READY_LIMIT_S)
    load = SqlLoad(layout.find_writer_address(), _sql_args())
    try:
        await load.preload()
    finally:
        await load.close()


def _sql_args() -> argparse.Namespace:
    return argparse.Namespace(
        timeout=SQL_TIMEOUT_S, value_bytes=SQL_VALUE_BYTES, rows=SQL_ROWS, seed=1
    )


def _link_bytes(region: cluster.ClusterLayout) -> tuple[float, float]:
    """The agent's link bytes so far, compressed and raw (its Prometheus metrics)."""
    url = f"http://{cluster.HOST}:{region.processes[cluster.AGENT_NAME].port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    values = dict(
        line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("sixfold_region_link")
    )
    return float(values["sixfold_region_link_bytes"]), float(
        values["sixfold_region_link_raw_bytes"]
    )


async def _load_during(
    address: str, committers: int, during: Callable[[], Any]
) -> tuple[Any, list[tuple[int, float]]]:
    """`during()` run in a thread while `committers` write to `address`; its result, and
    each acknowledged commit's LSN and time."""
    client = WriterClient(address)
    acked: list[tuple[int, float]] = []
    data = bytes(RECORD_BYTES)

    async def one(page: int) -> None:
        while True:
            try:
                change = pb.PageChange(page_no=page, data=data)
                acked.append((await client.write_pages([change], timeout=2.0), time.time()))
            except SixfoldError:
                await asyncio.sleep(0.05)

    tasks = [asyncio.create_task(one(i)) for i in range(committers)]
    try:
        await asyncio.sleep(UNDER_LOAD_FIRST_S)
        return await asyncio.to_thread(during), acked
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.close()


def _switch_and_fail(root: Path, committers: int) -> dict[str, float]:
    primary = cluster.ClusterLayout.load(root / "primary")
    switched, _ = asyncio.run(
        _load_during(
            primary.find_writer_address(),
            committers,
            lambda: promotion.switchover(root / "primary", "b"),
        )
    )
    killed_at = [0.0]

    def kill_and_fail_over() -> promotion.Promoted:
        layout = cluster.ClusterLayout.load(root / "region-b")
        killed_at[0] = time.time()
        cluster.kill_processes(layout, list(layout.processes))
        return promotion.failover(root / "region-b", "primary")

    region_b = cluster.ClusterLayout.load(root / "region-b")
    failed, acked = asyncio.run(
        _load_during(region_b.find_writer_address(), committers, kill_and_fail_over)
    )
    lost = sorted(t for lsn, t in acked if t <= killed_at[0] and lsn > failed.vdl)
    return {
        "switchover_pause_s": switched.pause_s,
        "failover_s": failed.pause_s,
        "rpo_reported_lsns": float(failed.lost_lsns or 0),
        "rpo_reported_s": failed.lost_s or 0.0,
        "lost_commits": float(len(lost)),
        "lost_span_s": killed_at[0] - lost[0] if lost else 0.0,
    }


def main(args: argparse.Namespace) -> int:
    root = Path(tempfile.mkdtemp(prefix="sixfold-bench-region-"))
    layout = cluster.new_layout(root / "primary")
    layout.save()
    try:
        cluster.start_processes(layout, [*NODE_NAMES, cluster.WRITER_NAME])
        asyncio.run(wait_nodes_serving(layout, READY_LIMIT_S))
        sql = args.workload == "sql"
        clients = args.committers or (SQL_CLIENTS_DEFAULT if sql else 64)
        load = _sql_load if sql else _load
        if sql:
            asyncio.run(_sql_preload(layout))
        alone, _, _ = asyncio.run(load(layout, args.seconds, clients))
        seeded = add_region(root / "primary", "b", root / "region-b", None, READY_LIMIT_S)
        region = cluster.ClusterLayout.load(root / "region-b")
        with_region, acked, lags = asyncio.run(load(layout, args.seconds, clients, region))
        link_bytes, link_raw_bytes = _link_bytes(region)
        roles = None if sql else _switch_and_fail(root, clients)
    finally:
        for directory in ("primary", "region-b"):
            with contextlib.suppress(SixfoldError):
                cluster.stop_all(cluster.ClusterLayout.load(root / directory))
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    lags.sort()
    print_machine()
    print(f"region b seeded with {seeded.pages:,} pages as of LSN {seeded.lsn}")
    print(
        f"primary {args.workload}, {clients} clients, {args.seconds:g} s each: {alone:,.0f} commits/s "
        f"alone, {with_region:,.0f} with region b replicating ({with_region / alone - 1:+.1%}; "
        "goal: within 10%)"
    )
    print(
        f"replication lag of {len(lags)} of {len(acked)} markers: p50 "
        f"{percentile(lags, 0.5):.3f} s, p99 {percentile(lags, 0.99):.3f} s, max "
        f"{lags[-1] if lags else float('nan'):.3f} s (goal: p99 < 1 s)"
    )
    print(
        f"the link brought {link_raw_bytes / 1e6:,.1f} MB of records as {link_bytes / 1e6:,.1f} MB "
        f"({link_bytes / max(link_raw_bytes, 1):.0%} after compression)"
    )
    if roles is None:
        return 0
    print(
        f"switchover to b under load: writes paused {roles['switchover_pause_s']:.2f} s, "
        "nothing acknowledged lost"
    )
    print(
        f"failover after a kill of every process of the primary under load: the promoted "
        f"writer accepted writes {roles['failover_s']:.2f} s after the failover began; RPO "
        f"{roles['lost_commits']:.0f} acknowledged commits lost, from the last "
        f"{roles['lost_span_s']:.2f} s before the kill (the agent's last view: "
        f"{roles['rpo_reported_lsns']:.0f} LSNs, {roles['rpo_reported_s']:.2f} s)"
    )
    return 0
