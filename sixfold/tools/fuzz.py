"""`sixfold fuzz`: a Jepsen-style run against a live cluster, checked for linearizability.

Clients run a register workload (per-key read, write, compare-and-set; keys spread over
pages, each an 8-byte slot) through the writer, while a nemesis injects faults. Every
operation is logged as an invoke and then ok / fail / info (outcome unknown) in a JSON-lines
history (format: sixfold/check/history.py), with the faults as nemesis events. At the end the
cluster is healed, every key is read once more (an acknowledged write lost would show
there), and the history is checked (sixfold/check/linearizability.py).

Clients come in two kinds. Following clients ask the cluster who the writer is after any
failure. Stale clients keep the writer they knew when they started, and follow a change only
when refused (NotWriterError, WriterFencedError), as a client with a cached topology does;
they use a short deadline, so they keep sending to a writer that stopped answering. With the
pause-writer nemesis, which pauses the writer past the takeover time and then resumes it,
their requests reach a deposed writer (issue 10).

Beside the registers, multi-page groups: a group's 2-3 pages are written together, one
value to all, in one WritePages call (one mini-transaction), and read through the writer or
a reader, each read reporting its read point. sixfold/check/multipage.py checks that pages read at
the same read point agree. Every loop is bounded in time, and traffic goes only to the
cluster's own loopback ports or containers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from sixfold import cluster
from sixfold.check.history import NEMESIS, Event, write_event
from sixfold.check.linearizability import CheckResult, Verdict, check_history
from sixfold.check.multipage import GroupCheck, check_groups
from sixfold.clients import PageWriteStream, ReaderClient, WriterClient
from sixfold.core.errors import (
    InvalidRequestError,
    NotWriterError,
    QuorumUnavailableError,
    RecoveryError,
    SixfoldError,
    WriterFencedError,
)
from sixfold.core.quorum import AZS, NODE_AZ, NODE_NAMES, nodes_in_az
from sixfold.core.takeover import PROMOTION_STAGGER_S, WRITER_SILENT_AFTER_S
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.targets import ProcessTarget, current_writer_name
from sixfold.tools import fuzz_region
from sixfold.tools import membership as membership_tool
from sixfold.tools.partition import Pair, Partitioner, all_members, between, isolate
from sixfold.tools.status import gather_status, holds_data
from storage_node.store import NodeStore

FUZZ_PAGE_BASE = 2_000_000  # pages used by the workload, away from hand-written ones
GROUP_PAGE_BASE = 2_100_000  # pages of the multi-page groups
GROUP_PAGE_STRIDE = 8  # group g owns pages GROUP_PAGE_BASE + 8 g, ..., one slot at offset 0
GROUP_OP_SHARE = 0.2  # share of a client's operations that are group writes or reads
GROUP_READ_VIA = ("writer", *cluster.READER_NAMES)
LOST_TAIL_RECORDS_MAX = 20  # the disk nemesis's lost tail is at most this many records
KEY_PAGES = 8  # keys are spread over this many pages
SLOT_BYTES = 8  # each key is an 8-byte little-endian int in its page; 0 = never written
OP_TIMEOUT_S = 30.0  # set-up and the final reads
# Clients' deadlines, short as real clients' are: a following client gives up on a silent
# writer and looks for the new one; a stale client keeps sending to the silent writer.
FOLLOWING_OP_TIMEOUT_S = 5.0
STALE_OP_TIMEOUT_S = 2.0
FAULT_GAP_S = (1.0, 3.0)  # quiet time between faults
FAULT_HOLD_S = (1.0, 4.0)  # how long a fault lasts before it is healed
HEAL_LIMIT_S = 90.0
CHECK_TIME_LIMIT_S = 60.0
# pause-writer holds the writer past the slowest reader's takeover time, then resumes it.
DEPOSE_HOLD_S = (
    WRITER_SILENT_AFTER_S + 2 * PROMOTION_STAGGER_S + 1.0,
    WRITER_SILENT_AFTER_S + 2 * PROMOTION_STAGGER_S + 3.0,
)
NEMESES = ("kill", "pause", "disk", "partition", "pause-writer", "membership", "region")
MEMBERSHIP_SETTLE_S = 60.0  # the longest the membership nemesis follows a change
PARTITIONS = ("writer-az", "writer-az+1", "isolate-node", "az-split")


def key_location(key: int) -> tuple[int, int]:
    return FUZZ_PAGE_BASE + key % KEY_PAGES, SLOT_BYTES * (key // KEY_PAGES)


def encode_value(value: int | None) -> bytes:
    return (value or 0).to_bytes(SLOT_BYTES, "little")


def decode_value(raw: bytes) -> int | None:
    return int.from_bytes(raw, "little") or None


@dataclass
class Recorder:
    """Appends history events to a JSON-lines file as they happen."""

    file: TextIO
    started: float = field(default_factory=time.monotonic)
    index: int = 0
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    faults: list[str] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def log(self, process: int | str, kind: str, f: str, key: int | None, value: object) -> None:
        event = Event(self.index, process, kind, f, key, value, time.monotonic() - self.started)
        self.index += 1
        self.events.append(event)
        write_event(self.file, event)
        if process != NEMESIS and kind != "invoke":
            self.outcomes[(f, kind)] += 1

    def fault(self, f: str, value: str) -> None:
        self.faults.append(f"{f} {value}")
        self.log(NEMESIS, "info", f, None, value)


def outcome_of(f: str, exc: Exception) -> str:
    """fail when the operation cannot have taken effect, info when it may have."""
    if f == "read" or isinstance(exc, InvalidRequestError | RecoveryError | NotWriterError):
        return "fail"  # reads change nothing; a recovering writer, or a non-writer, takes no LSNs
    if isinstance(exc, QuorumUnavailableError) and "outcome is unknown" not in str(exc):
        return "fail"  # refused before it was sent to any node
    return "info"


def group_pages(group: int) -> list[int]:
    """Groups alternate between 2 and 3 pages."""
    return [GROUP_PAGE_BASE + GROUP_PAGE_STRIDE * group + i for i in range(2 + group % 2)]


def is_refusal(exc: Exception) -> bool:
    """The instance said it is not (or no longer) the writer: even a stale client follows."""
    return isinstance(exc, NotWriterError | WriterFencedError)


@dataclass
class Clients:
    """One client process's connections: the writer, and the readers for group reads.

    A stale client keeps its writer address until refused; its calls have a short deadline.
    A streamed client writes through a WritePagesStream (opened again after it breaks, and
    at each new writer), the others with a unary WritePages call each.
    """

    writer: WriterClient
    readers: dict[str, ReaderClient]
    writer_address: str
    stale: bool = False
    streamed: bool = False
    stream: PageWriteStream | None = None

    @property
    def timeout_s(self) -> float:
        return STALE_OP_TIMEOUT_S if self.stale else FOLLOWING_OP_TIMEOUT_S

    @classmethod
    def open(cls, target, stale: bool = False, streamed: bool = False) -> Clients:
        readers = {r: ReaderClient(target.reader_address(r), r) for r in cluster.READER_NAMES}
        address = target.find_writer_address()
        return cls(WriterClient(address), readers, address, stale, streamed)

    async def write_pages(self, changes: list[pb.PageChange], timeout_s: float) -> None:
        if not self.streamed:
            await self.writer.write_pages(changes, timeout=timeout_s)
            return
        if self.stream is None or self.stream.broken is not None:
            await self._close_stream()
            self.stream = self.writer.write_pages_stream()
        await self.stream.write(changes, timeout=timeout_s)

    async def _close_stream(self) -> None:
        if self.stream is not None:
            await self.stream.close()
            self.stream = None

    async def after_failure(self, target, exc: SixfoldError) -> None:
        if not self.stale or is_refusal(exc):
            await self.follow_writer(target)

    async def follow_writer(self, target) -> None:
        """After a failure: if another instance has become the writer, talk to it instead.

        Finding it asks the instances with blocking calls, so it runs off the event loop."""
        address = await asyncio.to_thread(target.find_writer_address)
        if address != self.writer_address:
            await self._close_stream()
            await self.writer.close()
            self.writer, self.writer_address = WriterClient(address), address

    async def close(self) -> None:
        await self._close_stream()
        for client in (self.writer, *self.readers.values()):
            await client.close()


async def client_loop(
    process: int,
    target,
    rec: Recorder,
    rng: random.Random,
    work: Workload,
    stop: asyncio.Event,
    stale: bool = False,
) -> None:
    clients = Clients.open(target, stale, streamed=process % 2 == 1)
    try:
        while not stop.is_set():
            if work.groups and rng.random() < GROUP_OP_SHARE:
                failure = await group_op(process, clients, rec, rng, work)
            else:
                failure = await one_op(process, clients, rec, rng, work)
            if failure is not None:
                await clients.after_failure(target, failure)
    finally:
        await clients.close()


@dataclass
class Workload:
    """Every write and cas writes a value never written before, so a read names the write
    it saw, an operation whose outcome is unknown can explain only its own value, and keys
    with no cas are checked in O(n log n) (sixfold/check/linearizability.py). A cas expects the
    value last seen on its key, so it often applies."""

    keys: int
    groups: int
    next_group_value: int = 0
    next_value: int = 0
    last_seen: dict[int, int | None] = field(default_factory=dict)

    def group_value(self) -> int:
        """A value no other group write uses, so a read names the write it saw."""
        self.next_group_value += 1
        return self.next_group_value

    def fresh_value(self) -> int:
        self.next_value += 1
        return self.next_value


async def group_op(
    process: int, clients: Clients, rec: Recorder, rng: random.Random, work: Workload
) -> SixfoldError | None:
    """One group write or read; the error when it failed or its outcome is unknown."""
    group = rng.randrange(work.groups)
    key = f"g{group}"
    if rng.random() < 0.5:
        value = work.group_value()
        rec.log(process, "invoke", "mwrite", key, value)
        changes = [_change(page, 0, value) for page in group_pages(group)]
        try:
            await clients.write_pages(changes, clients.timeout_s)
        except SixfoldError as exc:
            rec.log(process, outcome_of("mwrite", exc), "mwrite", key, value)
            await asyncio.sleep(0.05)  # do not spin against an unavailable cluster
            return exc
        rec.log(process, "ok", "mwrite", key, value)
        return None
    via = rng.choice(GROUP_READ_VIA)
    rec.log(process, "invoke", "mread", key, via)
    try:
        reads = await read_group(clients, via, group)
    except SixfoldError as exc:
        rec.log(process, "fail", "mread", key, via)
        await asyncio.sleep(0.05)
        return exc
    rec.log(process, "ok", "mread", key, reads)
    return None


async def read_group(clients: Clients, via: str, group: int) -> list[list[int | None]]:
    """[page, read point, value] for each page of the group, read concurrently (one RPC a
    page, so not atomic: the check compares pages only where their read points are equal)."""
    client = clients.writer if via == "writer" else clients.readers[via]
    pages = group_pages(group)
    responses = await asyncio.gather(
        *(client.read_page(page, timeout=clients.timeout_s) for page in pages)
    )
    return [
        [page, r.read_point, decode_value(r.image[:SLOT_BYTES])]
        for page, r in zip(pages, responses, strict=True)
    ]


async def one_op(
    process: int, clients: Clients, rec: Recorder, rng: random.Random, work: Workload
) -> SixfoldError | None:
    """One register operation; the error when it failed or its outcome is unknown."""
    key = rng.randrange(work.keys)
    page, offset = key_location(key)
    f = rng.choice(("read", "read", "write", "cas"))
    value: object = None
    if f == "write":
        value = work.fresh_value()
    elif f == "cas":
        value = (work.last_seen.get(key), work.fresh_value())
    rec.log(process, "invoke", f, key, value)
    try:
        result = await run_op(clients, f, page, offset, value, clients.timeout_s)
    except SixfoldError as exc:
        rec.log(process, outcome_of(f, exc), f, key, value)
        await asyncio.sleep(0.05)  # do not spin against an unavailable cluster
        return exc
    if f == "read":
        rec.log(process, "ok", f, key, result)
        work.last_seen[key] = result
    elif f == "cas" and not result:
        rec.log(process, "fail", f, key, value)
    else:
        rec.log(process, "ok", f, key, value)
        work.last_seen[key] = value if f == "write" else value[1]
    return None


async def run_op(
    clients: Clients,
    f: str,
    page: int,
    offset: int,
    value: object,
    timeout_s: float = OP_TIMEOUT_S,
) -> object:
    if f == "read":
        image = (await clients.writer.read_page(page, timeout=timeout_s)).image
        return decode_value(image[offset : offset + SLOT_BYTES])
    if f == "write":
        await clients.write_pages([_change(page, offset, value)], timeout_s)
        return True
    expected, new = value
    answer = await clients.writer.compare_and_set(
        page, offset, encode_value(expected), encode_value(new), timeout=timeout_s
    )
    return answer.applied


def _change(page: int, offset: int, value: object) -> pb.PageChange:
    return pb.PageChange(page_no=page, offset=offset, data=encode_value(value))


# -- the nemesis ------------------------------------------------------------------------------


class Nemesis:
    """Injects one fault at a time from the enabled kinds, heals it, waits, repeats."""

    def __init__(
        self,
        target,
        kinds: list[str],
        rec: Recorder,
        rng: random.Random,
        partitioner: Partitioner | None = None,
    ) -> None:
        self.target = target
        self.kinds = kinds
        self.rec = rec
        self.rng = rng
        self.partitioner = partitioner
        self.regions = fuzz_region.region_layouts(target) if "region" in kinds else []

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if await _sleep_or_stop(stop, self.rng.uniform(*FAULT_GAP_S)):
                return
            kind = self.rng.choice(self.kinds)
            await getattr(self, f"_{kind.replace('-', '_')}")(stop)

    async def _hold(self, stop: asyncio.Event) -> None:
        await _sleep_or_stop(stop, self.rng.uniform(*FAULT_HOLD_S))

    async def _kill(self, stop: asyncio.Event) -> None:
        scenario = self.rng.choice(("az", "az+1", "four", "rolling", "writer"))
        if scenario == "writer":
            victims = [self._current_writer()]  # a reader takes over (issue 6)
        elif scenario == "rolling":
            for name in self.rng.sample(NODE_NAMES, 3):
                self._do("kill", [name], "rolling restart")
                await asyncio.sleep(0.5)
                self._do("start", [name], "rolling restart")
            return
        else:
            az = self.rng.choice(AZS)
            victims = nodes_in_az(az)
            others = [n for n in NODE_NAMES if n not in victims]
            # Past what the design tolerates, on purpose: with 3 down writes must fail
            # cleanly; with 4 down reads may fail too. Neither may lose or invent data.
            if scenario in ("az+1", "four"):
                victims += self.rng.sample(others, 1 if scenario == "az+1" else 2)
        self._do("kill", victims, scenario)
        await self._hold(stop)
        self._do("start", victims, scenario)

    async def _region(self, stop: asyncio.Event) -> None:
        """The link to a secondary region broken (sixfold/tools/fuzz_region.py)."""
        region = self.rng.choice(self.regions)
        f, what = fuzz_region.break_link(region, self.rng)
        self.rec.fault(f, what)
        await self._hold(stop)
        fuzz_region.mend_link(region)
        self.rec.fault("region-mend", f"region {region.region}'s link")

    async def _pause(self, stop: asyncio.Event) -> None:
        victim = [self.rng.choice([*NODE_NAMES, self._current_writer()])]
        self._do("pause", victim, "SIGSTOP")
        await self._hold(stop)
        self._do("resume", victim, "SIGCONT")

    async def _pause_writer(self, stop: asyncio.Event) -> None:
        """Pause the writer past the takeover time: a reader takes over meanwhile, and the
        resumed writer, which has not yet learnt that it was deposed, meets stale clients."""
        victim = [self._current_writer()]
        self._do("pause", victim, "SIGSTOP past the takeover time")
        await _sleep_or_stop(stop, self.rng.uniform(*DEPOSE_HOLD_S))
        self._do("resume", victim, "SIGCONT")

    async def _disk(self, stop: asyncio.Event) -> None:
        if not isinstance(self.target, ProcessTarget):
            return  # the compose volumes are not reachable from here
        victim = self.rng.choice(NODE_NAMES)
        how = self.rng.choice(("flip", "torn", "lost-tail", "lost-disk"))
        self._do("kill", [victim], "disk fault")
        await asyncio.sleep(0.2)
        data_dir = Path(self.target.layout.directory) / victim
        if how == "lost-disk":  # a new, empty disk: the node hydrates from its peers
            shutil.rmtree(data_dir)
            damaged = "its whole data directory"
        else:
            store = NodeStore.of_stopped(data_dir, victim)
            try:
                if how == "lost-tail":
                    damaged = store.lose_tail(self.rng.randint(1, LOST_TAIL_RECORDS_MAX))
                else:
                    damaged = store.damage_one(how, self.rng)
            finally:
                store.close()
        self.rec.fault("corrupt", f"{victim} {how} {damaged}")
        self._do("start", [victim], "disk fault")
        await self._hold(stop)

    async def _membership(self, stop: asyncio.Event) -> None:
        """A member's disk is lost for good and it is replaced by an empty node of its AZ
        (issue 14) while clients write; half the time the writer is killed mid-change. The
        node replaced comes back empty: a spare for a later round."""
        if not isinstance(self.target, ProcessTarget):
            return  # the compose volumes are not reachable from here
        status = await gather_status(self.target)
        m = status["membership"]
        if m["change"] is not None:
            return  # one change at a time
        ready = [
            n["name"]
            for n in status["nodes"]
            if n["up"]
            and n.get("place") != "member"
            and n["name"] not in m["holders"]
            and not holds_data(n)
        ]
        pairs = [
            (old, new) for old in m["holders"] for new in ready if NODE_AZ[old] == NODE_AZ[new]
        ]
        if not pairs:
            self.rec.fault("replace", "skipped: no empty spare (start the cluster with --spares 1)")
            return
        old, new = self.rng.choice(pairs)
        self._do("kill", [old], "its disk is lost for good")
        shutil.rmtree(Path(self.target.layout.directory) / old, ignore_errors=True)
        writer = await asyncio.to_thread(self.target.find_writer_address)
        try:
            await membership_tool.begin(writer, old, new, force=False)
        except SixfoldError as exc:
            self.rec.fault("replace", f"{old} -> {new} refused: {exc}")
            self._do("start", [old], "replacement refused")
            return
        self.rec.fault("replace", f"{old} -> {new} begun")
        if self.rng.random() < 0.5:
            victim = [self._current_writer()]
            self._do("kill", victim, "the writer, mid-change")
            await self._hold(stop)
            self._do("start", victim, "the writer, mid-change")
        deadline = time.monotonic() + MEMBERSHIP_SETTLE_S
        while time.monotonic() < deadline and not stop.is_set():
            with contextlib.suppress(SixfoldError):
                address = await asyncio.to_thread(self.target.find_writer_address)
                view = await membership_tool.writer_membership(address)
                if not view.change_position and view.epoch:
                    self.rec.fault("replace", f"settled: {' '.join(view.holders)}")
                    break
            await asyncio.sleep(0.5)
        self._do("start", [old], "back empty: a spare now")

    async def _partition(self, stop: asyncio.Event) -> None:
        assert self.partitioner is not None, "run() makes the partitioner before the nemesis"
        scenario = self.rng.choice(PARTITIONS)
        pairs = self._partition_pairs(scenario)
        await asyncio.to_thread(self.partitioner.cut, pairs)
        cut = " ".join(f"{a}|{b}" for a, b in pairs)
        self.rec.fault("partition", f"{scenario}: {cut}")
        await self._hold(stop)
        await asyncio.to_thread(self.partitioner.heal)
        self.rec.fault("heal-partition", scenario)

    def _partition_pairs(self, scenario: str) -> list[Pair]:
        """writer-az: writes go on; writer-az+1: 3 of 6 left, writes must fail cleanly;
        isolate-node: one node cut from everyone; az-split: two AZs' nodes cannot talk."""
        az, other_az = self.rng.sample(AZS, 2)
        writer = self._current_writer()
        if scenario == "writer-az":
            return between([writer], nodes_in_az(az))
        if scenario == "writer-az+1":
            others = [n for n in NODE_NAMES if n not in nodes_in_az(az)]
            cut = [*nodes_in_az(az), self.rng.choice(others)]
            return between([writer], cut)
        if scenario == "isolate-node":
            return isolate(self.rng.choice(NODE_NAMES), all_members())
        assert scenario == "az-split"
        return between(nodes_in_az(az), nodes_in_az(other_az))

    def _current_writer(self) -> str:
        """The instance that is the writer now: a reader may have taken over from `writer`."""
        try:
            return current_writer_name(self.target) or cluster.WRITER_NAME
        except SixfoldError:
            return cluster.WRITER_NAME

    def _do(self, action: str, names: list[str], why: str) -> None:
        getattr(self.target, action)(names)
        self.rec.fault(action, f"{','.join(names)} ({why})")


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except TimeoutError:
        return False


# -- healing and the final reads ----------------------------------------------------------------


async def heal(target, rec: Recorder) -> None:
    names = [*target.nodes, cluster.WRITER_NAME, *cluster.READER_NAMES]  # spares too
    target.resume(names)
    target.start(names)
    rec.fault("heal", "all started and resumed")
    deadline = time.monotonic() + HEAL_LIMIT_S
    while time.monotonic() < deadline:
        # Asked again each time: another instance may have become the writer meanwhile.
        address = await asyncio.to_thread(target.find_writer_address)
        client = WriterClient(address)
        try:
            if (await client.state(timeout=2.0)).status == "accepting writes":
                return
        except SixfoldError:
            pass
        finally:
            await client.close()
        await asyncio.sleep(0.25)
    raise SixfoldError(f"the writer did not accept writes within {HEAL_LIMIT_S:g} s of healing")


async def final_reads(target, rec: Recorder, work: Workload, process: int) -> dict[int, int | None]:
    """Every key once more through the writer, and every group through each reader too;
    the keys' values read."""
    clients = Clients.open(target)
    final: dict[int, int | None] = {}
    try:
        for key in range(work.keys):
            page, offset = key_location(key)
            rec.log(process, "invoke", "read", key, None)
            try:
                value = await run_op(clients, "read", page, offset, None)
            except SixfoldError:
                rec.log(process, "fail", "read", key, None)
            else:
                rec.log(process, "ok", "read", key, value)
                final[key] = value
        for group in range(work.groups):
            for via in GROUP_READ_VIA:
                rec.log(process, "invoke", "mread", f"g{group}", via)
                try:
                    reads = await read_group(clients, via, group)
                except SixfoldError:
                    rec.log(process, "fail", "mread", f"g{group}", via)
                else:
                    rec.log(process, "ok", "mread", f"g{group}", reads)
    finally:
        await clients.close()
    return final


async def _read_slot(reader: ReaderClient, key: int) -> int | None:
    page, offset = key_location(key)
    image = (await reader.read_page(page, timeout=OP_TIMEOUT_S)).image
    return decode_value(image[offset : offset + SLOT_BYTES])


# -- the command ----------------------------------------------------------------------------------


def parse_nemeses(text: str) -> list[str]:
    kinds = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in kinds if k not in (*NEMESES, "none")]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown nemesis {', '.join(unknown)}: choose from {', '.join(NEMESES)}"
        )
    return kinds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--time", type=float, default=30.0, help="seconds of workload (default 30)")
    p.add_argument(
        "--nemesis",
        type=parse_nemeses,
        default=["kill", "pause"],
        help=f"faults to inject, comma-separated from {','.join(NEMESES)} (default kill,pause); "
        "'none' for a quiet run",
    )
    p.add_argument("--seed", type=int, default=None, help="seed for the workload and the nemesis")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    p.add_argument(
        "--stale-clients",
        type=int,
        default=None,
        help="how many of the clients keep the writer they started with until "
        "refused (default: half of --clients)",
    )
    p.add_argument("--keys", type=int, default=16, help="registers (default 16)")
    p.add_argument(
        "--groups",
        type=int,
        default=4,
        help="multi-page groups written in one mini-transaction (default 4; 0: none)",
    )
    p.add_argument(
        "--history", type=Path, default=None, help="history file (default in the cluster dir)"
    )


async def run(target, args: argparse.Namespace, history_path: Path) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**9)
    kinds = [k for k in args.nemesis if k != "none"]
    # Made first, so a cluster that cannot be partitioned is refused before any work.
    partitioner = target.partitioner() if "partition" in kinds else None
    region_layouts = fuzz_region.region_layouts(target) if "region" in kinds else []
    work = Workload(args.keys, args.groups)
    await clear_registers(target, work)
    history_path.parent.mkdir(parents=True, exist_ok=True)
    with history_path.open("w") as file:
        rec = Recorder(file)
        try:
            await workload_under_faults(target, args, seed, kinds, partitioner, rec, work)
        finally:
            if partitioner:  # also on Ctrl-C or an error: leave no link cut behind
                partitioner.heal()
                rec.fault("heal-partition", "every link (end of run)")
        await heal(target, rec)
        final = await final_reads(target, rec, work, process=args.clients)
    result = check_history(rec.events, time_limit_s=CHECK_TIME_LIMIT_S)
    groups = check_groups(rec.events)
    report(rec, result, groups, seed, history_path)
    if region_layouts:
        diverged = await fuzz_region.check_converged(
            Path(target.layout.directory), region_layouts, final, _read_slot
        )
        names = ", ".join(r.region for r in region_layouts)
        print(f"regions ({names}): " + ("converged" if not diverged else "DIVERGED"))
        for line in diverged:
            print(f"  {line}")
        if diverged:
            return 1
    if result.verdict == Verdict.VIOLATION or groups.violations:
        return 1
    return 0 if result.verdict == Verdict.OK else 2


async def clear_registers(target, work: Workload) -> None:
    """Zero every slot the run uses, before its first operation: the checkers start from
    "never written", and a cluster that ran an earlier fuzz would otherwise show its values."""
    slots_per_page = -(-work.keys // KEY_PAGES)
    zero_keys = bytes(SLOT_BYTES * slots_per_page)
    changes = [
        pb.PageChange(page_no=FUZZ_PAGE_BASE + i, offset=0, data=zero_keys)
        for i in range(KEY_PAGES)
    ]
    for group in range(work.groups):
        changes += [_change(page, 0, None) for page in group_pages(group)]
    writer = WriterClient(target.find_writer_address())
    try:
        await writer.write_pages(changes, timeout=OP_TIMEOUT_S)
    except SixfoldError as exc:
        raise SixfoldError(f"could not clear the fuzz registers before the run: {exc}") from exc
    finally:
        await writer.close()


async def workload_under_faults(
    target,
    args: argparse.Namespace,
    seed: int,
    kinds: list[str],
    partitioner: Partitioner | None,
    rec: Recorder,
    work: Workload,
) -> None:
    stop = asyncio.Event()
    stale = args.clients // 2 if args.stale_clients is None else args.stale_clients
    clients = [
        asyncio.create_task(
            client_loop(p, target, rec, random.Random(seed * 1000 + p), work, stop, p < stale)
        )
        for p in range(args.clients)
    ]
    nemesis = None
    if kinds:
        chaos = Nemesis(target, kinds, rec, random.Random(seed), partitioner)
        nemesis = asyncio.create_task(chaos.run(stop))
    try:
        await asyncio.sleep(args.time)
    finally:
        stop.set()
        if nemesis:
            await nemesis
        await asyncio.wait(clients, timeout=OP_TIMEOUT_S + 5)


def report(
    rec: Recorder, result: CheckResult, groups: GroupCheck, seed: int, history_path: Path
) -> None:
    print(f"seed {seed}")
    print("operations:")
    for (f, kind), n in sorted(rec.outcomes.items()):
        print(f"  {f:<6} {kind:<5} {n}")
    print(f"faults injected: {len(rec.faults)}")
    for fault in Counter(line.split(" ", 1)[0] for line in rec.faults).most_common():
        print(f"  {fault[0]:<14} {fault[1]}")
    print(f"linearizability: {result.verdict}")
    for key_result in result.keys:
        if key_result.verdict != Verdict.OK:
            print(f"  key {key_result.key}: {key_result.verdict}")
            if key_result.explanation:
                print(key_result.explanation)
    print(
        f"multi-page groups: {groups.reads} page reads ok, {groups.shared_read_points} read "
        f"points seen by two or more of them, {len(groups.violations)} violations"
    )
    for violation in groups.violations:
        print(f"  {violation}")
    overall = Verdict.VIOLATION if groups.violations else result.verdict
    print(f"verdict: {overall}")
    print(f"history: {history_path}")


def main(target, args: argparse.Namespace, directory: Path) -> int:
    default_dir = directory if isinstance(target, ProcessTarget) else Path(".")
    history = args.history or default_dir / f"fuzz-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    return asyncio.run(run(target, args, history))
