"""Failover: a reader takes over when the writer dies; exactly one wins; the old one rejoins."""

from __future__ import annotations

import concurrent.futures
import time

import grpc
import pytest

from sixfold.client import dbapi
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from tests.conftest import LocalCluster

pytestmark = pytest.mark.processes
TAKEOVER_LIMIT_S = 20.0


def topology(address: str) -> pb.Topology:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.TopologyServiceStub(channel)
        return stub.GetTopology(pb.GetTopologyRequest(), timeout=5)


def promote(address: str, planned: bool = False) -> pb.PromoteResponse:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.InstanceStub(channel)
        return stub.Promote(pb.PromoteRequest(planned=planned), timeout=30)


def writer_by_topology(c: LocalCluster, ask: str) -> str:
    """The writer's name as instance `ask` reports it, once that writer takes writes."""
    deadline = time.monotonic() + TAKEOVER_LIMIT_S
    while True:
        try:
            t = topology(c.layout.processes[ask].address)
            if t.writer_address and _accepts_writes(t.writer_address):
                return t.writer_name
        except grpc.RpcError:
            pass
        assert time.monotonic() < deadline, f"no writer took over within {TAKEOVER_LIMIT_S} s"
        time.sleep(0.1)


def _accepts_writes(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            state = pb_grpc.WriterStub(channel).GetWriterState(
                pb.GetWriterStateRequest(), timeout=2
            )
        except grpc.RpcError:
            return False
    return state.recovered and not state.fenced


def test_writer_killed_a_reader_takes_over_and_the_old_writer_rejoins_as_reader(
    local_cluster: LocalCluster,
) -> None:
    c = local_cluster
    w = dbapi.connect(c.layout.processes["writer"].address, autocommit=True)
    w.execute("CREATE TABLE t(x INTEGER)")
    w.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(20)])
    c.kill("writer")
    new = writer_by_topology(c, "r2")
    assert new == "r1", f"the preferred reader r1 should take over first, not {new}"
    r1 = dbapi.connect(c.layout.processes["r1"].address, autocommit=True)
    assert r1.execute("SELECT count(*) FROM t").fetchall() == [(20,)], "acknowledged rows lost"
    r1.execute("INSERT INTO t VALUES (100)")
    # The old writer comes back: another writer answers, so it joins as a reader.
    c.start("writer")
    deadline = time.monotonic() + TAKEOVER_LIMIT_S
    while True:
        try:
            t = topology(c.layout.processes["writer"].address)
        except grpc.RpcError:  # not listening yet
            t = pb.Topology()
        roles = {v.name: v.role for v in t.instances}
        if t.answered_by == "writer" and roles.get("writer") == "reader":
            break
        assert time.monotonic() < deadline, f"old writer did not rejoin as a reader: {t}"
        time.sleep(0.2)
    assert t.writer_name == "r1"
    with pytest.raises(dbapi.OperationalError, match="reader"):
        dbapi.connect(c.layout.processes["writer"].address, autocommit=True).execute(
            "INSERT INTO t VALUES (1)"
        )
    assert r1.execute("SELECT count(*) FROM t").fetchall() == [(21,)]


def test_two_promotions_racing_leave_exactly_one_writer(local_cluster: LocalCluster) -> None:
    c = local_cluster
    w = dbapi.connect(c.layout.processes["writer"].address, autocommit=True)
    w.execute("CREATE TABLE t(x INTEGER)")
    w.execute("INSERT INTO t VALUES (1)")
    c.kill("writer")
    addresses = [c.layout.processes[n].address for n in ("r1", "r2")]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        outcomes = list(pool.map(_try_promote, addresses))
    winners = [a for a, ok in zip(addresses, outcomes, strict=True) if ok]
    # Both may lose (each sealed half the nodes): then the readers' own takeover, 1 s after
    # the epoch's owner answers as a reader, brings a writer. Either way: exactly one.
    deadline = time.monotonic() + TAKEOVER_LIMIT_S
    while not any(_accepts_writes(a) for a in addresses):
        assert time.monotonic() < deadline, f"no writer (promotions won: {winners})"
        time.sleep(0.1)
    time.sleep(1.0)  # let a loser that retried on its own show itself
    writers = [a for a in addresses if _accepts_writes(a)]
    assert len(writers) == 1, f"writers now: {writers} (promotions won: {winners})"
    survivor = dbapi.connect(writers[0], autocommit=True)
    survivor.execute("INSERT INTO t VALUES (2)")
    assert survivor.execute("SELECT count(*) FROM t").fetchall() == [(2,)]


def _try_promote(address: str) -> bool:
    try:
        promote(address)
        return True
    except grpc.RpcError:
        return False


def test_planned_switchover_loses_nothing_and_reports_the_pause(
    local_cluster: LocalCluster,
) -> None:
    c = local_cluster
    w = dbapi.connect(c.layout.processes["writer"].address, autocommit=True)
    w.execute("CREATE TABLE t(x INTEGER)")
    w.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(50)])
    response = promote(c.layout.processes["r2"].address, planned=True)
    assert response.writes_paused_s > 0
    assert writer_by_topology(c, "r1") == "r2"
    r2 = dbapi.connect(c.layout.processes["r2"].address, autocommit=True)
    assert r2.execute("SELECT count(*) FROM t").fetchall() == [(50,)]
    r2.execute("INSERT INTO t VALUES (50)")
    # The old writer stepped down: it refuses writes and names the new writer.
    deadline = time.monotonic() + TAKEOVER_LIMIT_S
    while _accepts_writes(c.layout.processes["writer"].address):
        assert time.monotonic() < deadline, "the old writer still takes writes"
        time.sleep(0.1)
