"""Read-quorum page reads over six real in-process nodes (gRPC on loopback, LMDB on disk)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sixfold.clients import NodeClient
from sixfold.core.errors import QuorumUnavailableError
from sixfold.core.page import until_nul
from sixfold.core.quorum import NODE_AZ, NODE_NAMES
from sixfold.core.record import Delta, RecordFlags, encode_deltas, encode_record
from sixfold.page_reader import PageReader
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.serving import service_name, start_server
from storage_node.node import StorageNode
from storage_node.service import StorageNodeService

PAGE = 42


async def start_nodes(root: Path) -> tuple[list, list[NodeClient]]:
    servers, clients = [], []
    for name in NODE_NAMES:
        node = StorageNode(name, NODE_AZ[name], root / name, map_size_bytes=64 << 20)
        node.state.peers_heard.update(n for n in NODE_NAMES if n != name)
        node.start()
        server, port = await start_server(
            "127.0.0.1",
            0,
            [
                (
                    pb_grpc.add_StorageNodeServicer_to_server,
                    StorageNodeService(node),
                    service_name("StorageNode"),
                )
            ],
        )
        servers.append((server, node))
        clients.append(NodeClient(name, f"127.0.0.1:{port}"))
    return servers, clients


def test_no_single_node_complete_so_three_are_merged(tmp_path: Path) -> None:
    """Record i is on 4 nodes, missing from nodes i and i+1: every node has a hole."""

    async def main() -> None:
        servers, clients = await start_nodes(tmp_path)
        try:
            for c in clients:
                await c.seal(1, "w")
                await c.truncate(pb.TruncateRequest(epoch=1, truncations_version=1))
            prev_page = 0
            for lsn in range(1, 7):
                text = f"version {lsn}".encode() + b"\0"
                record = encode_record(
                    lsn=lsn,
                    prev_volume_lsn=lsn - 1,
                    prev_page_lsn=prev_page,
                    page_no=PAGE,
                    epoch=1,
                    flags=RecordFlags.CPL,
                    payload=encode_deltas([Delta(0, text)]),
                )
                prev_page = lsn
                skip = {(lsn - 1) % 6, lsn % 6}
                for i, c in enumerate(clients):
                    if i not in skip:
                        await c.append(pb.AppendRequest(epoch=1, records=[record.encoded]))
            states = [await c.get_state() for c in clients]
            assert all(s.scl < 6 for s in states), [s.scl for s in states]

            reader = PageReader(clients)
            image, page_lsn = await reader.read(PAGE, 6, min_epoch=1)
            assert until_nul(image) == b"version 6" and page_lsn == 6
            image, _ = await reader.read(PAGE, 4, min_epoch=1)
            assert until_nul(image) == b"version 4"

            for server, _ in servers[:3]:  # AZ+1 down: any 3 still hold every record
                await server.stop(None)
            image, _ = await PageReader(clients).read(PAGE, 6, min_epoch=1)
            assert until_nul(image) == b"version 6"

            await servers[3][0].stop(None)
            with pytest.raises(QuorumUnavailableError, match="read quorum unavailable: 2 of 6"):
                await PageReader(clients).read(PAGE, 6, min_epoch=1)
        finally:
            for c in clients:
                await c.close()
            for server, node in servers:
                await server.stop(None)
                await node.stop()

    asyncio.run(main())
