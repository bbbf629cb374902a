"""A node whose log has left the volume's history says so (found by the flake of
test_truncation_sticks_on_a_node_that_was_down: a record appended below the VDL by something
other than the writer wedged the node, silently, and held back every node's GC)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from sixfold.core.gossip_round import StoreFetched, fork_below
from sixfold.core.record import (
    Delta,
    RecordFlags,
    RedoRecord,
    decode_record,
    encode_deltas,
    encode_record,
)
from storage_node.gossip import Gossip
from tests.test_background import open_node, write_log

PAGE = 7


def record(lsn: int, prev_volume_lsn: int) -> RedoRecord:
    return decode_record(
        encode_record(
            lsn=lsn,
            prev_volume_lsn=prev_volume_lsn,
            prev_page_lsn=0,
            page_no=PAGE,
            epoch=1,
            flags=RecordFlags.CPL,
            payload=encode_deltas([Delta(0, b"peer\0")]),
        ).encoded
    )


def test_fork_below_is_a_first_record_linking_past_the_scl_asked_from() -> None:
    assert fork_below(3, []) is None
    assert fork_below(3, [record(4, 3), record(5, 4)]) is None  # chains on: catching up
    assert fork_below(3, [record(9, 3)]) is None  # a truncated range skipped: still chains
    assert fork_below(3, [record(4, 2)]) == 2  # the node's record 3 is on no peer's chain
    assert fork_below(3, [record(9, 0)]) == 0


def test_a_node_off_the_volumes_history_logs_it_once_and_counts_each_round(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def run() -> None:
        node = open_node(tmp_path / "a1")
        gossip = Gossip(node, {})
        try:
            scl = await write_log(node, [PAGE] * 3)
            # A peer's chain goes 2 -> 4: the node's record 3 was never the writer's.
            fetched = StoreFetched("b1", (record(4, 2), record(5, 4)), asked_after=scl)
            with caplog.at_level(logging.ERROR, logger="sixfold.gossip"):
                for _ in range(3):
                    assert await gossip._carry_out(fetched) is None
            assert node.state.scl == scl, "the fetched records do not chain on"
            # Records asked from an older SCL link to it, not to the SCL now (the writer's
            # appends moved it meanwhile): no fork (the simulator found this on seed 1).
            caught_up = StoreFetched("b1", (record(2, 1), record(3, 2)), asked_after=1)
            assert await gossip._carry_out(caught_up) is None
            errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 1, errors
            assert "records b1 holds above this node's SCL 3 follow LSN 2" in errors[0]
            assert "sixfold replace a1 --with SPARE --force" in errors[0]
            forks = node.metrics.registry.get_sample_value("sixfold_node_log_forks_seen_total")
            assert forks == 3
            assert node.store.counts()[0] == 3, "records that cannot chain on are not stored"
        finally:
            await gossip.close()
            await node.stop()

    asyncio.run(run())
