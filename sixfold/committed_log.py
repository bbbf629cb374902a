"""Reading a volume's committed log from its storage nodes: what the backup agent ships to
an object store (issue 15) and the replication agent to a secondary region (issue 16).

Records at or below a durable point the nodes learned are committed, and no recovery ever
truncates them. They are read from one node complete that far that still holds them, with
the reader's read point named to it first: the node's GC then keeps every record above it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

from sixfold.clients import NodeClient
from sixfold.core.errors import SixfoldError
from sixfold.core.hydration import HYDRATE_PAGES_MAX
from sixfold.core.quorum import READ_QUORUM
from sixfold.core.read_point import advance_read_point
from sixfold.core.record import RedoRecord, decode_record
from sixfold.node_calls import page_images_of
from sixfold.rpc import sixfold_pb2 as pb

CALL_TIMEOUT_S = 10.0
# How long the primary's nodes keep an agent's read point (and so the records above it)
# after its last report: a backup or region agent restarted within it resumes where it
# was, and a region seeded waits this long at most for its agent to start. The nodes' log
# grows by what is committed meanwhile (bounded: storage_node READ_POINT_HOLD_S_MAX).
AGENT_READ_POINT_HOLD_S = 900


async def serving_states(
    clients: Sequence[NodeClient], request: pb.GetStateRequest | None = None
) -> dict[str, pb.NodeState]:
    """Each serving node's state; a node down or refusing is left out (anything else is a
    bug, and goes up)."""
    results = await asyncio.gather(
        *(c.get_state(request, timeout=CALL_TIMEOUT_S) for c in clients), return_exceptions=True
    )
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, SixfoldError):
            raise r
    return {
        c.name: r
        for c, r in zip(clients, results, strict=True)
        if isinstance(r, pb.NodeState) and r.serving
    }


def learned_durable_point(states: Mapping[str, pb.NodeState]) -> int | None:
    """The newest VDL a read quorum of the nodes learned, as readers take their read point
    (one node fed a bogus VDL moves nothing); None when fewer than a read quorum report one."""
    learned = [(s.vdl_epoch, s.vdl) for s in states.values() if s.vdl_epoch]
    if len(learned) < READ_QUORUM:
        return None
    return advance_read_point((0, 0), learned)[1]


def log_source(
    clients: Sequence[NodeClient], states: Mapping[str, pb.NodeState], after: int, durable: int
) -> NodeClient | None:
    """A node complete to `durable` that still holds every record above `after`."""
    by_name = {c.name: c for c in clients}
    for name, s in sorted(states.items(), key=lambda kv: -kv[1].scl):
        if s.scl >= durable and s.gc_horizon <= after and name in by_name:
            return by_name[name]
    return None


async def read_committed(
    source: NodeClient,
    after: int,
    durable: int,
    hold: Callable[[NodeClient, int], Awaitable[object]],
    error: type[SixfoldError],
    records_max: int = 0,
) -> list[RedoRecord]:
    """Every record in (`after`, `durable`], or the first ones once `records_max` (0: no
    bound) are read, CRCs checked, checked to form one chain: below the durable point a
    record that does not link to the one before means a hole (collected meanwhile), never
    to be shipped. Raises `error` on a hole or an empty answer."""
    records: list[RedoRecord] = []
    while after < durable and not (records_max and len(records) >= records_max):
        # The read point again before each read: a node forgets one after a while, and its
        # GC would then take records not read yet.
        await hold(source, after)
        response = await source.read_records(
            pb.ReadRecordsRequest(after_lsn=after, through_lsn=durable, max_records=0),
            timeout=CALL_TIMEOUT_S,
        )
        got = [decode_record(r) for r in response.records]  # CRCs checked on the way
        if not got:
            raise error(f"{source.name} sent no records above LSN {after}: retried")
        after = chained(got, after, source.name, error)
        records += got
    return records


def chained(
    records: Sequence[RedoRecord], after: int, source: str, error: type[SixfoldError]
) -> int:
    """The LSN `records` bring the log to from `after`, each checked to link to the one
    before: below a durable point a record that does not means a hole (collected
    meanwhile), never to be shipped. Raises `error` naming `source` otherwise."""
    for record in records:
        if record.prev_volume_lsn != after:
            raise error(
                f"{source}'s record at LSN {record.lsn} links to LSN "
                f"{record.prev_volume_lsn}, not {after}: records are missing"
            )
        after = record.lsn
    return after


async def page_images_at(
    client: NodeClient,
    durable: int,
    min_epoch: int,
    hold: Callable[[NodeClient, int], Awaitable[object]],
) -> AsyncIterator[tuple[list[tuple[int, int, bytes]], bool]]:
    """Every page's image as of `durable` from `client`, in pieces: (page number, LSN of its
    last change, image) each, CRCs checked, and whether it was the last piece."""
    next_page = 0
    while True:
        await hold(client, durable)  # its GC keeps every page as of `durable`
        response = await client.read_page_images(
            pb.ReadPageImagesRequest(
                at_lsn=durable,
                from_page=next_page,
                pages_max=HYDRATE_PAGES_MAX,
                min_epoch=min_epoch,
            ),
            timeout=CALL_TIMEOUT_S,
        )
        images = page_images_of(client.name, response)  # CRCs checked
        next_page = images.next_page
        yield [(p.page_no, p.page_lsn, p.image) for p in images.pages], images.done
        if images.done:
            return
