"""Shipping the writer's log tail to one storage node (issue 11), sans I/O.

A `NodeShipper` decides what goes to its node and when: whole batches, at most
`append_batches_in_flight_max` of them and `append_window_bytes_max` bytes unacknowledged;
whatever piles up meanwhile goes in the next batch (group commit). A small batch may linger
while many commits wait, and a VDL update with no batch to ride on is announced bare after a
short delay (readers learn VDL from the nodes, P18 §3). Acknowledgements come back in order,
each with the node's SCL; a node silent for `append_timeout_s` with batches in flight is
taken for down, and a broken stream resumes after the last acknowledged record (appends are
idempotent).

The writer's asyncio sender (writer/pipeline.py) and the simulator both drive this class:
they own the stream and the clock, and pass the time in as `now`, in seconds.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sixfold.core.errors import SixfoldError
from sixfold.core.record import RedoRecord, pack_records

VDL_ANNOUNCE_DELAY_S = 0.02  # a bare VDL update waits this long for a batch to ride on


class ShippingLimits(Protocol):
    """The part of the writer's limits (writer.pipeline.WriterLimits) shipping obeys."""

    @property
    def append_batch_records_max(self) -> int: ...
    @property
    def append_batch_bytes_max(self) -> int: ...
    @property
    def append_timeout_s(self) -> float: ...
    @property
    def append_batches_in_flight_max(self) -> int: ...
    @property
    def append_window_bytes_max(self) -> int: ...
    @property
    def append_linger_s(self) -> float: ...
    @property
    def append_linger_share(self) -> float: ...
    @property
    def append_linger_records(self) -> int: ...
    @property
    def append_linger_waiters_min(self) -> int: ...
    @property
    def retry_backoff_s(self) -> float: ...
    @property
    def retry_backoff_s_max(self) -> float: ...


class TailView(Protocol):
    """What shipping reads of the log tail (sixfold.core.commit_log.LogTail)."""

    first_lsn: int

    @property
    def next_lsn(self) -> int: ...

    def batch_from(self, lsn: int, records_max: int, bytes_max: int) -> list[RedoRecord]: ...


@dataclass(slots=True)
class Batch:
    """One message on the append stream: records (none for a bare VDL announcement)."""

    batch_id: int
    records: list[RedoRecord]
    blob: bytes  # the records packed, as the stream carries them (sixfold/core/record.py)
    vdl: int
    sent_at: float

    @property
    def size_bytes(self) -> int:
        return len(self.blob)

    @property
    def last_lsn(self) -> int:
        return self.records[-1].lsn if self.records else 0


@dataclass(slots=True)
class Poll:
    """What a shipper wants done now: send `batches` in order, then poll again at `wake_at`
    (a lingering batch or an announcement falls due, or a silence to check) or when something
    changes. `silent` says why the node is taken for down: the stream is broken."""

    batches: list[Batch]
    wake_at: float | None = None
    silent: str | None = None


class Waiting(Protocol):
    """A commit waiting to become durable (sixfold.core.commit_log.Waiter)."""

    @property
    def lsn(self) -> int: ...


def commits_at_or_above(waiters: Sequence[Waiting], lsn: int) -> int:
    """How many of `waiters` (in LSN order) commit at or above `lsn`."""
    count = 0
    for waiter in reversed(waiters):
        if waiter.lsn < lsn:
            break
        count += 1
    return count


class NodeShipper:
    def __init__(self, name: str, first_lsn: int, limits: ShippingLimits) -> None:
        self.name = name
        self.limits = limits
        self.next_lsn = first_lsn  # the next record to send
        self.acked_lsn = first_lsn - 1  # the last record of the newest acknowledged batch
        self.reachable = True
        self.stale = False  # the node holds a newer volume epoch: this writer is superseded
        self.vdl_sent = -1  # the newest VDL the node acknowledged
        self.in_flight: deque[Batch] = deque()
        self.bytes_in_flight = 0
        self.batch_ids = itertools.count(1)
        self.announce_at = 0.0  # when a bare VDL announcement is due (0: none)
        self.linger_until = 0.0  # when a lingering small batch goes anyway (0: none)
        self.backoff_s = limits.retry_backoff_s

    @property
    def live(self) -> bool:
        """Counts towards a write quorum: reachable and not superseded."""
        return self.reachable and not self.stale

    def has_room(self) -> bool:
        lim = self.limits
        return (
            len(self.in_flight) < lim.append_batches_in_flight_max
            and self.bytes_in_flight < lim.append_window_bytes_max
        )

    def has_work(self, now: float) -> bool:
        """Whether a poll now could send anything or find the node silent. When the window
        is full it could not, until an acknowledgement comes or the silence is due: a
        commit or a VDL advance then wakes the sender for nothing (issue 11: the writer's
        CPU per commit)."""
        return self.has_room() or self._silence_due(now)

    def _silence_due(self, now: float) -> bool:
        """The oldest batch in flight went unacknowledged for `append_timeout_s`."""
        return bool(self.in_flight) and now >= self._silence_deadline()

    def _silence_deadline(self) -> float:
        return self.in_flight[0].sent_at + self.limits.append_timeout_s

    def open(self, tail: TailView, vdl: int, now: float) -> Batch:
        """A new stream: resume after the last acknowledged record. The first message is bare:
        its acknowledgement says the node is there."""
        self.in_flight.clear()
        self.bytes_in_flight = 0
        self.linger_until = 0.0
        self.next_lsn = max(self.acked_lsn + 1, tail.first_lsn)
        return self._send([], vdl, now)

    def poll(self, tail: TailView, waiters: Sequence[Waiting], vdl: int, now: float) -> Poll:
        """What to send now, as far as the window allows; else when to look again."""
        if self._silence_due(now):
            oldest = self.in_flight[0]
            return Poll(
                [],
                silent=(
                    f"{self.name}: no acknowledgement of batch {oldest.batch_id} in "
                    f"{now - oldest.sent_at:.1f} s (append_timeout_s={self.limits.append_timeout_s:g})"
                ),
            )
        out: list[Batch] = []
        wake: list[float] = []
        while self.has_room():
            records = self._next_records(tail)
            if not records:  # nothing to send (the tail may have been trimmed past a linger)
                self.linger_until = 0.0
                break
            linger_at = self._linger(records, tail, waiters, now)
            if linger_at:
                wake.append(linger_at)
                break
            out.append(self._send(records, vdl, now))
        if vdl > self.vdl_sent and not self.in_flight and not self.linger_until:
            # Readers learn VDL from the nodes; a batch would carry it anyway, so a bare
            # announcement waits a moment for one to ride on.
            if not self.announce_at:
                self.announce_at = now + VDL_ANNOUNCE_DELAY_S
            if now >= self.announce_at:
                out.append(self._send([], vdl, now))
            else:
                wake.append(self.announce_at)
        if self.in_flight:
            wake.append(self._silence_deadline())
        return Poll(out, min(wake, default=None))

    def on_ack(self, batch_id: int) -> bool:
        """The node acknowledged `batch_id`; True if it had been taken for down."""
        sent = self.in_flight.popleft() if self.in_flight else None
        if sent is None or sent.batch_id != batch_id:
            expected = sent.batch_id if sent else "none"
            raise SixfoldError(f"{self.name}: acknowledged batch {batch_id}, expected {expected}")
        self.bytes_in_flight -= sent.size_bytes
        self.vdl_sent = max(self.vdl_sent, sent.vdl)
        self.acked_lsn = max(self.acked_lsn, sent.last_lsn)
        self.backoff_s = self.limits.retry_backoff_s
        came_back = not self.reachable
        self.reachable = True
        return came_back

    def broken(self, now: float) -> float:
        """The stream broke, or the node could not be reached: when to try again (the wait
        doubles on each failure, up to `retry_backoff_s_max`)."""
        self.reachable = False
        self.in_flight.clear()
        self.bytes_in_flight = 0
        self.linger_until = 0.0
        retry_at = now + self.backoff_s
        self.backoff_s = min(2 * self.backoff_s, self.limits.retry_backoff_s_max)
        return retry_at

    def _next_records(self, tail: TailView) -> list[RedoRecord]:
        self.next_lsn = max(self.next_lsn, tail.first_lsn)  # trimmed: the node gossips for it
        lim = self.limits
        return tail.batch_from(
            self.next_lsn, lim.append_batch_records_max, lim.append_batch_bytes_max
        )

    def _linger(
        self, records: list[RedoRecord], tail: TailView, waiters: Sequence[Waiting], now: float
    ) -> float:
        """When to send a small batch held back while many commits wait (0: now): it grows,
        and the nodes spend less per record (issue 11: their cost is mostly per batch).
        Nothing is in flight to this node, so the commits waiting outside the batch wait for
        other nodes; once they are durable their clients send more, and the batch takes them.
        It goes once it holds `append_linger_share` of the waiting commits, or after
        `append_linger_s` at most. A batch the bounds cut short (more is pending than it
        holds) goes at once. With few commits waiting nothing lingers, so a lone client's
        latency does not grow."""
        lim = self.limits
        full_records = min(lim.append_linger_records, lim.append_batch_records_max)
        cut_short = records[-1].lsn + 1 < tail.next_lsn  # the tail's LSNs are contiguous
        small = len(records) < full_records and not cut_short
        busy = len(waiters) >= lim.append_linger_waiters_min
        if not (lim.append_linger_s and small and busy):
            self.linger_until = 0.0
            return 0.0
        if not self.linger_until:
            self.linger_until = now + lim.append_linger_s
        in_batch = commits_at_or_above(waiters, records[0].lsn)
        if now < self.linger_until and in_batch < lim.append_linger_share * len(waiters):
            return self.linger_until
        self.linger_until = 0.0
        return 0.0

    def _send(self, records: list[RedoRecord], vdl: int, now: float) -> Batch:
        batch = Batch(next(self.batch_ids), records, pack_records(records), vdl, now)
        self.in_flight.append(batch)
        self.bytes_in_flight += len(batch.blob)
        if records:
            self.next_lsn = records[-1].lsn + 1
        self.announce_at = 0.0
        return batch
