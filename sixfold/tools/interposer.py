"""A TCP interposer for the local process cluster: network partitions without netem.

`sixfold up --partitionable` starts one of these. It listens on one loopback port per
directed link (writer->node, reader->node, node->node) and forwards each connection to the
real port. A link between two members that are cut stops forwarding bytes both ways on its
existing connections (they stall, they are not closed) and accepts new connections without
forwarding anything, as a real partition would; healing resumes forwarding, so TCP
connections survive a healed partition.

Control: DIR/partitions.json, written atomically (`write_cuts`), lists the cut pairs. The
interposer re-reads it on change and answers on its status port (one JSON line, then close)
with the generation it has applied, so whoever cuts knows when the cut is in force.

    python -m sixfold.tools.interposer --dir DIR --port STATUS_PORT
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

from sixfold.cluster import HOST, ClusterLayout

log = logging.getLogger("sixfold.interposer")

CUTS_FILE = "partitions.json"
CHUNK_BYTES_MAX = 64 << 10  # read at most this much before waiting for the link to be open
CONNECTIONS_MAX = 2048  # connections forwarded at once; more are closed at accept
CUTS_POLL_S = 0.02  # how often the control file is checked for a change
UPSTREAM_CONNECT_TIMEOUT_S = 2.0
STATUS_TIMEOUT_S = 2.0
STATUS_BYTES_MAX = 64 << 10  # the status line is far shorter

Pair = frozenset[str]


def write_cuts(directory: Path, generation: int, pairs: list[tuple[str, str]]) -> None:
    """Atomically replace the control file: the interposer never sees half of it."""
    path = directory / CUTS_FILE
    tmp = path.with_suffix(".tmp")
    body = {"generation": generation, "cut": sorted(sorted(p) for p in pairs)}
    tmp.write_text(json.dumps(body))
    tmp.replace(path)


def read_cuts(directory: Path) -> tuple[int, set[Pair]]:
    path = directory / CUTS_FILE
    if not path.exists():
        return 0, set()
    raw = json.loads(path.read_text())
    return int(raw["generation"]), {frozenset(p) for p in raw["cut"]}


def read_status(port: int, timeout_s: float = STATUS_TIMEOUT_S) -> dict:
    """The interposer's answer on its status port: generation applied, cuts, connections.

    Blocking on purpose: healing must also work from a `finally` inside a running loop."""
    with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
        line = sock.makefile("rb").readline(STATUS_BYTES_MAX)
    return json.loads(line)


@dataclass
class Link:
    src: str
    dst: str
    target_port: int
    open: asyncio.Event = field(default_factory=asyncio.Event)


class Interposer:
    def __init__(self, layout: ClusterLayout) -> None:
        self.directory = Path(layout.directory)
        self.links: dict[int, Link] = {}
        for key, listen_port in layout.links.items():
            src, _, dst = key.partition(">")
            self.links[listen_port] = Link(src, dst, layout.processes[dst].port)
        self.generation = -1
        self.cuts: set[Pair] = set()
        self.connections = 0
        self._stamp: tuple[int, int] | None = None

    def apply(self, generation: int, cuts: set[Pair]) -> None:
        self.generation, self.cuts = generation, cuts
        for link in self.links.values():
            if frozenset((link.src, link.dst)) in cuts:
                link.open.clear()
            else:
                link.open.set()
        log.info("generation %d: cut %s", generation, sorted(sorted(p) for p in cuts) or "none")

    def reload_if_changed(self) -> None:
        path = self.directory / CUTS_FILE
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_ino)
        except FileNotFoundError:
            stamp = (0, 0)
        if stamp == self._stamp:
            return
        try:
            generation, cuts = read_cuts(self.directory)
        except (OSError, ValueError, KeyError) as exc:  # keep the last good cuts
            log.warning("unreadable %s: %s", path, exc)
            return
        self._stamp = stamp
        self.apply(generation, cuts)

    async def watch(self) -> None:
        while True:
            self.reload_if_changed()
            await asyncio.sleep(CUTS_POLL_S)

    async def serve_link(self, link: Link, listen_port: int) -> asyncio.Server:
        async def on_connect(down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter) -> None:
            # Cancelled at shutdown: end quietly. (Python 3.11's streams report a cancelled
            # connection task with a traceback, one per open connection.)
            with contextlib.suppress(asyncio.CancelledError):
                await self.forward(link, down_r, down_w)

        return await asyncio.start_server(on_connect, HOST, listen_port, reuse_address=True)

    async def forward(
        self, link: Link, down_r: asyncio.StreamReader, down_w: asyncio.StreamWriter
    ) -> None:
        if self.connections >= CONNECTIONS_MAX:
            down_w.close()
            return
        self.connections += 1
        try:
            await link.open.wait()  # a new connection across a cut is accepted, then stalls
            try:
                up_r, up_w = await asyncio.wait_for(
                    asyncio.open_connection(HOST, link.target_port), UPSTREAM_CONNECT_TIMEOUT_S
                )
            except (OSError, TimeoutError):
                return  # the member is down: the caller sees its connection close
            try:
                await asyncio.gather(pump(down_r, up_w, link), pump(up_r, down_w, link))
            finally:
                up_w.close()
        finally:
            self.connections -= 1
            down_w.close()

    async def serve_status(self, port: int) -> asyncio.Server:
        async def on_connect(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            self.reload_if_changed()  # answer with the file's latest state, not a poll behind
            body = {
                "generation": self.generation,
                "cut": sorted(sorted(p) for p in self.cuts),
                "connections": self.connections,
            }
            w.write((json.dumps(body) + "\n").encode())
            with contextlib.suppress(OSError):
                await w.drain()
            w.close()

        return await asyncio.start_server(on_connect, HOST, port, reuse_address=True)


async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, link: Link) -> None:
    """Copy one direction; across a cut, hold at most one chunk and stop reading (stall)."""
    try:
        while data := await src.read(CHUNK_BYTES_MAX):
            await link.open.wait()
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (OSError, RuntimeError):
        dst.close()  # a reset on one side resets the other, which ends the other pump


async def run(directory: Path, status_port: int) -> None:
    layout = ClusterLayout.load(directory)
    interposer = Interposer(layout)
    interposer.reload_if_changed()
    if interposer.generation < 0:
        interposer.apply(0, set())
    servers = [await interposer.serve_link(link, p) for p, link in interposer.links.items()]
    servers.append(await interposer.serve_status(status_port))
    log.info("forwarding %d links; status on %s:%d", len(interposer.links), HOST, status_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watcher = asyncio.create_task(interposer.watch())
    await stop.wait()
    watcher.cancel()
    for server in servers:
        server.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m sixfold.tools.interposer", description=__doc__)
    p.add_argument("--dir", type=Path, required=True, help="the cluster directory")
    p.add_argument("--port", type=int, required=True, help="status port on 127.0.0.1")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("SIXFOLD_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(run(args.dir, args.port))


if __name__ == "__main__":
    main()
