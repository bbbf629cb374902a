"""`sixfold bench-failover`: recovery time after the writer is killed, and reader restarts.

Against the running cluster (the process cluster in --dir, or compose with --compose), it
repeats `--runs` times:

1. commit a row through the client and note it (acknowledged);
2. SIGKILL the current writer (`docker kill` under compose);
3. commit through the same client until one succeeds: the RTO is the time from the kill to
   that first successful commit. The client finds the new writer itself (a reader takes
   over); nothing here tells it where;
4. start the killed instance again (it rejoins as a reader) and check that every row
   acknowledged so far is present.

Then it kills and restarts a reader `--runs` times and measures the time from its start until
it answers a SQL query. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass, field

import grpc

from sixfold import cluster, tls
from sixfold.client import dbapi
from sixfold.client.discovery import NoWriterError, newest_topology
from sixfold.clients import CHANNEL_OPTIONS
from sixfold.core.errors import SixfoldError
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.sql.values import statement_to_proto
from sixfold.targets import current_writer_name, instance_seeds
from sixfold.tools.bench import machine_info

RTO_LIMIT_S = 60.0  # a run fails if no commit succeeds within this long after the kill
REJOIN_LIMIT_S = 60.0
READER_LIMIT_S = 30.0
RETRY_PAUSE_S = 0.02  # between failed commit attempts while the writer is away
TARGET_RTO_MEDIAN_S = 3.0
TARGET_READER_RESTART_S = 1.0
TABLE = "failover_probe"


@dataclass
class Report:
    target: str
    runs: int
    rto_s: list[float] = field(default_factory=list)
    writers_killed: list[str] = field(default_factory=list)
    reader_restart_s: list[float] = field(default_factory=list)
    acknowledged: int = 0
    lost: int = 0
    machine: dict = field(default_factory=machine_info)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=int, default=10, help="writer kills and reader restarts (10)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def commit_probe(conn: dbapi.Connection, value: int) -> None:
    conn.execute(f"INSERT INTO {TABLE}(v) VALUES (?)", (value,))


def measure_rto(target, conn: dbapi.Connection, value: int) -> tuple[str, float]:
    victim = current_writer_name(target)
    killed_at = time.monotonic()
    target.kill([victim])
    while True:
        try:
            commit_probe(conn, value)
            return victim, time.monotonic() - killed_at
        except dbapi.Error:
            if time.monotonic() - killed_at > RTO_LIMIT_S:
                raise SixfoldError(
                    f"no commit succeeded {RTO_LIMIT_S:g} s after killing {victim}"
                ) from None
            time.sleep(RETRY_PAUSE_S)


def wait_rejoined(target, name: str) -> None:
    """The killed instance is back, has seen that another instance is the writer, and serves
    as a reader: killed again before that, it would take over itself as it starts."""
    deadline = time.monotonic() + REJOIN_LIMIT_S
    while True:
        try:
            answer = newest_topology([target.instance_address(name)])
            roles = {v.name: v.role for v in answer.instances}
            if (
                answer.answered_by == name
                and answer.writer_name != name
                and roles.get(name) == "reader"
            ):
                return
        except (NoWriterError, SixfoldError):
            pass
        if time.monotonic() > deadline:
            raise SixfoldError(f"{name} did not come back within {REJOIN_LIMIT_S:g} s")
        time.sleep(0.1)


def measure_reader_restart(target, name: str) -> float:
    """From the start of the reader's process (container) to its first answered query.

    Each try uses a channel of its own: a channel that failed to connect waits out gRPC's
    reconnect backoff, which would be measured instead of the reader.
    """
    address = target.instance_address(name)
    request = pb.ExecuteRequest(statements=[statement_to_proto(f"SELECT count(*) FROM {TABLE}")])
    target.kill([name])
    started_at = time.monotonic()
    target.start([name])
    while True:
        with tls.channel(address, options=CHANNEL_OPTIONS) as channel:
            try:
                pb_grpc.SqlStub(channel).Execute(request, timeout=2.0)
                return time.monotonic() - started_at
            except grpc.RpcError:
                pass
        if time.monotonic() - started_at > READER_LIMIT_S:
            raise SixfoldError(f"{name} did not serve within {READER_LIMIT_S:g} s")
        time.sleep(0.01)


def run(target, runs: int) -> Report:
    report = Report(target.label, runs)
    conn = dbapi.connect(",".join(instance_seeds(target)), timeout=5.0, autocommit=True)
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE}(v INTEGER)")
    conn.execute(f"DELETE FROM {TABLE}")
    for i in range(runs):
        commit_probe(conn, 2 * i)
        victim, rto = measure_rto(target, conn, 2 * i + 1)
        report.acknowledged += 2
        report.rto_s.append(rto)
        report.writers_killed.append(victim)
        print(f"run {i + 1}: killed writer {victim}; first commit {rto:.2f} s later", flush=True)
        target.start([victim])
        wait_rejoined(target, victim)
    present = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]
    report.lost = max(0, report.acknowledged - present)
    writer = current_writer_name(target)
    readers = [n for n in cluster.INSTANCE_NAMES if n != writer]
    for i in range(runs):
        name = readers[i % len(readers)]
        seconds = measure_reader_restart(target, name)
        report.reader_restart_s.append(seconds)
        print(f"reader restart {i + 1}: {name} served {seconds:.2f} s after its start", flush=True)
    conn.close()
    return report


def print_report(r: Report) -> None:
    def summary(values: list[float]) -> str:
        return f"median {statistics.median(values):.2f} s, max {max(values):.2f} s"

    rto_ok = statistics.median(r.rto_s) <= TARGET_RTO_MEDIAN_S and r.lost == 0
    restart_ok = max(r.reader_restart_s) <= TARGET_READER_RESTART_S
    print(
        f"\n{r.target}, {r.runs} runs on {r.machine.get('nproc')} CPUs ({r.machine.get('cpu_model')})"
    )
    print(
        f"  RTO (SIGKILL of the writer -> first commit through the client): {summary(r.rto_s)}"
        f"  [target median <= {TARGET_RTO_MEDIAN_S:g} s: {'met' if rto_ok else 'NOT met'}]"
    )
    print(f"  acknowledged rows: {r.acknowledged}, lost: {r.lost}")
    print(
        f"  reader restart (start -> first answered query): {summary(r.reader_restart_s)}"
        f"  [target <= {TARGET_READER_RESTART_S:g} s: {'met' if restart_ok else 'NOT met'}]"
    )


def main(target, args: argparse.Namespace) -> int:
    if args.runs < 1:
        raise SixfoldError("--runs must be at least 1")
    report = run(target, args.runs)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print_report(report)
    return 1 if report.lost else 0
