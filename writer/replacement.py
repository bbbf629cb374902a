"""Replacing a storage node with a spare, the writer's side (P18 §2.3; issue 14): the asyncio
shell that drives sixfold/core/replacement.py's machines over the nodes, and automatic
replacement of a node down too long. The steps and their rules are there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sixfold.clients import NodeClient
from sixfold.core.errors import MembershipError
from sixfold.core.membership import Membership, describe, overdue
from sixfold.core.node_requests import GetState
from sixfold.core.quorum import NODE_AZ
from sixfold.core.replacement import Begin, Settle, SwitchMembership, check_spare
from sixfold.core.replacement import adopt_newest as newest_of_nodes
from sixfold.crash import OPERATING_ERRORS
from sixfold.node_calls import CallTimeouts, call, drive

if TYPE_CHECKING:
    from writer.pipeline import CommitPipeline
    from writer.writer import Writer

log = logging.getLogger("sixfold.writer")

SETTLE_POLL_S = 0.25  # how often a change in progress checks the new and old nodes' SCLs
AUTO_REPLACE_POLL_S = 1.0  # how often the writer looks for members down too long
MEMBERSHIP_CALL_TIMEOUTS = CallTimeouts(quick_s=3.0, bulk_s=3.0)
# Beyond the channels' longest reconnect backoff (sixfold/clients.py): a spare just started
# again is not taken for unreachable while its channel waits to redial.
RECONNECT_WAIT_S = 2.0


def _switcher(
    writer: Writer, pipeline: CommitPipeline, by_name: dict[str, NodeClient]
) -> Callable[[SwitchMembership], Awaitable[int | None]]:
    """The machines' local step: ship by the membership; the VDL once it does (None: this
    writer was deposed meanwhile, and the next one finds the change and settles it)."""

    async def switch(step: SwitchMembership) -> int | None:
        if writer.pipeline is not pipeline or pipeline.fenced:
            return None
        await pipeline.change_membership(step.membership, by_name)
        return pipeline.log.vdl

    return switch


async def begin_replacement(
    writer: Writer, old: str, new: str, force: bool
) -> tuple[Membership, int]:
    """Begin replacing `old` with the spare `new`; returns the transitional membership and
    the durable point the new node must reach. Raises MembershipError, nothing changed, for
    every refusal."""
    pipeline = writer._ready()
    by_name = {c.name: c for c in writer.clients}
    core = pipeline.log
    if new not in by_name:
        known = sorted(set(by_name) - core.membership.nodes)
        raise MembershipError(
            f"no storage node named {new!r} is known to this writer (spares: "
            f"{', '.join(known) or 'none; start some with `sixfold up --spares 1`'})"
        )
    if old not in core.membership.holders:
        raise MembershipError(
            f"{old} holds no position in the volume (members: {', '.join(core.membership.holders)})"
        )
    # Only the spare's: a member's channel is kept busy by the appends, and waiting on a dead
    # one would delay every replacement of a dead node by the whole wait.
    await by_name[new].connected(RECONNECT_WAIT_S)
    machine = Begin(core.membership, core.epoch, core.vdl, old, new, force)
    try:
        begun = await drive(
            machine.run(),
            by_name,
            MEMBERSHIP_CALL_TIMEOUTS,
            local=_switcher(writer, pipeline, by_name),
        )
    finally:
        # Stored on some nodes only, it may be in force there: ship by the newest they know,
        # or they, refusing the older epoch, would stop every commit.
        await adopt_newest(writer, by_name)
    log.info("%s; the new node must reach LSN %d", describe(begun.membership), begun.durable_point)
    writer.start_settling(begun.durable_point, revertible=not force)
    return begun.membership, begun.durable_point


async def auto_replace(writer: Writer, after_s: float) -> None:
    """Replace a member unreachable for `after_s` with an empty spare of its AZ, one change at
    a time; runs while this writer is the writer."""
    down_since: dict[str, float] = {}
    while (pipeline := writer.pipeline) is not None and not pipeline.fenced:
        await asyncio.sleep(AUTO_REPLACE_POLL_S)
        core, now = pipeline.log, time.monotonic()
        members = core.membership.holders
        down = {n for n in members if n in core.shippers and not core.shippers[n].reachable}
        down_since = {n: down_since.get(n, now) for n in down}
        if core.membership.change is not None:
            continue
        for old in overdue(down_since, now, after_s):
            spare = await _ready_spare(writer, core.membership, NODE_AZ.get(old, ""))
            if spare is None:
                log.warning(
                    "storage node %s unreachable for %.0f s, but no empty spare in AZ %s: "
                    "not replaced (start one: `sixfold up --spares 1`)",
                    old,
                    now - down_since[old],
                    NODE_AZ.get(old, "?"),
                )
                down_since[old] = now  # said once per interval, not every poll
                continue
            log.info(
                "storage node %s unreachable for %.0f s: replacing it with %s",
                old,
                now - down_since[old],
                spare,
            )
            try:
                await writer.replace(old, spare, force=False)
            except (MembershipError, *OPERATING_ERRORS) as exc:
                log.warning("automatic replacement of %s failed: %s", old, exc)
            break  # one change at a time


async def _ready_spare(writer: Writer, membership: Membership, az: str) -> str | None:
    """An empty node of AZ `az` that takes no part in the volume, if one answers."""
    for client in writer.clients:
        if client.name in membership.nodes or NODE_AZ.get(client.name) != az:
            continue
        with contextlib.suppress(MembershipError, *OPERATING_ERRORS):
            answer = await call(client, GetState(), MEMBERSHIP_CALL_TIMEOUTS)
            check_spare(client.name, answer)
            return client.name
    return None


async def adopt_newest(writer: Writer, by_name: dict[str, NodeClient]) -> None:
    """Ship by the newest membership the nodes know if it is newer than this writer's (a
    change it stored only in part, or one it missed), and settle a change it carries."""
    pipeline = writer.pipeline
    if pipeline is None or pipeline.fenced:
        return
    newest = await drive(
        newest_of_nodes(pipeline.log.membership, list(by_name), frozenset(by_name)),
        by_name,
        MEMBERSHIP_CALL_TIMEOUTS,
        local=_switcher(writer, pipeline, by_name),
    )
    if newest is None:
        return
    log.info("adopted %s from the nodes", describe(newest))
    if newest.change is not None:
        writer.start_settling(pipeline.log.vdl, revertible=True)


async def settle_change(writer: Writer, durable_point: int, revertible: bool) -> None:
    """Wait for the new node (or the old one's return), then store the settled membership
    and ship by it (sixfold/core/replacement.py Settle). Runs until the change settles or the
    writer is fenced."""
    by_name = {c.name: c for c in writer.clients}
    pipeline = writer.pipeline
    if pipeline is None:
        return
    # This writer's choices (its volume epoch's): a later pipeline settles with its own.
    settling = Settle(durable_point, revertible, pipeline.log.settle_choices)
    while writer.pipeline is pipeline and not pipeline.fenced:
        core = pipeline.log
        change = core.membership.change
        if change is None:
            return
        try:
            done = await drive(
                settling.round(core.membership, core.epoch),
                by_name,
                MEMBERSHIP_CALL_TIMEOUTS,
                local=_switcher(writer, pipeline, by_name),
            )
        except MembershipError as exc:
            log.warning("membership change not settled yet: %s", exc)
            done = False
        except OPERATING_ERRORS:
            log.exception("membership change not settled yet")
            done = False
        if done:
            if writer.pipeline is pipeline and not pipeline.fenced:
                settled = pipeline.log.membership
                outcome = "completed" if change.new in settled.holders else "reverted"
                log.info("%s (the change %s)", describe(settled), outcome)
            return
        await asyncio.sleep(SETTLE_POLL_S)
