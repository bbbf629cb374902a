"""Redo log records: the only thing the writer ships (P17 §3.2).

A record changes one page. It carries back-links to the previous record of the volume and of
its page (P17 §4.1), which let a storage node tell whether it holds every record up to a
point (its SCL). A CPL flag marks the last record of a mini-transaction.

Canonical encoding (little-endian), the bytes that travel and are stored:

    header  u8 encoding, u8 flags, u16 reserved, u32 payload_bytes,
            u64 lsn, u64 prev_volume_lsn, u64 prev_page_lsn, u64 page_no, u64 epoch
    payload payload_bytes bytes: a full page image, or byte-range deltas
            (each: u32 offset, u32 length, data)
    crc     u32 CRC32C over header and payload
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntFlag

from sixfold.core.checksum import crc32c
from sixfold.core.errors import CorruptRecordError

RECORD_ENCODING = 1
PAGE_SIZE_BYTES = 4096

_HEADER = struct.Struct("<BBHIQQQQQ")
_CRC = struct.Struct("<I")
_DELTA = struct.Struct("<II")
HEADER_BYTES = _HEADER.size
RECORD_OVERHEAD_BYTES = _HEADER.size + _CRC.size
RECORD_BYTES_MAX = RECORD_OVERHEAD_BYTES + PAGE_SIZE_BYTES + 64 * _DELTA.size
# The largest LSN, page number or epoch a request may carry: keys are u64 and the code adds
# one to an LSN here and there, so the top half of the range is refused outright.
NUMBER_MAX = (1 << 63) - 1


class RecordFlags(IntFlag):
    CPL = 1  # last record of a mini-transaction: a consistency point (P17 §4.1)
    FULL_IMAGE = 2  # payload is a whole page image, not deltas


# Plain ints for the hot paths: IntFlag arithmetic costs microseconds per record.
_CPL = int(RecordFlags.CPL)
_FULL_IMAGE = int(RecordFlags.FULL_IMAGE)
_KNOWN_FLAGS = _CPL | _FULL_IMAGE


@dataclass(frozen=True, slots=True)
class Delta:
    """Bytes `data` written at `offset` of the page."""

    offset: int
    data: bytes


@dataclass(frozen=True, slots=True)
class RedoRecord:
    lsn: int
    prev_volume_lsn: int
    prev_page_lsn: int
    page_no: int
    epoch: int
    flags: int  # RecordFlags bits
    payload: bytes
    encoded: bytes  # the canonical bytes, CRC included: what is stored and sent

    @property
    def is_cpl(self) -> bool:
        return bool(self.flags & _CPL)

    @property
    def is_full_image(self) -> bool:
        return bool(self.flags & _FULL_IMAGE)

    def deltas(self) -> list[Delta]:
        assert not self.is_full_image
        return decode_deltas(self.payload, self.lsn)


def encode_deltas(deltas: list[Delta]) -> bytes:
    parts = []
    for d in deltas:
        parts.append(_DELTA.pack(d.offset, len(d.data)))
        parts.append(d.data)
    return b"".join(parts)


def decode_deltas(payload: bytes, lsn: int = 0) -> list[Delta]:
    """Parse a delta payload, checking every range lies inside a page."""
    return [Delta(offset, payload[pos : pos + n]) for offset, pos, n in delta_spans(payload, lsn)]


def delta_spans(payload: bytes, lsn: int = 0) -> list[tuple[int, int, int]]:
    """(page offset, payload position, length) of each delta, every range checked."""
    spans = []
    pos = 0
    end = len(payload)
    while pos < end:
        if pos + _DELTA.size > end:
            raise CorruptRecordError(f"record LSN {lsn}: delta header cut short at byte {pos}")
        offset, length = _DELTA.unpack_from(payload, pos)
        pos += _DELTA.size
        if pos + length > end or offset + length > PAGE_SIZE_BYTES:
            raise CorruptRecordError(
                f"record LSN {lsn}: delta of {length} bytes at offset {offset} overruns the "
                f"payload or the {PAGE_SIZE_BYTES}-byte page"
            )
        spans.append((offset, pos, length))
        pos += length
    return spans


def encode_record(
    *,
    lsn: int,
    prev_volume_lsn: int,
    prev_page_lsn: int,
    page_no: int,
    epoch: int,
    flags: int,
    payload: bytes,
) -> RedoRecord:
    assert lsn > prev_volume_lsn >= 0 and lsn > prev_page_lsn >= 0, (lsn, prev_volume_lsn)
    assert epoch >= 1
    flags = int(flags)
    assert not flags & ~_KNOWN_FLAGS
    if flags & _FULL_IMAGE:
        assert len(payload) == PAGE_SIZE_BYTES
    header = _HEADER.pack(
        RECORD_ENCODING,
        flags,
        0,
        len(payload),
        lsn,
        prev_volume_lsn,
        prev_page_lsn,
        page_no,
        epoch,
    )
    crc = crc32c(payload, crc32c(header))
    encoded = header + payload + _CRC.pack(crc)
    return RedoRecord(lsn, prev_volume_lsn, prev_page_lsn, page_no, epoch, flags, payload, encoded)


def decode_record(encoded: bytes | memoryview) -> RedoRecord:
    """Decode and verify one record. Raises CorruptRecordError naming what is wrong."""
    size = len(encoded)
    if size < RECORD_OVERHEAD_BYTES:
        raise CorruptRecordError(f"record of {size} bytes is shorter than its header and CRC")
    if size > RECORD_BYTES_MAX:
        raise CorruptRecordError(f"record of {size} bytes exceeds {RECORD_BYTES_MAX} bytes")
    (encoding, flags, _, payload_bytes, lsn, prev_volume, prev_page, page_no, epoch) = (
        _HEADER.unpack_from(encoded, 0)
    )
    if encoding != RECORD_ENCODING:
        raise CorruptRecordError(f"record LSN {lsn}: unknown record encoding {encoding}")
    if HEADER_BYTES + payload_bytes + _CRC.size != size:
        raise CorruptRecordError(
            f"record LSN {lsn}: header says {payload_bytes} payload bytes, record has "
            f"{size - RECORD_OVERHEAD_BYTES}"
        )
    (stored_crc,) = _CRC.unpack_from(encoded, size - _CRC.size)
    if crc32c(memoryview(encoded)[: size - _CRC.size]) != stored_crc:
        raise CorruptRecordError(f"record LSN {lsn}: CRC32C mismatch (stored {stored_crc:#010x})")
    if lsn <= prev_volume or lsn <= prev_page or epoch < 1:
        raise CorruptRecordError(
            f"record LSN {lsn}: back-links ({prev_volume}, {prev_page}) or epoch {epoch} invalid"
        )
    if flags & ~_KNOWN_FLAGS:
        raise CorruptRecordError(f"record LSN {lsn}: unknown flags {flags:#x}")
    payload = bytes(encoded[HEADER_BYTES : size - _CRC.size])
    if flags & _FULL_IMAGE:
        if payload_bytes != PAGE_SIZE_BYTES:
            raise CorruptRecordError(f"record LSN {lsn}: page image of {payload_bytes} bytes")
    else:
        delta_spans(payload, lsn)
    return RedoRecord(lsn, prev_volume, prev_page, page_no, epoch, flags, payload, bytes(encoded))


_PAGE_NO = struct.Struct("<Q")
_PAGE_NO_OFFSET = struct.calcsize("<BBHIQQQ")  # the header fields before page_no


def peek_page_no(encoded: bytes) -> int:
    """The page number from a record's header, without verifying it."""
    page_no: int = _PAGE_NO.unpack_from(encoded, _PAGE_NO_OFFSET)[0]
    return page_no


def peek_lsn(encoded: bytes) -> int:
    """The LSN from a record's header, without verifying it (for error messages and keys)."""
    if len(encoded) < HEADER_BYTES:
        return 0
    lsn: int = _HEADER.unpack_from(encoded, 0)[4]
    return lsn


def pack_records(records: list[RedoRecord]) -> bytes:
    """A batch as one blob: the records' canonical encodings back to back (each says its own
    length in its header, and carries its own CRC)."""
    return b"".join(r.encoded for r in records)


def unpack_records(blob: bytes) -> list[RedoRecord]:
    """Split a blob into records, verifying each (CRC, bounds). Raises CorruptRecordError
    naming the first bad one, or where the blob was cut short: nothing of it is usable then.
    """
    records: list[RedoRecord] = []
    view = memoryview(blob)
    pos, end = 0, len(blob)
    while pos < end:
        if end - pos < RECORD_OVERHEAD_BYTES:
            raise CorruptRecordError(
                f"batch blob cut short: {end - pos} bytes at offset {pos} after record "
                f"{len(records)}, fewer than a record header and CRC"
            )
        payload_bytes = _HEADER.unpack_from(blob, pos)[3]
        size = RECORD_OVERHEAD_BYTES + payload_bytes
        if pos + size > end:
            raise CorruptRecordError(
                f"batch blob cut short: record {len(records)} at offset {pos} needs {size} "
                f"bytes, {end - pos} left"
            )
        records.append(decode_record(view[pos : pos + size]))
        pos += size
    return records
