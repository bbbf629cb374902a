"""What writers and readers ask of a storage node, as typed values free of any transport.

The sans-I/O machines yield these (sixfold/core/recovery_machine.py); the asyncio shells turn
them into gRPC calls, and the simulator delivers them to its nodes as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from sixfold.core.membership import Membership
from sixfold.core.record import RedoRecord
from sixfold.core.truncation import TruncationRange


@dataclass(frozen=True, slots=True)
class GetState:
    """Answered with the node's state (a SegmentReport to the core). A reader names itself
    and its read point, which holds the node's GC back (sixfold/core/read_point.py)."""

    reader: str = ""
    read_point: int = 0


@dataclass(frozen=True, slots=True)
class Seal:
    """Take volume epoch `epoch` for writer `owner`, refusing older epochs from now on."""

    epoch: int
    owner: str
    membership_epoch: int = 0  # the sender's (sixfold/core/membership.py): 0 gives none


@dataclass(frozen=True, slots=True)
class Truncate:
    """Adopt truncation set `ranges`, written by the recovery of epoch `version`."""

    epoch: int
    ranges: tuple[TruncationRange, ...]
    version: int
    membership_epoch: int = 0


@dataclass(frozen=True, slots=True)
class ReadRecords:
    """Records in (`after_lsn`, `through_lsn`], at most `records_max` of them (0: the
    node's own bound), of page `page_no` only when given."""

    after_lsn: int
    through_lsn: int
    records_max: int
    page_no: int | None = None
    membership_epoch: int = 0


@dataclass(frozen=True, slots=True)
class Append:
    """Store `records` at epoch `epoch`; answered with the node's SCL once durable. `vdl` is
    the writer's, piggybacked for readers (P18 §3); none with a repair."""

    epoch: int
    records: tuple[RedoRecord, ...]
    vdl: int = 0
    membership_epoch: int = 0


@dataclass(frozen=True, slots=True)
class GetPage:
    """Page `page_no` as of `lsn`, from a node holding epoch `min_epoch`'s truncations."""

    page_no: int
    lsn: int
    min_epoch: int
    membership_epoch: int = 0


@dataclass(frozen=True, slots=True)
class ReadPageImages:
    """Hydration (sixfold/core/hydration.py): every page's image as of `at_lsn`, from page
    `from_page` on, at most `pages_max` of them, from a node holding the truncations of
    `min_epoch`. Answered with a PageImages."""

    at_lsn: int
    from_page: int
    pages_max: int
    min_epoch: int


@dataclass(frozen=True, slots=True)
class SetMembership:
    """Adopt `membership` (sixfold/core/membership.py), durably, in the name of the writer of
    volume epoch `volume_epoch` (a node sealed at a newer one refuses it). Answered with the
    node's state."""

    membership: Membership
    volume_epoch: int


NodeRequest = (
    GetState | Seal | Truncate | ReadRecords | Append | GetPage | ReadPageImages | SetMembership
)
