"""`sixfold bench-sql`: SQL commit throughput, redo against page bytes, and reader lag (issue 5).

A fresh cluster (six storage nodes, the writer, readers r1 and r2, all processes) is started in
a temporary directory. `--clients` coroutines in this process, over one `grpc.aio` channel,
each send a single-row INSERT or UPDATE (alternately) to the writer's Sql service as one
transaction (Execute with no session) and wait for its answer before sending the next.

Phase 1 (closed loop): after `--warmup` seconds, `--seconds` are measured: commits/s, commit
latency, the writer's redo bytes per commit against the bytes of the whole pages those commits
changed (deltas of WriterState.sql over the interval), and CPU seconds of every process.

Phase 2 (reader lag): the same clients paced open-loop to `--lag-rate` commits/s. For each
commit acknowledged in the measured `--lag-seconds`, the lag is the time from its
acknowledgement until the reader's read point (GetReaderState, polled every 2 ms from one
task) is at or above its commit LSN. Poll times are taken when the answer arrives, so a lag is
an upper bound, within one poll interval plus one GetReaderState round trip.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import random
import time
from dataclasses import dataclass, field

from sixfold import cluster, tls
from sixfold.clients import CHANNEL_OPTIONS, ReaderClient, WriterClient, call
from sixfold.core.errors import SixfoldError
from sixfold.core.quorum import NODE_NAMES
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.sql.values import statement_to_proto
from sixfold.tools.bench import (
    STARTUP_TIMEOUT_S,
    Window,
    cpu_seconds,
    machine_info,
    on_fresh_cluster,
    percentile,
)

TARGET_COMMITS_PER_S = 3_000
TARGET_REDO_TO_PAGE_RATIO = 1 / 5  # redo bytes per commit <= this x changed page bytes
TARGET_LAG_P99_MS = 50.0
SUSTAINED_FRACTION = 0.95  # an achieved rate below this x the paced rate is "not sustained"

POLL_INTERVAL_S = 0.002  # how often the read point is asked for
POLL_TIMEOUT_S = 1.0
SETTLE_LIMIT_S = 5.0  # after the paced load: how long the read point may take to catch up
ERROR_PAUSE_S = 0.01  # a client that got an error waits this long: no hot loop on a dead writer
DRAIN_GRACE_S = 5.0  # beyond --timeout: clients still in flight when a phase ends
COMMITS_PER_CLIENT_MAX = 10_000_000  # the count bound of every client loop
PRELOAD_BATCH_ROWS = 500  # rows per preload transaction

CREATE_SQL = "CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)"
INSERT_SQL = "INSERT INTO t (k, v) VALUES (?, ?)"
UPDATE_SQL = "UPDATE t SET v = ? WHERE k = ?"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    p.add_argument("--value-bytes", type=int, default=100, help="bytes of each row's value")
    p.add_argument(
        "--rows",
        type=int,
        default=1000,
        help="rows loaded before measuring; UPDATEs pick among them (default 1000)",
    )
    p.add_argument("--seconds", type=float, default=15.0, help="measured seconds (default 15)")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    p.add_argument(
        "--lag-rate",
        type=float,
        default=1000.0,
        help="commits/s of the paced reader-lag phase (default 1000; 0 skips it)",
    )
    p.add_argument(
        "--lag-seconds",
        type=float,
        default=10.0,
        help="measured seconds of the reader-lag phase (default 10)",
    )
    p.add_argument(
        "--lag-warmup",
        type=float,
        default=1.0,
        help="seconds of paced load before the lag is measured (default 1)",
    )
    p.add_argument("--reader", default="r1", help="the reader whose lag is measured (r1, r2)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds one Execute may take")
    p.add_argument("--seed", type=int, default=0, help="seed of the values and UPDATE keys")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--keep", action="store_true", help="keep the temporary cluster directory")
    p.add_argument(
        "--tls",
        action="store_true",
        help="mutual TLS on every link, as `sixfold up --tls` (this client presents the "
        "client certificate)",
    )


# -- results -------------------------------------------------------------------------------------


@dataclass
class Throughput:
    """Phase 1: closed-loop load, `clients` transactions in flight."""

    seconds: float
    commits: int  # acknowledged, started and finished inside the interval
    errors: int
    commits_per_s: float
    latency_ms: dict[str, float]
    writer_commits: int  # from WriterState.sql: transactions that wrote, over the interval
    redo_bytes_per_commit: float | None
    changed_page_bytes_per_commit: float | None
    redo_to_page_ratio: float | None
    cpu_seconds: dict[str, float]
    cpu_percent: dict[str, float]
    cpu_ms_per_commit: dict[str, float]  # per writer commit: the cost, whatever the load


@dataclass
class Lag:
    """Phase 2: paced load; lag from acknowledgement to the reader's read point."""

    reader: str
    rate_paced: float
    seconds: float
    commits: int  # acknowledged inside the interval
    errors: int
    commits_per_s: float
    sustained: bool  # commits_per_s >= SUSTAINED_FRACTION x rate_paced
    lag_ms: dict[str, float]
    unresolved: int  # commits the read point had not reached when polling stopped
    polls: int
    poll_interval_ms_mean: float
    cpu_seconds: dict[str, float]


@dataclass
class Result:
    clients: int
    value_bytes: int
    rows: int
    throughput: Throughput
    lag: Lag | None
    machine: dict[str, object]
    targets: dict[str, bool | None]
    last_error: str = ""


# -- the load ------------------------------------------------------------------------------------


@dataclass
class Sample:
    latencies_s: list[float] = field(default_factory=list)
    acks: list[tuple[float, int]] = field(default_factory=list)  # (ack time, commit LSN)
    errors: int = 0
    last_error: str = ""


class SqlLoad:
    """Single-row transactions on the writer's Sql service over one shared channel."""

    def __init__(self, address: str, args: argparse.Namespace) -> None:
        self.channel = tls.aio_channel(address, options=CHANNEL_OPTIONS)
        self.stub = pb_grpc.SqlStub(self.channel)
        self.timeout_s = args.timeout
        self.value_bytes = args.value_bytes
        self.rows = args.rows
        self.next_key = args.rows + 1  # INSERTs take fresh keys; one event loop, no lock
        self.rng = random.Random(args.seed)

    async def execute(self, *statements: pb.SqlStatement) -> pb.ExecuteResponse:
        request = pb.ExecuteRequest(statements=list(statements))
        return await call("writer", self.stub.Execute, request, self.timeout_s)

    async def preload(self) -> None:
        await self.execute(statement_to_proto(CREATE_SQL))
        for first in range(1, self.rows + 1, PRELOAD_BATCH_ROWS):
            keys = range(first, min(first + PRELOAD_BATCH_ROWS, self.rows + 1))
            sets = [(k, self.rng.randbytes(self.value_bytes)) for k in keys]
            await self.execute(statement_to_proto(INSERT_SQL, param_sets=sets))

    async def transaction(self, insert: bool) -> int:
        """One INSERT of a new row or UPDATE of a loaded one; its durable commit LSN."""
        value = self.rng.randbytes(self.value_bytes)
        if insert:
            key, self.next_key = self.next_key, self.next_key + 1
            statement = statement_to_proto(INSERT_SQL, (key, value))
        else:
            statement = statement_to_proto(UPDATE_SQL, (value, self.rng.randint(1, self.rows)))
        response = await self.execute(statement)
        changed = response.results[0].rows_changed if response.results else 0
        if changed != 1 or response.commit_lsn == 0:
            raise SixfoldError(
                f"expected 1 row changed and a commit LSN, got {changed} and {response.commit_lsn}"
            )
        return response.commit_lsn

    async def close(self) -> None:
        await self.channel.close()


def note_error(sample: Sample, exc: SixfoldError) -> None:
    sample.errors += 1
    sample.last_error = str(exc)


async def closed_client(load: SqlLoad, index: int, window: Window, sample: Sample) -> None:
    """Send the next transaction as soon as the last one is answered, until the window ends."""
    for n in range(index, index + COMMITS_PER_CLIENT_MAX):
        if (t0 := time.perf_counter()) >= window.end:
            return
        try:
            await load.transaction(insert=n % 2 == 0)
        except SixfoldError as exc:
            if t0 >= window.start:
                note_error(sample, exc)
            await asyncio.sleep(ERROR_PAUSE_S)
            continue
        t1 = time.perf_counter()
        if t0 >= window.start and t1 <= window.end:
            sample.latencies_s.append(t1 - t0)


@dataclass
class Pacer:
    """Open-loop schedule: commit i is due at start + i / rate; idle clients take the next."""

    start: float
    end: float
    rate: float
    next_slot: int = 0

    def take(self) -> float | None:
        due = self.start + self.next_slot / self.rate
        if due >= self.end or time.perf_counter() >= self.end:
            return None
        self.next_slot += 1
        return due


async def paced_client(
    load: SqlLoad, index: int, pacer: Pacer, window: Window, sample: Sample
) -> None:
    for n in range(index, index + COMMITS_PER_CLIENT_MAX):
        if (due := pacer.take()) is None:
            return
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        try:
            lsn = await load.transaction(insert=n % 2 == 0)
        except SixfoldError as exc:
            if window.start <= time.perf_counter() <= window.end:
                note_error(sample, exc)
            await asyncio.sleep(ERROR_PAUSE_S)
            continue
        t_ack = time.perf_counter()
        if window.start <= t_ack <= window.end:
            sample.acks.append((t_ack, lsn))


async def finish(tasks: list[asyncio.Task], timeout_s: float) -> None:
    _, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


# -- measuring -----------------------------------------------------------------------------------


@dataclass
class Snapshot:
    sql: pb.SqlCounters
    cpu_s: dict[str, float]


async def snapshot(writer: WriterClient, pids: dict[str, int]) -> Snapshot:
    state = await writer.state(timeout=POLL_TIMEOUT_S * 5)
    counters = pb.SqlCounters()
    counters.CopyFrom(state.sql)
    return Snapshot(counters, {n: cpu_seconds(p) for n, p in pids.items()})


def cpu_between(start: Snapshot, end: Snapshot) -> dict[str, float]:
    return {n: round(end.cpu_s[n] - start.cpu_s[n], 2) for n in start.cpu_s}


def latency_ms(sorted_s: list[float]) -> dict[str, float]:
    count = len(sorted_s)
    return {
        "p50": 1e3 * percentile(sorted_s, 0.50),
        "p99": 1e3 * percentile(sorted_s, 0.99),
        "max": 1e3 * (sorted_s[-1] if count else float("nan")),
        "mean": 1e3 * (sum(sorted_s) / count if count else float("nan")),
    }


async def run_throughput(
    args: argparse.Namespace, load: SqlLoad, writer: WriterClient
) -> tuple[Throughput, str]:
    now = time.perf_counter()
    window = Window(now + args.warmup, now + args.warmup + args.seconds)
    samples = [Sample() for _ in range(args.clients)]
    tasks = [
        asyncio.create_task(closed_client(load, i, window, samples[i])) for i in range(args.clients)
    ]
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    start = await snapshot(writer, args.pids)
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    end = await snapshot(writer, args.pids)
    await finish(tasks, args.timeout + DRAIN_GRACE_S)
    latencies = sorted(x for s in samples for x in s.latencies_s)
    writer_commits = end.sql.commits - start.sql.commits
    redo = end.sql.redo_bytes - start.sql.redo_bytes
    pages = end.sql.changed_page_bytes - start.sql.changed_page_bytes
    cpu = cpu_between(start, end)
    result = Throughput(
        seconds=args.seconds,
        commits=len(latencies),
        errors=sum(s.errors for s in samples),
        commits_per_s=len(latencies) / args.seconds,
        latency_ms=latency_ms(latencies),
        writer_commits=writer_commits,
        redo_bytes_per_commit=redo / writer_commits if writer_commits else None,
        changed_page_bytes_per_commit=pages / writer_commits if writer_commits else None,
        redo_to_page_ratio=redo / pages if pages else None,
        cpu_seconds=cpu,
        cpu_percent={n: round(100 * v / args.seconds, 1) for n, v in cpu.items()},
        cpu_ms_per_commit={n: round(1e3 * v / max(1, writer_commits), 3) for n, v in cpu.items()},
    )
    return result, next((s.last_error for s in samples if s.last_error), "")


@dataclass
class ReadPoints:
    """(answer time, read point) pairs of one reader, polled from one task."""

    samples: list[tuple[float, int]] = field(default_factory=list)
    errors: int = 0
    stop: bool = False

    @property
    def latest(self) -> int:
        return self.samples[-1][1] if self.samples else 0


async def poll_read_point(client: ReaderClient, points: ReadPoints, deadline: float) -> None:
    polls_max = int((deadline - time.perf_counter()) / POLL_INTERVAL_S) + 1
    for _ in range(polls_max):
        if points.stop or time.perf_counter() >= deadline:
            return
        next_poll = time.perf_counter() + POLL_INTERVAL_S
        try:
            state = await client.state(timeout=POLL_TIMEOUT_S)
        except SixfoldError:
            points.errors += 1
        else:
            points.samples.append((time.perf_counter(), state.read_point))
        await asyncio.sleep(max(0.0, next_poll - time.perf_counter()))


def lags_s(
    acks: list[tuple[float, int]], samples: list[tuple[float, int]]
) -> tuple[list[float], int]:
    """Per acknowledged commit: ack -> first poll that saw read point >= its LSN (0 if before)."""
    times, points, highest = [], [], 0
    for t, read_point in samples:
        highest = max(highest, read_point)  # a read point never goes back; be safe anyway
        times.append(t)
        points.append(highest)
    lags, unresolved = [], 0
    for t_ack, lsn in acks:
        j = bisect.bisect_left(points, lsn)
        if j == len(points):
            unresolved += 1
        else:
            lags.append(max(0.0, times[j] - t_ack))
    return sorted(lags), unresolved


async def wait_read_point(points: ReadPoints, lsn: int, limit_s: float) -> None:
    deadline = time.perf_counter() + limit_s
    while points.latest < lsn and time.perf_counter() < deadline:
        await asyncio.sleep(POLL_INTERVAL_S)


async def run_lag(
    args: argparse.Namespace, load: SqlLoad, writer: WriterClient, reader: ReaderClient
) -> tuple[Lag, str]:
    now = time.perf_counter()
    window = Window(now + args.lag_warmup, now + args.lag_warmup + args.lag_seconds)
    pacer = Pacer(now, window.end, args.lag_rate)
    samples = [Sample() for _ in range(args.clients)]
    points = ReadPoints()
    poller = asyncio.create_task(
        poll_read_point(reader, points, window.end + args.timeout + SETTLE_LIMIT_S)
    )
    tasks = [
        asyncio.create_task(paced_client(load, i, pacer, window, samples[i]))
        for i in range(args.clients)
    ]
    await asyncio.sleep(max(0.0, window.start - time.perf_counter()))
    start = await snapshot(writer, args.pids)
    await asyncio.sleep(max(0.0, window.end - time.perf_counter()))
    end = await snapshot(writer, args.pids)
    await finish(tasks, args.timeout + DRAIN_GRACE_S)
    acks = sorted(a for s in samples for a in s.acks)
    await wait_read_point(points, max((lsn for _, lsn in acks), default=0), SETTLE_LIMIT_S)
    points.stop = True
    await finish([poller], POLL_TIMEOUT_S * 2)
    lags, unresolved = lags_s(acks, points.samples)
    polled = [t for t, _ in points.samples if window.start <= t <= window.end]
    rate = len(acks) / args.lag_seconds
    result = Lag(
        reader=args.reader,
        rate_paced=args.lag_rate,
        seconds=args.lag_seconds,
        commits=len(acks),
        errors=sum(s.errors for s in samples),
        commits_per_s=rate,
        sustained=rate >= SUSTAINED_FRACTION * args.lag_rate,
        lag_ms={k: v for k, v in latency_ms(lags).items() if k != "mean"},
        unresolved=unresolved,
        polls=len(polled),
        poll_interval_ms_mean=1e3 * args.lag_seconds / len(polled) if polled else float("nan"),
        cpu_seconds=cpu_between(start, end),
    )
    return result, next((s.last_error for s in samples if s.last_error), "")


# -- the run -------------------------------------------------------------------------------------


def targets_of(t: Throughput, lag: Lag | None) -> dict[str, bool | None]:
    ratio = t.redo_to_page_ratio
    return {
        f"commits_per_s>={TARGET_COMMITS_PER_S}": t.commits_per_s >= TARGET_COMMITS_PER_S,
        "redo_bytes<=1/5 changed_page_bytes": None
        if ratio is None
        else ratio <= TARGET_REDO_TO_PAGE_RATIO,
        f"reader_lag_p99_ms<={TARGET_LAG_P99_MS:g}": None
        if lag is None or not lag.commits or lag.unresolved
        else lag.lag_ms["p99"] <= TARGET_LAG_P99_MS,
    }


async def bench(args: argparse.Namespace, layout: cluster.ClusterLayout) -> Result:
    await cluster.wait_healthy(layout, STARTUP_TIMEOUT_S)
    load = SqlLoad(layout.find_writer_address(), args)
    writer = WriterClient(layout.find_writer_address())
    reader = ReaderClient(layout.reader_address(args.reader), args.reader)
    try:
        await load.preload()
        throughput, error = await run_throughput(args, load, writer)
        lag, lag_error = None, ""
        if args.lag_rate > 0:
            lag, lag_error = await run_lag(args, load, writer, reader)
    finally:
        for client in (load, writer, reader):
            await client.close()
    return Result(
        clients=args.clients,
        value_bytes=args.value_bytes,
        rows=args.rows,
        throughput=throughput,
        lag=lag,
        machine=machine_info(),
        targets=targets_of(throughput, lag),
        last_error=error or lag_error,
    )


def mark(met: bool | None) -> str:
    return "-" if met is None else "met" if met else "NOT met"


def print_result(r: Result) -> None:
    t, m, marks = r.throughput, r.machine, list(r.targets.values())
    print(
        f"sixfold bench-sql: {r.clients} clients through the writer's Sql API, single-row "
        f"INSERT/UPDATE ({r.value_bytes}-byte values, {r.rows} rows loaded)"
    )
    print(
        f"machine: {m['nproc']} CPUs, {m['cpu_model']}, {m['implementation']} {m['python']}, "
        f"Linux {m['kernel']}"
    )
    print(f"-- closed loop, {t.seconds:g} s measured")
    print(
        f"commits/s          : {t.commits_per_s:,.0f}  ({t.commits} commits, {t.errors} errors)"
        f"   target >= {TARGET_COMMITS_PER_S:,}: {mark(marks[0])}"
    )
    lat = t.latency_ms
    print(
        f"commit latency ms  : p50 {lat['p50']:.1f}  p99 {lat['p99']:.1f}  max {lat['max']:.1f}"
        f"  mean {lat['mean']:.1f}"
    )
    if t.redo_to_page_ratio is None:
        print("redo bytes/commit  : n/a (the writer counted no SQL commit)")
    else:
        print(
            f"redo bytes/commit  : {t.redo_bytes_per_commit:,.0f} vs changed page bytes/commit "
            f"{t.changed_page_bytes_per_commit:,.0f} = {t.redo_to_page_ratio:.3f} "
            f"({t.writer_commits} writer commits)   target <= 0.200: {mark(marks[1])}"
        )
    cpu = "  ".join(f"{n} {v:.1f}" for n, v in t.cpu_seconds.items())
    print(f"{f'CPU s in {t.seconds:g} s':<19}: {cpu}")
    per_commit = t.cpu_ms_per_commit
    print(
        f"CPU ms per commit  : {sum(per_commit.values()):.2f} in all; "
        + "  ".join(f"{n} {v:.2f}" for n, v in per_commit.items())
    )
    if r.lag is not None:
        print_lag(r.lag, marks[2])
    if r.last_error:
        print(f"last error         : {r.last_error}")


def print_lag(lag: Lag, met: bool | None) -> None:
    print(
        f"-- paced to {lag.rate_paced:,.0f} commits/s, {lag.seconds:g} s measured, "
        f"lag of reader {lag.reader}"
    )
    print(
        f"commits/s achieved : {lag.commits_per_s:,.0f}  ({lag.commits} commits, "
        f"{lag.errors} errors)"
    )
    if not lag.sustained:
        print(
            f"NOTE               : this machine did not sustain {lag.rate_paced:,.0f} commits/s;"
            f" the lag below is at the achieved {lag.commits_per_s:,.0f} commits/s"
        )
    ms = lag.lag_ms
    print(
        f"reader lag ms      : p50 {ms['p50']:.1f}  p99 {ms['p99']:.1f}  max {ms['max']:.1f}"
        f"  ({lag.unresolved} unresolved; {lag.polls} polls, every "
        f"{lag.poll_interval_ms_mean:.1f} ms)   target p99 <= {TARGET_LAG_P99_MS:g}: "
        f"{mark(met)}"
    )
    cpu = "  ".join(f"{n} {v:.1f}" for n, v in lag.cpu_seconds.items())
    print(f"{f'CPU s in {lag.seconds:g} s':<19}: {cpu}")


def check_args(args: argparse.Namespace) -> None:
    if args.clients < 1 or args.rows < 1 or args.seconds <= 0 or args.lag_seconds <= 0:
        raise SixfoldError("--clients, --rows, --seconds and --lag-seconds must be positive")
    if not 1 <= args.value_bytes <= 2048:
        raise SixfoldError("--value-bytes must be 1..2048")
    if args.warmup < 0 or args.lag_warmup < 0 or args.lag_rate < 0 or args.timeout <= 0:
        raise SixfoldError(
            "--warmup, --lag-warmup and --lag-rate must not be negative, --timeout positive"
        )
    if args.reader not in cluster.READER_NAMES:
        raise SixfoldError(f"--reader must be one of {', '.join(cluster.READER_NAMES)}")


def main(args: argparse.Namespace) -> int:
    check_args(args)
    names = [*NODE_NAMES, cluster.WRITER_NAME, *cluster.READER_NAMES]
    return on_fresh_cluster(args, "sixfold-bench-sql-", names, bench, print_result)
