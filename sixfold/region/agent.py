"""The replication agent of a secondary region: pulls the primary's committed log from the
primary's storage nodes and appends it to the secondary's, at the same 4-of-6 quorum
(sixfold/core/replication.py has the rules).

Each round it asks the secondary's nodes where they are (it resumes from there after any
break: nothing of its own is kept), the primary's nodes their durable point (naming itself
with what it has shipped as its read point, so their GC keeps every record above it), takes
the records in between from the link (one compressed FollowLog stream from a primary node,
sixfold/region/follower.py), and appends them chunk by chunk, each chunk ending at a commit. A chunk a write quorum stored is durable in the secondary, and the
agent announces its end as the secondary's VDL, the point its readers read at.

The primary's writer never waits for this: a slow or cut-off secondary only lags.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from pathlib import Path

from sixfold.clients import NodeClient
from sixfold.committed_log import (
    AGENT_READ_POINT_HOLD_S,
    learned_durable_point,
    log_source,
    serving_states,
)
from sixfold.core.errors import RegionError, RegionFencedError, SixfoldError, StaleEpochError
from sixfold.core.quorum import READ_QUORUM, WRITE_QUORUM
from sixfold.core.record import RedoRecord
from sixfold.core.replication import (
    Lag,
    RegionStatus,
    SecondaryNode,
    agent_owner,
    chunks,
    epoch_to_seal,
    resume_point,
    secondary_durable,
)
from sixfold.region.follower import LogFollower
from sixfold.rpc import sixfold_pb2 as pb

log = logging.getLogger("sixfold.region")

CALL_TIMEOUT_S = 5.0
# A round at most this often: each asks every primary node its state (the durable point a
# read quorum learned, and the agent's read point held), which costs the primary's nodes
# CPU their writer wants; the link streams the records in between.
ROUND_INTERVAL_S = 0.05
# The secondary's nodes are asked their state this often (and after any failed round):
# between, the appends' answers say what the agent needs.
SECONDARY_CHECK_S = 1.0
# Records one round reads from the primary (then the next round goes on): an agent far
# behind holds this many in memory, not the whole backlog.
ROUND_RECORDS_MAX = 20_000
RETRY_S = 0.5  # after a failed round
# How long a round waits for the link to bring the records up to the primary's durable
# point (the node it follows may learn that point a moment after a read quorum did).
FOLLOW_WAIT_S = 0.2
STATUS_EVERY_S = 0.5  # how often the status file is rewritten


class ReplicationAgent:
    def __init__(
        self,
        region: str,
        primary: list[NodeClient],
        secondary: list[NodeClient],
        status_path: Path | None = None,
    ) -> None:
        self.region = region
        self.primary = primary
        self.secondary = secondary
        self.status_path = status_path
        self.owner = agent_owner(region)
        self.lag = Lag()
        self.epoch = 0  # the epoch it appends at: the primary's, sealed on the secondary
        self.shipped = 0  # the secondary's durable point: every record to it is on 4 nodes
        self.error = ""
        self.fenced = False
        self._status_at = 0.0
        self.follower = LogFollower(self.owner)
        self._nodes: dict[str, SecondaryNode] = {}  # the secondary's nodes, as last asked
        self._nodes_at: float | None = None  # when (monotonic), None: ask again

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until `stop` is set, or the region is found promoted (fenced)."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            started = loop.time()
            try:
                await self.round()
                self.error = ""
                pause = ROUND_INTERVAL_S - (loop.time() - started)
            except RegionFencedError as exc:
                self.error, self.fenced = str(exc), True
                log.error("region %s: %s", self.region, exc)
                self.write_status(force=True)
                return
            except SixfoldError as exc:
                if str(exc) != self.error:
                    log.warning("region %s: round failed, retrying: %s", self.region, exc)
                self.error = str(exc)
                self._nodes_at = None  # ask the secondary's nodes afresh
                pause = RETRY_S
            self.write_status()
            if pause > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), pause)

    async def round(self) -> int:
        """Ship what became durable on the primary since the last round; records shipped."""
        if not self.shipped:  # started: where the region is, before naming a read point
            self.shipped = resume_point(list((await self._secondary_nodes()).values()))
        # The primary before the region: its progress counts towards the lag even while the
        # region can take nothing. Its read point is what the region holds (never 0, which
        # would let go of the records the agent has yet to ship).
        primary, durable, primary_epoch = await self._primary(self.shipped)
        self.lag.saw_primary(durable, time.time())
        nodes = await self._secondary_view()
        self.shipped = max(self.shipped, resume_point(list(nodes.values())))
        wanted = epoch_to_seal(primary_epoch, list(nodes.values()), self.region)
        if wanted or not self.epoch:
            await self._seal(max(wanted, primary_epoch))
        if durable <= self.shipped:
            self.lag.replicated(self.shipped, 0, time.time())
            await self._announce(nodes)
            return 0
        source = self._source(primary, durable)
        records = await self.follower.records(
            source, self.shipped, durable, ROUND_RECORDS_MAX, FOLLOW_WAIT_S
        )
        shipped = 0
        for chunk in chunks(records):
            newest = max(r.epoch for r in chunk)
            if newest > self.epoch:  # the primary took over since its state was read
                await self._seal(newest)
            await self._append(chunk)
            self.shipped = chunk[-1].lsn
            shipped += len(chunk)
            self.lag.replicated(self.shipped, len(chunk), time.time())
        await self._announce(nodes, every=shipped > 0)
        return shipped

    # -- the primary ------------------------------------------------------------------------------

    async def _primary(self, read_point: int) -> tuple[dict[str, pb.NodeState], int, int]:
        """The primary's serving nodes' states, its durable point (a VDL a read quorum of its
        nodes learned, as readers take theirs) and its epoch."""
        request = pb.GetStateRequest(
            reader=self.owner, read_point=read_point, read_point_hold_s=AGENT_READ_POINT_HOLD_S
        )
        states = await serving_states(self.primary, request)
        durable = learned_durable_point(states)
        if durable is None:
            raise RegionError(
                f"fewer than {READ_QUORUM} primary storage nodes report a durable point: "
                "nothing shipped"
            )
        return states, durable, max(s.epoch for s in states.values())

    def _source(self, states: dict[str, pb.NodeState], durable: int) -> NodeClient:
        """The primary node the link follows: the one it follows now while that still
        serves and holds every record above what the region has (no needless re-opening),
        else one complete to `durable` that holds them."""
        current = self.follower.source
        state = states.get(current.name) if current is not None else None
        if current is not None and state is not None and state.gc_horizon <= self.shipped:
            return current
        source = log_source(self.primary, states, self.shipped, durable)
        if source is None:
            raise RegionError(
                f"no primary node still holds the records above LSN {self.shipped} (the agent "
                f"was away longer than the primary keeps them): remove region {self.region} "
                "and add it again"
            )
        return source

    # -- the secondary ----------------------------------------------------------------------------

    async def _secondary_view(self) -> dict[str, SecondaryNode]:
        """The secondary's nodes as asked within SECONDARY_CHECK_S, else asked now."""
        now = time.monotonic()
        if self._nodes_at is None or now - self._nodes_at >= SECONDARY_CHECK_S:
            self._nodes, self._nodes_at = await self._secondary_nodes(), now
        return self._nodes

    async def _secondary_nodes(self) -> dict[str, SecondaryNode]:
        states = await serving_states(self.secondary, pb.GetStateRequest())
        if len(states) < WRITE_QUORUM:
            raise RegionError(
                f"only {len(states)} of the secondary's storage nodes answer, {WRITE_QUORUM} "
                "needed to replicate: start them (`sixfold start`)"
            )
        return {
            name: SecondaryNode(
                name, s.epoch, s.epoch_owner, s.scl, s.cpl_at_scl, s.vdl, s.vdl_epoch
            )
            for name, s in states.items()
        }

    async def _seal(self, epoch: int) -> None:
        """Seal `epoch` on the secondary's nodes as the agent. A node takes appends of an
        epoch only with a truncation set of it: each keeps its own ranges (none on a seeded
        region; a former primary's, which cancel what its dead writers left), at `epoch`."""

        async def seal(client: NodeClient) -> None:
            try:
                state = await client.seal(epoch, self.owner, timeout=CALL_TIMEOUT_S)
            except StaleEpochError:
                # A node can hold the epoch with no owner: learnt from a peer's truncation
                # set by gossip. It takes the agent's appends as it is; anything else at or
                # above the epoch means the region was promoted.
                state = await client.get_state(timeout=CALL_TIMEOUT_S)
                held = SecondaryNode(client.name, state.epoch, state.epoch_owner, 0, 0, 0)
                epoch_to_seal(epoch, [held], self.region)
            version = max(epoch, state.truncations_version)
            request = pb.TruncateRequest(
                epoch=epoch, ranges=state.truncations, truncations_version=version
            )
            await client.truncate(request, timeout=CALL_TIMEOUT_S)

        results = await asyncio.gather(*(seal(c) for c in self.secondary), return_exceptions=True)
        _raise_bugs(results)
        for r in results:
            if isinstance(r, RegionFencedError):
                raise r
        sealed = sum(1 for r in results if not isinstance(r, BaseException))
        if sealed < WRITE_QUORUM:
            errors = "; ".join(str(r) for r in results if isinstance(r, BaseException))
            raise RegionError(
                f"sealed epoch {epoch} on {sealed} secondary nodes, {WRITE_QUORUM} needed: {errors}"
            )
        if epoch != self.epoch:
            log.info("region %s: appending at epoch %d", self.region, epoch)
        self.epoch = epoch
        self._nodes_at = None  # their epochs moved: ask them again next round

    async def _append(self, chunk: list[RedoRecord]) -> None:
        """Append `chunk` to every secondary node; durable once a write quorum stored it."""
        request = pb.AppendRequest(
            epoch=self.epoch, records=[r.encoded for r in chunk], vdl=self.shipped
        )
        results = await asyncio.gather(
            *(c.append(request, timeout=CALL_TIMEOUT_S) for c in self.secondary),
            return_exceptions=True,
        )
        _raise_bugs(results)
        for r in results:
            if isinstance(r, StaleEpochError):  # sealed newer meanwhile: promoted
                raise RegionFencedError(f"a secondary node refused the agent's epoch: {r}")
        scls = [r.scl for r in results if isinstance(r, pb.AppendResponse)]
        if not secondary_durable(scls, chunk[-1].lsn):
            errors = "; ".join(str(r) for r in results if isinstance(r, BaseException))
            raise RegionError(
                f"LSNs to {chunk[-1].lsn} reached {len(scls)} secondary nodes' logs, complete "
                f"on fewer than {WRITE_QUORUM}: retried ({errors or 'gaps being filled'})"
            )

    async def _announce(self, nodes: dict[str, SecondaryNode], every: bool = False) -> None:
        """The secondary's VDL to each node that has not learned it at the agent's epoch (to
        every node answering, after appends): readers move to it, and learn the epoch from
        it even at VDL 0."""
        point = (self.epoch, self.shipped)
        behind = [
            c
            for c in self.secondary
            if c.name in nodes and (every or (nodes[c.name].vdl_epoch, nodes[c.name].vdl) < point)
        ]
        request = pb.AppendRequest(epoch=self.epoch, vdl=self.shipped)
        results = await asyncio.gather(
            *(c.append(request, timeout=CALL_TIMEOUT_S) for c in behind), return_exceptions=True
        )
        _raise_bugs(results)
        for client, result in zip(behind, results, strict=True):
            if isinstance(result, pb.AppendResponse):  # learned it: not behind next round
                nodes[client.name] = dataclasses.replace(
                    nodes[client.name], vdl=self.shipped, vdl_epoch=self.epoch
                )

    # -- status -----------------------------------------------------------------------------------

    def status(self) -> RegionStatus:
        now = time.time()
        return RegionStatus(
            region=self.region,
            primary_durable=self.lag.primary,
            durable=self.shipped,
            lag_lsns=self.lag.lsns(),
            lag_s=round(self.lag.seconds(now), 3),
            rate=round(self.lag.rate(now), 1),
            epoch=self.epoch,
            fenced=self.fenced,
            error=self.error,
            updated_at=now,
        )

    def write_status(self, force: bool = False) -> None:
        """The status file `sixfold global status` reads, written atomically."""
        now = time.monotonic()
        if self.status_path is None or (not force and now - self._status_at < STATUS_EVERY_S):
            return
        self._status_at = now
        tmp = self.status_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self.status()), indent=2))
        tmp.replace(self.status_path)

    async def close(self) -> None:
        await self.follower.close()
        for c in [*self.primary, *self.secondary]:
            await c.close()


def _raise_bugs(results: list[object]) -> None:
    """Operating errors (a node down, a refusal) are counted by the caller; anything else
    is a bug and goes up."""
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, SixfoldError):
            raise r
