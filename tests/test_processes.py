"""Real processes on loopback, killed with SIGKILL: the AZ and AZ+1 promises."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest

from sixfold import cluster
from sixfold.clients import WriterClient
from sixfold.core.errors import NotWriterError, QuorumUnavailableError, WriterFencedError
from sixfold.core.record import Delta, RecordFlags, decode_record, encode_deltas, encode_record
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from tests.conftest import LocalCluster

pytestmark = pytest.mark.processes


def test_az_down_writes_go_on(local_cluster: LocalCluster) -> None:
    c = local_cluster
    c.write(1, "before")
    c.kill("a1", "a2")
    lsn = c.write(1, "AZ a is down")
    assert c.read(1) == "AZ a is down"
    c.wait_for(lambda: c.reader_sees("r1", lsn), "r1 to reach the commit")
    assert c.read(1, reader="r1") == "AZ a is down"
    status = c.status()
    assert status["write_quorum"] and status["nodes_up"] == 4


def test_az_plus_one_reads_go_on_writes_fail_then_resume(local_cluster: LocalCluster) -> None:
    c = local_cluster
    acked = {page: c.write(page, f"page {page} v1") for page in range(1, 6)}
    last = max(acked.values())
    for reader in ("r1", "r2"):
        c.wait_for(lambda r=reader: c.reader_sees(r, last), f"{reader} to reach LSN {last}")

    c.kill("a1", "a2", "b1")
    # A commit sent as the nodes die may reach some of them: its outcome is unknown, but it
    # can only ever appear whole.
    with pytest.raises(QuorumUnavailableError):
        c.write(8, "outcome unknown")
    started = time.monotonic()
    with pytest.raises(QuorumUnavailableError) as failure:
        c.write(9, "must not be written")
    assert "write quorum unavailable: 3 of 6 storage nodes reachable, 4 needed" in str(
        failure.value
    )
    assert time.monotonic() - started < 15
    for reader in ("r1", "r2"):
        for page in range(1, 6):
            assert c.read(page, reader=reader) == f"page {page} v1"
    assert not c.status()["write_quorum"]

    c.start("a1", "a2", "b1")
    c.wait_for(lambda: _try_write(c, 2, "page 2 v2"), "writes to resume")
    lsn = c.write(3, "page 3 v2")
    assert c.read(3) == "page 3 v2"
    assert c.read(9) == "", "a write refused for want of a quorum must never appear"
    assert c.read(8) in ("", "outcome unknown")
    c.wait_for(lambda: _all_scl_at_least(c, lsn), "restarted nodes to catch up by gossip")


def _try_write(c: LocalCluster, page: int, text: str) -> bool:
    try:
        c.write(page, text, timeout=5)
        return True
    except QuorumUnavailableError:
        return False


def _all_scl_at_least(c: LocalCluster, lsn: int) -> bool:
    nodes = c.status()["nodes"]
    return all(n["up"] and n["scl"] >= lsn for n in nodes)


@pytest.mark.no_takeover
def test_writer_kill_mid_stream_loses_nothing_acknowledged(local_cluster: LocalCluster) -> None:
    """Each mini-transaction writes counter k to two pages; kill -9 the writer mid-stream."""
    c = local_cluster
    acked: list[int] = []

    async def stream() -> None:
        for k in range(1, 100_000):
            try:
                await c.write_async([(10, f"k={k}"), (11, f"k={k}")], timeout=5)
            except Exception:
                return
            acked.append(k)

    async def kill_later() -> None:
        await asyncio.sleep(1.5)
        c.kill("writer")

    async def run() -> None:
        await asyncio.wait_for(asyncio.gather(stream(), kill_later()), timeout=30)

    asyncio.run(run())
    assert len(acked) > 5, "the write stream should have committed before the kill"
    c.start("writer")
    c.wait_for(c.writer_ready, "the writer to recover")
    a, b = c.read(10), c.read(11)
    assert a == b, f"a mini-transaction is partly visible: page 10 {a!r}, page 11 {b!r}"
    k = int(a.removeprefix("k="))
    assert k >= acked[-1], f"acknowledged k={acked[-1]} lost: pages show k={k}"
    assert k <= acked[-1] + 1, "at most the one in-flight commit may also have landed"
    lsn = c.write(12, "after recovery")
    c.wait_for(lambda: c.reader_sees("r2", lsn), "r2 to follow the new epoch")
    assert c.read(10, reader="r2") == a


@pytest.mark.no_takeover
def test_truncation_sticks_on_a_node_that_was_down(local_cluster: LocalCluster) -> None:
    """Records above VDL on a node that missed recovery are cancelled and never come back."""
    c = local_cluster
    durable_lsn = c.write(20, "durable")
    # The write is acknowledged at 4 of 6: c2 may not have stored it yet. A rogue record
    # placed below it would be one no writer could have sent (each LSN is allocated once),
    # and c2's log would never join the quorum's chain again.
    c.wait_for(
        lambda: c.on_node("c2", lambda n: n.get_state()).scl >= durable_lsn,
        "c2 to store the durable write",
    )
    c.kill("writer")
    state = c.on_node("c2", lambda n: n.get_state())
    # Play the old writer's last, unfinished append: it reached c2 alone.
    rogue_lsn = state.scl + 1
    rogue = encode_record(
        lsn=rogue_lsn,
        prev_volume_lsn=state.scl,
        prev_page_lsn=0,
        page_no=21,
        epoch=state.epoch,
        flags=RecordFlags.CPL,
        payload=encode_deltas([Delta(0, b"ROGUE\0")]),
    )
    append = pb.AppendRequest(epoch=state.epoch, records=[rogue.encoded])
    ack = c.on_node("c2", lambda n: n.append(append))
    assert ack.scl == rogue_lsn
    c.kill("c2")

    c.start("writer")
    c.wait_for(c.writer_ready, "the writer to recover without c2")
    lsn = c.write(22, "new epoch")
    c.start("c2")
    c.wait_for(lambda: _all_scl_at_least(c, lsn), "c2 to learn the truncation and catch up")

    c2_state = c.on_node("c2", lambda n: n.get_state())
    assert c2_state.epoch == state.epoch + 1
    everything = pb.ReadRecordsRequest(after_lsn=0, through_lsn=2**62)
    records = c.on_node("c2", lambda n: n.read_records(everything))
    assert rogue_lsn not in [decode_record(r).lsn for r in records.records]
    # Make c2 the only node a read could use for the newest records: the rogue page stays empty.
    c.kill("a1", "a2", "b1")
    assert c.read(21) == ""
    assert c.read(21, reader="r1") == ""
    assert c.read(22, reader="r1") == "new epoch"
    assert c.read(20, reader="r2") == "durable"


@pytest.mark.no_takeover
def test_superseded_writer_is_fenced(local_cluster: LocalCluster) -> None:
    """A second writer recovers at a newer epoch; the first acknowledges nothing more."""
    c = local_cluster
    c.write(30, "from the first writer")
    nodes = ",".join(f"{n}={a}" for n, a in c.layout.nodes.items())
    port = cluster.free_port()
    # A second instance told to take over while the first writer still runs (a writer that
    # starts while another answers would join as a reader instead).
    second = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "reader",
            "--nodes",
            nodes,
            "--port",
            str(port),
            "--name",
            "second",
            "--no-takeover",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    first = c.layout.processes["writer"].address
    try:
        c.wait_for(lambda: _promote(f"127.0.0.1:{port}"), "the second instance to take over")
        with pytest.raises((WriterFencedError, NotWriterError)):
            asyncio.run(_write_via(first, 31, "must not be acknowledged"))
        c.wait_for(lambda: "reader" in _writer_state(first).status, "the first to step down")
        with pytest.raises(NotWriterError, match="the writer is second"):
            asyncio.run(_write_via(first, 32, "still fenced"))
        new_lsn = asyncio.run(_write_via(f"127.0.0.1:{port}", 33, "from the second writer"))
        c.wait_for(lambda: c.reader_sees("r1", new_lsn), "r1 to follow the second writer")
        assert c.read(33, reader="r1") == "from the second writer"
        assert c.read(30, reader="r1") == "from the first writer"
        assert c.read(32, reader="r1") == ""
    finally:
        second.kill()
        second.wait(timeout=10)


def _promote(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            pb_grpc.InstanceStub(channel).Promote(pb.PromoteRequest(), timeout=10)
        except grpc.RpcError:
            return False  # not listening yet
    return True


def _writer_state(address: str) -> pb.WriterState:
    async def get() -> pb.WriterState:
        client = WriterClient(address)
        try:
            return await client.state()
        except Exception:
            return pb.WriterState()
        finally:
            await client.close()

    return asyncio.run(get())


async def _write_via(address: str, page: int, text: str) -> int:
    client = WriterClient(address)
    try:
        return await client.write_pages([pb.PageChange(page_no=page, data=text.encode() + b"\0")])
    finally:
        await client.close()


def test_a_stopped_node_holds_up_no_commit(local_cluster: LocalCluster) -> None:
    """SIGSTOP one node: commits go on without waiting out its append timeout (2 s)."""
    c = local_cluster
    pid = c.layout.processes["b2"].pid
    os.kill(pid, signal.SIGSTOP)
    try:
        for i in range(20):
            started = time.monotonic()
            lsn = c.write(40 + i % 3, f"while b2 is stopped {i}")
            assert time.monotonic() - started < 1.5, "a commit waited for the stopped node"
    finally:
        os.kill(pid, signal.SIGCONT)
    c.wait_for(lambda: _all_scl_at_least(c, lsn), "b2 to catch up after SIGCONT")


def test_compare_and_set_is_atomic_under_contention(local_cluster: LocalCluster) -> None:
    """8 clients increment one counter with compare-and-set: no increment is lost."""
    c = local_cluster
    page, rounds = 50, 15

    async def client(applied: list[int]) -> None:
        writer = WriterClient(c.layout.find_writer_address())
        try:
            seen = b"\0" * 8
            for _ in range(rounds):
                while True:
                    nxt = (int.from_bytes(seen, "little") + 1).to_bytes(8, "little")
                    answer = await writer.compare_and_set(page, 64, seen, nxt)
                    if answer.applied:
                        applied.append(1)
                        seen = nxt
                        break
                    seen = answer.found
        finally:
            await writer.close()

    async def run() -> int:
        applied: list[int] = []
        await asyncio.wait_for(asyncio.gather(*(client(applied) for _ in range(8))), 120)
        writer = WriterClient(c.layout.find_writer_address())
        try:
            image = (await writer.read_page(page)).image
        finally:
            await writer.close()
        assert len(applied) == 8 * rounds
        return int.from_bytes(image[64:72], "little")

    assert asyncio.run(run()) == 8 * rounds
