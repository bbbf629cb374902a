"""Clients with a stale address book: an endpoint that now belongs to another node.

After containers restart, Docker may hand one node's old IP to another, and a gRPC channel
that still holds the old address connects to the wrong node. A writer that took b2's ack for
a1's would count one copy twice and acknowledge a commit that fewer than four nodes hold.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sixfold.clients import NodeClient
from sixfold.core.errors import SixfoldError, WrongNodeError
from tests.conftest import LocalCluster

pytestmark = pytest.mark.processes


def test_a_node_refuses_calls_meant_for_another(local_cluster: LocalCluster) -> None:
    b2 = local_cluster.layout.processes["b2"].address

    async def ask() -> int:
        client = NodeClient("a1", b2)  # a1's name, b2's address
        try:
            with pytest.raises(WrongNodeError, match="this is storage node b2, not a1"):
                await client.get_state()
            return client.redials  # it dialled again once, and was refused again
        finally:
            await client.close()

    assert asyncio.run(ask()) == 1


def test_a_writer_with_a_stale_address_counts_no_copy_twice(tmp_path: Path) -> None:
    """a1's address in the writer's book is b2's. With a1 a2 b1 down, only b2 c1 c2 hold a
    write: three copies, one short of a write quorum, so the write must not be acknowledged
    (before, b2's ack counted for a1 too)."""
    c = LocalCluster(tmp_path / "cluster", takeover=False)
    layout = c.layout
    book = ",".join(
        f"{n}={layout.processes['b2' if n == 'a1' else n].address}" for n in layout.storage_names
    )
    layout.extra_args["writer"] = [*layout.extra_args["writer"], "--nodes", book]
    layout.save()
    try:
        c.up()
        c.wait_for(c.writer_ready, "the writer")
        c.write(5, "five copies")  # b2 c1 c2 and a2 b1: a quorum without a1
        c.kill("a1", "a2", "b1")
        with pytest.raises(SixfoldError, match="3 of 6 storage nodes reachable"):
            c.write(5, "three copies only", timeout=8.0)
        assert c.read(5) == "five copies"
    finally:
        c.down()
