"""Reading a volume's committed log from its storage nodes: what the backup agent ships to
an object store (issue 15) and the replication agent to a secondary region (issue 16).

Records at or below a durable point the nodes learned are committed, and no recovery ever
truncates them. They are read from one node complete that far that still holds them, with
the reader's read point named to it first: the node's GC then keeps every record above it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

from sixfold.clients import NodeClient
from sixfold.core.errors import SixfoldError
from sixfold.core.hydration import HYDRATE_PAGES_MAX
from sixfold.core.record import RedoRecord, decode_record
from sixfold.node_calls import page_images_of
from sixfold.rpc import sixfold_pb2 as pb

CALL_TIMEOUT_S = 10.0


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
) -> list[RedoRecord]:
    """Every record in (`after`, `durable`], CRCs checked, checked to form one chain: below
    the durable point a record that does not link to the one before means a hole (collected
    meanwhile), never to be shipped. Raises `error` on a hole or an empty answer."""
    records: list[RedoRecord] = []
    while after < durable:
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
        for record in got:
            if record.prev_volume_lsn != after:
                raise error(
                    f"{source.name}'s record at LSN {record.lsn} links to LSN "
                    f"{record.prev_volume_lsn}, not {after}: records are missing; retried"
                )
            after = record.lsn
        records += got
    return records


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
