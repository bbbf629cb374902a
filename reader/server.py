"""`python -m reader`: run a reader instance."""

from __future__ import annotations

import argparse
import asyncio
import logging

from reader.reader import Reader
from reader.service import ReaderService
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.serving import (
    configure_logging,
    run_process,
    service_name,
    start_server,
    wait_for_termination,
)
from storage_node.server import parse_peers

log = logging.getLogger("sixfold.reader")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reader", description="Run a sixfold reader.")
    p.add_argument("--name", required=True, help="reader name, e.g. r1")
    p.add_argument(
        "--nodes",
        type=parse_peers,
        required=True,
        help="NAME=HOST:PORT,... of the six storage nodes",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log-level", default="INFO")
    return p


async def run(args: argparse.Namespace) -> None:
    reader = Reader(args.name, args.nodes)
    server, port = await start_server(
        args.host,
        args.port,
        [(pb_grpc.add_ReaderServicer_to_server, ReaderService(reader), service_name("Reader"))],
    )
    log.info("reader %s on port %d", args.name, port)
    polling = asyncio.create_task(reader.run_polling())
    try:
        await wait_for_termination(server)
    finally:
        polling.cancel()
        await reader.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    return run_process(f"reader {args.name}", run(args))
