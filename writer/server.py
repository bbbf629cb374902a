"""`python -m writer`: run the writer instance."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import uuid

from sixfold.allocation import LAL_DEFAULT
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.serving import (
    configure_logging,
    run_process,
    service_name,
    start_server,
    wait_for_termination,
)
from storage_node.server import parse_peers
from writer.pipeline import WriterLimits
from writer.service import WriterService
from writer.writer import Writer

log = logging.getLogger("sixfold.writer")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m writer", description="Run the sixfold writer.")
    p.add_argument(
        "--nodes",
        type=parse_peers,
        required=True,
        help="NAME=HOST:PORT,... of the six storage nodes",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--write-timeout", type=float, default=WriterLimits.write_timeout_s,
                   help="seconds a commit waits for a write quorum before failing (default %(default)s)")  # fmt: skip
    p.add_argument(
        "--lal",
        type=int,
        default=LAL_DEFAULT,
        help="LSN allocation limit above VDL (default %(default)s)",
    )
    p.add_argument("--name", default="writer", help="instance name, used in its epoch owner id")
    p.add_argument("--log-level", default="INFO")
    return p


async def run(args: argparse.Namespace) -> None:
    limits = WriterLimits(write_timeout_s=args.write_timeout, lal=args.lal)
    # In a container every writer is pid 1: the random part keeps epoch owners distinct.
    writer = Writer(args.nodes, limits, owner=f"{args.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    server, port = await start_server(
        args.host,
        args.port,
        [(pb_grpc.add_WriterServicer_to_server, WriterService(writer), service_name("Writer"))],
    )
    log.info("writer on port %d, recovering", port)
    recovery = asyncio.create_task(writer.run_recovery())
    try:
        await wait_for_termination(server)
    finally:
        recovery.cancel()
        await writer.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    return run_process("writer", run(args))
