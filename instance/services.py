"""The Topology and Instance gRPC services of an instance (the writer or a reader)."""

from __future__ import annotations

import time

import grpc

from instance.host import Instance
from sixfold.clients import CALL_TIMEOUT_S, drain_writer
from sixfold.core import topology
from sixfold.core.errors import RecoveryError, SixfoldError
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.wire import abort, membership_to_proto

DRAIN_HOLD_S = 10.0  # how long a switchover keeps the old writer from taking commits
DRAIN_TIMEOUT_S = 15.0


def instance_topology(instance: Instance) -> pb.Topology:
    """The newest epoch among the nodes this instance hears, and the instances they know."""
    writer = instance.current_writer()
    members = instance.reader.pages.choice.membership.nodes  # a spare's epoch is not ours
    states = [s for n, s in instance.reader.node_states.items() if s is not None and n in members]
    epoch = max((s.epoch for s in states), default=0)
    answer = pb.Topology(
        epoch=epoch,
        writer_name=writer.name,
        writer_address=writer.address,
        answered_by=instance.name,
    )
    if writer.name == instance.name:
        answer.writer_client_address = instance.client_address
    freshest: dict[str, pb.InstanceView] = {}
    for views in instance.reader.instances_seen.values():
        for view in views:
            known = freshest.get(view.name)
            if known is None or view.seen_s_ago < known.seen_s_ago:
                freshest[view.name] = view
    freshest[instance.name] = pb.InstanceView(
        name=instance.name,
        address=instance.address,
        role=instance.role,
        read_point=instance.reader.read_point,
        seen_s_ago=0.0,
        client_address=instance.client_address,
    )
    for view in sorted(freshest.values(), key=lambda v: v.name):
        if view.seen_s_ago <= topology.INSTANCE_SEEN_TTL_S:
            answer.instances.append(view)
        if view.name == writer.name and not answer.writer_client_address:
            answer.writer_client_address = view.client_address
    return answer


class InstanceTopologyService(pb_grpc.TopologyServiceServicer):
    def __init__(self, instance: Instance) -> None:
        self.instance = instance

    async def GetTopology(self, request: pb.GetTopologyRequest, context: grpc.aio.ServicerContext):
        return instance_topology(self.instance)


class InstanceService(pb_grpc.InstanceServicer):
    def __init__(self, instance: Instance) -> None:
        self.instance = instance

    async def Promote(self, request: pb.PromoteRequest, context: grpc.aio.ServicerContext):
        try:
            return await self._promote(request.planned)
        except SixfoldError as exc:
            await abort(context, exc)

    async def Drain(self, request: pb.DrainRequest, context: grpc.aio.ServicerContext):
        try:
            vdl = await self.instance.drain(request.hold_s or DRAIN_HOLD_S)
        except SixfoldError as exc:
            await abort(context, exc)
        return pb.DrainResponse(vdl=vdl)

    async def Replace(self, request: pb.ReplaceRequest, context: grpc.aio.ServicerContext):
        try:
            writer = self.instance.writer_or_refuse()
            membership, durable_point = await writer.replace(
                request.old, request.new, request.force
            )
        except SixfoldError as exc:
            await abort(context, exc)
        return pb.ReplaceResponse(
            membership=membership_to_proto(membership), durable_point=durable_point
        )

    async def _promote(self, planned: bool) -> pb.PromoteResponse:
        instance = self.instance
        started = time.monotonic()
        current = instance.current_writer()
        drained_vdl = 0
        if planned and current.address and current.name != instance.name:
            drained_vdl = await _drain(current.address)
        if not await instance.become_writer():
            raise RecoveryError(
                f"{instance.name} could not take over as the writer: another instance won the "
                "new epoch, or fewer than 4 storage nodes answered"
            )
        pipeline = instance.writer_or_refuse()._ready()
        assert pipeline.vdl >= drained_vdl, (pipeline.vdl, drained_vdl)
        return pb.PromoteResponse(
            epoch=pipeline.epoch, vdl=pipeline.vdl, writes_paused_s=time.monotonic() - started
        )


async def _drain(address: str) -> int:
    return await drain_writer(address, DRAIN_HOLD_S, max(DRAIN_TIMEOUT_S, CALL_TIMEOUT_S))
