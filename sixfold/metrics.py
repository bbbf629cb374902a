"""Prometheus metrics of every process: storage nodes, the writer and the readers (issue 12).

Each process has its own registry (tests run several nodes in one process) and serves it
over HTTP with `serve`, on the port its `--metrics-port` names (docs/METRICS.md lists every
metric). Counters and histograms are updated where things happen; gauges (SCL, VDL, read
point, ...) are read from the live objects at scrape time by a collector, so they cost
nothing between scrapes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger("sixfold.metrics")
disable_created_metrics()  # the *_created series say only when a process started

# Seconds: from a loopback RPC to a slow disk's fsync.
LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
)

Gauges = Callable[[], dict[str, tuple[str, float]]]  # name -> (help, value)


def _latency(name: str, text: str, registry: CollectorRegistry) -> Histogram:
    return Histogram(name, text, buckets=LATENCY_BUCKETS_S, registry=registry)


class _GaugeCollector(Collector):
    """Gauges read at scrape time from a function of the live state."""

    def __init__(self, read: Gauges) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for name, (text, value) in self.read().items():
            yield GaugeMetricFamily(name, text, value=value)


class NodeMetrics:
    """A storage node's counters and histograms; its gauges come from `gauges`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.appends = Counter(
            "sixfold_node_appends", "Append batches received from the writer", registry=r
        )
        self.records = Counter(
            "sixfold_node_records_received", "Redo records received in appends", registry=r
        )
        self.bytes = Counter(
            "sixfold_node_bytes_received", "Bytes of redo records received", registry=r
        )
        self.lmdb_write = _latency(
            "sixfold_node_lmdb_write_seconds",
            "Putting one commit's records into an LMDB write transaction (no I/O wait)",
            r,
        )
        self.fsync = _latency(
            "sixfold_node_fsync_seconds",
            "Committing that LMDB transaction: its data and meta page writes and fsyncs",
            r,
        )
        self.gossip_records = Counter(
            "sixfold_node_gossip_records_fetched",
            "Records fetched from peers to fill holes",
            registry=r,
        )
        self.log_forks = Counter(
            "sixfold_node_log_forks_seen",
            "Gossip rounds that found this node's log off the volume's history (see its log)",
            registry=r,
        )
        self.repairs = Counter(
            "sixfold_node_repairs",
            "Damaged records and page versions repaired from a peer",
            registry=r,
        )
        self.page_reads = _latency(
            "sixfold_node_page_read_seconds", "GetPage: one page built at an LSN", r
        )
        self.hydrated_pages = Counter(
            "sixfold_node_hydrated_pages",
            "Page images copied from peers while hydrating (a lost disk, a new node)",
            registry=r,
        )
        self.hydrated_bytes = Counter(
            "sixfold_node_hydrated_bytes", "Bytes of those page images", registry=r
        )

    def watch(self, gauges: Gauges) -> None:
        self.registry.register(_GaugeCollector(gauges))


class InstanceMetrics:
    """An instance's: commits while it is the writer, page reads while a reader, takeovers."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.commit = _latency(
            "sixfold_writer_commit_seconds",
            "A commit's wait for durability: from its admission to the pipeline to its "
            "acknowledgement (VDL passed it)",
            r,
        )
        self.page_reads = _latency(
            "sixfold_reader_page_read_seconds",
            "ReadPage on a reader: one page at its read point",
            r,
        )
        self.takeovers = Counter(
            "sixfold_instance_takeovers",
            "Times this instance became the writer (failover or switchover)",
            registry=r,
        )

    def watch(self, gauges: Gauges) -> None:
        self.registry.register(_GaugeCollector(gauges))


class BackupMetrics:
    """The backup agent's (`sixfold backup run --metrics-port`): its rounds, their errors and
    the bytes shipped; its gauges (RPO, points, bytes stored) come from `gauges`."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.rounds = Counter("sixfold_backup_rounds", "Backup rounds that succeeded", registry=r)
        self.round_errors = Counter(
            "sixfold_backup_round_errors", "Backup rounds that failed (tried again)", registry=r
        )
        self.bytes_shipped = Counter(
            "sixfold_backup_bytes_shipped", "Bytes of objects written to the store", registry=r
        )
        self.round_seconds = _latency(
            "sixfold_backup_round_seconds", "One backup round: the log shipped, a base if due", r
        )

    def watch(self, gauges: Gauges) -> None:
        self.registry.register(_GaugeCollector(gauges))


class RegionMetrics:
    """A secondary region's replication agent (issue 16): its gauges (lag in LSNs and
    seconds, durable point, rate) come from `gauges`."""

    def __init__(self, gauges: Gauges, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.registry.register(_GaugeCollector(gauges))


def serve(registry: CollectorRegistry, host: str, port: int, what: str) -> None:
    """Serve `registry` at http://HOST:PORT/metrics from a thread of its own."""
    try:
        start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise SystemExit(f"{what}: cannot serve metrics on {host}:{port}: {exc}") from None
    log.info("%s: metrics on http://%s:%d/metrics", what, host, port)
