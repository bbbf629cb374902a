"""Coalescing and garbage collection on a real LMDB store, bounded per cycle."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from sixfold.page import until_nul
from sixfold.quorum import NODE_NAMES
from sixfold.record import Delta, RecordFlags, encode_deltas, encode_record
from storage_node.background import coalesce_once, collect_garbage_once, gc_horizon
from storage_node.node import NodeLimits, StorageNode

PAGE = 5
PEERS = [n for n in NODE_NAMES if n != "a1"]


def test_coalesce_then_collect_garbage_keeps_every_read_point(tmp_path: Path) -> None:
    async def run() -> None:
        node = StorageNode("a1", "a", tmp_path / "a1", map_size_bytes=64 << 20,
                           limits=NodeLimits(gc_keys_max=10))  # fmt: skip
        node.state.peers_heard.update(PEERS)
        node.start()
        try:
            await node.seal(1, "w")
            await node.truncate(1, (), 1)
            prev = 0
            for lsn in range(1, 41):
                r = encode_record(
                    lsn=lsn, prev_volume_lsn=lsn - 1, prev_page_lsn=prev, page_no=PAGE, epoch=1,
                    flags=RecordFlags.CPL, payload=encode_deltas([Delta(0, f"v{lsn}\0".encode())]),
                )  # fmt: skip
                prev = lsn
                await node.append(1, [r], vdl=lsn)
            assert node.store.counts() == (40, 0)
            node.note_read_point("r1", 30, time.monotonic())

            assert await coalesce_once(node) == 1
            assert node.store.counts() == (40, 1)
            assert await collect_garbage_once(node, PEERS) == 0, "peers unknown: nothing goes"

            node.peer_scl.update({p: 40 for p in PEERS})
            assert gc_horizon(node, time.monotonic(), PEERS) == 30  # held back by r1
            await coalesce_once(node)  # nothing new
            deleted = await collect_garbage_once(node, PEERS)
            assert deleted == 0, "the only version is at 40, above the horizon"

            node.note_read_point("r1", 40, time.monotonic())
            total = 0
            for _ in range(10):  # bounded: at most gc_keys_max keys per cycle
                deleted = await collect_garbage_once(node, PEERS)
                assert deleted <= 10
                total += deleted
            assert total == 40 and node.store.counts() == (0, 1)
            image, page_lsn = node.page_at(PAGE, 40, 1)
            assert until_nul(image) == b"v40" and page_lsn == 40
        finally:
            await node.stop()

    asyncio.run(run())
