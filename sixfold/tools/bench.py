"""`sixfold bench`: commit throughput and latency on a fresh local cluster.

Six real storage-node processes are started in a temporary directory. By default the writer
runs in this process as a library (a gRPC hop per commit would cap the rate well below what
the pipeline can do on a small machine); `--via-grpc` instead starts the writer process too
and drives its WritePages API. Committer coroutines each commit one record (or
`--records-per-commit` records) at a time and wait until it is durable (VDL >= its LSN).
After `--warmup` seconds, `--seconds` are measured: durable records/s, commit latency
percentiles, bytes shipped to the nodes per record, and CPU used by each process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from sixfold import cluster
from sixfold.clients import NodeClient, WriterClient
from sixfold.core.errors import SixfoldError
from sixfold.core.quorum import COPIES, NODE_NAMES
from sixfold.rpc import sixfold_pb2 as pb

STARTUP_TIMEOUT_S = 60.0  # nodes serving / writer recovered
POLL_INTERVAL_S = 0.1
SHUTDOWN_GRACE_S = 15.0  # committers still in flight when the measured interval ends
NETWORK_TARGET_RATIO = 1.2  # bytes shipped per record <= this x (copies x record size)
CLK_TCK = os.sysconf("SC_CLK_TCK")

Commit = Callable[[list[int], bytes], Awaitable[None]]  # commit these pages, wait until durable
BytesSent = Callable[[], int | None]  # bytes shipped to the nodes so far (None: unknown)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--committers", type=int, default=64, help="concurrent committers (default 64)")
    p.add_argument("--record-bytes", type=int, default=600, help="bytes each record writes")
    p.add_argument(
        "--records-per-commit",
        type=int,
        default=1,
        help="pages (records) changed by one commit (default 1)",
    )
    p.add_argument(
        "--pages", type=int, default=0, help="distinct pages written (default: one per committer)"
    )
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds (default 10)")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    p.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="commits/s over all committers, each paced to its share (default 0: as fast as "
        "they can); a slot missed is skipped, so keep committers/rate above the p99; at a "
        "rate the cluster keeps up with, the CPU per record compares trees with less noise "
        "than a saturated run",
    )
    p.add_argument(
        "--via-grpc",
        action="store_true",
        help="start the writer process too and commit through its WritePages API",
    )
    p.add_argument(
        "--stream",
        action="store_true",
        help="commit through one WritePagesStream shared by the committers instead of a "
        "unary WritePages call each (implies --via-grpc)",
    )
    p.add_argument(
        "--readers",
        action="store_true",
        help="start the two readers too, as `sixfold up` does (their CPU is counted; "
        "implies --via-grpc)",
    )
    p.add_argument(
        "--reads",
        action="store_true",
        help="measure linearizable page reads through the writer's ReadPage API "
        "instead of commits (implies --via-grpc)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--keep", action="store_true", help="keep the temporary cluster directory")
    from sixfold.core.commit_log import WriterLimits

    d = WriterLimits()
    p.add_argument(
        "--batch-records-max",
        type=int,
        default=d.append_batch_records_max,
        help="writer: records per append to a node (in-process writer only)",
    )
    p.add_argument(
        "--write-timeout",
        type=float,
        default=d.write_timeout_s,
        help="writer: seconds a commit may wait for durability",
    )


@dataclass
class Sample:
    """What one committer saw in the measured interval."""

    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    last_error: str = ""


@dataclass
class Result:
    mode: str
    committers: int
    record_bytes: int
    records_per_commit: int
    seconds: float
    commits: int
    records: int
    errors: int
    records_per_s: float
    commits_per_s: float
    latency_ms: dict[str, float]
    bytes_per_record: float | None
    bytes_ratio_to_copies: float | None
    cpu_percent: dict[str, float]
    machine: dict[str, object]
    targets: dict[str, bool | None]
    last_error: str = ""


# -- the machine and its processes -----------------------------------------------------------


def machine_info() -> dict[str, object]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "kernel": platform.release(),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far, 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def process_pids(layout: cluster.ClusterLayout, names: list[str]) -> dict[str, int]:
    pids = {"bench": os.getpid()}
    pids.update({n: layout.processes[n].pid for n in names})
    return pids


# -- cluster start-up ---------------------------------------------------------------------------


async def wait_nodes_serving(layout: cluster.ClusterLayout, timeout_s: float) -> None:
    clients = [NodeClient(n, a) for n, a in layout.nodes.items()]
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            states = await asyncio.gather(
                *(c.get_state(timeout=1.0) for c in clients), return_exceptions=True
            )
            if all(isinstance(s, pb.NodeState) and s.serving for s in states):
                return
            await asyncio.sleep(POLL_INTERVAL_S)
    finally:
        for c in clients:
            await c.close()
    raise SixfoldError(
        f"storage nodes not serving after {timeout_s:g} s; logs in {layout.directory}"
    )


async def wait_writer_ready(address: str, timeout_s: float) -> pb.WriterState:
    """The writer's state once it accepts writes."""
    client = WriterClient(address)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            with contextlib.suppress(SixfoldError):
                state = await client.state(timeout=1.0)
                if state.status == "accepting writes":
                    return state
            await asyncio.sleep(POLL_INTERVAL_S)
    finally:
        await client.close()
    raise SixfoldError(f"writer not accepting writes after {timeout_s:g} s")


# -- committers ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    start: float  # perf_counter seconds
    end: float


async def committer(
    commit: Commit,
    pages: list[int],
    data: bytes,
    window: Window,
    sample: Sample,
    pace: tuple[float, float] = (0.0, 0.0),
) -> None:
    """Commit until the window ends; note latencies of commits inside it. `pace`: (first
    start, seconds between starts), or (0, 0) to commit back to back. Latency is from a
    commit's start, not its slot: a paced run measures the commit, not a backlog."""
    start_at, interval_s = pace
    if start_at:
        await asyncio.sleep(max(0.0, start_at - time.perf_counter()))
    while (t0 := time.perf_counter()) < window.end:
        try:
            await commit(pages, data)
        except SixfoldError as exc:
            t1 = time.perf_counter()
            if t0 >= window.start and t1 <= window.end:
                sample.errors += 1
                sample.last_error = str(exc)
        else:
            t1 = time.perf_counter()
            if t0 >= window.start and t1 <= window.end:
                sample.latencies_s.append(t1 - t0)
        if interval_s:
            # A slot missed while a commit took long is skipped, not caught up: a committer
            # never runs above its share of the rate.
            start_at = max(start_at + interval_s, time.perf_counter())
            await asyncio.sleep(start_at - time.perf_counter())


def pace_of(index: int, args: argparse.Namespace, now: float) -> tuple[float, float]:
    """Committer `index`'s first start and interval under `--rate`, starts spread evenly."""
    if not args.rate:
        return (0.0, 0.0)
    interval_s = args.committers / args.rate
    return (now + interval_s * index / args.committers, interval_s)


def pages_of(index: int, args: argparse.Namespace) -> list[int]:
    span = args.pages or args.committers * args.records_per_commit
    first = index * args.records_per_commit
    return [(first + k) % span for k in range(args.records_per_commit)]


async def drive(args: argparse.Namespace, commit: Commit, bytes_sent: BytesSent) -> dict:
    """Run the committers; return raw counts over the measured window."""
    now = time.perf_counter()
    window = Window(now + args.warmup, now + args.warmup + args.seconds)
    samples = [Sample() for _ in range(args.committers)]
    payload = os.urandom(args.record_bytes)
    tasks = [
        asyncio.create_task(
            committer(commit, pages_of(i, args), payload, window, samples[i], pace_of(i, args, now))
        )
        for i in range(args.committers)
    ]
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    bytes_start, cpu_start = bytes_sent(), {n: cpu_seconds(p) for n, p in args.pids.items()}
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    bytes_end, cpu_end = bytes_sent(), {n: cpu_seconds(p) for n, p in args.pids.items()}
    _, pending = await asyncio.wait(tasks, timeout=args.write_timeout + SHUTDOWN_GRACE_S)
    for t in pending:
        t.cancel()
    cpu = {n: 100 * (cpu_end[n] - cpu_start[n]) / args.seconds for n in cpu_start}
    sent = None if bytes_start is None or bytes_end is None else bytes_end - bytes_start
    return {"samples": samples, "bytes": sent, "cpu": cpu}


async def run_in_process(args: argparse.Namespace, layout: cluster.ClusterLayout) -> dict:
    from sixfold.core.commit_log import PageWrite, WriterLimits
    from writer.writer import Writer

    limits = WriterLimits(
        write_timeout_s=args.write_timeout, append_batch_records_max=args.batch_records_max
    )
    writer = Writer(layout.nodes, limits, owner=f"bench-{os.getpid()}")
    try:
        try:
            await asyncio.wait_for(writer.run_recovery(), STARTUP_TIMEOUT_S)
        except TimeoutError:
            raise SixfoldError(
                f"writer recovery did not finish in {STARTUP_TIMEOUT_S:g} s: {writer.status}"
            ) from None
        pipeline = writer.pipeline
        assert pipeline is not None

        async def commit(pages: list[int], data: bytes) -> None:
            await writer.write_pages([PageWrite(p, ((0, data),)) for p in pages])

        return await drive(args, commit, pipeline.bytes_sent)
    finally:
        await writer.close()


async def run_via_grpc(args: argparse.Namespace, layout: cluster.ClusterLayout) -> dict:
    await wait_writer_ready(layout.find_writer_address(), STARTUP_TIMEOUT_S)
    client = WriterClient(layout.find_writer_address())
    stream = client.write_pages_stream() if args.stream else None
    try:

        async def commit(pages: list[int], data: bytes) -> None:
            changes = [pb.PageChange(page_no=p, offset=0, data=data) for p in pages]
            if stream is not None:
                await stream.write(changes, timeout=args.write_timeout)
            else:
                await client.write_pages(changes, timeout=args.write_timeout)

        async def read(pages: list[int], data: bytes) -> None:
            for page_no in pages:
                await client.read_page(page_no, timeout=args.write_timeout)

        if args.reads:  # every page read holds a record: each read builds a real page
            payload = os.urandom(args.record_bytes)
            await asyncio.gather(
                *(commit(pages_of(i, args), payload) for i in range(args.committers))
            )
        return await drive(args, read if args.reads else commit, lambda: None)
    finally:
        if stream is not None:
            await stream.close()
        await client.close()


# -- results -------------------------------------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))
    return sorted_values[index]


def summarize(args: argparse.Namespace, raw: dict) -> Result:
    latencies = sorted(x for s in raw["samples"] for x in s.latencies_s)
    commits = len(latencies)
    records = commits * args.records_per_commit
    errors = sum(s.errors for s in raw["samples"])
    last_error = next((s.last_error for s in raw["samples"] if s.last_error), "")
    ms = {
        "p50": 1e3 * percentile(latencies, 0.50),
        "p99": 1e3 * percentile(latencies, 0.99),
        "max": 1e3 * (latencies[-1] if latencies else float("nan")),
        "mean": 1e3 * (sum(latencies) / commits if commits else float("nan")),
    }
    per_record = raw["bytes"] / records if raw["bytes"] is not None and records else None
    ratio = per_record / (COPIES * args.record_bytes) if per_record is not None else None
    rate = records / args.seconds
    return Result(
        mode="page reads via gRPC"
        if args.reads
        else "via-grpc, one WritePagesStream"
        if args.stream
        else "via-grpc"
        if args.via_grpc
        else "in-process writer",
        committers=args.committers,
        record_bytes=args.record_bytes,
        records_per_commit=args.records_per_commit,
        seconds=args.seconds,
        commits=commits,
        records=records,
        errors=errors,
        records_per_s=rate,
        commits_per_s=commits / args.seconds,
        latency_ms=ms,
        bytes_per_record=per_record,
        bytes_ratio_to_copies=ratio,
        cpu_percent=raw["cpu"],
        machine=machine_info(),
        last_error=last_error,
        targets={
            "records_per_s>=10000": rate >= 10_000,
            "p99_ms<20": ms["p99"] < 20,
            "bytes_per_record<=1.2x(6x record)": None
            if ratio is None
            else ratio <= NETWORK_TARGET_RATIO,
        },
    )


def cpu_per_records(r: Result) -> str:
    """CPU milliseconds per 1,000 records, of all nodes together and of every other process:
    the figure that moves least between runs."""
    per = {n: 10 * v * r.seconds / r.records * 1_000 for n, v in r.cpu_percent.items()}
    nodes = sum(v for n, v in per.items() if n in NODE_NAMES)
    others = "  ".join(f"{n} {v:.0f}" for n, v in per.items() if n not in NODE_NAMES)
    return f"nodes {nodes:.0f}  {others}"


def print_result(r: Result) -> None:
    m = r.machine
    print(
        f"sixfold bench: {r.mode}, {r.committers} committers, {r.record_bytes}-byte records, "
        f"{r.records_per_commit} record(s)/commit, {r.seconds:g} s measured"
    )
    print(
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['implementation']} {m['python']}, "
        f"Linux {m['kernel']}"
    )
    lat = r.latency_ms
    if r.mode.startswith("page reads"):
        print(f"page reads/s      : {r.records_per_s:,.0f}  ({r.records} reads, {r.errors} errors)")
        print(
            f"read latency ms   : p50 {lat['p50']:.2f}  p99 {lat['p99']:.2f}  max "
            f"{lat['max']:.2f}  mean {lat['mean']:.2f}"
        )
        cpu = "  ".join(f"{n} {v:.0f}%" for n, v in r.cpu_percent.items())
        print(f"CPU (% of 1 core) : {cpu}")
        return
    print(f"durable records/s : {r.records_per_s:,.0f}")
    print(f"commits/s         : {r.commits_per_s:,.0f}  ({r.commits} commits, {r.errors} errors)")
    print(
        f"commit latency ms : p50 {lat['p50']:.2f}  p99 {lat['p99']:.2f}  max {lat['max']:.2f}"
        f"  mean {lat['mean']:.2f}"
    )
    if r.bytes_per_record is None:
        print("network bytes/rec : n/a (the writer runs in another process)")
    else:
        print(
            f"network bytes/rec : {r.bytes_per_record:,.0f} = {r.bytes_ratio_to_copies:.3f} x "
            f"({COPIES} x {r.record_bytes})"
        )
    cpu = "  ".join(f"{n} {v:.0f}%" for n, v in r.cpu_percent.items())
    print(f"CPU (% of 1 core) : {cpu}")
    if r.records:
        print(f"CPU ms/1k records : {cpu_per_records(r)}")
    marks = "  ".join(
        f"{k}: {'-' if v is None else 'yes' if v else 'NO'}" for k, v in r.targets.items()
    )
    print(f"targets           : {marks}")
    if r.last_error:
        print(f"last error        : {r.last_error}")


# -- entry point ---------------------------------------------------------------------------------


def check_args(args: argparse.Namespace) -> None:
    if args.stream and args.reads:
        raise SixfoldError("--stream commits; --reads measures reads: give one of them")
    args.via_grpc = args.via_grpc or args.reads or args.stream or args.readers
    if args.committers < 1 or args.records_per_commit < 1 or args.seconds <= 0:
        raise SixfoldError("--committers, --records-per-commit and --seconds must be positive")
    if args.rate < 0:
        raise SixfoldError(f"--rate must be 0 (unpaced) or a positive commits/s, not {args.rate:g}")
    if not 1 <= args.record_bytes <= 4096 or args.warmup < 0:
        raise SixfoldError("--record-bytes must be 1..4096 and --warmup not negative")


async def bench(args: argparse.Namespace, layout: cluster.ClusterLayout) -> Result:
    await wait_nodes_serving(layout, STARTUP_TIMEOUT_S)
    runner = run_via_grpc if args.via_grpc else run_in_process
    raw = await runner(args, layout)
    return summarize(args, raw)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: unwind, so the node processes are stopped


def main(args: argparse.Namespace) -> int:
    check_args(args)
    names = list(NODE_NAMES) + ([cluster.WRITER_NAME] if args.via_grpc else [])
    names += list(cluster.READER_NAMES) if args.readers else []
    return on_fresh_cluster(args, "sixfold-bench-", names, bench, print_result)


def on_fresh_cluster(
    args: argparse.Namespace,
    prefix: str,
    names: list[str],
    run: Callable[[argparse.Namespace, cluster.ClusterLayout], Awaitable[Any]],
    show: Callable[[Any], None],
) -> int:
    """Start `names` in a temporary cluster, run the benchmark, print it, stop everything."""
    signal.signal(signal.SIGTERM, _interrupt)
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    layout = cluster.new_layout(directory)
    try:
        if getattr(args, "tls", False):  # a CA and certificates in the directory, as `up --tls`
            cluster.enable_tls(layout)
        cluster.start_processes(layout, names)
        args.pids = process_pids(layout, names)
        if not args.json:
            pids = " ".join(f"{n}={p}" for n, p in args.pids.items())
            print(f"cluster in {directory}; pids: {pids}", file=sys.stderr, flush=True)
        result = uvloop.run(run(args, layout))  # as the writer process runs
    finally:
        cluster.stop_all(layout)
        if not args.keep:
            _remove_tree(directory)
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        show(result)
    return 0


def _remove_tree(directory: Path) -> None:
    import shutil

    shutil.rmtree(directory, ignore_errors=True)
