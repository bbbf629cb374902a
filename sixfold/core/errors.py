"""Operating errors: named, with messages a user can act on.

Programmer errors are assertions; everything here is something that happens to a correct
program (a node down, a stale writer, a corrupt record on disk) and is reported, not hidden.
"""

from __future__ import annotations


class SixfoldError(Exception):
    """Base of every operating error sixfold reports.

    Its simple fields (ints, strings, booleans set on the instance) travel with it across
    gRPC (sixfold/wire.py), so a client decides by them, never by the message's text.
    """

    outcome_unknown = False  # a commit was sent and may or may not take effect


class CorruptRecordError(SixfoldError):
    """A redo record failed its CRC32C or could not be decoded."""


class StoredCorruptionError(CorruptRecordError):
    """Something a node stored fails its CRC: a record (page_no None) or a page version.

    Never served; the node fetches a good copy from a peer (P17 §3.2, step 8).
    """

    def __init__(self, message: str, lsn: int, page_no: int | None = None) -> None:
        super().__init__(message)
        self.lsn = lsn
        self.page_no = page_no


class StaleEpochError(SixfoldError):
    """A request carried an older volume epoch than the node has: its sender is fenced."""

    def __init__(self, request_epoch: int, node_epoch: int, what: str = "request") -> None:
        self.request_epoch = request_epoch
        self.node_epoch = node_epoch
        super().__init__(
            f"stale epoch: {what} carries volume epoch {request_epoch} but the node is at "
            f"epoch {node_epoch}; a newer writer has taken over"
        )


class EpochAheadError(SixfoldError):
    """The node has not learned the request's epoch and its truncations yet."""

    def __init__(self, request_epoch: int, node_epoch: int, truncations_version: int) -> None:
        self.request_epoch = request_epoch
        self.node_epoch = node_epoch
        super().__init__(
            f"node is at volume epoch {node_epoch} with the truncations of epoch "
            f"{truncations_version}; it must learn epoch {request_epoch}'s truncations before "
            "it accepts records of that epoch"
        )


class CorruptPageImageError(SixfoldError):
    """A page image from a peer failed its CRC32C or is malformed (hydration): not stored."""


class InvalidRequestError(SixfoldError):
    """A request that is malformed: reported to its sender, nothing stored."""


class BatchTooLargeError(SixfoldError):
    """An append batch exceeded a configured bound; nothing of it was stored."""


class WatchersFullError(SixfoldError):
    """A storage node has as many state watchers as it serves; poll GetState instead."""


class QuorumUnavailableError(SixfoldError):
    """Too few storage nodes reachable for a write (4) or read (3) quorum. `outcome_unknown`
    is set when a commit was sent before the quorum was lost."""

    def __init__(self, kind: str, reachable: int, needed: int, total: int = 6) -> None:
        self.kind = kind
        self.reachable = reachable
        self.needed = needed
        super().__init__(
            f"{kind} quorum unavailable: {reachable} of {total} storage nodes reachable, "
            f"{needed} needed"
        )


class CommitTimeoutError(SixfoldError):
    """A commit did not become durable in time although a write quorum seemed reachable."""

    outcome_unknown = True


class WriterFencedError(SixfoldError):
    """This writer was superseded by one with a newer volume epoch."""


class DataFormatError(SixfoldError):
    """A data directory cannot be read, or holds an on-disk format this build does not know."""


class NotServingError(SixfoldError):
    """A storage node cannot answer yet (syncing truncations, or below the asked LSN)."""


class RecoveryError(SixfoldError):
    """Writer recovery could not complete (no quorum, or another writer won the epoch)."""


class SqlError(SixfoldError):
    """SQLite refused a statement (syntax, constraint, type...): its message, verbatim.

    The transaction it was part of is rolled back; the database is unchanged by it.
    """


class SqlLimitError(SqlError):
    """A SQL request went past a configured limit (its time, its result's size, the size of
    one value, SQLite's memory): stopped and rolled back; the message names the limit and
    the option that sets it."""


class BusyError(SixfoldError):
    """The writer's SQL connection stayed held by another session: nothing was done; retry."""


class ReadOnlyError(SixfoldError):
    """A write was sent to a reader: only the writer changes the database."""


class NotWriterError(SixfoldError):
    """A write reached an instance that is not the writer (a reader, or a fenced writer).

    `writer_address` says where the current writer serves, when known.
    """

    def __init__(self, message: str, writer_address: str = "") -> None:
        super().__init__(message)
        self.writer_address = writer_address


class SessionError(SixfoldError):
    """A SQL session is unknown, expired, or already ended; or (`on_reader`) asked of a
    reader, which has none."""

    def __init__(self, message: str, on_reader: bool = False) -> None:
        super().__init__(message)
        self.on_reader = on_reader


class MembershipError(SixfoldError):
    """A membership change was refused, and nothing changed: the message says why."""


class NotAMemberError(SixfoldError):
    """A storage node outside the volume's membership (a spare) was sent what only members
    take; nothing was stored."""


class StaleMembershipError(SixfoldError):
    """A request carried an older membership epoch than the node has (P18 §2.3)."""

    def __init__(self, request_epoch: int, node_epoch: int, what: str = "request") -> None:
        self.request_epoch = request_epoch
        self.node_epoch = node_epoch
        super().__init__(
            f"stale membership: {what} carries membership epoch {request_epoch} but the node "
            f"is at membership epoch {node_epoch}; refresh the volume's membership and retry"
        )


class WrongNodeError(SixfoldError):
    """A call meant for one storage node reached another (a stale address: the endpoint
    now belongs to another node). Nothing was done; the caller must resolve the name again."""


class BackupError(SixfoldError):
    """A backup or restore could not go on (issue 15); the message says why and what to do."""


class BackupLeaseError(BackupError):
    """Another backup agent ships to the same store (its lease is fresh): this one stops
    rather than publish a chain that drops the other's objects."""


class CorruptBackupError(BackupError):
    """A backup object or manifest failed its CRC check or could not be parsed: it is named,
    and nothing of it was used."""


class CloneError(SixfoldError):
    """A clone cannot be made, read or dropped (issue 15): the message says which node and why."""


class RegionError(SixfoldError):
    """Replication to a secondary region could not go on, or a region command was refused
    (issue 16); the message says why and what to do."""


class RegionFencedError(RegionError):
    """The secondary's storage nodes are sealed at a newer epoch by someone other than the
    replication agent (the region was promoted): the agent must ship nothing more."""
