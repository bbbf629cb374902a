"""The writer's read-index shell: rounds of bare appends that confirm its epoch.

The rule and why it is safe are in sixfold/core/read_index.py. A round is a bare append (no
records) with the writer's epoch and VDL: a node answers it as soon as it has checked the
epoch, without waiting for a sync (storage_node/node.py `announce`). A round asks a read
quorum first, a different three each time so the nodes share the work, and the other nodes
only if one of the three does not confirm, or the round is not decided within
ROUND_HEDGE_S (a slow or paused node).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable

from sixfold.clients import NodeClient
from sixfold.core.errors import (
    EpochAheadError,
    NotWriterError,
    QuorumUnavailableError,
    SixfoldError,
    StaleEpochError,
)
from sixfold.core.quorum import COPIES, READ_QUORUM
from sixfold.core.read_index import Answer, ReadIndex, RoundOutcome
from sixfold.rpc import sixfold_pb2 as pb

log = logging.getLogger("sixfold.writer")

ROUND_HEDGE_S = 0.05  # a round not decided by then asks the nodes it has not asked yet
ROUND_RETRY_S = 0.05  # after a round without a quorum of answers, the next one waits this
CONFIRM_WAIT_S = 5.0  # how long a read waits for rounds to find a read quorum


class EpochConfirmer:
    """Confirms, for each read, that no newer writer can have acknowledged anything yet."""

    def __init__(
        self, clients: list[NodeClient], epoch: int, vdl_now: Callable[[], int], timeout_s: float
    ) -> None:
        self.clients = clients
        self.index = ReadIndex(epoch)
        self.vdl_now = vdl_now  # the VDL to announce with each round
        self.timeout_s = timeout_s
        # round -> the reads waiting on it, a future each (a read that gives up, its RPC
        # cancelled, cancels only its own) with the loop time it stops waiting at.
        self.waiters: dict[int, list[tuple[asyncio.Future[None], float]]] = {}
        self.calls: set[asyncio.Task[tuple[str, Answer]]] = set()  # bare appends in flight
        self.not_asked: list[NodeClient] = []  # of the round in flight
        self.first = 0  # where the next round's first read quorum starts, round-robin
        self.rounds = 0
        self.reads_confirmed = 0
        self.closed = False

    async def confirm(self) -> None:
        """Return once a round sent after this call has confirmed the epoch; raise
        NotWriterError if a newer epoch was found, QuorumUnavailableError if too few nodes
        answered."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        deadline = loop.time() + CONFIRM_WAIT_S
        self.waiters.setdefault(self.index.want(), []).append((waiter, deadline))
        self._start_round_if_due()
        await waiter
        self.reads_confirmed += 1

    def _start_round_if_due(self) -> None:
        if self.closed:
            return
        round_no = self.index.start_round()
        if round_no is None:
            return
        self.rounds += 1
        clients = self.clients[self.first :] + self.clients[: self.first]
        self.first = (self.first + 1) % len(self.clients)
        self.not_asked = clients[READ_QUORUM:]
        self._ask_all(round_no, clients[:READ_QUORUM])
        asyncio.get_running_loop().call_later(ROUND_HEDGE_S, self._ask_the_rest, round_no)

    def _ask_the_rest(self, round_no: int) -> None:
        if self.index.is_decided(round_no):
            return
        rest, self.not_asked = self.not_asked, []
        self._ask_all(round_no, rest)

    def _ask_all(self, round_no: int, clients: list[NodeClient]) -> None:
        request = pb.AppendRequest(epoch=self.index.epoch, vdl=self.vdl_now())
        loop = asyncio.get_running_loop()
        for client in clients:
            call = loop.create_task(self._ask(client, request))
            self.calls.add(call)
            call.add_done_callback(functools.partial(self._on_answer, round_no))

    def _on_answer(self, round_no: int, call: asyncio.Task[tuple[str, Answer]]) -> None:
        self.calls.discard(call)
        if call.cancelled():
            return
        name, answer = call.result()
        outcome = self.index.on_answer(round_no, name, answer)
        if outcome is not None:  # later answers to this round change nothing
            self._settle(round_no, outcome)
            if outcome is not RoundOutcome.NO_QUORUM:  # that one retries a little later
                self._start_round_if_due()
        elif answer is not Answer.CONFIRMS:
            self._ask_the_rest(round_no)

    async def _ask(self, client: NodeClient, request: pb.AppendRequest) -> tuple[str, Answer]:
        try:
            await client.append(request, timeout=self.timeout_s)
        except EpochAheadError:
            return client.name, Answer.CONFIRMS  # it has not even learnt our epoch yet
        except StaleEpochError:
            return client.name, Answer.REFUSES
        except SixfoldError:
            return client.name, Answer.SILENT
        return client.name, Answer.CONFIRMS

    def _settle(self, round_no: int, outcome: RoundOutcome) -> None:
        """Answer the reads waiting on a decided round. Too few answers (nodes down or
        reconnecting) is not final: those reads wait for the next round, within their time."""
        loop = asyncio.get_running_loop()
        refusal = None if outcome is RoundOutcome.CONFIRMED else self._refusal(outcome)
        for waiter, deadline in self.waiters.pop(round_no, []):
            if waiter.done():
                continue  # its read gave up
            if refusal is None:
                waiter.set_result(None)
            elif outcome is RoundOutcome.NO_QUORUM and loop.time() < deadline:
                self.waiters.setdefault(self.index.want(), []).append((waiter, deadline))
            else:
                waiter.set_exception(refusal)
        if outcome is RoundOutcome.NO_QUORUM and self.waiters:
            loop.call_later(ROUND_RETRY_S, self._start_round_if_due)

    def _refusal(self, outcome: RoundOutcome) -> SixfoldError:
        answers = self.index.answers
        if outcome is RoundOutcome.SUPERSEDED:
            refused = sorted(n for n, a in answers.items() if a is Answer.REFUSES)
            return NotWriterError(
                f"this writer's volume epoch {self.index.epoch} was superseded ({', '.join(refused)} "
                "sealed a newer one): another instance is the writer now; the read was not "
                "answered, retry it at the current writer"
            )
        confirms = sum(1 for a in answers.values() if a is Answer.CONFIRMS)
        exc = QuorumUnavailableError("read", confirms, READ_QUORUM, COPIES)
        exc.args = (
            f"read quorum unavailable: cannot confirm that this writer still holds volume "
            f"epoch {self.index.epoch}: {confirms} of {COPIES} storage nodes confirmed it, "
            f"{READ_QUORUM} needed; the read was not answered",
        )
        return exc

    async def close(self) -> None:
        self.closed = True
        for call in list(self.calls):
            call.cancel()
        await asyncio.gather(*self.calls, return_exceptions=True)
        refusal = NotWriterError("the writer stepped down before the read was answered")
        for waiters in self.waiters.values():
            for waiter, _ in waiters:
                if not waiter.done():
                    waiter.set_exception(refusal)
        self.waiters.clear()
