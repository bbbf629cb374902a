"""The TCP interposer on loopback: a cut link stalls both ways without closing; healing
resumes the same connection; a connection opened across a cut is accepted and stalls."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sixfold import cluster
from sixfold.tools.interposer import Interposer, read_status, write_cuts

STALL_S = 0.3  # long enough for a forwarded byte to arrive many times over on loopback


async def _echo_server() -> tuple[asyncio.Server, int]:
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while data := await r.read(1024):
            w.write(data)
            await w.drain()
        w.close()

    server = await asyncio.start_server(echo, cluster.HOST, 0)
    return server, server.sockets[0].getsockname()[1]


async def _started(tmp_path: Path) -> tuple[Interposer, int, list[asyncio.Server]]:
    """An interposer for one link writer>a1, with an echo server playing a1."""
    echo, echo_port = await _echo_server()
    layout = cluster.ClusterLayout(str(tmp_path))
    layout.processes["a1"] = cluster.ProcessInfo("a1", "node", echo_port)
    listen_port = cluster.free_port()
    layout.links = {cluster.link_key("writer", "a1"): listen_port}
    interposer = Interposer(layout)
    interposer.apply(0, set())
    servers = [echo, await interposer.serve_link(interposer.links[listen_port], listen_port)]
    return interposer, listen_port, servers


async def _echoes(r: asyncio.StreamReader, w: asyncio.StreamWriter, data: bytes) -> bool:
    w.write(data)
    await w.drain()
    try:
        return await asyncio.wait_for(r.readexactly(len(data)), STALL_S) == data
    except TimeoutError:
        return False


def test_a_cut_stalls_and_a_heal_resumes_the_same_connection(tmp_path: Path) -> None:
    async def scenario() -> None:
        interposer, port, servers = await _started(tmp_path)
        r, w = await asyncio.open_connection(cluster.HOST, port)
        assert await _echoes(r, w, b"before")
        interposer.apply(1, {frozenset(("writer", "a1"))})
        assert not await _echoes(r, w, b"during")  # stalled, not closed
        assert not r.at_eof()
        r2, w2 = await asyncio.open_connection(cluster.HOST, port)  # accepted across the cut
        assert not await _echoes(r2, w2, b"new")
        interposer.apply(2, set())
        assert await asyncio.wait_for(r.readexactly(len(b"during")), 2.0) == b"during"
        assert await asyncio.wait_for(r2.readexactly(len(b"new")), 2.0) == b"new"
        assert await _echoes(r, w, b"after")
        for writer in (w, w2):
            writer.close()
        for server in servers:
            server.close()

    asyncio.run(scenario())


def test_the_control_file_and_status_port(tmp_path: Path) -> None:
    async def scenario() -> None:
        interposer, _port, servers = await _started(tmp_path)
        status_port = cluster.free_port()
        servers.append(await interposer.serve_status(status_port))
        write_cuts(tmp_path, 5, [("a1", "writer")])
        status = await asyncio.to_thread(read_status, status_port)
        assert status["generation"] == 5 and status["cut"] == [["a1", "writer"]]
        assert not interposer.links[_port].open.is_set()
        write_cuts(tmp_path, 6, [])
        assert (await asyncio.to_thread(read_status, status_port))["cut"] == []
        assert interposer.links[_port].open.is_set()
        for server in servers:
            server.close()

    asyncio.run(scenario())


def test_a_cluster_that_is_not_partitionable_refuses_partitions(tmp_path: Path) -> None:
    from sixfold.core.errors import SixfoldError
    from sixfold.tools.partition import InterposerPartitioner

    with pytest.raises(SixfoldError, match="sixfold up --partitionable"):
        InterposerPartitioner(cluster.new_layout(tmp_path))
