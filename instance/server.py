"""Running an instance process: `python -m writer` and `python -m reader` both come here.

The two differ only in how they start: the writer takes the writer role (unless another
writer answers), a reader follows the read point and takes over if the writer dies.
"""

from __future__ import annotations

import argparse
import logging
import socket

from instance.host import Instance
from instance.services import InstanceService, InstanceTopologyService
from instance.sql_service import SqlService
from reader.service import ReaderService
from sixfold import metrics
from sixfold.core.allocation import LAL_DEFAULT
from sixfold.core.commit_log import WriterLimits
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.serving import (
    configure_logging,
    parse_peers,
    run_process,
    service_name,
    start_server,
    wait_for_termination,
)
from sixfold.sql.engine import SqlLimits
from writer.service import WriterService
from writer.sql_vfs import ShippedCounters

# The longest a small batch may linger: beyond a second a commit's wait would look like a
# node down to an operator.
GROUP_COMMIT_WAIT_MS_MAX = 1000

log = logging.getLogger("sixfold.instance")


def add_instance_arguments(p: argparse.ArgumentParser, default_name: str | None) -> None:
    p.add_argument(
        "--name",
        default=default_name,
        required=default_name is None,
        help="instance name (default %(default)s)",
    )
    p.add_argument(
        "--nodes",
        type=parse_peers,
        required=True,
        help="NAME=HOST:PORT,... of the six storage nodes",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, required=True)
    p.add_argument(
        "--advertise",
        default="",
        help="HOST:PORT other instances reach this one at (default: --host:--port, "
        "or this machine's hostname when listening on 0.0.0.0)",
    )
    p.add_argument(
        "--client-address",
        default="",
        help="HOST:PORT clients reach this one at, if not --advertise (e.g. a port "
        "published by docker)",
    )
    p.add_argument(
        "--promotion-rank",
        type=int,
        default=0,
        help="order in which readers take over a dead writer: 0 first (the "
        "preferred reader); each rank waits 0.5 s longer",
    )
    p.add_argument(
        "--no-takeover",
        action="store_true",
        help="never take over from a dead writer (a reader that only reads)",
    )
    p.add_argument(
        "--write-timeout",
        type=float,
        default=WriterLimits.write_timeout_s,
        help="seconds a commit waits for a write quorum (default %(default)s)",
    )
    p.add_argument(
        "--auto-replace-after",
        type=float,
        default=WriterLimits.auto_replace_after_s,
        metavar="SECONDS",
        help="as the writer, replace a storage node unreachable this long with an empty spare "
        "of its AZ (default 0: off; `sixfold replace` does it by hand)",
    )
    p.add_argument(
        "--lal",
        type=int,
        default=LAL_DEFAULT,
        help="LSN allocation limit above VDL (default %(default)s)",
    )
    p.add_argument(
        "--group-commit-wait-max",
        type=float,
        default=WriterLimits().append_linger_s * 1000,
        metavar="MS",
        help=f"as the writer, while {WriterLimits().append_linger_waiters_min} or more commits "
        "wait, a small batch to a node waits for more until it holds half of them, at most "
        "this long: fewer, larger batches cost the nodes less CPU per commit (default "
        "%(default)g; 0: never wait)",
    )
    d = SqlLimits()
    p.add_argument(
        "--sql-statement-timeout",
        type=float,
        default=d.statement_timeout_s,
        help="seconds a SQL request's statements may run (default %(default)s)",
    )
    p.add_argument(
        "--sql-result-rows-max",
        type=int,
        default=d.result_rows_max,
        help="rows a SQL request may return (default %(default)s)",
    )
    p.add_argument(
        "--sql-result-bytes-max",
        type=int,
        default=d.result_bytes_max,
        help="bytes of values a SQL request may return (default %(default)s)",
    )
    p.add_argument(
        "--sql-value-bytes-max",
        type=int,
        default=d.value_bytes_max,
        help="the largest string or blob SQLite may build (default %(default)s)",
    )
    p.add_argument(
        "--sql-heap-bytes-max",
        type=int,
        default=d.heap_bytes_max,
        help="memory SQLite may use in this process (default %(default)s)",
    )
    p.add_argument(
        "--sql-session-idle",
        type=float,
        default=d.session_idle_s,
        help="seconds an unused SQL session lives before it is rolled back (default %(default)s)",
    )
    p.add_argument(
        "--sql-connection-wait",
        type=float,
        default=d.connection_wait_s,
        help="seconds a SQL request waits for the writer's busy connection before "
        "it is refused as busy (default %(default)s)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default 0: none)",
    )
    p.add_argument("--log-level", default="INFO")


def sql_limits(args: argparse.Namespace) -> SqlLimits:
    return SqlLimits(
        statement_timeout_s=args.sql_statement_timeout,
        result_rows_max=args.sql_result_rows_max,
        result_bytes_max=args.sql_result_bytes_max,
        value_bytes_max=args.sql_value_bytes_max,
        heap_bytes_max=args.sql_heap_bytes_max,
        session_idle_s=args.sql_session_idle,
        connection_wait_s=args.sql_connection_wait,
    )


def advertised_address(args: argparse.Namespace) -> str:
    if args.advertise:
        return args.advertise
    host = socket.gethostname() if args.host in ("0.0.0.0", "::", "") else args.host
    return f"{host}:{args.port}"


def writer_limits(args: argparse.Namespace) -> WriterLimits:
    """The writer's limits from an instance's flags; a bad value ends the process, named."""
    if args.auto_replace_after < 0:
        raise SystemExit(f"--auto-replace-after must be 0 or more, got {args.auto_replace_after:g}")
    if not 0 <= args.group_commit_wait_max <= GROUP_COMMIT_WAIT_MS_MAX:
        raise SystemExit(
            f"--group-commit-wait-max must be from 0 to {GROUP_COMMIT_WAIT_MS_MAX} ms, "
            f"got {args.group_commit_wait_max:g}"
        )
    return WriterLimits(
        write_timeout_s=args.write_timeout,
        lal=args.lal,
        auto_replace_after_s=args.auto_replace_after,
        append_linger_s=args.group_commit_wait_max / 1000,
    )


async def run_instance(args: argparse.Namespace, as_writer: bool) -> None:
    limits = writer_limits(args)
    address = advertised_address(args)
    sql = sql_limits(args)
    sql.apply_to_process()
    instance = Instance(
        args.name,
        address,
        args.nodes,
        limits=limits,
        rank=args.promotion_rank,
        client_address=args.client_address,
        takeover=not args.no_takeover,
        sql_limits=sql,
        starting_as_writer=as_writer,
    )

    def shipped() -> ShippedCounters:
        return instance.writer_sql.shipped() if instance.writer_sql else ShippedCounters()

    services = [
        (
            pb_grpc.add_WriterServicer_to_server,
            WriterService(instance.writer_or_refuse, shipped, instance.role_now),
            service_name("Writer"),
        ),
        (
            pb_grpc.add_ReaderServicer_to_server,
            ReaderService(
                instance.reader, instance.reader_sql.pages_counted, instance.metrics.page_reads
            ),
            service_name("Reader"),
        ),
        (
            pb_grpc.add_SqlServicer_to_server,
            SqlService(lambda: instance.sql, instance.writer_sql_or_refuse),
            service_name("Sql"),
        ),
        (
            pb_grpc.add_TopologyServiceServicer_to_server,
            InstanceTopologyService(instance),
            service_name("TopologyService"),
        ),
        (
            pb_grpc.add_InstanceServicer_to_server,
            InstanceService(instance),
            service_name("Instance"),
        ),
    ]
    server, port = await start_server(args.host, args.port, services)
    if args.metrics_port:
        metrics.serve(instance.metrics.registry, args.host, args.metrics_port, args.name)
    log.info(
        "%s on port %d (advertised %s), starting as %s",
        args.name,
        port,
        address,
        "the writer" if as_writer else "a reader",
    )
    await instance.start(as_writer)
    try:
        await wait_for_termination(server)
    finally:
        await instance.close()


# -- the two entry points (writer/__main__.py, reader/__main__.py) -------------------------------

_STARTS = {
    # role: (prog, description, default --name)
    "writer": (
        "python -m writer",
        "Run the sixfold writer. It recovers and takes writes, unless another instance "
        "already answers as the writer (a reader took over while this one was down): then it "
        "joins as a reader.",
        "writer",
    ),
    "reader": (
        "python -m reader",
        "Run a sixfold reader. It serves reads at the read point learned from storage, and "
        "takes over as the writer when the writer stops answering (in the order of "
        "--promotion-rank).",
        None,
    ),
}


def build_parser(role: str) -> argparse.ArgumentParser:
    prog, description, default_name = _STARTS[role]
    p = argparse.ArgumentParser(prog=prog, description=description)
    add_instance_arguments(p, default_name=default_name)
    return p


def main(role: str, argv: list[str] | None = None) -> int:
    """Start an instance process as the writer or as a reader."""
    args = build_parser(role).parse_args(argv)
    configure_logging(args.log_level)
    name = "writer" if role == "writer" else f"reader {args.name}"
    return run_process(name, run_instance(args, as_writer=role == "writer"))
