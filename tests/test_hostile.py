"""Hostile input and resource limits (issue 19): nothing a client sends moves the writer,
poisons the cluster's state or floods its logs.

Every case runs against real processes on loopback, talking gRPC the way any client that
can reach a port can. After each group of hostile calls the cluster must still be whole:
every process alive, no takeover, and a page write that reads back on the writer and on a
reader.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor as pb_descriptor

from sixfold import cluster
from sixfold.client import dbapi
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from tests.conftest import WRITE_TIMEOUT_S, LocalCluster

pytestmark = pytest.mark.processes

STATEMENT_TIMEOUT_S = 3.0
CONNECTION_WAIT_S = 1.0
SESSION_IDLE_S = 2.0
RUNAWAY = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c) SELECT count(*) FROM c"
# The heaviest query the default limits allow: about 28 MB of results (the limit is 32 MiB).
HEAVIEST = (
    "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 28000) "
    "SELECT x, randomblob(1000) FROM c"
)
FUZZ_SEED = 19
FUZZ_CALLS_PER_METHOD = 12  # random-bytes and random-field requests, each, per method
# Methods that change the cluster by design when called with valid values (an epoch seal, a
# truncation, a promotion or drain): their refusal of bad callers is authentication's work
# (issue 17). The fuzz sends them only bytes that cannot decode (even b"" is a valid request).
ADMIN_METHODS = {"SealEpoch", "Truncate", "Promote", "Drain"}
LOG_LINES_MAX = 50  # after a flood of undecodable requests


@pytest.fixture
def hostile_cluster(tmp_path: Path):
    c = LocalCluster(tmp_path / "cluster")
    layout = c.layout
    layout.extra_args["writer"] = [
        "--write-timeout",
        str(WRITE_TIMEOUT_S),
        "--sql-statement-timeout",
        str(STATEMENT_TIMEOUT_S),
        "--sql-connection-wait",
        str(CONNECTION_WAIT_S),
        "--sql-session-idle",
        str(SESSION_IDLE_S),
    ]
    layout.save()
    try:
        c.up()
        yield c
    finally:
        c.down()


def address(c: LocalCluster, name: str) -> str:
    return c.layout.processes[name].address


def takeovers(c: LocalCluster) -> list[str]:
    logs = Path(c.layout.directory, "logs")
    return [p.name for p in logs.glob("*.log") if "taking over" in p.read_text()]


def assert_whole(c: LocalCluster, tag: str) -> None:
    """Every process alive, no takeover, and a write that reads back everywhere."""
    layout = c.layout
    dead = [n for n, info in layout.processes.items() if not cluster.is_running(info)]
    assert not dead, f"{tag}: processes died: {dead}"
    assert not takeovers(c), f"{tag}: a takeover happened"
    text = f"whole after {tag}"[:60]
    lsn = c.write(77, text, timeout=10)
    assert c.read(77) == text
    c.wait_for(lambda: c.reader_sees("r1", lsn), f"r1 to reach LSN {lsn}", limit_s=10)
    assert c.read(77, reader="r1") == text


def sql(c: LocalCluster, name: str, statement: str, timeout: float = 30.0) -> list:
    conn = dbapi.connect(address(c, name), autocommit=True, timeout=timeout)
    try:
        return conn.execute(statement).fetchall()
    finally:
        conn.close()


# -- SQL limits, and the writer's liveness ---------------------------------------------------


def test_a_huge_value_is_refused_at_once(hostile_cluster: LocalCluster) -> None:
    c = hostile_cluster
    for name in ("writer", "r1"):
        started = time.monotonic()
        with pytest.raises(dbapi.OperationalError, match=r"value_bytes_max.*--sql-value-bytes-max"):
            sql(c, name, "SELECT zeroblob(1e9)")
        assert time.monotonic() - started < 5
    assert_whole(c, "zeroblob(1e9)")


def test_a_runaway_query_is_stopped_and_writes_go_on(hostile_cluster: LocalCluster) -> None:
    c = hostile_cluster
    sql(c, "writer", "CREATE TABLE t(x)")
    for name in ("writer", "r1"):
        started = time.monotonic()
        with pytest.raises(dbapi.OperationalError, match="--sql-statement-timeout"):
            sql(c, name, RUNAWAY)
        assert time.monotonic() - started < STATEMENT_TIMEOUT_S + 5
        stopped = time.monotonic()
        sql(c, "writer", "INSERT INTO t VALUES (1)")  # the connection is clean, and free
        assert time.monotonic() - stopped < 1.5, "writes did not resume within a second"
    assert sql(c, "writer", "SELECT count(*) FROM t") == [(2,)]
    assert_whole(c, "the runaway query")


def test_a_client_that_gives_up_stops_its_statement(hostile_cluster: LocalCluster) -> None:
    c = hostile_cluster
    with pytest.raises(dbapi.OperationalError):
        sql(c, "writer", RUNAWAY, timeout=1.0)  # the client's deadline, before the limit
    started = time.monotonic()
    sql(c, "writer", "CREATE TABLE after_deadline(x)")
    assert time.monotonic() - started < 1.5, "the statement went on after its client left"


def test_the_heaviest_allowed_query_moves_no_writer(hostile_cluster: LocalCluster) -> None:
    c = hostile_cluster

    async def writes_meanwhile(stop: asyncio.Event) -> int:
        done = 0
        while not stop.is_set():
            await c.write_async([(90, f"w{done}")], timeout=10)
            done += 1
        return done

    async def run() -> tuple[list, int]:
        stop = asyncio.Event()
        writer = asyncio.create_task(writes_meanwhile(stop))
        rows = await asyncio.to_thread(sql, c, "writer", HEAVIEST)
        stop.set()
        return rows, await writer

    rows, writes = asyncio.run(run())
    assert len(rows) == 28000 and writes > 0
    with pytest.raises(dbapi.OperationalError, match="result_bytes_max"):
        sql(c, "writer", HEAVIEST.replace("x < 28000", "x < 40000"))
    assert_whole(c, "the heaviest query")


def test_a_forgotten_session_makes_others_busy_not_lost(hostile_cluster: LocalCluster) -> None:
    c = hostile_cluster
    with grpc.insecure_channel(address(c, "writer")) as channel:
        stub = pb_grpc.SqlStub(channel)
        session = stub.Begin(pb.BeginRequest(writer_only=True), timeout=5).session
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as refused:
            stub.Begin(pb.BeginRequest(writer_only=True), timeout=10)
        assert refused.value.code() == grpc.StatusCode.ABORTED
        assert session[:8] in refused.value.details() and "--sql-session-idle" in (
            refused.value.details()
        )
        assert time.monotonic() - started < CONNECTION_WAIT_S + 2
        time.sleep(SESSION_IDLE_S + 1)  # the idle session is rolled back, as configured
        second = stub.Begin(pb.BeginRequest(writer_only=True), timeout=5).session
        stub.End(pb.EndRequest(session=second, commit=False), timeout=5)
        huge = "s" * (3 << 20)
        with pytest.raises(grpc.RpcError) as unknown:
            stub.End(pb.EndRequest(session=huge, commit=True), timeout=5)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
        assert len(unknown.value.details()) < 1000, "a client's string echoed whole"


# -- internal RPCs ---------------------------------------------------------------------------


def node_stub(c: LocalCluster, name: str):
    channel = grpc.insecure_channel(address(c, name))
    return channel, pb_grpc.StorageNodeStub(channel)


def test_a_bogus_vdl_is_refused_and_poisons_nothing(hostile_cluster: LocalCluster) -> None:
    c = hostile_cluster
    channel, stub = node_stub(c, "b1")
    with channel:
        state = stub.GetState(pb.GetStateRequest(), timeout=5)
        for vdl in (2**64 - 1, 2**63 - 1, state.vdl + 10**12):
            with pytest.raises(grpc.RpcError) as refused:
                stub.Append(pb.AppendRequest(epoch=state.epoch, vdl=vdl), timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, vdl
        # Within what the epoch allows, one node may be told a VDL nobody reached: it stays
        # that node's; no reader takes it (a read point needs a read quorum of nodes).
        allowed = state.vdl + 1_000
        stub.Append(pb.AppendRequest(epoch=state.epoch, vdl=allowed), timeout=5)
    time.sleep(1.0)
    for name in ("r1", "r2"):
        reader_state = c.status()
        point = {r["name"]: r["read_point"] for r in reader_state["readers"]}[name]
        assert point is not None and point < allowed, (name, point, allowed)
    assert_whole(c, "bogus VDLs")


def test_numbers_beyond_range_and_bad_registrations_are_invalid(
    hostile_cluster: LocalCluster,
) -> None:
    c = hostile_cluster
    channel, stub = node_stub(c, "c1")
    with channel:
        calls = [
            (stub.ReadRecords, pb.ReadRecordsRequest(after_lsn=2**64 - 1, through_lsn=2**64 - 1)),
            (stub.GetPage, pb.GetPageRequest(page_no=1, lsn=2**64 - 1)),
            (
                stub.GetState,
                pb.GetStateRequest(reader="x" * (3 << 20), role="writer", address="127.0.0.1:1"),
            ),
            (stub.GetState, pb.GetStateRequest(reader="evil", role="king", address="h:1")),
            (stub.GetState, pb.GetStateRequest(reader="evil", address="not an address")),
            (stub.SealEpoch, pb.SealEpochRequest(epoch=2**64 - 1, owner="w")),
            (stub.SealEpoch, pb.SealEpochRequest(epoch=99, owner="o" * 10_000)),
        ]
        for method, request in calls:
            with pytest.raises(grpc.RpcError) as refused:
                method(request, timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
            assert len(refused.value.details()) < 1000
        topology = pb_grpc.TopologyServiceStub(channel).GetTopology(
            pb.GetTopologyRequest(), timeout=5
        )
        assert all(len(v.name) < 100 and v.name != "evil" for v in topology.instances)
        state = stub.GetState(pb.GetStateRequest(), timeout=5)
        assert state.epoch < 99, "a refused seal changed the epoch"
    assert_whole(c, "out-of-range numbers")


def test_undecodable_requests_get_one_answer_and_few_log_lines(
    hostile_cluster: LocalCluster,
) -> None:
    c = hostile_cluster
    rng = random.Random(FUZZ_SEED)
    with grpc.insecure_channel(address(c, "a2")) as channel:
        service = pb.DESCRIPTOR.services_by_name["StorageNode"].full_name
        append = channel.unary_unary(f"/{service}/Append")
        for _ in range(500):
            with pytest.raises(grpc.RpcError) as refused:
                append(b"\xff" + rng.randbytes(rng.randrange(1, 64)), timeout=5)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    log = Path(c.layout.directory, "logs", "a2.log").read_text().splitlines()
    assert "Traceback" not in "\n".join(log)
    assert len([line for line in log if "undecodable" in line]) <= 2
    assert len(log) < LOG_LINES_MAX, log[-10:]
    assert_whole(c, "the flood")


# -- a seeded fuzz of every method -----------------------------------------------------------


def random_message(rng: random.Random, descriptor, depth: int = 0):
    cls = pb_grpc_message_class(descriptor)
    message = cls()
    for field in descriptor.fields:
        if rng.random() < 0.4:
            continue
        values = [random_value(rng, field, depth) for _ in range(rng.randrange(1, 4))]
        if field.is_repeated:
            if field.message_type is not None:
                for value in values:
                    getattr(message, field.name).add().CopyFrom(value)
            else:
                getattr(message, field.name).extend(values)
        elif field.message_type is not None:
            getattr(message, field.name).CopyFrom(values[0])
        else:
            setattr(message, field.name, values[0])
    return message


EXTREME_INTS = [0, 1, 2**31 - 1, 2**32 - 1, 2**63 - 1, 2**64 - 1]


def random_value(rng: random.Random, field, depth: int):
    t = pb_descriptor.FieldDescriptor
    if field.message_type is not None:
        return (
            random_message(rng, field.message_type, depth + 1)
            if depth < 2
            else (pb_grpc_message_class(field.message_type)())
        )
    if field.type == t.TYPE_STRING:
        length = rng.choice([0, 1, 40, 4_000, 300_000])
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(min(length, 2_000))) * (
            max(1, length // 2_000)
        )
    if field.type == t.TYPE_BYTES:
        return rng.randbytes(rng.choice([0, 1, 100, 5_000]))
    if field.type == t.TYPE_BOOL:
        return rng.random() < 0.5
    if field.type in (t.TYPE_DOUBLE, t.TYPE_FLOAT):
        return rng.choice([0.0, -1.0, 1e300, float("inf")])
    if field.type in (t.TYPE_INT32, t.TYPE_SINT32, t.TYPE_SFIXED32):
        return rng.choice([0, -1, 2**31 - 1, -(2**31)])
    if field.type in (t.TYPE_INT64, t.TYPE_SINT64, t.TYPE_SFIXED64):
        return rng.choice([0, -1, 2**63 - 1, -(2**63)])
    if field.type in (t.TYPE_UINT32, t.TYPE_FIXED32):
        return rng.choice([0, 1, 2**32 - 1])
    if field.type == t.TYPE_ENUM:
        return rng.choice(field.enum_type.values).number
    return rng.choice(EXTREME_INTS)  # uint64, fixed64


def pb_grpc_message_class(descriptor):
    return getattr(pb, descriptor.name)


# Where each service is served: nodes, or instances (the writer and a reader).
SERVICE_TARGETS = {
    "StorageNode": ["b2"],
    "TopologyService": ["c2", "writer", "r2"],
    "Writer": ["writer", "r2"],
    "Reader": ["r2"],
    "Sql": ["writer", "r2"],
    "Instance": ["r2"],
}


def test_a_seeded_fuzz_of_every_method_leaves_the_cluster_whole(
    hostile_cluster: LocalCluster,
) -> None:
    c = hostile_cluster
    rng = random.Random(FUZZ_SEED)
    for service in pb.DESCRIPTOR.services_by_name.values():
        for target in SERVICE_TARGETS[service.name]:
            with grpc.insecure_channel(address(c, target)) as channel:
                for method in service.methods:
                    fuzz_method(channel, service, method, rng)
        assert_whole(c, f"fuzzing {service.name}")


def fuzz_method(channel: grpc.Channel, service, method, rng: random.Random) -> None:
    path = f"/{service.full_name}/{method.name}"
    streaming = method.server_streaming
    call = channel.unary_stream(path) if streaming else channel.unary_unary(path)
    requests = [rng.randbytes(rng.randrange(0, 200)) for _ in range(FUZZ_CALLS_PER_METHOD)]
    if method.name in ADMIN_METHODS:  # 0xff: field 31 of wire type 7, which does not exist
        requests = [b"\xff" + request for request in requests]
    else:
        requests += [
            random_message(rng, method.input_type).SerializeToString()
            for _ in range(FUZZ_CALLS_PER_METHOD)
        ]
    for request in requests:
        try:
            answer = call(request, timeout=2.0)
            if streaming:
                for _ in answer:
                    answer.cancel()
                    break
        except grpc.RpcError as err:
            assert err.code() != grpc.StatusCode.UNKNOWN, (path, err.details())
