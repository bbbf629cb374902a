"""`sixfold fuzz`: a Jepsen-style run against a live cluster, checked for linearizability.

Clients run a register workload (per-key read, write, compare-and-set; keys spread over
pages, each an 8-byte slot) through the writer, while a nemesis injects faults. Every
operation is logged as an invoke and then ok / fail / info (outcome unknown) in a JSON-lines
history (format: sixfold/history.py), with the faults as nemesis events. At the end the
cluster is healed, every key is read once more (an acknowledged write lost would show
there), and the history is checked (sixfold/linearizability.py). Every loop is bounded in
time, and traffic goes only to the cluster's own loopback ports or containers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import lmdb

from sixfold import cluster
from sixfold.clients import WriterClient
from sixfold.errors import (
    InvalidRequestError,
    QuorumUnavailableError,
    RecoveryError,
    SixfoldError,
)
from sixfold.history import NEMESIS, Event, write_event
from sixfold.linearizability import Verdict, check_history
from sixfold.quorum import AZS, NODE_NAMES, nodes_in_az
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.targets import ProcessTarget

FUZZ_PAGE_BASE = 2_000_000  # pages used by the workload, away from hand-written ones
KEY_PAGES = 8  # keys are spread over this many pages
SLOT_BYTES = 8  # each key is an 8-byte little-endian int in its page; 0 = never written
VALUES_MAX = 5  # few distinct values, so compare-and-set often succeeds (as Jepsen does)
OP_TIMEOUT_S = 30.0
FAULT_GAP_S = (1.0, 3.0)  # quiet time between faults
FAULT_HOLD_S = (1.0, 4.0)  # how long a fault lasts before it is healed
HEAL_LIMIT_S = 90.0
CHECK_TIME_LIMIT_S = 60.0
NEMESES = ("kill", "pause", "disk", "partition")


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
    if f == "read" or isinstance(exc, InvalidRequestError | RecoveryError):
        return "fail"  # reads change nothing; a recovering writer takes no LSNs
    if isinstance(exc, QuorumUnavailableError) and "outcome is unknown" not in str(exc):
        return "fail"  # refused before it was sent to any node
    return "info"


async def client_loop(
    process: int, target, rec: Recorder, rng: random.Random, keys: int, stop: asyncio.Event
) -> None:
    writer = WriterClient(target.writer_address)
    try:
        while not stop.is_set():
            await one_op(process, writer, rec, rng, keys)
    finally:
        await writer.close()


async def one_op(
    process: int, writer: WriterClient, rec: Recorder, rng: random.Random, keys: int
) -> None:
    key = rng.randrange(keys)
    page, offset = key_location(key)
    f = rng.choice(("read", "read", "write", "cas"))
    value: object = None
    if f == "write":
        value = rng.randrange(1, VALUES_MAX + 1)
    elif f == "cas":
        value = (rng.choice([None, *range(1, VALUES_MAX + 1)]), rng.randrange(1, VALUES_MAX + 1))
    rec.log(process, "invoke", f, key, value)
    try:
        result = await run_op(writer, f, page, offset, value)
    except SixfoldError as exc:
        rec.log(process, outcome_of(f, exc), f, key, value)
        await asyncio.sleep(0.05)  # do not spin against an unavailable cluster
        return
    if f == "read":
        rec.log(process, "ok", f, key, result)
    elif f == "cas" and not result:
        rec.log(process, "fail", f, key, value)
    else:
        rec.log(process, "ok", f, key, value)


async def run_op(writer: WriterClient, f: str, page: int, offset: int, value: object) -> object:
    if f == "read":
        image = (await writer.read_page(page, timeout=OP_TIMEOUT_S)).image
        return decode_value(image[offset : offset + SLOT_BYTES])
    if f == "write":
        change = [_change(page, offset, value)]
        await writer.write_pages(change, timeout=OP_TIMEOUT_S)
        return True
    expected, new = value
    answer = await writer.compare_and_set(
        page, offset, encode_value(expected), encode_value(new), timeout=OP_TIMEOUT_S
    )
    return answer.applied


def _change(page: int, offset: int, value: object) -> pb.PageChange:
    return pb.PageChange(page_no=page, offset=offset, data=encode_value(value))


# -- the nemesis ------------------------------------------------------------------------------


class Nemesis:
    """Injects one fault at a time from the enabled kinds, heals it, waits, repeats."""

    def __init__(self, target, kinds: list[str], rec: Recorder, rng: random.Random) -> None:
        self.target = target
        self.kinds = kinds
        self.rec = rec
        self.rng = rng

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            if await _sleep_or_stop(stop, self.rng.uniform(*FAULT_GAP_S)):
                return
            kind = self.rng.choice(self.kinds)
            await getattr(self, f"_{kind}")(stop)

    async def _hold(self, stop: asyncio.Event) -> None:
        await _sleep_or_stop(stop, self.rng.uniform(*FAULT_HOLD_S))

    async def _kill(self, stop: asyncio.Event) -> None:
        scenario = self.rng.choice(("az", "az+1", "four", "rolling", "writer"))
        if scenario == "writer":
            victims = [cluster.WRITER_NAME]
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

    async def _pause(self, stop: asyncio.Event) -> None:
        victim = [self.rng.choice([*NODE_NAMES, cluster.WRITER_NAME])]
        self._do("pause", victim, "SIGSTOP")
        await self._hold(stop)
        self._do("resume", victim, "SIGCONT")

    async def _disk(self, stop: asyncio.Event) -> None:
        if not isinstance(self.target, ProcessTarget):
            return  # the compose volumes are not reachable from here
        victim = self.rng.choice(NODE_NAMES)
        how = self.rng.choice(("flip", "torn"))
        self._do("kill", [victim], "disk fault")
        await asyncio.sleep(0.2)
        damaged = damage_one(Path(self.target.layout.directory) / victim, how, self.rng)
        self.rec.fault("corrupt", f"{victim} {how} {damaged}")
        self._do("start", [victim], "disk fault")
        await self._hold(stop)

    async def _partition(self, stop: asyncio.Event) -> None:
        raise SixfoldError("the partition nemesis is not implemented yet")

    def _do(self, action: str, names: list[str], why: str) -> None:
        getattr(self.target, action)(names)
        self.rec.fault(action, f"{','.join(names)} ({why})")


def damage_one(data_dir: Path, how: str, rng: random.Random) -> str:
    """Flip a bit in, or tear, one stored record (or page version) of a stopped node."""
    env = lmdb.open(str(data_dir), max_dbs=8)
    try:
        with env.begin(write=True) as txn:
            for name in (b"log", b"versions"):
                db = env.open_db(name, txn=txn)
                keys = [k for k, _ in txn.cursor(db=db)]
                if keys:
                    key = rng.choice(keys)
                    value = bytearray(txn.get(key, db=db))
                    if how == "torn":
                        value = value[: len(value) // 2]
                    else:
                        value[rng.randrange(len(value))] ^= 1 << rng.randrange(8)
                    txn.put(key, bytes(value), db=db)
                    return f"{name.decode()} key {key.hex()}"
    finally:
        env.close()
    return "nothing stored yet"


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    try:
        await asyncio.wait_for(stop.wait(), seconds)
        return True
    except TimeoutError:
        return False


# -- healing and the final reads ----------------------------------------------------------------


async def heal(target, rec: Recorder) -> None:
    names = [*NODE_NAMES, cluster.WRITER_NAME, *cluster.READER_NAMES]
    target.resume(names)
    target.start(names)
    rec.fault("heal", "all started and resumed")
    deadline = time.monotonic() + HEAL_LIMIT_S
    client = WriterClient(target.writer_address)
    try:
        while time.monotonic() < deadline:
            try:
                if (await client.state(timeout=2.0)).status == "accepting writes":
                    return
            except SixfoldError:
                pass
            await asyncio.sleep(0.25)
    finally:
        await client.close()
    raise SixfoldError(f"the writer did not accept writes within {HEAL_LIMIT_S:g} s of healing")


async def final_reads(target, rec: Recorder, keys: int, process: int) -> None:
    writer = WriterClient(target.writer_address)
    try:
        for key in range(keys):
            page, offset = key_location(key)
            rec.log(process, "invoke", "read", key, None)
            try:
                value = await run_op(writer, "read", page, offset, None)
            except SixfoldError:
                rec.log(process, "fail", "read", key, None)
            else:
                rec.log(process, "ok", "read", key, value)
    finally:
        await writer.close()


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
    p.add_argument("--nemesis", type=parse_nemeses, default=["kill", "pause"],
                   help=f"faults to inject, comma-separated from {','.join(NEMESES)} (default kill,pause); "
                   "'none' for a quiet run")  # fmt: skip
    p.add_argument("--seed", type=int, default=None, help="seed for the workload and the nemesis")
    p.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    p.add_argument("--keys", type=int, default=16, help="registers (default 16)")
    p.add_argument(
        "--history", type=Path, default=None, help="history file (default in the cluster dir)"
    )


async def run(target, args: argparse.Namespace, history_path: Path) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10**9)
    kinds = [k for k in args.nemesis if k != "none"]
    if "partition" in kinds:
        raise SixfoldError("the partition nemesis is not implemented yet; use kill,pause,disk")
    history_path.parent.mkdir(parents=True, exist_ok=True)
    with history_path.open("w") as file:
        rec = Recorder(file)
        stop = asyncio.Event()
        clients = [
            asyncio.create_task(
                client_loop(p, target, rec, random.Random(seed * 1000 + p), args.keys, stop)
            )
            for p in range(args.clients)
        ]
        nemesis = (
            asyncio.create_task(Nemesis(target, kinds, rec, random.Random(seed)).run(stop))
            if kinds
            else None
        )
        await asyncio.sleep(args.time)
        stop.set()
        if nemesis:
            await nemesis
        await asyncio.wait(clients, timeout=OP_TIMEOUT_S + 5)
        await heal(target, rec)
        await final_reads(target, rec, args.keys, process=args.clients)
    result = check_history(rec.events, time_limit_s=CHECK_TIME_LIMIT_S)
    report(rec, result, seed, history_path)
    return 0 if result.verdict == Verdict.OK else (1 if result.verdict == Verdict.VIOLATION else 2)


def report(rec: Recorder, result, seed: int, history_path: Path) -> None:
    print(f"seed {seed}")
    print("operations:")
    for (f, kind), n in sorted(rec.outcomes.items()):
        print(f"  {f:<5} {kind:<5} {n}")
    print(f"faults injected: {len(rec.faults)}")
    for fault in Counter(line.split(" ", 1)[0] for line in rec.faults).most_common():
        print(f"  {fault[0]:<8} {fault[1]}")
    print(f"verdict: {result.verdict}")
    for key_result in result.keys:
        if key_result.verdict != Verdict.OK:
            print(f"  key {key_result.key}: {key_result.verdict}")
            if key_result.explanation:
                print(key_result.explanation)
    print(f"history: {history_path}")


def main(target, args: argparse.Namespace, directory: Path) -> int:
    default_dir = directory if isinstance(target, ProcessTarget) else Path(".")
    history = args.history or default_dir / f"fuzz-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    return asyncio.run(run(target, args, history))
