"""Replacing a dead storage node with a spare, on a real process cluster (issue 14): under a
write load, with another AZ killed afterwards; and the refusals, each with nothing changed."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import threading
import time
from pathlib import Path

import pytest

from sixfold.clients import WriterClient
from sixfold.core.errors import (
    MembershipError,
    NotAMemberError,
    SixfoldError,
    StaleMembershipError,
)
from sixfold.core.page import EMPTY_PAGE
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.tools import membership as tool
from storage_node.store import NodeStore
from tests.conftest import LocalCluster

pytestmark = [pytest.mark.processes, pytest.mark.spares]
PAGES = range(300, 316)
SETTLE_LIMIT_S = 60.0


class WriteLoad:
    """Writes page after page from a thread; remembers every acknowledged value."""

    def __init__(self, c: LocalCluster) -> None:
        self.c = c
        self.acked: dict[int, str] = {}
        self.failed = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        n = 0
        while not self.stop.is_set():
            page = PAGES[n % len(PAGES)]
            value = f"w{n}"
            n += 1
            client = WriterClient(self.c.layout.find_writer_address())
            try:
                change = pb.PageChange(page_no=page, offset=0, data=value.encode() + b"\0")
                await client.write_pages([change], timeout=5.0)
                self.acked[page] = value
            except SixfoldError:
                self.failed += 1  # not acknowledged: it may or may not be there
                await asyncio.sleep(0.1)
            finally:
                await client.close()

    def __enter__(self) -> WriteLoad:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def count(self) -> int:
        return len(self.acked)


def _membership(c: LocalCluster) -> pb.MembershipView:
    return asyncio.run(tool.writer_membership(c.layout.find_writer_address()))


def _replace(c: LocalCluster, old: str, new: str, force: bool = False) -> pb.ReplaceResponse:
    return asyncio.run(tool.begin(c.layout.find_writer_address(), old, new, force))


def test_a_dead_node_is_replaced_under_load_and_the_volume_survives_an_az_after(
    local_cluster: LocalCluster,
) -> None:
    c = local_cluster
    with WriteLoad(c) as load:
        c.wait_for(lambda: load.count() >= len(PAGES), "the load to write every page")
        c.kill("a1")
        shutil.rmtree(Path(c.layout.directory) / "a1")  # its disk is gone for good
        written = load.count()
        started = time.monotonic()
        response = _replace(c, "a1", "a3")
        assert response.membership.change_new == "a3" and response.membership.epoch == 2
        c.wait_for(
            lambda: not _membership(c).change_position, "the change to complete", SETTLE_LIMIT_S
        )
        took_s = time.monotonic() - started
        assert list(_membership(c).holders) == ["a3", "a2", "b1", "b2", "c1", "c2"]
        # Writes went on meanwhile, and go on with AZ b gone too (a3 a2 c1 c2 are left).
        c.kill("b1", "b2")
        before = load.count()
        deadline = time.monotonic() + 30
        while sum(1 for _ in load.acked) == before and time.monotonic() < deadline:
            time.sleep(0.1)
        lsn_after_az = c.write(PAGES[0], "after-az-b")
        load.acked[PAGES[0]] = "after-az-b"
    assert load.count() >= written and lsn_after_az
    # Nothing acknowledged is lost.
    for page, value in load.acked.items():
        assert c.read(page) == value, f"page {page}"
    # Every position is complete to VDL once AZ b is back.
    c.start("b1", "b2")
    vdl = asyncio.run(_writer_vdl(c))

    def complete() -> bool:
        try:
            return all(
                c.on_node(n, lambda x: x.get_state()).scl >= vdl
                for n in ("a3", "a2", "b1", "b2", "c1", "c2")
            )
        except SixfoldError:
            return False

    c.wait_for(complete, "every position complete to VDL")
    assert took_s < SETTLE_LIMIT_S
    c.check_no_bug_logged()


async def _writer_vdl(c: LocalCluster) -> int:
    client = WriterClient(c.layout.find_writer_address())
    try:
        return (await client.state()).vdl
    finally:
        await client.close()


def test_refusals_change_nothing(local_cluster: LocalCluster) -> None:
    c = local_cluster
    c.write(PAGES[0], "x")
    with pytest.raises(MembershipError, match=r"alive and in sync.*--force"):
        _replace(c, "a1", "a3")
    with pytest.raises(MembershipError, match="in AZ b, but position a1 is in AZ a"):
        _replace(c, "a1", "b3", force=True)
    with pytest.raises(MembershipError, match="no storage node named 'z9'"):
        _replace(c, "a1", "z9")
    with pytest.raises(MembershipError, match="holds no position"):
        _replace(c, "a3", "b3", force=True)
    assert _membership(c).epoch == 1  # nothing changed
    # A spare takes no seal (nor appends, nor truncations) from a sender at its membership.
    with pytest.raises(NotAMemberError, match="c3 is not a member"):
        c.on_node("c3", lambda n: n.seal(7, "other@127.0.0.1:1#0123abcd"))
    # One that holds data (here: a page version left on its disk) is refused.
    c.kill("c3")
    store = NodeStore.of_stopped(Path(c.layout.directory) / "c3", "c3")
    try:
        store.put_versions([(5, 7, EMPTY_PAGE)])
    finally:
        store.close()
    c.start("c3")
    c.wait_for(lambda: _answers(c, "c3"), "c3 to start again")
    with pytest.raises(MembershipError, match="spare c3 already holds data"):
        _replace(c, "c2", "c3", force=True)
    assert _membership(c).epoch == 1


def test_a_node_down_too_long_is_replaced_by_itself_when_configured(tmp_path: Path) -> None:
    c = LocalCluster(tmp_path / "cluster", spares=True)
    layout = c.layout
    layout.extra_args["writer"] += ["--auto-replace-after", "2"]
    layout.save()
    c.up()
    try:
        c.write(PAGES[0], "before")
        c.kill("b2")  # down for good (its disk is intact, but it never comes back)
        c.wait_for(
            lambda: "b3" in _membership(c).holders and not _membership(c).change_position,
            "b3 to replace b2 by itself",
            SETTLE_LIMIT_S,
        )
        assert list(_membership(c).holders) == ["a1", "a2", "b1", "b3", "c1", "c2"]
        c.kill("b1")  # AZ b again: b3 is one of four left, writes go on
        c.write(PAGES[1], "after")
        assert c.read(PAGES[0]) == "before" and c.read(PAGES[1]) == "after"
    finally:
        c.down()


@pytest.mark.spares
def test_a_writer_ships_by_a_newer_membership_it_finds_on_the_nodes(
    local_cluster: LocalCluster,
) -> None:
    """A change stored on the nodes but not by this writer (a replace whose call failed
    half-way, or another writer's): the nodes refuse the writer's older membership epoch, and
    it takes the newer one from them and settles the change, rather than stalling."""
    from sixfold.core.membership import Membership
    from sixfold.wire import membership_to_proto

    c = local_cluster
    c.write(PAGES[0], "before")
    epoch = c.on_node("a1", lambda n: n.get_state()).epoch
    # Made by the writer before this one (its volume epoch), and stored as gossip stores one.
    view = membership_to_proto(Membership.initial().begin("c2", "c3", epoch - 1))
    for node in ("a1", "a2", "b1", "b2", "c1", "c2", "c3"):
        with contextlib.suppress(StaleMembershipError):  # the writer may have moved on already
            c.on_node(node, lambda n: n.set_membership(view))
    c.write(PAGES[1], "after", timeout=30.0)
    # It did not begin the change: it stores it again at epoch 3 (an outcome another writer
    # chose may be on a node or two at 3), then settles it at 4.
    c.wait_for(
        lambda: _membership(c).epoch == 4 and not _membership(c).change_position,
        "the writer to settle the change it found",
        SETTLE_LIMIT_S,
    )
    # c2 is alive and complete, so the change reverts unless c3 caught up first.
    holders = list(_membership(c).holders)
    assert holders in (["a1", "a2", "b1", "b2", "c1", n] for n in ("c2", "c3")), holders
    assert c.read(PAGES[0]) == "before" and c.read(PAGES[1]) == "after"


def _answers(c: LocalCluster, node: str) -> bool:
    try:
        c.on_node(node, lambda n: n.get_state())
    except SixfoldError:
        return False
    return True
