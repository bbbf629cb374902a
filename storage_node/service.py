"""The StorageNode gRPC service: a thin adapter from protobuf to the node runtime."""

from __future__ import annotations

import time

import grpc

from sixfold.errors import CorruptRecordError, InvalidRequestError, SixfoldError
from sixfold.record import PAGE_SIZE_BYTES
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.wire import abort, ranges_from_proto, ranges_to_proto
from storage_node.node import StorageNode
from storage_node.store import FORMAT_VERSION


def node_state(node: StorageNode) -> pb.NodeState:
    st = node.state
    records, versions = node.store.counts()
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
    )


class StorageNodeService(pb_grpc.StorageNodeServicer):
    def __init__(self, node: StorageNode) -> None:
        self.node = node

    async def Append(self, request: pb.AppendRequest, context: grpc.aio.ServicerContext):
        node = self.node
        try:
            node.state.check_current(request.epoch, "append")
            records = node.decode_batch(list(request.records), request.epoch)
            scl = await node.append(request.epoch, records, request.vdl)
        except SixfoldError as exc:
            await abort(context, exc)
        except Exception as exc:  # e.g. LMDB map full: reported, nothing acknowledged
            await abort(context, exc)
        return pb.AppendResponse(scl=scl, epoch=node.state.epoch)

    async def ReadRecords(self, request: pb.ReadRecordsRequest, context):
        page_no = request.page_no if request.HasField("page_no") else None
        try:
            records = self.node.read_records(
                request.after_lsn, request.through_lsn, request.max_records, page_no
            )
        except CorruptRecordError as exc:
            await abort(context, exc, grpc.StatusCode.DATA_LOSS)
        except SixfoldError as exc:
            await abort(context, exc)
        st = self.node.state
        return pb.ReadRecordsResponse(
            records=[r.encoded for r in records], scl=st.scl, epoch=st.epoch
        )

    async def GetPage(self, request: pb.GetPageRequest, context):
        try:
            image, page_lsn = self.node.page_at(request.page_no, request.lsn, request.min_epoch)
        except CorruptRecordError as exc:
            await abort(context, exc, grpc.StatusCode.DATA_LOSS)
        except SixfoldError as exc:
            await abort(context, exc)
        assert len(image) == PAGE_SIZE_BYTES
        return pb.GetPageResponse(image=image, page_lsn=page_lsn, scl=self.node.state.scl)

    async def GetState(self, request: pb.GetStateRequest, context):
        if request.reader:
            self.node.note_read_point(request.reader, request.read_point, time.monotonic())
        return node_state(self.node)

    async def SealEpoch(self, request: pb.SealEpochRequest, context):
        try:
            await self.node.seal(request.epoch, request.owner)
        except SixfoldError as exc:
            await abort(context, exc)
        return node_state(self.node)

    async def Truncate(self, request: pb.TruncateRequest, context):
        try:
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
