"""Continuous backup and point-in-time restore, the pure part (issue 15; Aurora's continuous
backup to S3, P17 §2.2 and §5): what goes into the object store, how it is named and checked,
and which objects a restore to a point needs.

A backup is a chain of objects in an object store, each CRC32C'd, and a manifest naming them:
- a **base**: every page's image as of an LSN B (a volume durable point, so a consistent
  volume), copied from a storage node (never from the writer's memory);
- **log segments**: the committed records in (A, C], each C a durable point too, so every
  segment ends at a commit boundary. A segment starts where the one before ended, or at a
  base; each carries the time its end was seen durable.
Objects are written first and the manifest last, each atomically: a crash mid-upload leaves
objects no manifest names, which a restore never reads.

Restoring to LSN L takes the newest base at or below L and the segments after it, up to the
last commit at or below L. Restoring to a time takes the newest segment end seen durable at
or before it.

The manifest stays bounded while the backup runs for months: a round a second adds a segment
a second, so when a new base is published, the objects before it (the last base and its
segments) are sealed into a **chapter**, an object of its own listing them, and the manifest
names the chapter instead. It holds the chapters (one per base interval, kept as long as the
retention keeps them) and the open chapter's objects (one base interval of rounds). A restore
reads the one chapter that holds its point, so every round's point stays restorable.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sixfold.core.checksum import crc32c
from sixfold.core.errors import BackupError, CorruptBackupError, SixfoldError
from sixfold.core.record import PAGE_SIZE_BYTES, RedoRecord, decode_record

MANIFEST_FORMAT = 1
LOG_SEGMENT_RECORDS_MAX = 4_096  # records in one log object
BASE_PAGES_PER_OBJECT_MAX = 16_384  # pages in one base object (64 MiB of images)

_PAGE_HEADER = struct.Struct(">QQ")  # page number, LSN of its last change
_RECORD_HEADER = struct.Struct(">I")  # the encoded record's length


@dataclass(frozen=True, slots=True)
class BackupObject:
    """One object of the chain. A base: `first_lsn` == `last_lsn` == B. A log segment: the
    records in (`first_lsn`, `last_lsn`]."""

    name: str
    kind: str  # "base" or "log"
    first_lsn: int
    last_lsn: int
    size: int
    crc32c: int
    durable_at: float  # seconds since the epoch when `last_lsn` was seen durable
    part: int = 0  # a base in several objects: their order


@dataclass(frozen=True, slots=True)
class Chapter:
    """Sealed objects: one base interval's base(s) and segments, named by an object of its
    own (`chapter_name`) so the manifest need not list them."""

    name: str
    first_lsn: int  # its oldest base's LSN
    last_lsn: int
    first_at: float  # when its oldest base was durable
    last_at: float
    objects: int
    size: int  # bytes of the objects it names


@dataclass(frozen=True, slots=True)
class Manifest:
    """The chapters of a backup and the open chapter's objects, oldest first."""

    seq: int  # each manifest written has the next number
    objects: tuple[BackupObject, ...]
    volume_id: str = ""  # the volume backed up ("": not named, a volume from before ids)
    chapters: tuple[Chapter, ...] = ()

    @property
    def newest_lsn(self) -> int:
        return max(
            [*(o.last_lsn for o in self.objects), *(c.last_lsn for c in self.chapters)], default=0
        )

    def window(self) -> tuple[int, int] | None:
        """(oldest, newest) LSN a restore can reach, None when there is no base yet."""
        bases = [o.last_lsn for o in self.objects if o.kind == "base"]
        bases += [c.first_lsn for c in self.chapters]
        if not bases:
            return None
        return min(bases), self.newest_lsn

    def time_window(self) -> tuple[float, float] | None:
        bases = [o.durable_at for o in self.objects if o.kind == "base"]
        bases += [c.first_at for c in self.chapters]
        if not bases:
            return None
        ends = [*(o.durable_at for o in self.objects), *(c.last_at for c in self.chapters)]
        return min(bases), max(ends)

    @property
    def stored(self) -> tuple[int, int]:
        """(objects, bytes) the backup holds, chapters included."""
        objects = len(self.objects) + sum(c.objects for c in self.chapters)
        size = sum(o.size for o in self.objects) + sum(c.size for c in self.chapters)
        return objects, size

    def with_objects(self, added: Sequence[BackupObject]) -> Manifest:
        return Manifest(self.seq + 1, (*self.objects, *added), self.volume_id, self.chapters)

    def sealed(self, chapter: Chapter, added: Sequence[BackupObject]) -> Manifest:
        """The next manifest: the open objects sealed into `chapter`, `added` opening the
        next one."""
        return Manifest(self.seq + 1, tuple(added), self.volume_id, (*self.chapters, chapter))


def chapter_of(objects: Sequence[BackupObject]) -> Chapter:
    """The chapter sealing `objects` (the open ones: a base first)."""
    bases = [o for o in objects if o.kind == "base"]
    assert bases, "a chapter starts with a base"
    first = min(o.last_lsn for o in bases)
    last = max(o.last_lsn for o in objects)
    return Chapter(
        name=f"chapter/{first:020d}-{last:020d}.json",
        first_lsn=first,
        last_lsn=last,
        first_at=min(o.durable_at for o in bases),
        last_at=max(o.durable_at for o in objects),
        objects=len(objects),
        size=sum(o.size for o in objects),
    )


def dump_chapter(objects: Sequence[BackupObject]) -> bytes:
    return _sealed({"format": MANIFEST_FORMAT, "objects": [asdict(o) for o in objects]})


def load_chapter(chapter: Chapter, raw: bytes) -> tuple[BackupObject, ...]:
    """A chapter's objects, its CRC checked and its contents matched to the manifest's
    entry (CorruptBackupError names it otherwise)."""
    what = f"chapter {chapter.name}"
    data = _unsealed(what, raw)
    try:
        objects = tuple(BackupObject(**o) for o in data["objects"])
    except (KeyError, TypeError) as exc:
        raise CorruptBackupError(f"{what} is unreadable: {exc}") from None
    if not objects or chapter_of(objects) != chapter:
        raise CorruptBackupError(f"{what} does not hold what the manifest says it does")
    return objects


def volume_backed_up(manifest: Manifest, node_volumes: Iterable[str]) -> str:
    """The volume a round backs up: the one the nodes name, which must be the backup's own
    (a backup of one volume never takes another's log, a restored or cloned volume's
    included: their LSNs may overlap). A backup that holds nothing yet takes the nodes'."""
    named = sorted({v for v in node_volumes if v})
    if len(named) > 1:
        raise BackupError(f"the storage nodes name different volumes ({', '.join(named)})")
    volume = named[0] if named else ""
    if volume != manifest.volume_id and (manifest.objects or manifest.chapters):
        raise BackupError(
            f"the storage nodes hold volume {volume or '(not named)'}, but this backup is of "
            f"volume {manifest.volume_id or '(not named)'}: back each volume up to a store "
            "(or prefix) of its own"
        )
    return volume


def object_last_lsn(name: str) -> int:
    """The last LSN an object's name gives (`object_name`'s); -1 for another name."""
    stem = name.rsplit("/", 1)[-1].split(".", 1)[0]
    fields = stem.split("-")
    if len(fields) != 2 or not all(f.isdigit() for f in fields):
        return -1
    return int(fields[1] if name.startswith("log/") else fields[0])


def object_name(kind: str, first_lsn: int, last_lsn: int, part: int = 0) -> str:
    if kind == "base":
        return f"base/{last_lsn:020d}-{part:04d}.bin"
    return f"log/{first_lsn:020d}-{last_lsn:020d}.bin"


def manifest_name(seq: int) -> str:
    return f"manifest/{seq:010d}.json"


def dump_manifest(manifest: Manifest) -> bytes:
    objects = [asdict(o) for o in manifest.objects]
    return _sealed(
        {
            "format": MANIFEST_FORMAT,
            "seq": manifest.seq,
            "objects": objects,
            "volume_id": manifest.volume_id,
            "chapters": [asdict(c) for c in manifest.chapters],
        }
    )


def load_manifest(name: str, raw: bytes) -> Manifest:
    """A stored manifest, its CRC checked (CorruptBackupError names it otherwise)."""
    what = f"manifest {name}"
    data = _unsealed(what, raw)
    try:
        if data["format"] != MANIFEST_FORMAT:
            raise CorruptBackupError(f"{what} has format {data['format']}, not {MANIFEST_FORMAT}")
        objects = tuple(BackupObject(**o) for o in data["objects"])
        chapters = tuple(Chapter(**c) for c in data.get("chapters", []))
        return Manifest(int(data["seq"]), objects, str(data.get("volume_id", "")), chapters)
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptBackupError(f"{what} is unreadable: {exc}") from None


def _sealed(data: dict[str, object]) -> bytes:
    """JSON with a CRC32C of its text: manifests and snapshots are checked like objects."""
    body = json.dumps(data, sort_keys=True)
    return json.dumps({"crc32c": crc32c(body.encode()), "body": body}).encode()


def _unsealed(what: str, raw: bytes) -> dict[str, Any]:
    try:
        outer = json.loads(raw)
        body = outer["body"]
        if crc32c(body.encode()) != outer["crc32c"]:
            raise CorruptBackupError(f"{what} fails its CRC32C check: not used")
        data = json.loads(body)
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptBackupError(f"{what} is unreadable: {exc}") from None
    if not isinstance(data, dict):
        raise CorruptBackupError(f"{what} is unreadable: not a JSON object")
    return data


def check_object(obj: BackupObject, data: bytes) -> bytes:
    """`data` as read back, if it is what the manifest says (CorruptBackupError if not)."""
    if len(data) != obj.size or crc32c(data) != obj.crc32c:
        raise CorruptBackupError(
            f"backup object {obj.name} is damaged ({len(data)} bytes, CRC32C {crc32c(data):#010x}; "
            f"the manifest says {obj.size} bytes, {obj.crc32c:#010x}): restore to a point it "
            "does not cover, or from another copy"
        )
    return data


# -- object contents ------------------------------------------------------------------------------


def encode_pages(pages: Iterable[tuple[int, int, bytes]]) -> bytes:
    """(page number, page LSN, image) triples as one object's bytes."""
    parts = []
    for page_no, page_lsn, image in pages:
        assert len(image) == PAGE_SIZE_BYTES, len(image)
        parts += [_PAGE_HEADER.pack(page_no, page_lsn), image]
    return b"".join(parts)


def decode_pages(name: str, data: bytes) -> Iterator[tuple[int, int, bytes]]:
    step = _PAGE_HEADER.size + PAGE_SIZE_BYTES
    if len(data) % step:
        raise CorruptBackupError(f"backup object {name} is not whole pages ({len(data)} bytes)")
    for at in range(0, len(data), step):
        page_no, page_lsn = _PAGE_HEADER.unpack_from(data, at)
        yield page_no, page_lsn, data[at + _PAGE_HEADER.size : at + step]


def encode_records(records: Iterable[RedoRecord]) -> bytes:
    return b"".join(_RECORD_HEADER.pack(len(r.encoded)) + r.encoded for r in records)


def decode_records(name: str, data: bytes) -> list[RedoRecord]:
    """The records of a log object, each record's own CRC checked on the way."""
    records, at = [], 0
    while at < len(data):
        if at + _RECORD_HEADER.size > len(data):
            raise CorruptBackupError(f"backup object {name} ends inside a record header")
        (length,) = _RECORD_HEADER.unpack_from(data, at)
        at += _RECORD_HEADER.size
        if at + length > len(data):
            raise CorruptBackupError(f"backup object {name} ends inside a record")
        try:
            records.append(decode_record(data[at : at + length]))
        except SixfoldError as exc:
            raise CorruptBackupError(f"backup object {name}: {exc}") from None
        at += length
    return records


# -- snapshots and retention ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A named restore point that retention keeps (`sixfold snapshot create NAME`). Stored
    as an object of its own: the agent, which writes the manifest, never races it."""

    name: str
    lsn: int
    durable_at: float


SNAPSHOT_NAME_CHARS_MAX = 64


def snapshot_object_name(name: str) -> str:
    if (
        not name
        or len(name) > SNAPSHOT_NAME_CHARS_MAX
        or not name.replace("-", "").replace("_", "").isalnum()
    ):
        raise BackupError(
            f"bad snapshot name {name!r}: use up to {SNAPSHOT_NAME_CHARS_MAX} letters, digits, - and _"
        )
    return f"snapshot/{name}.json"


def dump_snapshot(snapshot: Snapshot) -> bytes:
    return _sealed(asdict(snapshot))


def load_snapshot(name: str, raw: bytes) -> Snapshot:
    what = f"snapshot {name}"
    try:
        return Snapshot(**_unsealed(what, raw))
    except TypeError as exc:
        raise CorruptBackupError(f"{what} is unreadable: {exc}") from None


def retention_plan(
    manifest: Manifest, now: float, retention_s: float, pinned_lsns: Iterable[int] = ()
) -> tuple[Manifest, tuple[BackupObject, ...]]:
    """(the manifest without them, the objects no restore point needs any more): every
    point seen durable within `retention_s` of `now`, and every snapshot's (`pinned_lsns`),
    must stay restorable, so the newest base at or below the oldest such point stays, and
    everything after it. The manifest goes first, then the objects: a crash between leaves
    unnamed objects, never a manifest naming deleted ones."""
    window_start = now - retention_s
    ends = [o.last_lsn for o in manifest.objects if o.durable_at <= window_start]
    oldest_needed = min([max(ends, default=0), *pinned_lsns])
    bases = [
        o.last_lsn for o in manifest.objects if o.kind == "base" and o.last_lsn <= oldest_needed
    ]
    if not bases:
        return manifest, ()
    keep_from = max(bases)
    doomed = tuple(
        o
        for o in manifest.objects
        if (o.kind == "base" and o.last_lsn < keep_from)
        or (o.kind == "log" and o.last_lsn <= keep_from)
    )
    if not doomed:
        return manifest, ()
    kept = tuple(o for o in manifest.objects if o not in doomed)
    return Manifest(manifest.seq + 1, kept, manifest.volume_id, manifest.chapters), doomed


def chapter_retention(
    manifest: Manifest, now: float, retention_s: float, pinned_lsns: Iterable[int] = ()
) -> tuple[Manifest, tuple[Chapter, ...]]:
    """(the manifest without them, the chapters no restore point needs any more): as
    `retention_plan`, by whole chapters. The oldest point needed is the newest one durable by
    the window's start (a chapter durable across it counts from its base), or an older
    snapshot; the chapter holding it stays, and everything after it."""
    window_start = now - retention_s
    ends = [c.last_lsn for c in manifest.chapters if c.last_at <= window_start]
    ends += [c.first_lsn for c in manifest.chapters if c.first_at <= window_start < c.last_at]
    ends += [o.last_lsn for o in manifest.objects if o.durable_at <= window_start]
    oldest_needed = min([max(ends, default=0), *pinned_lsns])
    starts = [c.first_lsn for c in manifest.chapters]
    starts += [o.last_lsn for o in manifest.objects if o.kind == "base"]
    keepable = [s for s in starts if s <= oldest_needed]
    if not keepable:
        return manifest, ()
    doomed = tuple(c for c in manifest.chapters if c.first_lsn < max(keepable))
    if not doomed:
        return manifest, ()
    kept = tuple(c for c in manifest.chapters if c not in doomed)
    return Manifest(manifest.seq + 1, manifest.objects, manifest.volume_id, kept), doomed


# -- restore --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RestorePlan:
    base: tuple[BackupObject, ...]  # the base's objects, in order
    logs: tuple[BackupObject, ...]  # the segments after it, in order
    wanted_lsn: int  # the point asked for; the restore stops at the last commit at or below


ChapterReader = Callable[[Chapter], tuple[BackupObject, ...]]


def plan_restore(
    manifest: Manifest,
    to_lsn: int | None = None,
    to_time: float | None = None,
    read_chapter: ChapterReader | None = None,
) -> RestorePlan:
    """The objects a restore to `to_lsn` (or to the newest point durable at `to_time`) needs,
    from the chapter that holds the point (`read_chapter` reads one) or the open objects.
    BackupError, naming the window, for a point outside it."""
    assert (to_lsn is None) != (to_time is None), "one of to_lsn, to_time"
    window, times = manifest.window(), manifest.time_window()
    if window is None or times is None:
        raise BackupError(
            "the backup holds no base yet: nothing can be restored (is the backup running?)"
        )
    if to_time is not None and to_time < times[0]:
        raise BackupError(
            f"no restore point at or before {to_time:.0f}: the backup covers "
            f"{times[0]:.0f} to {times[1]:.0f} (seconds since the epoch)"
        )
    if to_lsn is not None:
        _check_in_window(to_lsn, window)
    objects = _unit_of(manifest, to_lsn, to_time, read_chapter)
    if to_time is not None:
        to_lsn = max(o.last_lsn for o in objects if o.durable_at <= to_time)
        _check_in_window(to_lsn, window)
    assert to_lsn is not None
    return _plan_in(objects, to_lsn)


def _check_in_window(lsn: int, window: tuple[int, int]) -> None:
    if not window[0] <= lsn:
        raise BackupError(
            f"LSN {lsn} is before the oldest restore point: the backup covers LSNs "
            f"{window[0]} to {window[1]}"
        )
    if lsn > window[1]:
        raise BackupError(
            f"LSN {lsn} is past the newest restore point: the backup covers LSNs "
            f"{window[0]} to {window[1]}"
        )


def _unit_of(
    manifest: Manifest,
    to_lsn: int | None,
    to_time: float | None,
    read_chapter: ChapterReader | None,
) -> tuple[BackupObject, ...]:
    """The objects holding the point: the open ones from their oldest base on, else the last
    chapter starting at or before it (a point before every base gets the oldest unit, and is
    refused by the window's check)."""

    def starts_by(start_lsn: int, start_at: float) -> bool:
        return start_lsn <= to_lsn if to_lsn is not None else start_at <= (to_time or 0.0)

    open_bases = [o for o in manifest.objects if o.kind == "base"]
    if open_bases and (
        not manifest.chapters or any(starts_by(o.last_lsn, o.durable_at) for o in open_bases)
    ):
        return manifest.objects
    chosen = [c for c in manifest.chapters if starts_by(c.first_lsn, c.first_at)]
    chapter = chosen[-1] if chosen else manifest.chapters[0]
    assert read_chapter is not None, "a manifest with chapters needs a chapter reader"
    return read_chapter(chapter)


def _plan_in(objects: Sequence[BackupObject], to_lsn: int) -> RestorePlan:
    """The base at or below `to_lsn` among `objects` and the segments after it up to it."""
    bases = [o.last_lsn for o in objects if o.kind == "base" and o.last_lsn <= to_lsn]
    if not bases:
        raise BackupError(f"LSN {to_lsn} is before the oldest restore point of its chapter")
    base_lsn = max(bases)
    base = tuple(
        sorted(
            (o for o in objects if o.kind == "base" and o.last_lsn == base_lsn),
            key=lambda o: o.part,
        )
    )
    logs, reached_lsn = [], base_lsn
    for obj in sorted((o for o in objects if o.kind == "log"), key=lambda o: o.first_lsn):
        if reached_lsn >= to_lsn:
            break
        if obj.last_lsn <= reached_lsn:
            continue
        if obj.first_lsn != reached_lsn:
            break  # a hole (the agent was away; a later base follows it): refused below
        logs.append(obj)
        reached_lsn = obj.last_lsn
    if reached_lsn < to_lsn:
        raise BackupError(
            f"LSN {to_lsn} is not restorable: the log after the base at LSN {base_lsn} ends at "
            f"LSN {reached_lsn} (the agent was away longer than the nodes kept the records); "
            f"restore to LSN {reached_lsn} or below, or to a point after a later base"
        )
    return RestorePlan(base, tuple(logs), to_lsn)


def restore_point(base_lsn: int, records: Sequence[RedoRecord], wanted_lsn: int) -> int:
    """The last commit at or below `wanted_lsn`: a CPL among `records`, or the base's LSN
    (a durable point) when none is."""
    cpls = [r.lsn for r in records if r.is_cpl and r.lsn <= wanted_lsn]
    return max(cpls, default=base_lsn)


# -- one agent per store, and what a crashed round left ------------------------------------------

LEASE_NAME = "agent/lease.json"
LEASE_TTL_S = 60.0  # a lease not renewed for this long is free: its agent is taken for dead
OBJECT_PREFIXES = ("base/", "log/", "chapter/")  # what the agent alone writes


@dataclass(frozen=True, slots=True)
class Lease:
    """The agent that ships to a store. Object stores give no conditional put, so a lease
    is how two agents find each other: each renews its own every round and while it
    writes, and stops when it sees another's. Only one agent may write manifests: two would
    each publish a chain without the other's objects, and sweep those as orphans."""

    owner: str  # unique per agent run
    holder: str  # where it runs, for the message another agent shows
    renewed_at: float
    ttl_s: float = LEASE_TTL_S


def lease_held_by_another(lease: Lease | None, owner: str, now: float) -> bool:
    return lease is not None and lease.owner != owner and now - lease.renewed_at < lease.ttl_s


def dump_lease(lease: Lease) -> bytes:
    return _sealed(asdict(lease))


def load_lease(raw: bytes) -> Lease:
    what = f"lease {LEASE_NAME}"
    try:
        return Lease(**_unsealed(what, raw))
    except TypeError as exc:
        raise CorruptBackupError(f"{what} is unreadable: {exc}") from None


def orphans(
    manifest: Manifest, chapter_objects: Iterable[BackupObject], stored: Iterable[str]
) -> list[str]:
    """The agent's objects in the store that neither the newest manifest nor any chapter it
    names: left by a round that died between writing them and publishing its manifest, or
    by a retention whose deletes failed after its manifest. No restore reads them (a
    restore starts from a manifest), and without a sweep they would pile up for good."""
    named = {o.name for o in manifest.objects}
    named |= {c.name for c in manifest.chapters}
    named |= {o.name for o in chapter_objects}
    return sorted(n for n in stored if n.startswith(OBJECT_PREFIXES) and n not in named)
