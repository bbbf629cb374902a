"""`sixfold bench-transport`: what one message costs a server, by transport (issue 11).

Each kind of message is served by a server process of its own on loopback, on uvloop as
every sixfold server runs, and answered at once: no storage, no commit. This process is the
client (several calls or streams at once) and reads the server's CPU from /proc before and
after the measured seconds. The figure that matters is the server's CPU per message: a
commit's path is made of such messages, and on two cores the CPU is the rate.

- unary: a `Writer/WritePages` call carrying one 600-byte page change, as peers.py's kv
  clients send (grpc.aio, no interceptor);
- unary-guard: the same behind the interceptor every sixfold server has (sixfold/guard.py);
- stream: one `AppendBatch` (a packed blob of --records records) on a bidirectional
  `AppendStream` and its `AppendBatchAck`, the writer's hot path to a node today;
- framed: the same batch and ack as a length-prefixed frame on a plain TCP stream (asyncio
  on uvloop), the candidate replacement for the stream;
- store: for scale, what a node does with such a batch besides receiving it, in this
  process: split the blob and check each record's CRC, then put the records in LMDB and
  commit with its fsync (storage_node/store.py put_records), no transport at all.

With --tls every transport speaks mutual TLS, as in a `sixfold up --tls` cluster: gRPC's in
its C core, the framed stream through Python's `ssl` on the event loop (sixfold/tls.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

import grpc
import uvloop

from sixfold import cluster, tls
from sixfold.core.record import Delta, encode_deltas, encode_record, pack_records, unpack_records
from sixfold.guard import UndecodableGuard
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.tools.bench import cpu_seconds, machine_info

MODES = ("unary", "unary-guard", "stream", "framed", "store")
RECORD_BYTES = 650  # a 600-byte page change with its record header and CRC
PAGE_CHANGE_BYTES = 600
FRAME_HEADER = struct.Struct("<IQQQQ")  # blob bytes, epoch, vdl, batch id, membership epoch
FRAME_ACK = struct.Struct("<QQQ")  # batch id, SCL, epoch
FRAME_BYTES_MAX = 16 << 20  # a frame larger than this ends the connection
TLS_SERVER_NAME, TLS_CLIENT_NAME = "a1", "writer"  # with --tls: a node and the writer
STORE_MAP_BYTES = 1 << 30  # the store mode's LMDB map: far more than a run writes
SERVER_LIFETIME_LIMIT_S = 3_600.0  # a server left behind ends by itself after this
SERVER_CHECK_S = 1.0  # how often a server looks whether the bench is still there


# -- the servers (run in a child process: `python -m sixfold.tools.transportbench MODE PORT`)


class _Writer(pb_grpc.WriterServicer):
    def __init__(self) -> None:
        self.calls = 0

    async def WritePages(
        self, request: pb.WritePagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.WritePagesResponse:
        self.calls += 1
        return pb.WritePagesResponse(commit_lsn=self.calls)


class _Node(pb_grpc.StorageNodeServicer):
    async def AppendStream(self, request_iterator, context):  # type: ignore[no-untyped-def]
        async for batch in request_iterator:
            yield pb.AppendBatchAck(batch_id=batch.batch_id, scl=batch.vdl, epoch=batch.epoch)


class _FramedServer(asyncio.Protocol):
    """Frames in, an ack per frame out; acks for the frames of one read leave in one write."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        acks = []
        while len(self.buffer) >= FRAME_HEADER.size:
            size, epoch, vdl, batch_id, _membership = FRAME_HEADER.unpack_from(self.buffer)
            if size > FRAME_BYTES_MAX:
                self.transport.close()
                return
            end = FRAME_HEADER.size + size
            if len(self.buffer) < end:
                break
            # Taken out as a node would take it (the records are stored after the read).
            _blob = bytes(memoryview(self.buffer)[FRAME_HEADER.size : end])
            del self.buffer[:end]
            acks.append(FRAME_ACK.pack(batch_id, vdl, epoch))
        if acks:
            self.transport.write(b"".join(acks))


async def _serve(mode: str, port: int) -> None:
    if mode == "framed":
        loop = asyncio.get_running_loop()
        await loop.create_server(_FramedServer, "127.0.0.1", port, ssl=tls.server_ssl_context())
    else:
        server = grpc.aio.server(interceptors=[UndecodableGuard()] if mode == "unary-guard" else [])
        if mode == "stream":
            pb_grpc.add_StorageNodeServicer_to_server(_Node(), server)
        else:
            pb_grpc.add_WriterServicer_to_server(_Writer(), server)
        tls.add_port(server, f"127.0.0.1:{port}")
        await server.start()
    print("serving", flush=True)
    # Until the bench kills this process; bounded, and ended by the bench's death too.
    parent = os.getppid()
    for _ in range(int(SERVER_LIFETIME_LIMIT_S / SERVER_CHECK_S)):
        await asyncio.sleep(SERVER_CHECK_S)
        if os.getppid() != parent:
            return


# -- the clients ---------------------------------------------------------------------------


@dataclass
class Figures:
    mode: str
    messages_per_s: float
    server_cpu_ms_per_message: float
    client_cpu_ms_per_message: float
    messages: int


class Answered:
    """Messages answered so far, by every sender of a mode."""

    def __init__(self) -> None:
        self.count = 0


Sender = Callable[[Callable[[], bool], Answered], Awaitable[None]]  # sends while told to


def _unary_sender(port: int) -> Sender:
    change = pb.PageChange(page_no=1_000, offset=0, data=os.urandom(PAGE_CHANGE_BYTES))
    request = pb.WritePagesRequest(changes=[change])

    async def send(going: Callable[[], bool], answered: Answered) -> None:
        async with tls.aio_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.WriterStub(channel)
            while going():
                await stub.WritePages(request)
                answered.count += 1

    return send


def _stream_sender(port: int, blob: bytes, window: int) -> Sender:
    async def send(going: Callable[[], bool], answered: Answered) -> None:
        async with tls.aio_channel(f"127.0.0.1:{port}") as channel:
            call = pb_grpc.StorageNodeStub(channel).AppendStream()
            sent = acked = 0
            while going():
                while sent - acked < window:
                    sent += 1
                    await call.write(
                        pb.AppendBatch(
                            epoch=1, records=blob, vdl=sent, batch_id=sent, membership_epoch=1
                        )
                    )
                await call.read()
                acked += 1
                answered.count += 1
            call.cancel()

    return send


def _framed_sender(port: int, blob: bytes, window: int) -> Sender:
    async def send(going: Callable[[], bool], answered: Answered) -> None:
        context = tls.client_ssl_context()
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1" if context else None
        )
        sent = acked = 0
        while going():
            while sent - acked < window:
                sent += 1
                writer.write(FRAME_HEADER.pack(len(blob), 1, sent, sent, 1) + blob)
            await reader.readexactly(FRAME_ACK.size)
            acked += 1
            answered.count += 1
        writer.close()

    return send


def _sender(mode: str, port: int, args: argparse.Namespace) -> tuple[Sender, int]:
    """The mode's sender and how many of it run at once."""
    blob = os.urandom(RECORD_BYTES * args.records)
    if mode == "stream":
        return _stream_sender(port, blob, args.window), args.streams
    if mode == "framed":
        return _framed_sender(port, blob, args.window), args.streams
    return _unary_sender(port), args.clients


async def _drive(
    sender: Sender, senders: int, server_pid: int, args: argparse.Namespace
) -> tuple[int, float, float, float]:
    """Warm up, then count the messages answered in the measured seconds, with the server's
    and this process's CPU over them."""
    loop = asyncio.get_running_loop()
    stop_at = loop.time() + args.warmup + args.seconds
    answered = Answered()
    tasks = [
        asyncio.create_task(sender(lambda: loop.time() < stop_at, answered)) for _ in range(senders)
    ]
    await asyncio.sleep(args.warmup)
    start = (answered.count, cpu_seconds(server_pid), time.process_time(), time.monotonic())
    await asyncio.sleep(args.seconds)
    end = (answered.count, cpu_seconds(server_pid), time.process_time(), time.monotonic())
    await asyncio.gather(*tasks)
    return tuple(b - a for a, b in zip(start, end, strict=True))  # type: ignore[return-value]


def measure_store(args: argparse.Namespace) -> Figures:
    """Batches of --records 600-byte page changes through a real NodeStore in a temporary
    directory, one transaction (and fsync) each, for --seconds after --warmup."""
    from storage_node.store import NodeStore  # here: only this mode opens LMDB

    change = encode_deltas([Delta(0, os.urandom(PAGE_CHANGE_BYTES))])
    with tempfile.TemporaryDirectory(prefix="sixfold-bench-transport-") as tmp:
        store = NodeStore(Path(tmp) / "node", "a1", STORE_MAP_BYTES)
        try:
            lsn = messages = 0
            cpu = elapsed = 0.0  # over the measured batches: their unpacking and storing only
            began = time.monotonic()
            while (now := time.monotonic()) < began + args.warmup + args.seconds:
                records = []
                for page_no in range(args.records):
                    lsn += 1
                    records.append(
                        encode_record(
                            lsn=lsn,
                            prev_volume_lsn=lsn - 1,
                            prev_page_lsn=0,
                            page_no=page_no,
                            epoch=1,
                            flags=0,
                            payload=change,
                        )
                    )
                blob = pack_records(records)
                cpu_before, wall_before = time.process_time(), time.monotonic()
                store.put_records(unpack_records(blob), lsn, 0, lsn, 1)
                if now >= began + args.warmup:
                    messages += 1
                    cpu += time.process_time() - cpu_before
                    elapsed += time.monotonic() - wall_before
        finally:
            store.close()
    per = max(messages, 1)
    rate = messages / elapsed if elapsed else 0.0  # batches per second of storing alone
    return Figures("store", round(rate, 1), round(cpu * 1e3 / per, 4), 0.0, messages)


def measure(mode: str, args: argparse.Namespace) -> Figures:
    if mode == "store":
        return measure_store(args)
    port = cluster.free_port()
    env = dict(os.environ)
    if tls.tls_files() is not None:
        env[tls.TLS_NAME_VARIABLE] = TLS_SERVER_NAME
    server = subprocess.Popen(
        [sys.executable, "-m", "sixfold.tools.transportbench", mode, str(port)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "serving":
            raise RuntimeError(f"the {mode} server did not start (exit {server.poll()})")
        sender, senders = _sender(mode, port, args)
        messages, server_cpu, client_cpu, elapsed = uvloop.run(
            _drive(sender, senders, server.pid, args)
        )
    finally:
        server.kill()
        server.wait(timeout=10)
    per = max(messages, 1)
    return Figures(
        mode,
        round(messages / elapsed, 1),
        round(server_cpu * 1e3 / per, 4),
        round(client_cpu * 1e3 / per, 4),
        messages,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}"
    )
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per mode")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds before measuring")
    p.add_argument("--clients", type=int, default=64, help="unary calls at once")
    p.add_argument("--streams", type=int, default=6, help="streams at once (one per node)")
    p.add_argument("--window", type=int, default=1, help="batches in flight per stream")
    p.add_argument("--records", type=int, default=14, help="records per batch")
    p.add_argument(
        "--tls",
        action="store_true",
        help="mutual TLS on every transport, with a CA made for the run",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        print(f"bench-transport: unknown mode(s) {', '.join(unknown)}: use {', '.join(MODES)}")
        return 2
    if args.seconds <= 0 or args.warmup < 0:
        print("bench-transport: --seconds must be positive and --warmup not negative")
        return 2
    counts = {"--clients": args.clients, "--streams": args.streams, "--window": args.window}
    counts["--records"] = args.records
    if too_few := [name for name, value in counts.items() if value < 1]:
        print(f"bench-transport: {', '.join(too_few)} must be at least 1")
        return 2
    saved = {name: os.environ.get(name) for name in tls.TLS_VARIABLES}
    with tempfile.TemporaryDirectory(prefix="sixfold-bench-transport-") as certs:
        if args.tls:
            tls.init_certs(Path(certs), [TLS_SERVER_NAME, TLS_CLIENT_NAME])
            os.environ[tls.TLS_DIR_VARIABLE] = certs
            os.environ[tls.TLS_NAME_VARIABLE] = TLS_CLIENT_NAME
        try:
            results = [measure(mode, args) for mode in modes]
        finally:  # the certificates go with the directory: so does this process's TLS
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    if args.json:
        print(json.dumps({"machine": machine_info(), "results": [asdict(r) for r in results]}))
        return 0
    print(f"{'mode':<12} {'msgs/s':>9} {'server CPU ms/msg':>18} {'client CPU ms/msg':>18}")
    for r in results:
        print(
            f"{r.mode:<12} {r.messages_per_s:>9,.0f} {r.server_cpu_ms_per_message:>18.3f}"
            f" {r.client_cpu_ms_per_message:>18.3f}"
        )
    return 0


if __name__ == "__main__":
    uvloop.run(_serve(sys.argv[1], int(sys.argv[2])))
