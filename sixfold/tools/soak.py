"""`sixfold soak --time N`: a long mixed run with restarts, watching what must settle.

Against the running local process cluster (`sixfold up --detach`):

- a steady load: page writes (`--page-writers` clients over `--pages` pages, every other
  one through a WritePagesStream) and SQL transactions (an UPDATE of one of `--rows` rows,
  or an INSERT OR REPLACE into a bounded key range, so the database itself does not grow);
- every `--restart-every` seconds one member is restarted (SIGKILL, then started again), in
  turn: a storage node, the current writer (a reader takes over), a reader;
- every `--report-every` seconds one line per process: log records and page versions
  stored (nodes), disk used by its data directory, resident memory (anonymous, and file
  pages of the LMDB map), and CPU since the last report.

At the end the load stops and the run waits `--settle` seconds. It fails (exit 1) if the
logs did not drain (records left beyond what one coalescing step may hold), or if disk or
anonymous memory of any process was still growing: its value at the end above the highest
it reached in the middle third of the run by more than `--growth-max` (default 15%). The
samples go to a JSON-lines file (`--out`) for a table or a plot. A benchmark and a tool,
not a CI test: CI runs the restart-then-drain case (tests/test_long_runs.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from sixfold import cluster
from sixfold.client import dbapi
from sixfold.clients import NodeClient, PageWriteStream, WriterClient
from sixfold.core.errors import SixfoldError
from sixfold.core.log_cleanup import COALESCE_RECORDS_MAX
from sixfold.core.quorum import NODE_NAMES
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.targets import ProcessTarget, current_writer_name
from sixfold.tools.bench import cpu_seconds

SOAK_PAGE_BASE = 3_000_000  # pages the soak writes, away from other tools' pages
WRITE_PAUSE_S = 0.01  # between one page write's answer and the same client's next
SQL_PAUSE_S = 0.02
CALL_TIMEOUT_S = 15.0
RESTART_DOWN_S = 1.0  # a restarted member stays down this long
STATE_TIMEOUT_S = 5.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--time", type=float, default=1800.0, help="seconds of load (default 1800)")
    p.add_argument("--page-writers", type=int, default=8, help="page-writing clients (default 8)")
    p.add_argument("--pages", type=int, default=5_000, help="pages written (default 5000)")
    p.add_argument("--sql-clients", type=int, default=2, help="SQL clients (default 2)")
    p.add_argument("--rows", type=int, default=1_000, help="rows the SQL load keeps (default 1000)")
    p.add_argument(
        "--restart-every",
        type=float,
        default=120.0,
        help="seconds between restarts (default 120; 0: none)",
    )
    p.add_argument(
        "--report-every", type=float, default=30.0, help="seconds between reports (default 30)"
    )
    p.add_argument(
        "--settle",
        type=float,
        default=90.0,
        help="seconds after the load for the logs to drain (default 90)",
    )
    p.add_argument(
        "--growth-max",
        type=float,
        default=0.15,
        help="allowed growth at the end over the middle third (default 0.15)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed for the load")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="JSON-lines file of the samples (default DIR/soak-TIME.jsonl)",
    )


@dataclass
class Sample:
    """One process at one report."""

    t: float  # seconds since the soak started
    name: str
    up: bool
    records: int | None = None  # nodes: log records stored
    versions: int | None = None  # nodes: page versions stored
    disk_mib: float | None = None  # its data directory (nodes)
    rss_anon_mib: float | None = None
    rss_file_mib: float | None = None  # file pages mapped: mostly the LMDB map
    cpu_percent: float | None = None  # of one core, since the previous report


@dataclass
class Counts:
    page_writes: int = 0
    sql_commits: int = 0
    errors: int = 0
    restarts: list[str] = field(default_factory=list)


# -- the load -------------------------------------------------------------------------------


async def page_writer(
    target: ProcessTarget,
    args,
    rng: random.Random,
    counts: Counts,
    stop: asyncio.Event,
    streamed: bool = False,
) -> None:
    """One client's page writes: unary WritePages calls, or with `streamed` one
    WritePagesStream (issue 11), opened again after it breaks, so the run also shows what the
    stream's server side holds over time."""
    address = await asyncio.to_thread(target.find_writer_address)
    client = WriterClient(address)
    stream: PageWriteStream | None = None
    try:
        while not stop.is_set():
            page = SOAK_PAGE_BASE + rng.randrange(args.pages)
            change = pb.PageChange(page_no=page, offset=0, data=rng.randbytes(200))
            try:
                if not streamed:
                    await client.write_pages([change], timeout=CALL_TIMEOUT_S)
                else:
                    if stream is None or stream.broken is not None:
                        stream = client.write_pages_stream()
                    await stream.write([change], timeout=CALL_TIMEOUT_S)
                counts.page_writes += 1
            except SixfoldError:
                counts.errors += 1
                if stream is not None:
                    await stream.close()
                    stream = None
                await client.close()
                address = await asyncio.to_thread(target.find_writer_address)
                client = WriterClient(address)
                await asyncio.sleep(0.2)
            await asyncio.sleep(WRITE_PAUSE_S)
    finally:
        if stream is not None:
            await stream.close()
        await client.close()


def sql_client(seeds: str, rows: int, seed: int, counts: Counts, stop: asyncio.Event) -> None:
    rng = random.Random(seed)
    conn = dbapi.connect(seeds, autocommit=True, timeout=CALL_TIMEOUT_S)
    try:
        with contextlib.suppress(dbapi.Error):
            conn.execute("CREATE TABLE IF NOT EXISTS soak(id INTEGER PRIMARY KEY, v BLOB)")
        while not stop.is_set():
            key = rng.randrange(rows)
            try:
                if rng.random() < 0.5:
                    conn.execute("UPDATE soak SET v = ? WHERE id = ?", (rng.randbytes(100), key))
                else:
                    conn.execute(
                        "INSERT OR REPLACE INTO soak VALUES (?, ?)", (key, rng.randbytes(100))
                    )
                counts.sql_commits += 1
            except dbapi.Error:
                counts.errors += 1
                time.sleep(0.2)
            time.sleep(SQL_PAUSE_S)
    finally:
        conn.close()


# -- restarts -------------------------------------------------------------------------------


async def restarter(
    target: ProcessTarget, every_s: float, counts: Counts, stop: asyncio.Event
) -> None:
    turn = 0
    while every_s > 0:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
            return
        kind = ("node", "writer", "reader")[turn % 3]
        victim = await asyncio.to_thread(_victim, target, kind, turn)
        target.kill([victim])
        await asyncio.sleep(RESTART_DOWN_S)
        target.start([victim])
        counts.restarts.append(f"{kind} {victim}")
        turn += 1


def _victim(target: ProcessTarget, kind: str, turn: int) -> str:
    if kind == "node":
        return NODE_NAMES[(turn // 3) % len(NODE_NAMES)]
    try:
        writer = current_writer_name(target) or cluster.WRITER_NAME
    except SixfoldError:
        writer = cluster.WRITER_NAME
    if kind == "writer":
        return writer
    readers = [n for n in cluster.INSTANCE_NAMES if n != writer]
    return readers[(turn // 3) % len(readers)]


# -- reports -------------------------------------------------------------------------------


def rss_mib(pid: int) -> tuple[float | None, float | None]:
    """(anonymous, file) resident memory of a process, MiB."""
    fields: dict[str, float] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile"):
                fields[key] = int(value.split()[0]) / 1024
    return fields.get("RssAnon"), fields.get("RssFile")


def disk_mib(directory: Path) -> float:
    return sum(p.stat().st_blocks * 512 for p in directory.rglob("*") if p.is_file()) / 2**20


async def node_counts(target: ProcessTarget) -> dict[str, tuple[int, int] | None]:
    async def one(name: str) -> tuple[int, int] | None:
        client = NodeClient(name, target.nodes[name])
        try:
            state = await client.get_state(timeout=STATE_TIMEOUT_S)
            return state.records_stored, state.page_versions_stored
        except SixfoldError:
            return None
        finally:
            await client.close()

    answers = await asyncio.gather(*(one(n) for n in NODE_NAMES))
    return dict(zip(NODE_NAMES, answers, strict=True))


class Reporter:
    def __init__(self, target: ProcessTarget, started: float, out) -> None:
        self.target = target
        self.started = started
        self.out = out
        self.cpu_before: dict[str, tuple[float, float]] = {}  # name -> (cpu s, at)
        self.samples: list[Sample] = []

    async def report(self) -> list[Sample]:
        layout = cluster.ClusterLayout.load(Path(self.target.layout.directory))
        counts = await node_counts(self.target)
        now = time.monotonic()
        batch = []
        for name, info in layout.processes.items():
            if info.role == "interposer":
                continue
            sample = Sample(round(now - self.started, 1), name, cluster.is_running(info))
            if sample.up:
                sample.rss_anon_mib, sample.rss_file_mib = rss_mib(info.pid)
                cpu = cpu_seconds(info.pid)
                before = self.cpu_before.get(name)
                if before is not None and now > before[1] and cpu >= before[0]:
                    sample.cpu_percent = 100 * (cpu - before[0]) / (now - before[1])
                self.cpu_before[name] = (cpu, now)
            if name in NODE_NAMES:
                sample.disk_mib = disk_mib(Path(layout.directory) / name)
                if counts[name] is not None:
                    sample.records, sample.versions = counts[name]
            batch.append(sample)
        for sample in batch:
            self.out.write(json.dumps(asdict(sample)) + "\n")
        self.out.flush()
        self.samples.extend(batch)
        print_report(batch)
        return batch


def print_report(batch: list[Sample]) -> None:
    def num(x: float | int | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    t = batch[0].t if batch else 0
    parts = []
    for s in batch:
        if s.name in NODE_NAMES:
            parts.append(
                f"{s.name} rec {num(s.records, ',')} ver {num(s.versions, ',')} "
                f"disk {num(s.disk_mib, '.0f')}M rss {num(s.rss_anon_mib, '.0f')}"
                f"+{num(s.rss_file_mib, '.0f')}M cpu {num(s.cpu_percent, '.0f')}%"
            )
        else:
            parts.append(
                f"{s.name} rss {num(s.rss_anon_mib, '.0f')}+{num(s.rss_file_mib, '.0f')}M "
                f"cpu {num(s.cpu_percent, '.0f')}%"
            )
    print(f"[{t:7.1f}s] " + " | ".join(parts), flush=True)


# -- the verdict -----------------------------------------------------------------------------


def verdict(samples: list[Sample], end_samples: list[Sample], growth_max: float) -> list[str]:
    """What did not settle: stuck records, growing disk or memory."""
    problems = []
    records_allowed = COALESCE_RECORDS_MAX
    for s in end_samples:
        if s.records is not None and s.records > records_allowed:
            problems.append(
                f"{s.name}: {s.records:,} log records left after the settle time "
                f"(at most {records_allowed:,} expected)"
            )
    if not samples:
        return problems
    span = max(s.t for s in samples)
    middle = [s for s in samples if span / 3 <= s.t <= 2 * span / 3]
    for name in {s.name for s in samples}:
        for metric in ("disk_mib", "rss_anon_mib"):
            mid = [getattr(s, metric) for s in middle if s.name == name]
            end = [getattr(s, metric) for s in end_samples if s.name == name]
            mid = [x for x in mid if x is not None]
            end = [x for x in end if x is not None]
            if mid and end and end[-1] > max(mid) * (1 + growth_max):
                problems.append(
                    f"{name}: {metric} still growing: {end[-1]:.1f} at the end "
                    f"against at most {max(mid):.1f} in the middle third"
                )
    return sorted(problems)


# -- the command -----------------------------------------------------------------------------


async def soak(target: ProcessTarget, args: argparse.Namespace, out) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**9)
    started = time.monotonic()
    counts = Counts()
    stop = asyncio.Event()
    reporter = Reporter(target, started, out)
    seeds = ",".join(target.instance_address(n) for n in cluster.INSTANCE_NAMES)
    print(
        f"soak: {args.time:g} s, seed {seed}, restarts every {args.restart_every:g} s", flush=True
    )
    tasks = [
        asyncio.create_task(
            page_writer(target, args, random.Random(seed + i), counts, stop, streamed=i % 2 == 1)
        )
        for i in range(args.page_writers)
    ]
    for i in range(args.sql_clients):
        sql = asyncio.to_thread(sql_client, seeds, args.rows, seed + 1000 + i, counts, stop)
        tasks.append(asyncio.create_task(sql))
    tasks.append(asyncio.create_task(restarter(target, args.restart_every, counts, stop)))
    await reporter.report()
    deadline = started + args.time
    try:
        while time.monotonic() < deadline:
            await asyncio.sleep(min(args.report_every, max(0.0, deadline - time.monotonic())))
            await reporter.report()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    load_samples = list(reporter.samples)
    print(
        f"load stopped: {counts.page_writes:,} page writes, {counts.sql_commits:,} SQL "
        f"commits, {counts.errors:,} errors, restarts: {', '.join(counts.restarts) or 'none'}; "
        f"settling {args.settle:g} s",
        flush=True,
    )
    target.start(list(target.layout.processes))  # anything a restart left down
    await asyncio.sleep(args.settle)
    end = await reporter.report()
    problems = verdict(load_samples, end, args.growth_max)
    for problem in problems:
        print(f"NOT SETTLED: {problem}")
    print("verdict: " + ("not settled" if problems else "settled"))
    return 1 if problems else 0


def main(target, args: argparse.Namespace, directory: Path) -> int:
    if not isinstance(target, ProcessTarget):
        raise SixfoldError(
            "sixfold soak measures processes by pid and data directory: run it "
            "on the local process cluster (`sixfold up --detach`)"
        )
    out_path = args.out or directory / f"soak-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w") as out:
        status = asyncio.run(soak(target, args, out))
    print(f"samples: {out_path}")
    return status
