"""Quorum sizes and placement: the one place they are defined (P17 §2).

Six copies of the volume, two in each of three availability zones. A write needs 4 of 6
acknowledgements and a read 3 of 6, so that:
- a read quorum always overlaps the latest write quorum (Vr + Vw > V), and
- two write quorums always overlap (2 * Vw > V), so two writers cannot both succeed.
"""

from __future__ import annotations

from collections.abc import Iterable

COPIES = 6
WRITE_QUORUM = 4
READ_QUORUM = 3

assert READ_QUORUM + WRITE_QUORUM > COPIES, "a read quorum must see the latest write"
assert 2 * WRITE_QUORUM > COPIES, "two write quorums must overlap"

AZS = ("a", "b", "c")
NODE_NAMES = ("a1", "a2", "b1", "b2", "c1", "c2")
# Spare storage nodes, one per AZ (`sixfold up --spares 1`): each may replace a dead node of
# its AZ (sixfold/core/membership.py), and then holds that position under its own name.
SPARE_NAMES = ("a3", "b3", "c3")
STORAGE_NAMES = (*NODE_NAMES, *SPARE_NAMES)  # every name a storage node process may take
NODE_AZ = {name: name[0] for name in STORAGE_NAMES}

assert len(NODE_NAMES) == COPIES
assert all(sum(1 for n in NODE_NAMES if NODE_AZ[n] == az) == COPIES // len(AZS) for az in AZS)
# Losing a whole AZ leaves a write quorum; losing an AZ plus one more leaves a read quorum.
assert COPIES - COPIES // len(AZS) >= WRITE_QUORUM
assert COPIES - COPIES // len(AZS) - 1 >= READ_QUORUM


def nodes_in_az(az: str) -> list[str]:
    """The storage nodes placed in availability zone `az`."""
    if az not in AZS:
        raise ValueError(f"unknown availability zone {az!r}: expected one of {', '.join(AZS)}")
    return [n for n in NODE_NAMES if NODE_AZ[n] == az]


def quorum_lsn(points: Iterable[int], quorum: int) -> int:
    """The highest LSN that at least `quorum` of the given per-node points have reached.

    With per-node SCLs and quorum=WRITE_QUORUM this is the VCL (P17 §4.1): the k-th highest.
    Fewer points than `quorum` means nothing is known to be complete: 0.
    """
    assert 1 <= quorum <= COPIES
    ordered = sorted(points, reverse=True)
    assert len(ordered) <= COPIES
    if len(ordered) < quorum:
        return 0
    return ordered[quorum - 1]
