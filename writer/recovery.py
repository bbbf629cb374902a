"""Writer recovery over the network: the asyncio shell around sixfold.recovery_machine.

The machine decides every step (P17 §4.3); this shell sends each step's requests to the
nodes at once, as gRPC calls with a deadline, and hands the answers (or the errors the
calls ended with) back to it.
"""

from __future__ import annotations

import asyncio
import logging

from sixfold.clients import NodeClient
from sixfold.errors import SixfoldError
from sixfold.node_requests import Append, GetState, NodeRequest, ReadRecords, Seal, Truncate
from sixfold.record import decode_record
from sixfold.recovery import SegmentReport
from sixfold.recovery_machine import Answer, Answers, Recovered, Recovery, Requests
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.wire import ranges_from_proto, ranges_to_proto

__all__ = ["Recovered", "recover", "report_of"]

log = logging.getLogger("sixfold.recovery")

RECOVERY_CALL_TIMEOUT_S = 3.0
BULK_CALL_TIMEOUT_S = RECOVERY_CALL_TIMEOUT_S * 3  # truncations and repairs move more


def report_of(state: pb.NodeState) -> SegmentReport:
    return SegmentReport(
        name=state.name, epoch=state.epoch, scl=state.scl, cpl_at_scl=state.cpl_at_scl,
        highest_lsn=state.highest_lsn, truncations=ranges_from_proto(state.truncations),
        truncations_version=state.truncations_version, epoch_owner=state.epoch_owner,
    )  # fmt: skip


async def recover(
    clients: list[NodeClient], owner: str, lal: int, epoch_wanted: int = 0
) -> Recovered:
    """Recover at the next epoch (or only at `epoch_wanted`): see Recovery."""
    by_name = {c.name: c for c in clients}
    machine = Recovery(list(by_name), owner, lal, epoch_wanted)
    steps = machine.run()
    answers: Answers | None = None
    try:
        while True:
            requests = steps.send(answers)  # type: ignore[arg-type]  # None starts it
            answers = await _ask(by_name, requests)
            for note in machine.notes:
                log.info("%s", note)
            machine.notes.clear()
    except StopIteration as done:
        return done.value


async def _ask(by_name: dict[str, NodeClient], requests: Requests) -> Answers:
    names = list(requests)
    results = await asyncio.gather(
        *(_call(by_name[n], requests[n]) for n in names), return_exceptions=True
    )
    return {n: _answer(r) for n, r in zip(names, results, strict=True)}


def _answer(result: Answer | BaseException) -> Answer:
    """A call's result, or the operating error it ended with; anything else is a bug (or a
    cancellation) and is raised, not handed to the machine as a node's answer."""
    if isinstance(result, BaseException) and not isinstance(result, SixfoldError):
        raise result
    return result


async def _call(client: NodeClient, request: NodeRequest) -> Answer:
    if isinstance(request, GetState):
        return report_of(await client.get_state(timeout=RECOVERY_CALL_TIMEOUT_S))
    if isinstance(request, Seal):
        state = await client.seal(request.epoch, request.owner, timeout=RECOVERY_CALL_TIMEOUT_S)
        return report_of(state)
    if isinstance(request, Truncate):
        message = pb.TruncateRequest(
            epoch=request.epoch, ranges=ranges_to_proto(request.ranges, pb.TruncationRange),
            truncations_version=request.version,
        )  # fmt: skip
        return report_of(await client.truncate(message, timeout=BULK_CALL_TIMEOUT_S))
    if isinstance(request, ReadRecords):
        response = await client.read_records(
            pb.ReadRecordsRequest(
                after_lsn=request.after_lsn, through_lsn=request.through_lsn,
                max_records=request.records_max,
            ),
            timeout=BULK_CALL_TIMEOUT_S,
        )  # fmt: skip
        return tuple(decode_record(r) for r in response.records)  # CRCs checked on the way
    if isinstance(request, Append):
        message = pb.AppendRequest(
            epoch=request.epoch, records=[r.encoded for r in request.records]
        )
        return (await client.append(message, timeout=BULK_CALL_TIMEOUT_S)).scl
    raise AssertionError(f"recovery does not send {request!r}")
