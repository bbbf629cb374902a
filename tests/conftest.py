"""Fixtures that run real processes on loopback: storage nodes, a writer, readers."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from sixfold import cluster
from sixfold.clients import NodeClient, ReaderClient, WriterClient
from sixfold.core.errors import SixfoldError
from sixfold.core.page import until_nul
from sixfold.crash import BUG_MARK
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.tools.status import gather_status

WRITE_TIMEOUT_S = 3.0
WAIT_LIMIT_S = 30.0
# Starting a cluster while another test's cluster (pytest-xdist) or an image build runs
# beside it takes longer than a quiet start.
HEALTHY_LIMIT_S = 90.0


def _worker_port_range() -> None:
    """Each pytest-xdist worker picks ports from a range of its own (and so do the processes
    and CLIs its tests start, which inherit it): two workers picking the same free port
    before either binds it failed a node's start."""
    worker, count = (
        os.environ.get("PYTEST_XDIST_WORKER", ""),
        os.environ.get("PYTEST_XDIST_WORKER_COUNT", ""),
    )
    if not worker.startswith("gw") or not count.isdigit():
        return
    low, high = cluster.PORT_RANGE
    width = (high - low) // int(count)
    start = low + int(worker[2:]) * width
    os.environ[cluster.PORT_RANGE_VARIABLE] = f"{start}-{start + width}"


_worker_port_range()

# Tests assert behaviour, not timings: a property must not fail on its speed when another
# test worker (pytest-xdist) or anything else loads the machine.
settings.register_profile("sixfold", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("sixfold")


class LocalCluster:
    """A process cluster in a temporary directory, driven the way the CLI drives it."""

    def __init__(
        self,
        directory: Path,
        partitionable: bool = False,
        takeover: bool = True,
        spares: bool = False,
    ) -> None:
        self.directory = directory
        layout = cluster.new_layout(directory, partitionable)
        if spares:
            cluster.add_spares(layout)
        layout.extra_args = {"writer": ["--write-timeout", str(WRITE_TIMEOUT_S)]}
        if not takeover:  # the test scripts the writer's life: no reader takes over
            layout.extra_args["reader"] = ["--no-takeover"]
        layout.save()

    @property
    def layout(self) -> cluster.ClusterLayout:
        """Read from disk each time: `sixfold chaos` or `fuzz` run in a subprocess may have
        restarted members, and only cluster.json knows their pids."""
        return cluster.ClusterLayout.load(self.directory)

    def up(self) -> None:
        """Start every process and wait until the cluster is healthy; on failure stop what
        started (callers start it before their own try: a failed start leaked a cluster
        that slowed every later test)."""
        try:
            cluster.start_processes(self.layout, list(self.layout.processes))
            asyncio.run(cluster.wait_healthy(self.layout, HEALTHY_LIMIT_S))
        except BaseException:
            cluster.stop_all(self.layout)
            raise

    def down(self) -> None:
        cluster.stop_all(self.layout)
        self.check_no_bug_logged()

    def check_no_bug_logged(self) -> None:
        """A process that hit a bug logged it and exited (sixfold/crash.py): fail the test."""
        for log_file in sorted((self.directory / "logs").glob("*.log")):
            text = log_file.read_text(errors="replace")
            if BUG_MARK in text:
                at = text.index(BUG_MARK)
                pytest.fail(f"{log_file.name} logged a bug:\n{text[max(at - 200, 0) : at + 2000]}")

    def kill(self, *names: str) -> None:
        layout = self.layout
        cluster.kill_processes(layout, list(names))
        deadline = time.monotonic() + 5
        while any(cluster.is_running(layout.processes[n]) for n in names):
            assert time.monotonic() < deadline, f"{names} did not die"
            time.sleep(0.02)

    def start(self, *names: str) -> None:
        cluster.start_processes(self.layout, list(names))

    def on_node(self, name: str, fn):
        """Run `fn(client)` (a coroutine) against storage node `name`; return its result."""

        async def run():
            client = NodeClient(name, self.layout.processes[name].address)
            try:
                return await fn(client)
            finally:
                await client.close()

        return asyncio.run(run())

    def status(self) -> dict:
        return asyncio.run(gather_status(self.layout))

    def write(self, page_no: int, text: str, timeout: float = 30.0) -> int:
        return asyncio.run(self.write_async([(page_no, text)], timeout))

    async def write_async(self, pages: list[tuple[int, str]], timeout: float = 30.0) -> int:
        client = WriterClient(self.layout.find_writer_address())
        try:
            changes = [
                pb.PageChange(page_no=p, offset=0, data=t.encode() + b"\0") for p, t in pages
            ]
            return await client.write_pages(changes, timeout=timeout)
        finally:
            await client.close()

    def read(self, page_no: int, reader: str | None = None) -> str:
        return asyncio.run(self.read_async(page_no, reader))[0]

    async def read_async(self, page_no: int, reader: str | None = None) -> tuple[str, int]:
        client = (
            ReaderClient(self.layout.reader_address(reader), reader)
            if reader
            else WriterClient(self.layout.find_writer_address())
        )
        try:
            response = await client.read_page(page_no, timeout=10.0)
        finally:
            await client.close()
        return until_nul(response.image).decode(), response.read_point

    def wait_for(self, predicate, what: str, limit_s: float = WAIT_LIMIT_S) -> None:
        deadline = time.monotonic() + limit_s
        while not predicate():
            assert time.monotonic() < deadline, f"timed out after {limit_s} s waiting for {what}"
            time.sleep(0.1)

    def writer_ready(self) -> bool:
        """Some instance takes writes (the writer, or a reader that took over)."""
        address = self.layout.find_writer_address()
        try:
            state = asyncio.run(_writer_state(address))
        except SixfoldError:
            return False
        return state.recovered and not state.fenced

    def reader_sees(self, reader: str, lsn: int) -> bool:
        r = {x["name"]: x for x in self.status()["readers"]}[reader]
        return bool(r["up"] and r["read_point"] is not None and r["read_point"] >= lsn)


async def _writer_state(address: str) -> pb.WriterState:
    client = WriterClient(address)
    try:
        return await client.state(timeout=2.0)
    finally:
        await client.close()


@pytest.fixture
def local_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """Mark a test `no_takeover` when it kills the writer and restarts it itself."""
    takeover = request.node.get_closest_marker("no_takeover") is None
    spares = request.node.get_closest_marker("spares") is not None
    c = LocalCluster(tmp_path / "cluster", takeover=takeover, spares=spares)
    try:
        c.up()
        yield c
    finally:
        c.down()


TEST_TIMES_VARIABLE = "SIXFOLD_TEST_TIMES"  # a file: one line per test phase, for lane analysis


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """With $SIXFOLD_TEST_TIMES set, append `worker phase seconds start nodeid` per test phase:
    which xdist worker ran what, and when (the suite's time is its slowest worker's)."""
    path = os.environ.get(TEST_TIMES_VARIABLE)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not path or (worker is None and hasattr(report, "node")):
        return  # not asked, or xdist's controller passing on a worker's report (logged there)
    worker = worker or "main"
    with open(path, "a") as out:
        out.write(
            f"{worker} {report.when} {report.duration:.2f} {report.start:.2f} {report.nodeid}\n"
        )
