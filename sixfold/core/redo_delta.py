"""Byte-range deltas between two versions of a page: what a SQL commit ships (P17 §3.2).

The writer ships redo, never pages. A changed page becomes the ranges of bytes that differ
from its previous version, or one range covering the whole page when the ranges would take
more bytes than the page itself.
"""

from __future__ import annotations

from sixfold.core.record import PAGE_SIZE_BYTES

CHUNK_BYTES = 32  # compare this many bytes at a time before narrowing to exact bytes
DELTA_HEADER_BYTES = 8  # u32 offset + u32 length in front of each range (sixfold/core/record.py)
DELTA_RANGES_MAX = 64  # more ranges than this and the whole page is cheaper to decode
# Halving the page must end at whole chunks (_differing_spans).
assert PAGE_SIZE_BYTES % CHUNK_BYTES == 0 and (PAGE_SIZE_BYTES // CHUNK_BYTES).bit_count() == 1

Ranges = tuple[tuple[int, bytes], ...]


def page_delta(old: bytes, new: bytes) -> Ranges:
    """(offset, bytes) ranges that turn `old` into `new`; () when they are equal."""
    assert len(old) == len(new) == PAGE_SIZE_BYTES
    if old == new:
        return ()
    spans = _merge(_differing_spans(old, new))
    cost = sum(DELTA_HEADER_BYTES + end - start for start, end in spans)
    if len(spans) > DELTA_RANGES_MAX or cost >= PAGE_SIZE_BYTES:
        return ((0, bytes(new)),)
    return tuple((start, bytes(new[start:end])) for start, end in spans)


def apply_delta(old: bytes, ranges: Ranges) -> bytes:
    """`old` with `ranges` written over it (the inverse of page_delta, for tests and tools)."""
    page = bytearray(old)
    for offset, data in ranges:
        page[offset : offset + len(data)] = data
    return bytes(page)


def _differing_spans(old: bytes, new: bytes) -> list[tuple[int, int]]:
    """Exact [start, end) spans of differing bytes, one per CHUNK_BYTES chunk that differs,
    in order.

    Halves that compare equal are skipped whole (a commit changes a few small ranges of a
    page, so most of it goes in a few comparisons, each a memcmp), down to the chunks; in a
    chunk, the first and last differing bytes are the highest and lowest set bits of the
    two chunks XORed as big-endian integers. Half the CPU of comparing chunk by chunk."""
    spans: list[tuple[int, int]] = []
    todo = [(0, PAGE_SIZE_BYTES)]
    while todo:
        low, high = todo.pop()
        if old[low:high] == new[low:high]:
            continue
        if high - low > CHUNK_BYTES:
            middle = (low + high) // 2
            todo.append((middle, high))
            todo.append((low, middle))  # taken first: spans come out in order
            continue
        bits = int.from_bytes(old[low:high], "big") ^ int.from_bytes(new[low:high], "big")
        first = low + (CHUNK_BYTES * 8 - bits.bit_length()) // 8
        last = high - 1 - ((bits & -bits).bit_length() - 1) // 8
        spans.append((first, last + 1))
    return spans


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Join spans whose gap is cheaper to resend than a new range header."""
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start - merged[-1][1] <= DELTA_HEADER_BYTES:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged
