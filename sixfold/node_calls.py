"""The asyncio shell that runs a sans-I/O machine over the storage nodes' gRPC API.

Machines (sixfold/core/recovery_machine.py, sixfold/core/page_read.py) yield `{node: request}` with
the typed requests of sixfold/core/node_requests.py. `drive` sends each step's requests at once,
each as a gRPC call with a deadline, and sends the machine back the answers in the core's
types, or the operating error a call ended with. Anything else (a bug, a cancellation) is
raised, never handed to a machine as a node's answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

from sixfold.clients import NodeClient
from sixfold.core.checksum import crc32c
from sixfold.core.errors import CorruptPageImageError, SixfoldError
from sixfold.core.hydration import HydratedPage, PageImages
from sixfold.core.node_requests import (
    Append,
    GetPage,
    GetState,
    NodeRequest,
    ReadPageImages,
    ReadRecords,
    Seal,
    SetMembership,
    Truncate,
)
from sixfold.core.page_read import PageImage
from sixfold.core.record import decode_record
from sixfold.core.recovery import SegmentReport
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.wire import (
    membership_or_none,
    membership_to_proto,
    ranges_from_proto,
    ranges_to_proto,
)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CallTimeouts:
    quick_s: float  # GetState, Seal, GetPage
    bulk_s: float  # Truncate, ReadRecords, Append: they move more


def report_of(state: pb.NodeState) -> SegmentReport:
    return SegmentReport(
        name=state.name,
        epoch=state.epoch,
        scl=state.scl,
        cpl_at_scl=state.cpl_at_scl,
        highest_lsn=state.highest_lsn,
        truncations=ranges_from_proto(state.truncations),
        truncations_version=state.truncations_version,
        epoch_owner=state.epoch_owner,
        serving=state.serving,
        repair_floor=state.repair_floor,
        coalesced_through=state.coalesced_through,
        gc_horizon=state.gc_horizon,
        membership=membership_or_none(state.membership),
        records_stored=state.records_stored,
        page_versions_stored=state.page_versions_stored,
    )


async def drive(
    steps: Generator[Any, Any, T],
    by_name: dict[str, NodeClient],
    timeouts: CallTimeouts,
    after_step: Callable[[], None] | None = None,
    local: Callable[[Any], Awaitable[object]] | None = None,
) -> T:
    """Run `steps` to its end over the nodes in `by_name`; return what it returns. A step
    that is not `{node: request}` is the caller's own to carry out (`local`), such as a
    gossip round's store of what it fetched."""
    answers: object = None
    try:
        while True:
            step = steps.send(answers)
            if isinstance(step, dict):
                answers = await ask(by_name, step, timeouts)
            else:
                assert local is not None, f"no local step expected: {step!r}"
                answers = await local(step)
            if after_step is not None:
                after_step()
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def ask(
    by_name: dict[str, NodeClient], requests: dict[str, NodeRequest], timeouts: CallTimeouts
) -> dict[str, Any]:
    names = list(requests)
    results = await asyncio.gather(
        *(call(by_name[n], requests[n], timeouts) for n in names), return_exceptions=True
    )
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, SixfoldError):
            raise result
    return dict(zip(names, results, strict=True))


async def call(client: NodeClient, request: NodeRequest, timeouts: CallTimeouts) -> object:
    """One request as a gRPC call; its answer in the core's types."""
    if isinstance(request, GetState):
        asked = pb.GetStateRequest(reader=request.reader, read_point=request.read_point)
        return report_of(await client.get_state(asked, timeout=timeouts.quick_s))
    if isinstance(request, Seal):
        return report_of(
            await client.seal(
                request.epoch, request.owner, timeouts.quick_s, request.membership_epoch
            )
        )
    if isinstance(request, GetPage):
        response = await client.get_page(
            pb.GetPageRequest(
                page_no=request.page_no,
                lsn=request.lsn,
                min_epoch=request.min_epoch,
                membership_epoch=request.membership_epoch,
            ),
            timeout=timeouts.quick_s,
        )
        return PageImage(response.image, response.page_lsn, response.scl)
    if isinstance(request, Truncate):
        message = pb.TruncateRequest(
            epoch=request.epoch,
            ranges=ranges_to_proto(request.ranges, pb.TruncationRange),
            truncations_version=request.version,
            membership_epoch=request.membership_epoch,
        )
        return report_of(await client.truncate(message, timeout=timeouts.bulk_s))
    if isinstance(request, ReadRecords):
        response = await client.read_records(
            pb.ReadRecordsRequest(
                after_lsn=request.after_lsn,
                through_lsn=request.through_lsn,
                max_records=request.records_max,
                page_no=request.page_no,
                membership_epoch=request.membership_epoch,
            ),
            timeout=timeouts.bulk_s,
        )
        return tuple(decode_record(r) for r in response.records)  # CRCs checked on the way
    if isinstance(request, Append):
        message = pb.AppendRequest(
            epoch=request.epoch,
            records=[r.encoded for r in request.records],
            vdl=request.vdl,
            membership_epoch=request.membership_epoch,
        )
        return (await client.append(message, timeout=timeouts.bulk_s)).scl
    if isinstance(request, SetMembership):
        view = membership_to_proto(request.membership)
        state = await client.set_membership(view, timeouts.quick_s, request.volume_epoch)
        return report_of(state)
    if isinstance(request, ReadPageImages):
        response = await client.read_page_images(
            pb.ReadPageImagesRequest(
                at_lsn=request.at_lsn,
                from_page=request.from_page,
                pages_max=request.pages_max,
                min_epoch=request.min_epoch,
            ),
            timeout=timeouts.bulk_s,
        )
        return page_images_of(client.name, response)
    raise AssertionError(f"no call for {request!r}")


def page_images_of(source: str, response: pb.ReadPageImagesResponse) -> PageImages:
    """A ReadPageImages answer in the core's types, each image's CRC32C checked first."""
    for p in response.pages:
        if crc32c(p.image) != p.crc32c:
            raise CorruptPageImageError(
                f"{source} sent page {p.page_no}'s image with a bad CRC32C: not stored"
            )
    pages = tuple(HydratedPage(p.page_no, p.page_lsn, p.image) for p in response.pages)
    return PageImages(pages, response.next_page, response.done, response.page_versions_stored)
