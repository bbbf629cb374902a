"""Starting a gRPC server with the standard health and reflection services beside ours."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable, Coroutine

import grpc
import uvloop
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sixfold import tls
from sixfold.auth import server_guard
from sixfold.clients import MESSAGE_BYTES_MAX
from sixfold.core.errors import DataFormatError
from sixfold.guard import UndecodableGuard
from sixfold.rpc import sixfold_pb2 as pb

SERVER_OPTIONS = [
    ("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
    ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX),
    ("grpc.so_reuseport", 0),
]


async def start_server(
    host: str,
    port: int,
    services: list[tuple[Callable[[object, grpc.aio.Server], None], object, str]],
    guard: UndecodableGuard | None = None,
) -> tuple[grpc.aio.Server, int]:
    """Start a server with `services` as (add_to_server, servicer, full service name),
    behind `guard` (by default one that refuses undecodable requests)."""
    interceptors: list[grpc.aio.ServerInterceptor] = [guard or UndecodableGuard()]
    from sixfold.cluster import MEMBER_NAMES  # here: cluster's module needs this one's parts

    if (auth_guard := server_guard(frozenset(MEMBER_NAMES))) is not None:
        interceptors.append(auth_guard)
    server = grpc.aio.server(options=SERVER_OPTIONS, interceptors=interceptors)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = []
    for add, servicer, name in services:
        add(servicer, server)
        names.append(name)
    service_names = [*names, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(service_names, server)
    try:
        bound = tls.add_port(server, f"{host}:{port}")
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {host}:{port}: {exc}") from exc
    await server.start()
    for name in names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    return server, bound


def service_name(service: str) -> str:
    return pb.DESCRIPTOR.services_by_name[service].full_name


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# The young generation is collected once this many more container objects were made than
# freed (Python's default: 700). Under a kv load the writer collected about 130 times a
# second at 700, 3.4% of its CPU in all; at 5,000, with the start-up objects frozen, 6 times
# and 0.6% (docs/BENCHMARKS.md, "Garbage collection in the server processes").
GC_YOUNG_OBJECTS_MAX = 5_000


def tune_gc() -> None:
    """Freeze what start-up made (the imported modules, gRPC's and protobuf's tables): a
    full collection no longer walks it: one paused the writer for 15 ms and a node for 18
    under load, 2 ms and 4 ms at most after. Collect the young generation less often."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_OBJECTS_MAX, older, oldest)


def run_process(label: str, main: Coroutine[object, object, None]) -> int:
    """Run a server process's main coroutine; report a start-up failure in one line.

    On uvloop: the per-message cost of the event loop is most of what a process spends under
    load (issue 11: 16% more kv commits/s, 14% less CPU per commit)."""
    tune_gc()
    try:
        uvloop.run(main)
    except DataFormatError as exc:
        print(f"{label}: refusing to start: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{label}: {exc}", file=sys.stderr)
        return 2
    return 0


async def wait_for_termination(server: grpc.aio.Server) -> None:
    """Serve until SIGTERM or SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1.0)


def parse_peers(text: str) -> dict[str, str]:
    """'a2=127.0.0.1:7002,b1=...' -> {'a2': '127.0.0.1:7002', ...}"""
    peers = {}
    for item in filter(None, text.split(",")):
        name, sep, address = item.partition("=")
        if not sep or not address:
            raise argparse.ArgumentTypeError(f"peer {item!r} is not NAME=HOST:PORT")
        peers[name.strip()] = address.strip()
    return peers
