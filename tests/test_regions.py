"""Secondary regions replicated at the storage tier (issue 16): the agent's rules, and a
secondary region of a real process cluster that follows the primary through faults."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sixfold import cluster
from sixfold.clients import NodeClient, ReaderClient, WriterClient
from sixfold.core.errors import RegionError, RegionFencedError, SixfoldError
from sixfold.core.page import until_nul
from sixfold.core.quorum import NODE_NAMES
from sixfold.core.record import RecordFlags, RedoRecord, encode_record
from sixfold.core.replication import (
    REGIONS_SECONDARY_MAX,
    Lag,
    SecondaryNode,
    agent_owner,
    check_new_region,
    chunks,
    epoch_to_seal,
    resume_point,
)
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.tools import regions
from storage_node.node import READ_POINT_TTL_S
from tests.conftest import LocalCluster

ROOT = Path(__file__).resolve().parents[1]


def commits(first: int, sizes: list[int], epoch: int = 1) -> list[RedoRecord]:
    """Mini-transactions of the given sizes, chained from LSN `first` - 1."""
    out, lsn = [], first
    for size in sizes:
        for i in range(size):
            flags = RecordFlags.CPL if i == size - 1 else 0
            out.append(
                encode_record(
                    lsn=lsn,
                    prev_volume_lsn=lsn - 1,
                    prev_page_lsn=0,
                    page_no=lsn % 5,
                    epoch=epoch,
                    flags=flags,
                    payload=b"",
                )
            )
            lsn += 1
    return out


def test_chunks_end_at_commits_and_leave_an_unfinished_commit_out() -> None:
    records = commits(1, [3, 2, 4, 2])[:-1]  # the last commit is cut in half
    cut = chunks(records, records_max=4)
    assert [[r.lsn for r in c] for c in cut] == [[1, 2, 3, 4, 5], [6, 7, 8, 9]]
    assert all(c[-1].is_cpl for c in cut)
    assert chunks(commits(1, [2, 2]), records_max=100, bytes_max=1) == [
        commits(1, [2, 2])[:2],
        commits(1, [2, 2])[2:],
    ]


def node(name: str, epoch: int, owner: str, cpl: int = 0, vdl: int = 0) -> SecondaryNode:
    return SecondaryNode(name, epoch, owner, cpl, cpl, vdl)


def test_the_agent_seals_the_primary_epoch_and_stops_once_promoted() -> None:
    me = agent_owner("b")
    fresh = [node(n, 0, "") for n in ("a1", "a2", "b1", "b2")]
    assert epoch_to_seal(3, fresh, "b") == 3
    assert epoch_to_seal(3, [node("a1", 3, me)] * 4, "b") == 0
    assert epoch_to_seal(4, [node("a1", 3, me)] * 4, "b") == 4  # the primary took over
    with pytest.raises(RegionFencedError, match="promoted"):
        epoch_to_seal(3, [node("a1", 4, "writer-x"), *fresh], "b")
    with pytest.raises(RegionFencedError):
        epoch_to_seal(3, [node("a1", 3, "writer-x")], "b")


def test_the_agent_resumes_from_a_point_a_write_quorum_holds() -> None:
    nodes = [node("a1", 1, "", 50), node("a2", 1, "", 40), node("b1", 1, "", 40)]
    nodes += [node("b2", 1, "", 30), node("c1", 1, "", 10, vdl=20), node("c2", 1, "", 0)]
    assert resume_point(nodes) == 30  # the fourth highest whole commit
    assert resume_point([*nodes[:-1], node("c2", 1, "", 0, vdl=45)]) == 45  # announced


def test_lag_counts_lsns_and_the_age_of_the_oldest_missing_point() -> None:
    lag = Lag()
    lag.saw_primary(10, now=100.0)
    lag.saw_primary(20, now=101.0)
    assert (lag.lsns(), lag.seconds(101.5)) == (20, 1.5)
    lag.replicated(10, records=10, now=102.0)
    assert (lag.lsns(), lag.seconds(102.0)) == (10, 1.0)
    lag.replicated(20, records=10, now=103.0)
    assert (lag.lsns(), lag.seconds(103.0)) == (0, 0.0)
    assert lag.rate(103.0) == 10.0


def test_region_names_and_the_limit() -> None:
    check_new_region("b", ["c"], "primary")
    for bad, why in (("c", "already exists"), ("primary", "already exists"), ("", "name")):
        with pytest.raises(RegionError, match=why):
            check_new_region(bad, ["c"], "primary")
    full = [f"r{i}" for i in range(REGIONS_SECONDARY_MAX)]
    with pytest.raises(RegionError, match=f"REGIONS_SECONDARY_MAX={REGIONS_SECONDARY_MAX}"):
        check_new_region("six", full, "primary")


# -- a real secondary region ----------------------------------------------------------------


def sixfold(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sixfold.tools.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


@pytest.fixture
def region_dir(tmp_path: Path) -> Iterator[Path]:
    """Where a test's secondary region lives; whatever runs there is stopped at the end,
    whichever role it has by then (a switchover or a failover swaps them)."""
    directory = tmp_path / "region-b"
    try:
        yield directory
    finally:
        with contextlib.suppress(SixfoldError):
            cluster.stop_all(cluster.ClusterLayout.load(directory))


def read_in(region: cluster.ClusterLayout, reader: str, page_no: int) -> str:
    async def read() -> str:
        client = ReaderClient(region.processes[reader].address, reader)
        try:
            return until_nul((await client.read_page(page_no, timeout=10.0)).image).decode()
        finally:
            await client.close()

    return asyncio.run(read())


def caught_up(primary: Path, name: str) -> bool:
    status = regions.global_status(primary)
    region = {r["region"]: r for r in status["regions"]}[name]
    return region["up"] and region["lag_lsns"] == 0


@pytest.mark.processes
def test_a_secondary_region_follows_the_primary_through_faults(
    local_cluster: LocalCluster, region_dir: Path
) -> None:
    primary = local_cluster
    acked = {page: primary.write(page, f"before {page}") and f"before {page}" for page in range(5)}
    up = sixfold("--dir", region_dir, "up", "--region", "b", "--replica-of", primary.directory)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "seeded with" in up.stdout
    region = cluster.ClusterLayout.load(region_dir)
    try:
        # Writes go on while the agent is killed and restarted, and while two of the
        # region's nodes (an AZ) are down: the primary never waits for the secondary.
        for step in range(40):
            if step == 8:
                cluster.kill_processes(region, [cluster.AGENT_NAME])
                killed_at = time.monotonic()
                held = asyncio.run(regions.durable_point(region.nodes)) or 0
            if step == 12:  # away longer than a reader's read point lasts, GC going on
                acked[13] = away_while_gc_goes_on(primary, killed_at, held)
            if step == 16:
                cluster.start_processes(region, [cluster.AGENT_NAME])
            if step == 20:
                cluster.kill_processes(region, ["a1", "a2"])
            if step == 30:
                cluster.start_processes(region, ["a1", "a2"])
            page = step % 12
            primary.write(page, f"step {step}", timeout=10.0)
            acked[page] = f"step {step}"
        primary.wait_for(lambda: caught_up(primary.directory, "b"), "region b to catch up")
        for page, text in acked.items():
            for reader in cluster.READER_NAMES:
                assert read_in(region, reader, page) == text, (page, reader)

        status = sixfold("--dir", primary.directory, "global", "status", "--json")
        assert status.returncode == 0, status.stderr
        (b,) = json.loads(status.stdout)["regions"]
        assert b["region"] == "b" and b["lag_lsns"] == 0 and b["agent"] == "running", b

        for name in ("b", "primary"):  # names in use are refused, and nothing starts
            again = sixfold("--dir", primary.directory, "global", "add-region", name)
            assert again.returncode != 0 and "already exists" in again.stderr, again.stderr
        assert not (region_dir.parent / "region-primary").exists()

        # Someone else seals the region's nodes at a newer epoch (a promotion): the agent
        # ships nothing more and says why.
        async def promote() -> None:
            for name, address in region.nodes.items():
                client = NodeClient(name, address)
                try:
                    state = await client.get_state()
                    await client.seal(state.epoch + 1, "writer-promoted")
                finally:
                    await client.close()

        asyncio.run(promote())
        primary.write(0, "after the promotion")
        primary.wait_for(
            lambda: regions.global_status(primary.directory)["regions"][0]["agent"] == "fenced",
            "the agent to find itself fenced",
        )
        assert read_in(region, "r1", 0) == acked[0]
    finally:
        removed = sixfold("--dir", primary.directory, "global", "remove-region", "b")
    assert removed.returncode == 0, removed.stderr
    region = cluster.ClusterLayout.load(region_dir)
    assert not any(cluster.is_running(p) for p in region.processes.values())
    assert regions.global_status(primary.directory)["regions"] == []


def away_while_gc_goes_on(primary: LocalCluster, since: float, held: int) -> str:
    """Write until a reader's read point would have lapsed (READ_POINT_TTL_S) and every
    primary node coalesced past `held`; the agent's longer hold (AGENT_READ_POINT_HOLD_S)
    must still keep the records above it. The last value written."""
    text = ""

    def gone_on() -> bool:
        nonlocal text
        text = f"while the agent is away {time.monotonic()}"
        primary.write(13, text)
        states = [primary.on_node(n, lambda c: c.get_state()) for n in NODE_NAMES]
        assert all(s.gc_horizon <= held for s in states), "GC took what the agent needs"
        lapsed = time.monotonic() - since > READ_POINT_TTL_S + 1
        return lapsed and all(s.coalesced_through > held for s in states)

    primary.wait_for(gone_on, "the primary's coalescing to pass the region", limit_s=60)
    return text


def read_all(address: str, pages: list[int]) -> dict[int, str]:
    async def read() -> dict[int, str]:
        client = WriterClient(address)
        try:
            out = {}
            for page in pages:
                out[page] = until_nul((await client.read_page(page, timeout=10.0)).image).decode()
            return out
        finally:
            await client.close()

    return asyncio.run(read())


def pair(i: int) -> tuple[int, int]:
    return 5_000 + 2 * i, 5_001 + 2 * i


async def write_pairs(
    address: str, stop: threading.Event, acked: dict[int, int], tried: list[int]
) -> None:
    """Commits of two pages each (`pair(i)`, both "c{i}") until `stop`, by 8 clients; the
    LSN of each acknowledged one."""
    client = WriterClient(address)
    next_i = [0]

    async def one_client() -> None:
        while not stop.is_set():
            i = next_i[0]
            next_i[0] += 1
            tried.append(i)
            data = f"c{i}".encode() + b"\0"
            changes = [pb.PageChange(page_no=p, data=data) for p in pair(i)]
            try:
                acked[i] = await client.write_pages(changes, timeout=2.0)
            except SixfoldError:
                await asyncio.sleep(0.05)

    try:
        await asyncio.gather(*(one_client() for _ in range(8)))
    finally:
        await client.close()


@pytest.mark.processes
def test_a_failover_keeps_every_commit_the_region_held_and_nothing_in_part(
    local_cluster: LocalCluster, region_dir: Path
) -> None:
    primary = local_cluster
    up = sixfold("--dir", region_dir, "up", "--region", "b", "--replica-of", primary.directory)
    assert up.returncode == 0, up.stdout + up.stderr
    region = cluster.ClusterLayout.load(region_dir)
    acked: dict[int, int] = {}
    tried: list[int] = []
    stop = threading.Event()
    load = threading.Thread(
        target=asyncio.run,
        args=(write_pairs(primary.layout.find_writer_address(), stop, acked, tried),),
    )
    load.start()
    try:
        primary.wait_for(lambda: len(acked) >= 150, "commits under load")
        # The whole primary region goes at once, under load.
        layout = primary.layout
        cluster.kill_processes(layout, list(layout.processes))
    finally:
        stop.set()
        load.join(timeout=30)
    time.sleep(1.0)  # whatever the agent had in flight lands, or not
    held = asyncio.run(regions.durable_point(region.nodes))
    assert held is not None and held > 0
    failover = sixfold("--dir", primary.directory, "global", "failover", "b")
    assert failover.returncode == 0, failover.stdout + failover.stderr
    assert "RPO:" in failover.stdout and "is the primary" in failover.stdout

    region = cluster.ClusterLayout.load(region_dir)
    writer = region.processes[cluster.WRITER_NAME].address
    pages = [p for i in tried for p in pair(i)]
    found = read_all(writer, pages)
    kept = [i for i, lsn in acked.items() if lsn <= held]
    assert kept, "the region held none of the acknowledged commits"
    for i in kept:  # every commit acknowledged at or below the region's durable point
        assert [found[p] for p in pair(i)] == [f"c{i}", f"c{i}"], (i, acked[i], held)
    for i in tried:  # and nothing in part: a commit is there whole or not at all
        values = {found[p] for p in pair(i)}
        assert values in ({f"c{i}"}, {""}), (i, values)

    # The old primary comes back fenced: it rejoins as a secondary of the new primary.
    rejoined = sixfold("--dir", primary.directory, "up")
    assert rejoined.returncode == 0, rejoined.stdout + rejoined.stderr
    assert "seeded again" in rejoined.stdout
    old = cluster.ClusterLayout.load(primary.directory)
    assert cluster.WRITER_NAME not in old.processes and old.replica_of == str(region_dir)
    lsn = asyncio.run(_write(writer, 1, "after the failover"))
    primary.wait_for(lambda: caught_up(region_dir, "primary"), "the old primary to catch up")
    primary.wait_for(lambda: read_in(old, "r1", 1) == "after the failover", "its reader")
    assert lsn > held
    sixfold("--dir", region_dir, "global", "remove-region", "primary")
    sixfold("--dir", region_dir, "down")


@pytest.mark.processes
def test_a_switchover_loses_nothing_and_reports_the_pause(
    local_cluster: LocalCluster, region_dir: Path
) -> None:
    primary = local_cluster
    up = sixfold("--dir", region_dir, "up", "--region", "b", "--replica-of", primary.directory)
    assert up.returncode == 0, up.stdout + up.stderr
    written = {page: f"v{page}" for page in range(20)}
    for page, text in written.items():
        primary.write(page, text)
    switched = sixfold("--dir", primary.directory, "global", "switchover", "b")
    assert switched.returncode == 0, switched.stdout + switched.stderr
    assert "nothing acknowledged was lost" in switched.stdout and "paused" in switched.stdout

    region = cluster.ClusterLayout.load(region_dir)
    writer = region.processes[cluster.WRITER_NAME].address
    assert read_all(writer, list(written)) == written
    # The old primary is a secondary now: the new primary's writes reach its readers, and
    # it takes none itself.
    asyncio.run(_write(writer, 0, "from b"))
    old = cluster.ClusterLayout.load(primary.directory)
    assert cluster.WRITER_NAME not in old.processes
    primary.wait_for(lambda: caught_up(region_dir, "primary"), "the old primary to catch up")
    primary.wait_for(lambda: read_in(old, "r2", 0) == "from b", "its reader to read there")
    sixfold("--dir", region_dir, "global", "remove-region", "primary")
    sixfold("--dir", region_dir, "down")


async def _write(address: str, page: int, text: str) -> int:
    client = WriterClient(address)
    try:
        change = pb.PageChange(page_no=page, data=text.encode() + b"\0")
        return await client.write_pages([change], timeout=10.0)
    finally:
        await client.close()


@pytest.mark.processes
def test_the_fuzz_breaks_the_link_and_the_region_converges(
    local_cluster: LocalCluster, region_dir: Path
) -> None:
    primary = local_cluster
    lone = sixfold("--dir", primary.directory, "fuzz", "--time", "1", "--nemesis", "region")
    assert lone.returncode != 0 and "needs a secondary region" in lone.stderr, lone.stderr
    up = sixfold("--dir", region_dir, "up", "--region", "b", "--replica-of", primary.directory)
    assert up.returncode == 0, up.stdout + up.stderr
    fuzz = sixfold(
        "--dir", primary.directory, "fuzz", "--time", "5", "--nemesis", "region",
        "--clients", "3", "--seed", "16",
    )  # fmt: skip
    assert fuzz.returncode == 0, fuzz.stdout + fuzz.stderr
    assert "regions (b): converged" in fuzz.stdout
    assert "region-kill" in fuzz.stdout or "region-cut" in fuzz.stdout, fuzz.stdout
    sixfold("--dir", primary.directory, "global", "remove-region", "b")
