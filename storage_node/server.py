"""`python -m storage_node`: run one storage node."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from sixfold import metrics
from sixfold.addressing import AddressCheck
from sixfold.core.quorum import NODE_AZ, STORAGE_NAMES
from sixfold.crash import guarded_task
from sixfold.frames import FRAME_PORT_OFFSET
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.serving import (
    configure_logging,
    parse_peers,
    run_process,
    service_name,
    start_server,
    wait_for_termination,
)
from storage_node.background import run_background
from storage_node.frame_server import FrameServer
from storage_node.gossip import Gossip
from storage_node.node import NodeLimits, StorageNode
from storage_node.service import InstancesSeen, NodeTopologyService, StorageNodeService
from storage_node.store import MAP_SIZE_BYTES_DEFAULT

log = logging.getLogger("sixfold.storage_node")

GIL_SWITCH_INTERVAL_S = 0.0005
PORT_MAX = 65535


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m storage_node", description="Run one sixfold storage node."
    )
    p.add_argument(
        "--name",
        required=True,
        choices=STORAGE_NAMES,
        help="node name (its AZ is its first letter; a3 b3 c3 are spares)",
    )
    p.add_argument("--data-dir", required=True, type=Path, help="LMDB data directory")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, required=True, help="port to listen on")
    p.add_argument(
        "--frame-port",
        type=int,
        default=None,
        help="port of the framed listener the writer's appends and the readers' watches use "
        f"off gRPC (default: --port + {FRAME_PORT_OFFSET}; 0: none, every stream on gRPC). "
        "Off under TLS; a port that cannot be bound leaves it off, with a warning",
    )
    p.add_argument(
        "--peers", type=parse_peers, default={}, help="NAME=HOST:PORT,... of the other nodes"
    )
    p.add_argument(
        "--volume-id",
        default="",
        help="the volume this node's data belongs to (the cluster's; default: none named); "
        "a directory holding another volume's data is refused",
    )
    p.add_argument(
        "--map-size-mib",
        type=int,
        default=MAP_SIZE_BYTES_DEFAULT >> 20,
        help=f"LMDB map size in MiB (default {MAP_SIZE_BYTES_DEFAULT >> 20}); the store cannot grow past it",
    )
    p.add_argument(
        "--batch-records-max",
        type=int,
        default=NodeLimits.append_batch_records_max,
        help="largest append batch accepted, in records",
    )
    p.add_argument(
        "--batch-bytes-max",
        type=int,
        default=NodeLimits.append_batch_bytes_max,
        help="largest append batch accepted, in bytes",
    )
    p.add_argument(
        "--hydrate-mib-per-s",
        type=float,
        default=NodeLimits.hydrate_bytes_per_s_max / (1 << 20),
        help="a hydration after a lost disk copies at most this many MiB a second from peers, "
        "so commits keep their latency (default %(default)g; 0: unthrottled)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve Prometheus metrics at http://HOST:PORT/metrics (default 0: none)",
    )
    p.add_argument("--log-level", default="INFO")
    return p


async def run(args: argparse.Namespace) -> None:
    if args.hydrate_mib_per_s < 0:
        raise SystemExit(f"--hydrate-mib-per-s must be 0 or more, got {args.hydrate_mib_per_s:g}")
    limits = NodeLimits(
        append_batch_records_max=args.batch_records_max,
        append_batch_bytes_max=args.batch_bytes_max,
        hydrate_bytes_per_s_max=int(args.hydrate_mib_per_s * (1 << 20)),
    )
    node = StorageNode(
        args.name,
        NODE_AZ[args.name],
        args.data_dir,
        map_size_bytes=args.map_size_mib << 20,
        limits=limits,
        volume_id=args.volume_id,
    )
    node.start()
    if args.metrics_port:
        metrics.serve(
            node.metrics.registry, args.host, args.metrics_port, f"storage node {node.name}"
        )
    instances = InstancesSeen()
    servicer = StorageNodeService(node, instances)
    frame_server = await _start_frame_server(node, servicer, args)
    server, port = await start_server(
        args.host,
        args.port,
        [
            (pb_grpc.add_StorageNodeServicer_to_server, servicer, service_name("StorageNode")),
            (
                pb_grpc.add_TopologyServiceServicer_to_server,
                NodeTopologyService(node, instances),
                service_name("TopologyService"),
            ),
        ],
        guard=AddressCheck(node.name),
    )
    gossip = Gossip(node, args.peers)
    tasks = [
        guarded_task(gossip.run(), f"{node.name} gossip"),
        guarded_task(run_background(node, list(args.peers)), f"{node.name} background"),
    ]
    st = node.state
    log.info(
        "storage node %s (az %s) on port %d%s: epoch %d, SCL %d",
        node.name,
        node.az,
        port,
        f", framed streams on {node.frame_port}" if node.frame_port else "",
        st.epoch,
        st.scl,
    )
    try:
        await wait_for_termination(server)
    finally:
        if frame_server is not None:
            await frame_server.stop()
        for t in tasks:
            t.cancel()
        await gossip.close()
        await node.stop()


async def _start_frame_server(
    node: StorageNode, servicer: StorageNodeService, args: argparse.Namespace
) -> FrameServer | None:
    """The framed listener (sixfold/frames.py), unless it is off: a node serves without it.
    Started before gRPC serves, so no state the node tells lacks a frame port it will have."""
    if args.frame_port == 0:
        return None
    if args.frame_port is None:  # beside --port, or anywhere free beside a free one
        port = args.port + FRAME_PORT_OFFSET if args.port else 0
    else:
        port = args.frame_port
    if not 0 <= port <= PORT_MAX:
        log.warning(
            "%s: no framed listener: port %d is beyond %d (set --frame-port): every "
            "stream goes over gRPC",
            node.name,
            port,
            PORT_MAX,
        )
        return None
    listener = FrameServer(node, servicer)
    try:
        await listener.start(args.host, port)
    except OSError as exc:
        log.warning(
            "%s: no framed listener on %s:%d (%s): every stream goes over gRPC",
            node.name,
            args.host,
            port,
            exc.strerror or exc,
        )
        return None
    return listener


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Set when the LMDB commit ran in a worker thread, whose every ack then waited out the
    # default 5 ms switch interval. The commit runs on the loop's thread now; only the
    # background work (coalescing, GC, scrub) shares the GIL with the loop, and 0.1, 0.5 and
    # 5 ms measured the same (docs/BENCHMARKS.md, "A node's background work"). Kept as is.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    configure_logging(args.log_level)
    return run_process(f"storage node {args.name}", run(args))
