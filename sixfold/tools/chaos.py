"""`sixfold chaos`: the AZ+1 story, told against a running cluster under a steady write load.

1. Kill AZ a (a1, a2): writes go on.
2. Kill b1 as well (AZ+1): writes stop with the quorum error; both readers still answer.
3. Start the three again: they catch up by gossip and writes resume.
4. Kill the writer: a reader takes over.
5. With a spare c3 (`sixfold up --spares 1`): c2's disk is lost for good; c2 is replaced by
   c3 under the load (a membership change, issue 14), then AZ a is killed: writes go on.
Then every acknowledged write is read back. The exit status is non-zero if any was lost.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from sixfold import cluster
from sixfold.clients import NodeClient, NodeDownError, ReaderClient, WriterClient
from sixfold.core.errors import (
    MembershipError,
    NotWriterError,
    QuorumUnavailableError,
    SixfoldError,
    WriterFencedError,
)
from sixfold.core.page import until_nul
from sixfold.core.quorum import NODE_NAMES
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.targets import current_writer_name
from sixfold.tools import membership as membership_tool

CHAOS_PAGES = 32  # the load cycles over this many pages
CHAOS_PAGE_BASE = 1_000_000  # page numbers used, away from pages people write by hand
WRITE_PAUSE_S = 0.02  # between one write's answer and the next write
WRITE_CALL_TIMEOUT_S = 30.0  # longer than the writer's own write timeout
POLL_S = 0.2
AZ_A = ["a1", "a2"]
PLUS_ONE = ["b1"]
LOST, SPARE = "c2", "c3"  # step 5: the node whose disk is lost, and the spare replacing it


@dataclass
class Load:
    """The write load and what came of it."""

    started: float = field(default_factory=time.monotonic)
    acked: dict[int, list[int]] = field(default_factory=dict)  # page -> acknowledged seqs
    acked_count: int = 0
    last_ack: float = field(default_factory=time.monotonic)
    longest_stall_s: float = 0.0
    quorum_errors: int = 0
    writer_errors: int = 0  # refused because the writer was gone or had stepped down
    other_errors: int = 0
    last_error: str = ""
    seq: int = 0

    def note_ack(self, page: int, seq: int) -> None:
        now = time.monotonic()
        self.longest_stall_s = max(self.longest_stall_s, now - self.last_ack)
        self.last_ack = now
        self.acked.setdefault(page, []).append(seq)
        self.acked_count += 1


class Narrator:
    def __init__(self) -> None:
        self.t0 = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.t0:7.2f}s] {text}", flush=True)


async def write_load(target: cluster.Endpoints, load: Load, stop: asyncio.Event) -> None:
    client = WriterClient(await asyncio.to_thread(target.find_writer_address))
    try:
        while not stop.is_set():
            load.seq += 1
            page = CHAOS_PAGE_BASE + load.seq % CHAOS_PAGES
            change = pb.PageChange(page_no=page, data=f"chaos {load.seq}".encode() + b"\0")
            try:
                await client.write_pages([change], timeout=WRITE_CALL_TIMEOUT_S)
            except QuorumUnavailableError as exc:
                load.quorum_errors += 1
                load.last_error = str(exc)
            except (NodeDownError, NotWriterError, WriterFencedError) as exc:
                load.writer_errors += 1  # the writer is gone or stepped down: find the new one
                load.last_error = str(exc)
                await client.close()
                client = WriterClient(await asyncio.to_thread(target.find_writer_address))
            except SixfoldError as exc:
                load.other_errors += 1
                load.last_error = str(exc)
            else:
                load.note_ack(page, load.seq)
            await asyncio.sleep(WRITE_PAUSE_S)
    finally:
        await client.close()


async def wait_until(predicate, limit_s: float, what: str) -> float:
    """Poll `predicate` (async) until true; return the seconds it took."""
    started = time.monotonic()
    while not await predicate():
        if time.monotonic() - started > limit_s:
            raise SixfoldError(f"gave up after {limit_s:g} s waiting for {what}")
        await asyncio.sleep(POLL_S)
    return time.monotonic() - started


async def read_through(target: cluster.Endpoints, reader: str, page: int) -> str:
    client = ReaderClient(target.reader_address(reader), reader)
    try:
        response = await client.read_page(page, timeout=10.0)
    finally:
        await client.close()
    return until_nul(response.image).decode(errors="replace")


async def node_scls(target: cluster.Endpoints) -> dict[str, int]:
    """The SCL of each member of the volume (-1: down); spares are left out."""
    out, memberships = {}, []
    for name, address in target.nodes.items():
        client = NodeClient(name, address)
        try:
            state = await client.get_state(timeout=1.0)
            out[name] = state.scl
            memberships.append(state.membership)
        except SixfoldError:
            out[name] = -1
        finally:
            await client.close()
    newest = max(memberships, key=lambda m: (m.epoch, m.writer_epoch), default=None)
    members = set(newest.holders) if newest and newest.epoch else set(NODE_NAMES)
    return {n: scl for n, scl in out.items() if n in members}


async def complete_through(target: cluster.Endpoints, lsn: int) -> bool:
    """Every member of the volume is complete through `lsn`. (Not "all at one SCL": under the
    steady load the SCLs move between the six calls, and on a loaded machine they were seen
    equal too rarely.)"""
    scls = await node_scls(target)
    return len(scls) == len(NODE_NAMES) and min(scls.values()) >= lsn > 0


async def story(target, args: argparse.Namespace, say: Narrator, load: Load) -> None:
    acks = load.acked_count

    async def acks_grew() -> bool:
        return load.acked_count > acks

    say.say(f"steady write load on {target.label}; waiting for the first acknowledgements")
    await wait_until(acks_grew, args.limit, "the first acknowledged write")
    await asyncio.sleep(args.settle)
    say.say(f"{load.acked_count} writes acknowledged so far")

    say.say(f"1. kill AZ a ({', '.join(AZ_A)})")
    target.kill(AZ_A)
    acks = load.acked_count
    await wait_until(acks_grew, args.limit, "writes with AZ a down")
    await asyncio.sleep(args.settle)
    say.say(f"   writes go on: {load.acked_count - acks} acknowledged with AZ a down")

    say.say(f"2. kill {PLUS_ONE[0]} as well (AZ+1: 3 of 6 nodes left)")
    target.kill(PLUS_ONE)
    errors = load.quorum_errors

    async def quorum_error_seen() -> bool:
        return load.quorum_errors > errors

    took = await wait_until(quorum_error_seen, args.limit, "the quorum error")
    say.say(f"   writes stop after {took:.1f} s: {load.last_error}")
    writer = await asyncio.to_thread(current_writer_name, target)
    for reader in [n for n in cluster.INSTANCE_NAMES if n != writer]:  # roles follow takeovers
        page, seqs = next(iter(load.acked.items()))
        seq = seqs[-1]
        text = await read_through(target, reader, page)
        say.say(
            f"   reads go on: {reader} reads page {page}: {text!r} (acknowledged: 'chaos {seq}' or later)"
        )

    say.say(f"3. start {', '.join(AZ_A + PLUS_ONE)} again")
    restarting = time.monotonic()
    acks = load.acked_count
    target.start(AZ_A + PLUS_ONE)
    await wait_until(acks_grew, args.limit, "writes to resume")
    say.say(f"   writes resume {time.monotonic() - restarting:.1f} s after the restart began")

    newest = max((await node_scls(target)).values())

    async def caught_up() -> bool:
        return await complete_through(target, newest)

    took = await wait_until(caught_up, args.limit, "the restarted nodes to catch up")
    say.say(
        f"   all six nodes complete through the newest LSN when writes resumed, {took:.1f} s "
        "later (caught up by gossip)"
    )
    await asyncio.sleep(args.settle)
    await writer_takeover(target, args, say, load)
    await replace_step(target, args, say, load)


async def replace_step(target, args: argparse.Namespace, say: Narrator, load: Load) -> None:
    """c2's disk is lost for good: replace it with spare c3 under the load, then kill AZ a."""
    if SPARE not in target.nodes:
        say.say(
            f'5. (no spare {SPARE}: `sixfold up --spares 1` or the compose profile "spares" '
            "adds one per AZ; step skipped)"
        )
        return
    say.say(f"5. {LOST}'s disk is lost for good: kill it, remove its data, replace it with {SPARE}")
    target.lose_disk(LOST)
    acks = load.acked_count
    refused = await begin_replacement(target, args.limit)
    if refused is not None:
        say.say(f"   (step skipped: {refused})")
        target.start([LOST])
        return

    async def settled() -> bool:
        address = await asyncio.to_thread(target.find_writer_address)
        m = await membership_tool.writer_membership(address)
        return not m.change_position and SPARE in m.holders

    took = await wait_until(settled, args.limit, f"{SPARE} to hydrate and take {LOST}'s place")
    say.say(
        f"   {SPARE} holds {LOST}'s position {took:.1f} s later; "
        f"{load.acked_count - acks} writes acknowledged meanwhile"
    )
    say.say(f"6. kill AZ a ({', '.join(AZ_A)}): writes go on with {SPARE} in AZ c")
    target.kill(AZ_A)
    acks = load.acked_count

    async def acks_grew() -> bool:
        return load.acked_count > acks

    await wait_until(acks_grew, args.limit, "writes with AZ a down after the replacement")
    say.say(f"   writes go on: {load.acked_count - acks} acknowledged with AZ a down")
    newest = max((await node_scls(target)).values())
    target.start([*AZ_A, LOST])  # LOST comes back empty: a spare now

    async def caught_up() -> bool:
        return await complete_through(target, newest)

    took = await wait_until(caught_up, args.limit, "every position to be complete")
    say.say(
        f"   all six positions complete through the newest LSN at the restart, {took:.1f} s "
        "after it"
    )


async def begin_replacement(target, limit_s: float) -> str | None:
    """Begin replacing LOST with SPARE on the writer; None once begun, else the refusal.

    The writer found may not answer: an instance that has just restarted, or handed the role
    over, a moment ago. Then the writer is looked up and asked again until `limit_s`; a call
    that failed may still have begun the change, which the next call's refusal then names."""
    deadline = time.monotonic() + limit_s
    retried = False
    while True:
        writer = await asyncio.to_thread(target.find_writer_address)
        try:
            await membership_tool.begin(writer, LOST, SPARE, force=False)
            return None
        except MembershipError as exc:
            if retried:
                m = await membership_tool.writer_membership(writer)
                if m.change_position or SPARE in m.holders:
                    return None  # an earlier call began it
            return str(exc)
        except (NodeDownError, NotWriterError):
            if time.monotonic() > deadline:
                raise
            retried = True
            await asyncio.sleep(POLL_S)


async def writer_takeover(target, args: argparse.Namespace, say: Narrator, load: Load) -> None:
    """Kill the writer: a reader takes over and writes go on, with no operator (issue 6)."""
    victim = await asyncio.to_thread(current_writer_name, target)
    say.say(f"4. kill the writer ({victim}) with SIGKILL")
    killed = time.monotonic()
    target.kill([victim])
    successor = ""

    async def taken_over() -> bool:
        nonlocal successor
        with contextlib.suppress(SixfoldError):
            successor = await asyncio.to_thread(current_writer_name, target)
        return successor not in ("", victim)

    await wait_until(taken_over, args.limit, "a reader to take over")
    acks = load.acked_count

    async def acks_grew() -> bool:
        return load.acked_count > acks

    await wait_until(acks_grew, args.limit, "writes through the new writer")
    took = time.monotonic() - killed
    say.say(f"   {successor} took over: writes resume {took:.1f} s after the kill")
    target.start([victim])
    say.say(f"   {victim} started again: it rejoins as a reader")
    await asyncio.sleep(args.settle)


async def verify(target: cluster.Endpoints, load: Load) -> tuple[int, int]:
    """(acknowledged writes verified present, lost), reading each page back.

    Writes to a page are sequential, so an acknowledged write is present when its page
    shows it or a later write (a later write whose outcome was unknown may have landed).
    """
    client = WriterClient(target.find_writer_address())
    verified = lost = 0
    try:
        for page, seqs in load.acked.items():
            response = await client.read_page(page, timeout=10.0)
            text = until_nul(response.image).decode(errors="replace")
            shown = int(text.removeprefix("chaos ")) if text.startswith("chaos ") else 0
            verified += sum(1 for seq in seqs if seq <= shown)
            lost += sum(1 for seq in seqs if seq > shown)
    finally:
        await client.close()
    return verified, lost


async def run(target, args: argparse.Namespace) -> int:
    say = Narrator()
    load = Load()
    stop = asyncio.Event()
    writer_task = asyncio.create_task(write_load(target, load, stop))
    try:
        await story(target, args, say, load)
    except SixfoldError as exc:
        say.say(f"chaos run failed: {exc}")
        return_code = 1
    else:
        return_code = 0
    finally:
        stop.set()
        await asyncio.wait_for(writer_task, WRITE_CALL_TIMEOUT_S + 5)
        target.start([*AZ_A, *PLUS_ONE, *cluster.INSTANCE_NAMES])
    verified, lost = await verify(target, load)
    print()
    print("summary")
    print(f"  acknowledged writes                 : {load.acked_count}")
    print(f"  verified present after recovery     : {verified}")
    print(f"  lost                                : {lost}")
    print(f"  refused with the quorum error       : {load.quorum_errors}")
    print(f"  refused while the writer changed    : {load.writer_errors}")
    print(f"  other write errors                  : {load.other_errors}")
    print(f"  longest write stall                 : {load.longest_stall_s:.2f} s")
    return 1 if lost else return_code


def run_chaos(target, args: argparse.Namespace) -> int:
    return asyncio.run(run(target, args))
