"""Materialising a page: a base version with redo records applied in LSN order (P17 §3.3)."""

from __future__ import annotations

from collections.abc import Iterable

from sixfold.core.record import PAGE_SIZE_BYTES, RedoRecord, delta_spans

EMPTY_PAGE = bytes(PAGE_SIZE_BYTES)


def apply_records(base: bytes, records: Iterable[RedoRecord]) -> bytes:
    """Apply redo to a page image. Records must be of one page and in ascending LSN order."""
    assert len(base) == PAGE_SIZE_BYTES
    page = bytearray(base)
    last_lsn = 0
    for record in records:
        assert record.lsn > last_lsn, "redo must be applied in LSN order"
        last_lsn = record.lsn
        if record.is_full_image:
            page[:] = record.payload
            continue
        payload = record.payload
        for offset, pos, length in delta_spans(payload, record.lsn):
            page[offset : offset + length] = payload[pos : pos + length]
    return bytes(page)


def until_nul(image: bytes) -> bytes:
    """A page's bytes up to its first NUL: how `sixfold page read` shows text."""
    end = image.find(b"\x00")
    return image if end < 0 else image[:end]
