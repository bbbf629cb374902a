"""`python -m sixfold.region`: a secondary region's replication agent (issue 16)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from sixfold.clients import NodeClient
from sixfold.metrics import Gauges, RegionMetrics, serve
from sixfold.region.agent import ReplicationAgent
from sixfold.serving import parse_peers


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sixfold.region",
        description="Replicate a primary volume's committed log into a secondary region's "
        "storage nodes (started by `sixfold up --region NAME --replica-of DIR`).",
    )
    parser.add_argument("--region", required=True, help="this secondary region's name")
    parser.add_argument(
        "--primary-nodes",
        type=parse_peers,
        required=True,
        help="the primary's nodes: a1=HOST:PORT,...",
    )
    parser.add_argument(
        "--nodes", type=parse_peers, required=True, help="this region's nodes: a1=HOST:PORT,..."
    )
    parser.add_argument(
        "--port", type=int, required=True, help="Prometheus metrics at this port (0: none)"
    )
    parser.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        help="address the metrics listen on (default %(default)s; 0.0.0.0 in a container)",
    )
    parser.add_argument("--status-file", type=Path, help="where `sixfold global status` reads")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args()
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(name)s %(message)s")
    asyncio.run(run(args))


async def run(args: argparse.Namespace) -> None:
    agent = ReplicationAgent(
        args.region,
        [NodeClient(n, a) for n, a in args.primary_nodes.items()],
        [NodeClient(n, a) for n, a in args.nodes.items()],
        args.status_file,
    )
    metrics = RegionMetrics(_gauges(agent))
    if args.port:
        serve(metrics.registry, args.metrics_host, args.port, f"region {args.region} agent")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await agent.run(stop)
    finally:
        await agent.close()


def _gauges(agent: ReplicationAgent) -> Gauges:
    def read() -> dict[str, tuple[str, float]]:
        s = agent.status()
        return {
            "sixfold_region_lag_lsns": ("LSNs durable on the primary, not here yet", s.lag_lsns),
            "sixfold_region_lag_seconds": ("Age of the oldest primary point not here", s.lag_s),
            "sixfold_region_durable_lsn": ("The secondary's durable point", s.durable),
            "sixfold_region_rate_records_per_second": ("Records replicated a second", s.rate),
            "sixfold_region_link_bytes": (
                "Bytes of records the link brought, compressed",
                agent.follower.wire_bytes,
            ),
            "sixfold_region_link_raw_bytes": (
                "The same records' bytes before compression",
                agent.follower.raw_bytes,
            ),
        }

    return read


if __name__ == "__main__":
    main()
