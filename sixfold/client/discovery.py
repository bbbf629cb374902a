"""Finding the writer from any seed: the topology every node and instance answers (issue 6).

Ask the seeds in turn; the first answer naming a writer wins, except that an answer with a
newer epoch replaces an older one among those that answered (a node that missed a takeover
still names the old writer).
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from sixfold import tls
from sixfold.clients import CHANNEL_OPTIONS
from sixfold.core import topology
from sixfold.core.errors import SixfoldError
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc

TOPOLOGY_TIMEOUT_S = 2.0  # one GetTopology call
SEEDS_ASKED_MAX = 3  # answers naming a writer gathered before taking the newest epoch


class NoWriterError(SixfoldError):
    """No seed answered with a writer: none reachable, or no writer has recovered yet."""


def topology_of(address: str, timeout: float = TOPOLOGY_TIMEOUT_S) -> pb.Topology:
    with tls.channel(address, options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.TopologyServiceStub(channel)
        return stub.GetTopology(pb.GetTopologyRequest(), timeout=timeout)


SLOW_SEEDS_WAIT_FACTOR = 4  # the second look's wait, as a multiple of the first's


def newest_topology(seeds: Iterable[str], timeout: float = TOPOLOGY_TIMEOUT_S) -> pb.Topology:
    """The answer with the newest epoch among the first few seeds that name a writer."""
    answers: list[pb.Topology] = []
    errors: list[str] = []
    for seed in seeds:
        try:
            answer = topology_of(seed, timeout)
        except grpc.RpcError as err:
            errors.append(f"{seed}: {err.code().name}")
            continue
        if answer.writer_address:
            answers.append(answer)
            if len(answers) >= SEEDS_ASKED_MAX:
                break
    if not answers:
        raise NoWriterError(
            "no writer found: " + ("; ".join(errors) if errors else "no writer has recovered yet")
        )
    return newest_answer(answers)


def newest_answer(answers: list[pb.Topology]) -> pb.Topology:
    """The newest epoch's answer; among its answers, one that knows where clients reach the
    writer (sixfold/core/topology.py's rule, for every resolver: the CLI, status, the DB-API)."""
    assert answers, "at least one answer"
    return topology.newest(
        answers, lambda t: t.epoch, lambda t: bool(t.writer_client_address), answers[0]
    )


def writer_client_address(topology: pb.Topology) -> str:
    return topology.writer_client_address or topology.writer_address


def current_writer_address(seeds: list[str], fallback: str, timeout: float = 0.5) -> str:
    """Where clients reach the writer now, or `fallback` when no seed names one. Asked once
    more with a longer wait first: on a loaded machine every instance may miss `timeout`,
    and the fallback may be a reader by now (the chaos tool and a compose test sent their
    calls to one so)."""
    for wait in (timeout, timeout * SLOW_SEEDS_WAIT_FACTOR):
        try:
            return writer_client_address(newest_topology(seeds, wait))
        except NoWriterError:
            continue
    return fallback
