"""Replacing a storage node with a spare, the writer's side (P18 §2.3; issue 14).

1. The spare and the old node are checked, and the transitional membership planned
   (sixfold/core/membership.py plan_replacement): a refusal changes nothing.
2. It is stored on a write quorum of the old set and on the spare (SetMembership). A later
   recovery reaches 4 of the old set, so it finds the change whatever happens to this writer.
3. The writer ships to all seven nodes; a commit now needs 4 of 6 of both sets.
4. The spare hydrates from its peers (sixfold/core/hydration.py). Once it is complete to the
   durable point of step 1 the change completes: the new membership is stored on a write
   quorum of the new set, and the writer stops shipping to the old node. If the old node
   comes back complete first, the change reverts instead.
A writer that recovers in the middle of a change (sixfold/core/recovery_machine.py finds
it) carries on at step 4.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

from sixfold.clients import NodeClient
from sixfold.core.errors import MembershipError, SixfoldError
from sixfold.core.membership import (
    Membership,
    Spare,
    describe,
    overdue,
    plan_replacement,
    settle,
)
from sixfold.core.quorum import NODE_AZ, WRITE_QUORUM
from sixfold.crash import OPERATING_ERRORS
from sixfold.wire import membership_from_proto, membership_to_proto

if TYPE_CHECKING:
    from writer.writer import Writer

log = logging.getLogger("sixfold.writer")

SETTLE_POLL_S = 0.25
AUTO_REPLACE_POLL_S = 1.0  # how often the writer looks for members down too long  # how often a change in progress checks the new and old nodes' SCLs
STORE_TIMEOUT_S = 3.0


async def begin_replacement(
    writer: Writer, old: str, new: str, force: bool
) -> tuple[Membership, int]:
    """Steps 1-3; returns the transitional membership and the durable point the new node
    must reach. Raises MembershipError, nothing changed, for every refusal."""
    pipeline = writer._ready()
    by_name = {c.name: c for c in writer.clients}
    if new not in by_name:
        known = sorted(set(by_name) - pipeline.log.membership.nodes)
        raise MembershipError(
            f"no storage node named {new!r} is known to this writer (spares: "
            f"{', '.join(known) or 'none; start some with `sixfold up --spares 1`'})"
        )
    spare = await _spare(by_name[new])
    core = pipeline.log
    # Asked, not taken from the writer's view: an idle writer may not have noticed yet.
    old_scl = await _scl(by_name[old]) if old in by_name else None
    old_in_sync = old_scl is not None and old_scl >= core.vdl
    transitional = plan_replacement(core.membership, old, spare, "", old_in_sync, force)
    # A write quorum of the old set is what makes it stick; the spare may learn it later,
    # from its peers' gossip. Stored there, it is in force: ship by it even if this call
    # then fails, or the nodes, which refuse the older epoch, would stop every commit.
    try:
        await store_membership(
            by_name, transitional, transitional.nodes, transitional.old_set, core.epoch
        )
    finally:
        await adopt_newest(writer, by_name)
    if pipeline.log.membership != transitional:
        raise MembershipError(f"{describe(transitional)} was not stored: nothing changed")
    # Taken after the switch: every commit acknowledged by the old rules is at or below it.
    durable_point = pipeline.log.vdl
    log.info("%s; the new node must reach LSN %d", describe(transitional), durable_point)
    writer.start_settling(durable_point, revertible=not force)
    return transitional, durable_point


async def _spare(client: NodeClient) -> Spare:
    """A spare's AZ, and "" for its volume when it holds nothing (else what it holds)."""
    try:
        state = await client.get_state(timeout=STORE_TIMEOUT_S)
    except SixfoldError as exc:
        raise MembershipError(f"spare {client.name} is unreachable: {exc}") from None
    if state.epoch or state.scl or state.records_stored or state.page_versions_stored:
        raise MembershipError(
            f"spare {client.name} already holds data (volume epoch {state.epoch}, SCL "
            f"{state.scl}, {state.records_stored} records, {state.page_versions_stored} page "
            "versions), maybe another volume's: empty its data directory, or use another spare"
        )
    return Spare(client.name, state.az)


async def store_membership(
    by_name: dict[str, NodeClient],
    membership: Membership,
    targets: frozenset[str],
    quorum_set: frozenset[str],
    volume_epoch: int,
    must: str = "",
) -> None:
    """Store `membership` on `targets` in the name of the writer of `volume_epoch` (a node
    sealed at a newer one refuses it): it must reach a write quorum of `quorum_set` (six
    nodes), and `must` if given. Raises MembershipError if not."""
    names = sorted(targets & by_name.keys())
    view = membership_to_proto(membership)
    results = await asyncio.gather(
        *(
            by_name[n].set_membership(view, timeout=STORE_TIMEOUT_S, volume_epoch=volume_epoch)
            for n in names
        ),
        return_exceptions=True,
    )
    stored = {n for n, r in zip(names, results, strict=True) if not isinstance(r, BaseException)}
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, SixfoldError):
            raise r
    if len(stored & quorum_set) < WRITE_QUORUM or (must and must not in stored):
        failed = "; ".join(str(r) for r in results if isinstance(r, BaseException))
        raise MembershipError(
            f"membership epoch {membership.epoch} reached only {', '.join(sorted(stored))}: "
            f"it needs 4 of {', '.join(sorted(quorum_set))}{f' and {must}' if must else ''} "
            f"({failed})"
        )


async def _scl(client: NodeClient) -> int | None:
    """A node's SCL if it answers and serves (None: unreachable or not serving yet)."""
    try:
        state = await client.get_state(timeout=STORE_TIMEOUT_S)
    except SixfoldError:
        return None
    return state.scl if state.serving else None


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
        with contextlib.suppress(MembershipError):
            await _spare(client)
            return client.name
    return None


async def adopt_newest(writer: Writer, by_name: dict[str, NodeClient]) -> None:
    """Ship by the newest membership the nodes know if it is newer than this writer's (a
    change it stored only in part, or one it missed), and settle a change it carries."""
    pipeline = writer.pipeline
    if pipeline is None or pipeline.fenced:
        return
    states = await asyncio.gather(
        *(c.get_state(timeout=STORE_TIMEOUT_S) for c in by_name.values()), return_exceptions=True
    )
    views = [s.membership for s in states if not isinstance(s, BaseException)]
    newest = max(views, key=lambda v: v.epoch, default=None)
    if newest is None or newest.epoch <= pipeline.log.membership.epoch:
        return
    membership = membership_from_proto(newest)
    assert membership is not None
    if not membership.nodes <= by_name.keys():
        raise MembershipError(f"{describe(membership)} names nodes this writer has no address for")
    await pipeline.change_membership(membership, by_name)
    log.info("adopted %s from the nodes", describe(membership))
    if membership.change is not None:
        writer.start_settling(pipeline.log.vdl, revertible=True)


async def settle_change(writer: Writer, durable_point: int, revertible: bool) -> None:
    """Step 4: wait for the new node (or the old one's return), then store the settled
    membership and ship by it. Runs until the change settles or the writer is fenced. The
    outcome, once chosen, is kept: a retry stores the same membership, never the other."""
    by_name = {c.name: c for c in writer.clients}
    settled: Membership | None = None
    while (pipeline := writer.pipeline) is not None and not pipeline.fenced:
        core = pipeline.log
        change = core.membership.change
        if change is None:
            return
        if settled is None:
            # Asked, not taken from acknowledgements: an idle writer sends the nodes nothing.
            new_scl = await _scl(by_name[change.new])
            old_scl = await _scl(by_name[change.old]) if revertible else None
            settled = settle(core.membership, new_scl or 0, old_scl, durable_point)
        if settled is not None:
            try:
                # The node leaving learns it too, if it answers: it is no longer a member.
                targets = settled.nodes | core.membership.nodes
                await store_membership(by_name, settled, targets, settled.old_set, core.epoch)
            except MembershipError as exc:
                log.warning("membership change not settled yet: %s", exc)
            except OPERATING_ERRORS:
                log.exception("membership change not settled yet")
            else:
                if writer.pipeline is not pipeline or pipeline.fenced:
                    return  # deposed meanwhile: the next writer finds the change and settles it
                await pipeline.change_membership(settled, by_name)
                log.info(
                    "%s (the change %s)",
                    describe(settled),
                    "completed" if change.new in settled.holders else "reverted",
                )
                return
        await asyncio.sleep(SETTLE_POLL_S)
