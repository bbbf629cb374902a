"""The StorageNode gRPC service: a thin adapter from protobuf to the node runtime."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time

import grpc

from sixfold.core.checksum import crc32c
from sixfold.core.errors import (
    CorruptRecordError,
    InvalidRequestError,
    SixfoldError,
    WatchersFullError,
)
from sixfold.core.membership import Membership, check_member, check_request_epoch
from sixfold.core.record import PAGE_SIZE_BYTES
from sixfold.core.topology import INSTANCE_SEEN_TTL_S, parse_owner
from sixfold.frames import StreamContext
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.wire import (
    abort,
    membership_from_proto,
    membership_to_proto,
    ranges_from_proto,
    ranges_to_proto,
)
from storage_node.append_stream import serve_append_stream
from storage_node.checks import check_numbers, check_owner, check_registration, check_vdl
from storage_node.follow_log import LogFollowers
from storage_node.node import StorageNode
from storage_node.store import FORMAT_VERSION

log = logging.getLogger("sixfold.storage_node")

WATCHERS_MAX = 64  # concurrent WatchState streams; more are refused (RESOURCE_EXHAUSTED)
WATCH_COALESCE_S = 0.01  # at most one state message per watcher per interval
# Gossip marks a node serving without signalling the runtime: a quiet watch looks again
# this often, and sends only if something it carries changed.
WATCH_RECHECK_S = 0.25

INSTANCES_MAX = 64  # instances a node lists in the topology


def node_state(node: StorageNode, counts: bool = True) -> pb.NodeState:
    """The node's state; without the stored counts (an LMDB read) when `counts` is False,
    as in the watch stream, which sends it up to 100 times a second to each watcher."""
    st, hydration = node.state, node.hydration
    records, versions = node.store.counts() if counts else (0, 0)
    return pb.NodeState(
        name=node.name,
        az=node.az,
        epoch=st.epoch,
        epoch_owner=st.epoch_owner,
        scl=st.scl,
        cpl_at_scl=st.completeness.cpl_at_scl,
        highest_lsn=st.completeness.highest_lsn,
        vdl=st.vdl,
        vdl_epoch=st.vdl_epoch,
        truncations=ranges_to_proto(st.truncations, pb.TruncationRange),
        truncations_version=st.truncations_version,
        repair_floor=node.repair_floor,
        format_version=FORMAT_VERSION,
        serving=st.serving,
        min_read_point=node.min_read_point(time.monotonic()),
        records_stored=records,
        page_versions_stored=versions,
        coalesced_through=node.coalesced_through,
        gc_horizon=node.gc_horizon,
        hydrating_to=hydration.target_lsn if hydration else 0,
        hydrated_pages=hydration.pages_done if hydration else 0,
        hydrated_bytes=hydration.bytes_done if hydration else 0,
        membership=_membership_view(node.membership),
        volume_id=node.volume_id,
        frame_port=node.frame_port,
    )


@functools.lru_cache(maxsize=4)
def _membership_view(membership: Membership) -> pb.MembershipView:
    """Built once per membership, not per state message (the watch sends up to 100 a second
    to each watcher). Never changed by its callers: a message field copies it."""
    return membership_to_proto(membership)


def watch_key(node: StorageNode) -> tuple[int, ...]:
    """What a watcher acts on: a new message is sent only when some of it changed."""
    st = node.state
    return (
        st.epoch,
        st.scl,
        st.vdl_epoch,
        st.vdl,
        st.truncations_version,
        int(st.serving),
        node.membership.epoch,
    )


class InstancesSeen:
    """Instances that reported to this node lately: the topology's list (soft state only)."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[pb.GetStateRequest, float]] = {}

    def note(self, request: pb.GetStateRequest, now: float) -> None:
        if request.address and (request.reader in self.seen or len(self.seen) < INSTANCES_MAX):
            self.seen[request.reader] = (request, now)

    def views(self, now: float) -> list[pb.InstanceView]:
        self.seen = {n: v for n, v in self.seen.items() if now - v[1] <= INSTANCE_SEEN_TTL_S}
        return [
            pb.InstanceView(
                name=r.reader,
                address=r.address,
                role=r.role or "reader",
                read_point=r.read_point,
                seen_s_ago=now - seen,
                client_address=r.client_address or r.address,
            )
            for r, seen in self.seen.values()
        ]


class NodeTopologyService(pb_grpc.TopologyServiceServicer):
    """This node's view: the owner of its epoch is the writer as far as it knows."""

    def __init__(self, node: StorageNode, instances: InstancesSeen) -> None:
        self.node = node
        self.instances = instances

    async def GetTopology(self, request: pb.GetTopologyRequest, context):
        st = self.node.state
        owner = parse_owner(st.epoch_owner)
        answer = pb.Topology(
            epoch=st.epoch,
            writer_name=owner.name,
            writer_address=owner.address,
            answered_by=self.node.name,
        )
        for view in self.instances.views(time.monotonic()):
            answer.instances.append(view)
            if view.name == owner.name:
                answer.writer_client_address = view.client_address
        return answer


class StorageNodeService(pb_grpc.StorageNodeServicer):
    def __init__(self, node: StorageNode, instances: InstancesSeen | None = None) -> None:
        self.node = node
        self.watchers = 0
        self.followers = LogFollowers(node)
        self.instances = instances or InstancesSeen()

    async def Append(self, request: pb.AppendRequest, context: grpc.aio.ServicerContext):
        node = self.node
        try:
            check_request_epoch(node.membership, request.membership_epoch, "append")
            check_member(node.membership, node.name, request.membership_epoch, "append")
            if not request.records:
                scl = node.announce(request.epoch, request.vdl)
                return pb.AppendResponse(scl=scl, epoch=node.state.epoch)
            node.state.check_current(request.epoch, "append")
            check_vdl(node.state, request.vdl)
            records = node.decode_batch(list(request.records), request.epoch)
            scl = await node.append(request.epoch, records, request.vdl)
        except SixfoldError as exc:
            await abort(context, exc)
        except Exception as exc:  # e.g. LMDB map full: reported, nothing acknowledged
            await abort(context, exc)
        return pb.AppendResponse(scl=scl, epoch=node.state.epoch)

    async def AppendStream(self, requests: object, context: grpc.aio.ServicerContext) -> None:
        await serve_append_stream(self.node, context)

    async def ReadRecords(self, request: pb.ReadRecordsRequest, context):
        page_no = request.page_no if request.HasField("page_no") else None
        try:
            check_numbers(
                after_lsn=request.after_lsn, through_lsn=request.through_lsn, page_no=page_no or 0
            )
            check_request_epoch(self.node.membership, request.membership_epoch, "read")
            records = self.node.read_records(
                request.after_lsn, request.through_lsn, request.max_records, page_no
            )
        except CorruptRecordError as exc:
            await abort(context, exc, grpc.StatusCode.DATA_LOSS)
        except SixfoldError as exc:
            await abort(context, exc)
        st = self.node.state
        return pb.ReadRecordsResponse(
            records=[r.encoded for r in records],
            scl=st.scl,
            epoch=st.epoch,
            gc_horizon=self.node.gc_horizon,
        )

    async def GetPage(self, request: pb.GetPageRequest, context):
        try:
            check_numbers(page_no=request.page_no, lsn=request.lsn, min_epoch=request.min_epoch)
            check_request_epoch(self.node.membership, request.membership_epoch, "page read")
            with self.node.metrics.page_reads.time():
                image, page_lsn = self.node.page_at(request.page_no, request.lsn, request.min_epoch)
        except CorruptRecordError as exc:
            await abort(context, exc, grpc.StatusCode.DATA_LOSS)
        except SixfoldError as exc:
            await abort(context, exc)
        assert len(image) == PAGE_SIZE_BYTES
        return pb.GetPageResponse(image=image, page_lsn=page_lsn, scl=self.node.state.scl)

    async def SetMembership(self, request: pb.SetMembershipRequest, context):
        """Adopt a newer membership (issue 14): stored before the answer; older refused."""
        try:
            membership = membership_from_proto(request.membership)
            if membership is None:
                raise InvalidRequestError("SetMembership without a membership (epoch 0)")
            await self.node.set_membership(membership, request.epoch)
        except SixfoldError as exc:
            await abort(context, exc)
        return node_state(self.node)

    async def ReadPageImages(self, request: pb.ReadPageImagesRequest, context):
        """Page images for a hydrating peer (sixfold/core/hydration.py), each with its CRC."""
        try:
            check_numbers(
                at_lsn=request.at_lsn, from_page=request.from_page, min_epoch=request.min_epoch
            )
            check_request_epoch(self.node.membership, request.membership_epoch, "hydration")
            pages, next_page, done = await asyncio.to_thread(
                self.node.page_images,
                request.at_lsn,
                request.from_page,
                request.pages_max,
                request.min_epoch,
            )
        except CorruptRecordError as exc:
            await abort(context, exc, grpc.StatusCode.DATA_LOSS)
        except SixfoldError as exc:
            await abort(context, exc)
        return pb.ReadPageImagesResponse(
            pages=[
                pb.PageImageEntry(page_no=p, page_lsn=lsn, image=image, crc32c=crc32c(image))
                for p, lsn, image in pages
            ],
            next_page=next_page,
            done=done,
            page_versions_stored=self.node.store.counts()[1],
        )

    async def GetState(self, request: pb.GetStateRequest, context):
        now = time.monotonic()
        if request.reader:
            try:
                check_registration(
                    request.reader,
                    request.role,
                    request.address,
                    request.client_address,
                    request.read_point,
                )
            except SixfoldError as exc:
                await abort(context, exc)
            self.node.note_read_point(
                request.reader, request.read_point, now, request.read_point_hold_s
            )
            self.instances.note(request, now)
        state = node_state(self.node)
        state.instances.extend(self.instances.views(now))
        return state

    async def SealEpoch(self, request: pb.SealEpochRequest, context):
        try:
            check_numbers(epoch=request.epoch)
            check_owner(request.owner)
            check_request_epoch(self.node.membership, request.membership_epoch, "seal")
            check_member(self.node.membership, self.node.name, request.membership_epoch, "seal")
            await self.node.seal(request.epoch, request.owner)
        except SixfoldError as exc:
            await abort(context, exc)
        return node_state(self.node)

    async def Truncate(self, request: pb.TruncateRequest, context):
        try:
            check_numbers(epoch=request.epoch, truncations_version=request.truncations_version)
            check_request_epoch(self.node.membership, request.membership_epoch, "truncation")
            node = self.node
            check_member(node.membership, node.name, request.membership_epoch, "truncation")
            for r in request.ranges:
                check_numbers(after_lsn=r.after_lsn, through_lsn=r.through_lsn)
            ranges = ranges_from_proto(request.ranges, epoch_max=request.truncations_version)
            if request.truncations_version > request.epoch:
                raise InvalidRequestError(
                    f"truncation set version {request.truncations_version} is newer than the "
                    f"request's epoch {request.epoch}"
                )
            await self.node.truncate(request.epoch, ranges, request.truncations_version)
        except SixfoldError as exc:
            await abort(context, exc)
        return node_state(self.node)

    async def FollowLog(self, request: pb.FollowLogRequest, context):
        await self.followers.serve(request, context)

    async def WatchState(self, request: pb.WatchStateRequest, context):
        """Stream the node's state now, then after each change (P18 §3: readers learn VDL here).

        Coalesced and never queued: a watcher that falls behind is sent the latest state,
        not every state in between, so a slow reader costs the node no memory.
        """
        try:
            await self.watch(request, context)
        except WatchersFullError as exc:
            await abort(context, exc)

    async def watch(self, request: pb.WatchStateRequest, context: StreamContext) -> None:
        """A watch on either transport (gRPC, or storage_node/frame_server.py)."""
        if self.watchers >= WATCHERS_MAX:
            raise WatchersFullError(
                f"storage node {self.node.name} already has {self.watchers} state watchers "
                f"(WATCHERS_MAX={WATCHERS_MAX}); poll GetState instead or retry later"
            )
        self.watchers += 1
        log.debug("%s: %s watches its state", self.node.name, request.reader or "a client")
        try:
            await self._stream_state(context)
        finally:
            self.watchers -= 1

    async def _stream_state(self, context: StreamContext) -> None:
        node = self.node
        sent: tuple[int, ...] | None = None
        while not node.stopped:
            changed = node.state_changed  # taken before the state is read: no wake-up is lost
            key = watch_key(node)
            if key == sent:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), WATCH_RECHECK_S)
                continue
            await context.write(node_state(node, counts=False))
            sent = key
            await asyncio.sleep(WATCH_COALESCE_S)
