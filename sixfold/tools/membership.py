"""`sixfold replace` and `sixfold spares`: replacing a dead storage node with a spare (issue 14).

`replace OLD --with NEW` asks the writer to begin the change (writer/replacement.py): the
transitional membership is in force when the command returns from the writer, and the command
then follows the spare's hydration with a progress bar until the change completes (or
reverts), printing how long the new membership took to come into force.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from sixfold import tls
from sixfold.clients import CHANNEL_OPTIONS, NodeClient, WriterClient, call
from sixfold.core.errors import SixfoldError
from sixfold.core.quorum import NODE_AZ
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.tools.status import gather_status, holds_data

POLL_S = 0.25
STATE_TIMEOUT_S = 2.0


def add_replace_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("old", help="the storage node to replace (a member, e.g. a dead one)")
    p.add_argument("--with", dest="new", required=True, help="a spare in the same AZ (a3 b3 c3)")
    p.add_argument(
        "--force",
        action="store_true",
        help="replace OLD even though it is alive and in sync (the volume runs on the other "
        "five meanwhile)",
    )
    p.add_argument(
        "--no-wait", action="store_true", help="return once the change has begun (no progress)"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=600.0,
        help="seconds to follow the hydration before giving up watching (default %(default)g)",
    )


async def begin(writer_address: str, old: str, new: str, force: bool) -> pb.ReplaceResponse:
    channel = tls.aio_channel(writer_address, options=CHANNEL_OPTIONS)
    try:
        stub = pb_grpc.InstanceStub(channel)
        request = pb.ReplaceRequest(old=old, new=new, force=force)
        return await call("the writer", stub.Replace, request, 30.0)
    finally:
        await channel.close()


async def writer_membership(writer_address: str) -> pb.MembershipView:
    client = WriterClient(writer_address)
    try:
        return (await client.state(timeout=STATE_TIMEOUT_S)).membership
    finally:
        await client.close()


async def node_state(name: str, address: str) -> pb.NodeState | None:
    client = NodeClient(name, address)
    try:
        return await client.get_state(timeout=STATE_TIMEOUT_S)
    except SixfoldError:
        return None
    finally:
        await client.close()


async def follow(target: Any, new: str, started: float, timeout_s: float) -> str:
    """Draw the spare's hydration until the writer's membership has no change in progress;
    return how it ended."""
    address = target.nodes[new]
    deadline = time.monotonic() + timeout_s
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%  {task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(f"hydrating {new}", total=1.0, detail="")
        while time.monotonic() < deadline:
            membership = await writer_membership(target.find_writer_address())
            if not membership.change_position and membership.epoch:
                bar.update(task, completed=1.0, detail="")
                holders = list(membership.holders)
                done = "completed" if new in holders else "reverted"
                return (
                    f"membership epoch {membership.epoch} in force {time.monotonic() - started:.1f}"
                    f" s after `replace`: the change {done} ({' '.join(holders)})"
                )
            state = await node_state(new, address)
            if state is not None:
                if state.hydrating_to:
                    total = max(state.page_versions_stored, state.hydrated_pages, 1)
                    fraction = min(state.hydrated_pages / total, 0.99)
                    detail = f"{state.hydrated_bytes / (1 << 20):.1f} MiB copied"
                else:
                    fraction = 0.99 if state.scl else 0.0
                    detail = f"SCL {state.scl}" if state.scl else "starting"
                bar.update(task, completed=fraction, detail=detail)
            await asyncio.sleep(POLL_S)
    raise SixfoldError(
        f"the change was still in progress after {timeout_s:g} s: `sixfold status` follows it"
    )


def spares_rows(status: dict[str, Any]) -> list[str]:
    lines = [f"{'node':<6}{'az':<4}{'up':<6}{'place':<10}{'holds':<28}address"]
    for n in status["nodes"]:
        if n.get("place", "member") == "member":
            continue
        if not n["up"]:
            holds = "-"
        elif holds_data(n):
            holds = f"data (SCL {n['scl']}, {n['page_versions']} versions)"
        else:
            holds = "nothing (ready)"
        lines.append(
            f"{n['name']:<6}{NODE_AZ[n['name']]:<4}{'up' if n['up'] else 'DOWN':<6}"
            f"{n['place']:<10}{holds:<28}{n['address']}"
        )
    return lines


async def spares(target: Any) -> str:
    status = await gather_status(target)
    lines = spares_rows(status)
    if len(lines) == 1:
        return "no spares: `sixfold up --spares 1` starts one per AZ (a3 b3 c3)"
    return "\n".join([*lines, "", status["membership"]["text"]])
