"""Copy-on-write clones: what a clone shares with its source, and what the source keeps.

A clone is a new volume that starts as its source at a point P, a VDL a read quorum of the
source's nodes learned, so a consistent volume. Making one copies no page: each node of the
clone stores only what the clone itself writes (LSNs above P) and reads every page it never
wrote from the source node of its position, as of P (its lower layer, storage_node/store.py).
Pages are shared until one side writes them; a write lands in the writing volume's storage
alone. Aurora's clones share pages so (its copy-on-write protocol); here the sharing is the
source node's LMDB file, read by the clone's node on the same host.

So the source must keep answering page reads at P for as long as the clone lives. It keeps a
*hold* at P, stored on each of its nodes, and from then on each page's image at P is its
newest version at or below P plus its records above that version up to P:
- Every record at or below P must be covered by a version at or below P before GC may drop
  it. A coalescing step never crosses a held point (it ends at it), so every step that
  covers records at or below P ends at or below P. A step planned before the hold and
  committed after it would cross it: it is not committed, and is planned again.
- A node whose coalescing already passed P when the hold comes may have covered records at
  or below P with versions above it, and GC would drop them once its horizon passes those
  versions. So the hold gives each page with a record still stored at or below P a version
  at its newest change at or below P, where it has none. (Not only records above the GC
  horizon: the horizon is the lowest of the read points and the peers' frontiers, not a
  coalescing step's end, so a record below it may be covered only above P; found by
  review.) A record already dropped was covered by a version at or below the horizon, so
  at or below P. The cost is the log GC has not collected yet, never the volume's size.
- GC never drops that version: a superseded version is kept while some hold lies in
  [its LSN, the superseding version's LSN). It is set aside, and queued again for GC when
  the hold goes.
- A hold needs the node complete to P (its SCL at or above P) and its GC horizon at or below
  P: below the horizon the records that built the image at P may be gone.

The cost to the source is one kept version per page written since the hold, per hold, and
no more: what a clone costs in Aurora too.

Pure: the LMDB store applies these rules in its transactions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from sixfold.core.errors import CloneError

CLONES_MAX = 15  # holds on one source volume (Aurora allows 15 clones of a volume)
CLONE_ID_CHARS_MAX = 64
_CLONE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True, slots=True)
class LowerLayer:
    """Where a clone node reads what it never wrote: the source node's directory, as of
    `point`, under the source's hold `hold_id`."""

    path: str
    node_name: str
    point: int
    hold_id: str


def check_clone_id(clone_id: str) -> str:
    if not (len(clone_id) <= CLONE_ID_CHARS_MAX and _CLONE_ID.fullmatch(clone_id)):
        raise CloneError(
            f"clone id {clone_id[:80]!r}: use up to {CLONE_ID_CHARS_MAX} letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    return clone_id


def hold_keeps(older_lsn: int, newer_lsn: int, hold_points: Iterable[int]) -> bool:
    """Whether a version at `older_lsn`, superseded by one at `newer_lsn`, is some hold's
    image of its page: the newest version at or below a held point."""
    return any(older_lsn <= p < newer_lsn for p in hold_points)


def coalesce_limit(frontier: int, point: int, hold_points: Iterable[int]) -> int:
    """How far a coalescing step from `frontier` may go: `point`, but never past a hold."""
    return min([point, *(p for p in hold_points if p > frontier)])


def crosses_hold(after: int, through: int, hold_points: Iterable[int]) -> bool:
    """Whether a coalescing step over (after, through] would cover records at or below a
    hold with versions above it."""
    return any(after < p < through for p in hold_points)


def check_can_hold(
    node: str, holds: dict[str, int], clone_id: str, point: int, scl: int, gc_horizon: int
) -> None:
    """Refuse a hold the node cannot keep, or one too many."""
    check_clone_id(clone_id)
    if clone_id in holds:
        raise CloneError(f"{node} already holds clone {clone_id!r} (at LSN {holds[clone_id]})")
    if len(holds) >= CLONES_MAX:
        raise CloneError(
            f"{node} already holds {len(holds)} clones, the most a volume may have "
            f"({CLONES_MAX}): drop one first (`sixfold clone drop`)"
        )
    if scl < point:
        raise CloneError(
            f"{node} is complete only to LSN {scl}, below the clone's point {point}: "
            "wait for it to catch up (gossip), or clone when every node is up"
        )
    if gc_horizon > point:
        raise CloneError(
            f"{node} collected garbage up to LSN {gc_horizon}, above the clone's point "
            f"{point}: try again (a newer point)"
        )


def dump_holds(holds: dict[str, int]) -> bytes:
    return json.dumps(dict(sorted(holds.items()))).encode()


def load_holds(raw: bytes | None, where: str) -> dict[str, int]:
    if raw is None:
        return {}
    try:
        data = json.loads(bytes(raw))
        return {check_clone_id(str(k)): int(v) for k, v in dict(data).items()}
    except (ValueError, TypeError, CloneError) as exc:
        raise CloneError(f"{where}: unreadable clone holds {bytes(raw)[:80]!r}: {exc}") from exc


def dump_lower(lower: LowerLayer) -> bytes:
    return json.dumps(
        {"path": lower.path, "node": lower.node_name, "point": lower.point, "hold": lower.hold_id}
    ).encode()


def load_lower(raw: bytes | None, where: str) -> LowerLayer | None:
    if raw is None:
        return None
    try:
        d = json.loads(bytes(raw))
        return LowerLayer(str(d["path"]), str(d["node"]), int(d["point"]), str(d["hold"]))
    except (ValueError, TypeError, KeyError) as exc:
        raise CloneError(f"{where}: unreadable clone source {bytes(raw)[:80]!r}: {exc}") from exc
