"""Coalescing and garbage collection on a storage node: what to do next (P17 §3.2, 5-7).

A node turns its redo log into page versions (coalescing) and then drops what the versions
made redundant (garbage collection). Both must keep up forever, across any number of
restarts, and cost in proportion to what changed, never to how much is stored. So the work
left is a frontier on disk, not a set in memory:

- `coalesced_through` (C, stored with the versions it produced): every record at or below C
  is covered by a page version at or below C. Coalescing takes the next records above C in
  LSN order, at most COALESCE_RECORDS_MAX at a time, materialises each page they touch at
  the last of them, and moves C there, in the transaction that stores the versions. A
  restart resumes at C: nothing below it is ever left behind, whatever was in memory.
- Garbage is collected below a horizon H <= C, also at or below the lowest read point in
  use, every peer's SCL (a peer may still fetch anything above its SCL), every peer's
  coalescing frontier (a peer that has not yet coalesced a record has not had it intact,
  as received or read back: if its copy turns out damaged, it fetches a good one from us)
  and below any record awaiting repair. A damaged record at or below a node's own frontier
  needs no repair: it was intact when it was coalesced, and its versions hold it; GC drops
  it. The log is
  deleted from its head: a record at x <= H is redundant once its page has a version in
  [x, H]. Every record at or below C has one at or below the end of its coalescing step,
  so the head waits at most one step's records for H to pass it, and never for long.
- A version superseded by a newer one of its page is queued (on disk) under the newer
  version's LSN, and dropped once H reaches it: no read point needs it any more.

Pure: the LMDB store (storage_node/store.py) and the background loop
(storage_node/background.py) do the I/O; the simulator drives the same rules.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

COALESCE_RECORDS_MAX = 2_000  # records coalesced in one step (one LMDB write transaction)
GC_KEYS_MAX = 1_000  # log records, index keys and versions deleted in one step


def coalesce_point(scl: int, vdl: int, vdl_epoch: int, epoch: int) -> int:
    """How far a node may coalesce: its SCL, but never above the VDL of its current epoch
    (a truncation may still cancel records above VDL; P17 §4.3)."""
    return min(scl, vdl) if vdl_epoch == epoch else 0


@dataclass(frozen=True, slots=True)
class CoalesceStep:
    """Materialise `pages` at `through` and move the frontier from `after` to `through`."""

    after: int
    through: int
    pages: tuple[int, ...]


def plan_coalesce(
    coalesced_through: int,
    point: int,
    records: Sequence[tuple[int, int]],
    records_max: int = COALESCE_RECORDS_MAX,
) -> CoalesceStep | None:
    """The next step, from the (LSN, page) of the records just above the frontier in LSN
    order, as many as there are up to `records_max`; None when there is nothing to do.

    Records above `point` are left for later. With no record in (C, point] the frontier
    still moves to `point`: there is nothing there to cover.
    """
    assert records_max >= 1 and len(records) <= records_max
    taken = [(lsn, page) for lsn, page in records if lsn <= point]
    assert all(lsn > coalesced_through for lsn, _ in taken), "records come from above C"
    if point <= coalesced_through:
        return None
    if not taken:  # records are in LSN order: none lies in (C, point]
        return CoalesceStep(coalesced_through, point, ())
    # All `records_max` taken: more may lie at or below `point` beyond the last of them.
    full = len(records) == records_max and len(taken) == len(records)
    through = taken[-1][0] if full else point
    pages = tuple(sorted({page for _, page in taken}))
    return CoalesceStep(coalesced_through, through, pages)


def gc_horizon(
    coalesced_through: int,
    read_point_min: int,
    peer_points: Iterable[int] | None,
    repair_floors: Iterable[int],
) -> int:
    """Below this LSN nothing is needed but the newest version of each page.

    `peer_points`: every peer's SCL and coalescing frontier; None when some peer did not
    answer lately: it may need anything. A repair floor f (a damaged record some node must
    fetch back) keeps everything from f.
    """
    if peer_points is None:
        return 0
    floors = [f - 1 for f in repair_floors if f]
    return max(0, min([coalesced_through, read_point_min, *peer_points, *floors]))


def node_gc_horizon(
    coalesced_through: int,
    read_point_min: int,
    members: Collection[str],
    peers: Sequence[str],
    peer_scl: Mapping[str, int],
    peer_coalesced: Mapping[str, int],
    repair_floor: int,
    peer_repair_floors: Mapping[str, int],
) -> int:
    """A node's horizon from what its last gossip round heard: the SCL, coalescing frontier
    and repair floor of every peer that is a member of the volume (a node being hydrated into
    it included; no spare, no replaced node: sixfold/core/membership.py), and none at all
    when such a peer did not answer (it may need anything)."""
    heard = all(p in peer_scl for p in peers if p in members)
    points = [x for p, x in (*peer_scl.items(), *peer_coalesced.items()) if p in members]
    floors = [repair_floor, *(x for p, x in peer_repair_floors.items() if p in members)]
    return gc_horizon(coalesced_through, read_point_min, points if heard else None, floors)


def version_needed(page_lsn: int, newest_version_lsn: int) -> bool:
    """A coalescing step stores a page's version only when the page changed since its newest
    version at or below the step's end."""
    return page_lsn > newest_version_lsn


def record_redundant(lsn: int, horizon: int, newest_version_at_horizon: int) -> bool:
    """A record at `lsn` may go once its page has a version in [lsn, horizon]."""
    return lsn <= horizon and lsn <= newest_version_at_horizon
