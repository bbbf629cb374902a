"""Long runs (issue 18): a cluster restarted in the middle of coalescing and GC drains its
log all the same, on real processes."""

from __future__ import annotations

import asyncio
import time

import pytest

from sixfold.core.quorum import NODE_NAMES
from sixfold.rpc import sixfold_pb2 as pb
from tests.conftest import LocalCluster

pytestmark = pytest.mark.processes

PAGES = 1_000
WRITES_PER_PAGE = 12  # 12,000 records: several coalescing steps on every node
DRAIN_LIMIT_S = 60.0


def node_counts(c: LocalCluster) -> dict[str, tuple[int, int]]:
    """Each node's (log records, page versions) stored."""

    async def ask(name: str) -> tuple[int, int]:
        state = await c_state(c, name)
        return state.records_stored, state.page_versions_stored

    async def all_of() -> list[tuple[int, int]]:
        return await asyncio.gather(*(ask(n) for n in NODE_NAMES))

    return dict(zip(NODE_NAMES, asyncio.run(all_of()), strict=True))


async def c_state(c: LocalCluster, name: str) -> pb.NodeState:
    from sixfold.clients import NodeClient

    client = NodeClient(name, c.layout.processes[name].address)
    try:
        return await client.get_state(timeout=5.0)
    finally:
        await client.close()


def test_a_cluster_restarted_mid_way_through_gc_drains_its_log(local_cluster: LocalCluster) -> None:
    c = local_cluster

    async def load() -> None:
        for round_no in range(WRITES_PER_PAGE):
            value = f"v{round_no}".encode()
            await c.write_async([(1_000 + p, value.decode()) for p in range(PAGES)])

    asyncio.run(load())
    # Stopped at once, before the nodes have coalesced and collected it all; started again.
    c.down()
    c.up()
    deadline = time.monotonic() + DRAIN_LIMIT_S
    # Drained: no log record left, and one version per page written (plus the few pages a
    # recovery's own writes may touch): the superseded ones dropped.
    while True:
        counts = node_counts(c)
        if all(records == 0 and versions <= PAGES + 10 for records, versions in counts.values()):
            break
        assert time.monotonic() < deadline, f"the log did not drain after a restart: {counts}"
        time.sleep(0.5)
    assert c.read(1_000 + 7) == f"v{WRITES_PER_PAGE - 1}"
    assert c.read(1_000 + 999, reader="r1") == f"v{WRITES_PER_PAGE - 1}"
