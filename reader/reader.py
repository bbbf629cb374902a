"""A reader instance: pages at a consistent read point, learned from storage alone.

The read point is the newest VDL the storage nodes have learned from the writer (piggybacked
on its appends), taken from nodes at the newest epoch seen. It never runs ahead of what is
durable, and it never goes back. Readers never talk to the writer (P18 §3).

The reader watches every node (one WatchState stream each): a node sends its state as soon
as its epoch, SCL or learned VDL moves, so the read point follows commits within
milliseconds rather than a polling interval. A slow GetState poll remains, to report the
reader's read point to the nodes (their GC keeps the page versions it may still read) and
as a fallback should a stream be stuck.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from sixfold.clients import NodeClient
from sixfold.core.errors import NotServingError
from sixfold.core.read_point import advance_read_point
from sixfold.core.topology import Role
from sixfold.crash import OPERATING_ERRORS, guarded_task
from sixfold.page_reader import PageReader
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.wire import membership_or_none

log = logging.getLogger("sixfold.reader")

READ_POINT_REPORT_S = 1.0  # how often the reader reports its read point (GetState poll)
POLL_TIMEOUT_S = 1.0
WATCH_BACKOFF_MIN_S = 0.05  # first wait before re-watching a node that went away
WATCH_BACKOFF_MAX_S = 1.0  # the wait doubles up to this, jittered so readers spread out
READ_POINT_LISTENERS_MAX = 64

ReadPointListener = Callable[[int, int], None]  # called with (epoch, read point)
PinSource = Callable[[], int | None]  # the oldest read point still being read at, if any


class Reader:
    def __init__(self, name: str, nodes: dict[str, str]) -> None:
        self.name = name
        self.clients = [NodeClient(n, address) for n, address in nodes.items()]
        self.pages = PageReader(self.clients)
        self.read_point = 0
        self.epoch = 0
        self.node_states: dict[str, pb.NodeState | None] = {c.name: None for c in self.clients}
        # Set, then replaced, each time the read point or epoch moves: take the current
        # event, check `read_point`, then await the event (see `wait_read_point_above`).
        self.read_point_moved = asyncio.Event()
        self._listeners: list[ReadPointListener] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._watching: set[str] = set()  # nodes whose stream is live: it speaks for them
        # Set by the instance that runs this reader (instance/host.py): how it is reached,
        # and the read points its SQL transactions still read at (nodes' GC must keep them).
        self.address = ""
        self.role: Role = Role.READER
        self.client_address = ""
        self.pins: PinSource | None = None
        self.instances_seen: dict[str, list[pb.InstanceView]] = {}  # node -> its last list

    # -- learning the read point ------------------------------------------------------------

    def note_state(self, node: str, state: pb.NodeState) -> None:
        """A node's state, from its watch stream or a poll: its SCL and learned VDL."""
        self.node_states[node] = state
        self.pages.note_scl(node, state.scl if state.serving else 0)
        view = state.membership
        if (view.epoch, view.writer_epoch) > self.pages.choice.membership.rank:
            membership = membership_or_none(state.membership)
            if membership is not None:
                self.pages.note_membership(membership)
        self.advance([s for s in self.node_states.values() if s is not None])

    def note_down(self, node: str) -> None:
        """A node that went away covers nothing until it is heard from again."""
        self.node_states[node] = None
        self.pages.note_scl(node, 0)

    def advance(self, states: list[pb.NodeState]) -> None:
        """Move the read point to the newest VDL learned at the newest epoch (never back)."""
        learned = ((s.vdl_epoch, s.vdl) for s in states)
        before = (self.epoch, self.read_point)
        self.epoch, self.read_point = advance_read_point(before, learned)
        if (self.epoch, self.read_point) != before:
            self._announce_move()

    def _announce_move(self) -> None:
        moved, self.read_point_moved = self.read_point_moved, asyncio.Event()
        moved.set()
        for listener in list(self._listeners):
            listener(self.epoch, self.read_point)  # a listener's bug ends the process

    # -- waiting for the read point ---------------------------------------------------------

    def add_read_point_listener(self, listener: ReadPointListener) -> None:
        """Call `listener(epoch, read_point)` whenever either moves (keep it quick: no I/O)."""
        assert len(self._listeners) < READ_POINT_LISTENERS_MAX, "read point listeners leak"
        self._listeners.append(listener)

    def remove_read_point_listener(self, listener: ReadPointListener) -> None:
        self._listeners.remove(listener)

    async def wait_read_point_above(self, lsn: int, timeout: float) -> int:
        """Wait until the read point is at or above `lsn`; return it.

        Raises NotServingError (UNAVAILABLE on the wire) if it does not get there in time.
        """
        deadline = time.monotonic() + timeout
        while self.read_point < lsn:
            moved = self.read_point_moved
            remaining = deadline - time.monotonic()
            try:
                await asyncio.wait_for(moved.wait(), max(remaining, 0))
            except TimeoutError:
                if self.read_point >= lsn:
                    break
                raise NotServingError(
                    f"reader {self.name}'s read point is {self.read_point}, still below LSN "
                    f"{lsn} after {timeout:g} s (are enough storage nodes and the writer up?)"
                ) from None
        return self.read_point

    # -- watching and polling ---------------------------------------------------------------

    async def run(self) -> None:
        """Watch every node, and poll slowly to report the read point; runs until cancelled."""
        self._tasks = [
            guarded_task(self._watch_node(c), f"reader {self.name} watching {c.name}")
            for c in self.clients
        ]
        try:
            while True:
                try:
                    await self.poll_once()
                except OPERATING_ERRORS:  # reported, and tried again; a bug ends the process
                    log.exception("reader %s: polling storage failed", self.name)
                await asyncio.sleep(READ_POINT_REPORT_S)
        finally:
            await self._stop_watches()

    async def run_polling(self) -> None:
        """The name instance/server.py starts the reader by: see `run`."""
        await self.run()

    async def _watch_node(self, client: NodeClient) -> None:
        """Follow one node's state; reconnect with bounded jittered backoff when it goes."""
        backoff_s = WATCH_BACKOFF_MIN_S
        while True:
            if self.role is Role.WRITER:
                # The writer makes the durable points itself: streaming them back from every
                # node would cost it CPU on each commit. The slow poll keeps its view current.
                await asyncio.sleep(WATCH_BACKOFF_MAX_S)
                continue
            heard = False
            try:
                async for state in client.watch_state(self.name):
                    self.note_state(client.name, state)
                    self._watching.add(client.name)
                    heard, backoff_s = True, WATCH_BACKOFF_MIN_S
                    if self.role is Role.WRITER:
                        break
                if self.role is Role.WRITER:  # stopped on purpose: the node is not gone
                    self._watching.discard(client.name)
                    continue
                reason = "the node ended the stream"
            except OPERATING_ERRORS as exc:  # the node went away; a bug ends the process
                reason = str(exc)
            self._watching.discard(client.name)
            self.note_down(client.name)
            # Once per outage at INFO; the retries while the node stays down at DEBUG.
            level = logging.INFO if heard else logging.DEBUG
            log.log(level, "reader %s: lost %s's state stream: %s", self.name, client.name, reason)
            # Jitter: readers whose node restarts do not all come back in the same instant.
            await asyncio.sleep(random.uniform(backoff_s / 2, backoff_s))
            backoff_s = min(backoff_s * 2, WATCH_BACKOFF_MAX_S)

    async def poll_once(self) -> None:
        """Report the read point to every node (for GC), and learn from those not watched.

        A live watch stream speaks for its node: a poll answer may be older than its last
        message, and a slow poll answer does not mean the node is gone.
        """
        request = pb.GetStateRequest(
            reader=self.name,
            read_point=self.reported_read_point(),
            address=self.address,
            role=self.role,
            client_address=self.client_address,
        )
        results = await asyncio.gather(
            *(c.get_state(request, timeout=POLL_TIMEOUT_S) for c in self.clients),
            return_exceptions=True,
        )
        for client, result in zip(self.clients, results, strict=True):
            if isinstance(result, pb.NodeState):  # the instances each node knows: topology
                self.instances_seen[client.name] = list(result.instances)
            if client.name in self._watching:
                continue
            if isinstance(result, pb.NodeState):
                self.note_state(client.name, result)
            else:
                self.note_down(client.name)

    def reported_read_point(self) -> int:
        """The lowest read point still in use here: the current one or an older pinned one."""
        pin = self.pins() if self.pins else None
        return self.read_point if pin is None else min(self.read_point, pin)

    async def _stop_watches(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- reads ------------------------------------------------------------------------------

    async def read_page(self, page_no: int) -> tuple[bytes, int, int]:
        if self.epoch == 0:
            raise NotServingError(
                f"reader {self.name} has no read point yet: no storage node has reported a "
                "durable point (is the writer up and recovered?)"
            )
        read_point, epoch = self.read_point, self.epoch
        image, page_lsn = await self.pages.read(page_no, read_point, epoch)
        return image, page_lsn, read_point

    async def close(self) -> None:
        await self._stop_watches()
        for c in self.clients:
            await c.close()
