"""Records a node stored lately, kept in memory until a coalescing step takes them.

Coalescing reads the records just above its frontier, and under a steady load those are the
records the node received in the last quarter second. Read back from LMDB, each was decoded
and CRC-checked again: most of a coalescing step's CPU (docs/BENCHMARKS.md, "A node's
background work"). Kept here after their commit, decoded and CRC-checked on arrival
(sixfold/core/record.py unpack_records), a step takes a record from here when the log holds
exactly its bytes (a compare: damage on disk is still found), and decodes any other.

A record stored again replaces its copy here, and one deleted by a truncation or dropped
as corrupt goes; a copy that no longer matches the log for any other reason (a repair) is
only a compare that fails. Bounded: past RECENT_RECORDS_BYTES_MAX of record bytes the
oldest go (Python's objects add about as much again), and a step decodes those. The loop's
thread adds and the background's worker takes, so every change holds a lock.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

from sixfold.core.record import RedoRecord

RECENT_RECORDS_BYTES_MAX = 4 << 20  # encoded and payload bytes of the records held


def _size(record: RedoRecord) -> int:
    return len(record.encoded) + len(record.payload)


class RecentRecords:
    def __init__(self, bytes_max: int = RECENT_RECORDS_BYTES_MAX) -> None:
        assert bytes_max > 0
        self.bytes_max = bytes_max
        self.bytes = 0
        # In the order they were stored. An OrderedDict, not a dict: a dict whose oldest
        # entries keep going leaves a run of deleted slots that `next(iter(...))` walks, so
        # dropping the oldest grew with how many had gone before (6 us a record at the bound).
        self._by_lsn: OrderedDict[int, RedoRecord] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._by_lsn)

    def add(self, records: Iterable[RedoRecord]) -> None:
        """Hold records just made durable; drop the oldest past the bound."""
        with self._lock:
            for record in records:
                old = self._by_lsn.pop(record.lsn, None)
                if old is not None:
                    self.bytes -= _size(old)
                self._by_lsn[record.lsn] = record
                self.bytes += _size(record)
            while self.bytes > self.bytes_max:
                self.bytes -= _size(self._by_lsn.popitem(last=False)[1])

    def get(self, lsn: int) -> RedoRecord | None:
        with self._lock:
            return self._by_lsn.get(lsn)

    def drop(self, lsns: Iterable[int]) -> None:
        """Forget records deleted from the log."""
        with self._lock:
            for lsn in lsns:
                old = self._by_lsn.pop(lsn, None)
                if old is not None:
                    self.bytes -= _size(old)

    def drop_through(self, lsn: int) -> None:
        """Forget the records at or below `lsn` from the oldest on: a coalescing step covered
        them. Held in the order stored, which is LSN order but for a record gossip fetched
        late: such a one stays until the bound drops it."""
        with self._lock:
            while self._by_lsn:
                oldest = next(iter(self._by_lsn))  # an OrderedDict's first: O(1)
                if oldest > lsn:
                    break
                self.bytes -= _size(self._by_lsn.popitem(last=False)[1])
