"""Writer recovery over the network: the async shell around sixfold.recovery (P17 §4.3).

1. Read every reachable node's state; choose the next epoch.
2. Seal it on every reachable node; at least a write quorum must accept, or another writer
   won (or too few nodes are up) and recovery fails with a message saying which.
3. Push the newest truncation set any sealed node holds to those that hold an older one
   (a node may take a newer one from gossip meanwhile: repeat, a bounded number of times).
4. Plan: VDL, the truncation range and the first new LSN (pure: sixfold.recovery).
5. Write the new truncation set, versioned with this epoch, to the sealed nodes (a write
   quorum must take it).
6. Repair: copy records up to VDL from the most complete node to sealed nodes that lack
   them, until a write quorum is complete to VDL.
Nothing here replays redo: the work is bounded by the LAL, not by the length of the log.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sixfold.clients import NodeClient
from sixfold.errors import QuorumUnavailableError, RecoveryError, SixfoldError, StaleEpochError
from sixfold.quorum import COPIES, WRITE_QUORUM
from sixfold.recovery import (
    RecoveryPlan,
    SegmentReport,
    newest_truncations,
    next_epoch,
    plan_recovery,
)
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.truncation import TruncationRange, merge
from sixfold.wire import ranges_from_proto, ranges_to_proto

log = logging.getLogger("sixfold.recovery")

RECOVERY_CALL_TIMEOUT_S = 3.0
TRUNCATION_SYNC_ROUNDS_MAX = 3
REPAIR_BATCH_RECORDS_MAX = 2_000


@dataclass(frozen=True, slots=True)
class Recovered:
    plan: RecoveryPlan
    truncations: tuple[TruncationRange, ...]
    node_scls: dict[str, int]


def report_of(state: pb.NodeState) -> SegmentReport:
    return SegmentReport(
        name=state.name, epoch=state.epoch, scl=state.scl, cpl_at_scl=state.cpl_at_scl,
        highest_lsn=state.highest_lsn, truncations=ranges_from_proto(state.truncations),
        truncations_version=state.truncations_version,
    )  # fmt: skip


async def _gather_states(
    clients: list[NodeClient], coro_for
) -> dict[str, pb.NodeState | Exception]:
    results = await asyncio.gather(*(coro_for(c) for c in clients), return_exceptions=True)
    return {c.name: r for c, r in zip(clients, results, strict=True)}


async def recover(
    clients: list[NodeClient], owner: str, lal: int, epoch_wanted: int = 0
) -> Recovered:
    """Recover at the next epoch, or only at `epoch_wanted` when given: a reader taking over
    from the writer of epoch E asks for E + 1, so that of several readers racing, the one
    that seals E + 1 first wins and the others give up rather than fence it with E + 2."""
    by_name = {c.name: c for c in clients}
    states = await _gather_states(clients, lambda c: c.get_state(timeout=RECOVERY_CALL_TIMEOUT_S))
    reachable = [s for s in states.values() if isinstance(s, pb.NodeState)]
    if len(reachable) < WRITE_QUORUM:
        raise QuorumUnavailableError("write", len(reachable), WRITE_QUORUM, COPIES)
    epoch = next_epoch([report_of(s) for s in reachable])
    if epoch_wanted and epoch != epoch_wanted:
        newest = max(reachable, key=lambda s: s.epoch)
        raise RecoveryError(
            f"lost the race for volume epoch {epoch_wanted}: {newest.epoch_owner!r} already "
            f"holds epoch {newest.epoch}"
        )

    # 2. seal
    sealed_results = await _gather_states(
        [by_name[s.name] for s in reachable],
        lambda c: c.seal(epoch, owner, timeout=RECOVERY_CALL_TIMEOUT_S),
    )
    sealed = {n: s for n, s in sealed_results.items() if isinstance(s, pb.NodeState)}
    if len(sealed) < WRITE_QUORUM:
        lost = [str(e) for e in sealed_results.values() if isinstance(e, StaleEpochError)]
        if lost:
            raise RecoveryError(
                f"lost the race for volume epoch {epoch}: another writer sealed it first "
                f"({lost[0]}); only {len(sealed)} of {COPIES} nodes accepted this one"
            )
        raise QuorumUnavailableError("write", len(sealed), WRITE_QUORUM, COPIES)
    log.info("sealed epoch %d on %s", epoch, ", ".join(sorted(sealed)))

    # 3. every sealed node holds the newest truncation set among them
    sealed = await _sync_truncations(by_name, sealed, epoch)
    plan = plan_recovery(epoch, [report_of(s) for s in sealed.values()], lal)
    log.info("recovery plan: VDL %d, truncate (%d, %d], next LSN %d", plan.vdl,
             plan.truncation.after_lsn, plan.truncation.through_lsn, plan.next_lsn)  # fmt: skip

    # 5. truncate above VDL: the new set, versioned with this epoch
    base = newest_truncations([report_of(s) for s in sealed.values()])
    truncations = merge(base.truncations, [plan.truncation])
    sealed = await _truncate_all(by_name, sealed, epoch, truncations, epoch)
    if plan.source not in sealed:
        raise RecoveryError(f"{plan.source}, the most complete node, failed during truncation")

    # 6. repair lagging nodes up to VDL
    node_scls = {n: s.scl for n, s in sealed.items()}
    await _repair(by_name, plan, node_scls)
    complete = sum(1 for scl in node_scls.values() if scl >= plan.vdl)
    if complete < WRITE_QUORUM:
        raise RecoveryError(
            f"only {complete} of {COPIES} nodes are complete to the recovered VDL {plan.vdl}; "
            f"{WRITE_QUORUM} needed"
        )
    return Recovered(plan, truncations, node_scls)


async def _sync_truncations(
    by_name: dict[str, NodeClient], sealed: dict[str, pb.NodeState], epoch: int
) -> dict[str, pb.NodeState]:
    for _ in range(TRUNCATION_SYNC_ROUNDS_MAX):
        reports = [report_of(s) for s in sealed.values()]
        newest = newest_truncations(reports)
        if all(
            r.truncations_version == newest.truncations_version
            and set(r.truncations) == set(newest.truncations)
            for r in reports
        ):
            return sealed
        sealed = await _truncate_all(
            by_name, sealed, epoch, newest.truncations, newest.truncations_version
        )
    raise RecoveryError(
        f"the sealed nodes' truncation sets did not agree after {TRUNCATION_SYNC_ROUNDS_MAX} rounds"
    )


async def _truncate_all(
    by_name: dict[str, NodeClient],
    sealed: dict[str, pb.NodeState],
    epoch: int,
    ranges: tuple[TruncationRange, ...],
    version: int,
) -> dict[str, pb.NodeState]:
    request = pb.TruncateRequest(
        epoch=epoch, ranges=ranges_to_proto(ranges, pb.TruncationRange),
        truncations_version=version,
    )  # fmt: skip
    results = await _gather_states(
        [by_name[n] for n in sealed],
        lambda c: c.truncate(request, timeout=RECOVERY_CALL_TIMEOUT_S * 3),
    )
    done = {n: s for n, s in results.items() if isinstance(s, pb.NodeState) and s.epoch == epoch}
    if len(done) < WRITE_QUORUM:
        errors = "; ".join(str(e) for e in results.values() if isinstance(e, Exception))
        raise RecoveryError(
            f"truncation at epoch {epoch} reached only {len(done)} of {COPIES} nodes, "
            f"{WRITE_QUORUM} needed: {errors}"
        )
    return done


async def _repair(
    by_name: dict[str, NodeClient], plan: RecoveryPlan, node_scls: dict[str, int]
) -> None:
    """Copy records (scl, VDL] from the most complete node to nodes that lack them."""
    source = by_name[plan.source]
    for name in [n for n in plan.lagging if n in node_scls]:
        target = by_name[name]
        try:
            while node_scls[name] < plan.vdl:
                response = await source.read_records(
                    pb.ReadRecordsRequest(
                        after_lsn=node_scls[name], through_lsn=plan.vdl,
                        max_records=REPAIR_BATCH_RECORDS_MAX,
                    ),
                    timeout=RECOVERY_CALL_TIMEOUT_S * 3,
                )  # fmt: skip
                if not response.records:
                    break
                ack = await target.append(
                    pb.AppendRequest(epoch=plan.epoch, records=response.records),
                    timeout=RECOVERY_CALL_TIMEOUT_S * 3,
                )
                if ack.scl <= node_scls[name]:
                    break  # a hole the source cannot fill either: gossip may, later
                node_scls[name] = ack.scl
        except SixfoldError as exc:
            log.warning("repair of %s from %s failed: %s", name, plan.source, exc)
