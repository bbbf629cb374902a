"""Copy-on-write clones (issue 15), the storage side: holds on the source's nodes, and the
clone's nodes that read through to them (sixfold/core/clones.py says why this is safe).

Both work on the LMDB files directly, as another process beside the running node: LMDB
serialises write transactions across processes, and the node's GC reads the holds inside its
own transaction. So a clone is made in time independent of the volume's size: six small
transactions on the source, six empty stores for the clone.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sixfold.core.clones import LowerLayer
from sixfold.core.errors import CloneError
from sixfold.core.membership import POSITIONS, newest_membership
from sixfold.core.quorum import NODE_NAMES
from storage_node.node import parse_membership
from storage_node.store import MAP_SIZE_BYTES_DEFAULT, NodeStore


def hold_all(holders: dict[str, Path], clone_id: str, point: int) -> int:
    """Take the hold on every source node (position -> its directory), or on none: a refusal
    releases those taken. Returns the versions the holds wrote."""
    taken: list[Path] = []
    made = 0
    try:
        for path in holders.values():
            made += _on_store(path, lambda s: s.hold(clone_id, point))
            taken.append(path)
    except BaseException:
        for path in taken:
            _on_store(path, lambda s: s.release(clone_id))
        raise
    return made


def release_all(holders: list[Path], clone_id: str) -> list[str]:
    """Drop the hold from every source node that has it; the nodes that did not."""
    missing = []
    for path in holders:
        try:
            _on_store(path, lambda s: s.release(clone_id))
        except CloneError:
            missing.append(path.name)
    return missing


def holds_of(path: Path) -> dict[str, int]:
    return _on_store(path, lambda s: s.holds())


def build_clone(
    holders: dict[str, Path], clone_id: str, point: int, into: Path, volume_id: str
) -> None:
    """The clone's six stores in `into` (built beside it and renamed: a clone killed half-way
    leaves a hidden directory, never a volume `sixfold up` would start)."""
    building = into.parent / f".{into.name}.cloning-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    try:
        for position in NODE_NAMES:
            source = holders[position]
            lower = LowerLayer(str(source.resolve()), source.name, point, clone_id)
            # Opened before the lower layer is named: one process must not open the
            # source's environment twice (the hold above opened and closed it).
            store = NodeStore(building / position, position, MAP_SIZE_BYTES_DEFAULT)
            try:
                store.claim_volume(volume_id)  # a new volume
                store.put_cloned(lower)
            finally:
                store.close()
        if into.exists():
            into.rmdir()  # empty (checked by the caller)
        building.rename(into)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise


T = TypeVar("T")


def _on_store(path: Path, action: Callable[[NodeStore], T]) -> T:
    store = NodeStore.of_stopped(path, path.name)
    try:
        return action(store)
    finally:
        store.close()


def source_holders(directory: Path, storage_names: list[str]) -> dict[str, Path]:
    """Position -> the directory of the source node holding it, from the newest membership
    the source's stores hold; refused while a membership change is under way."""
    memberships = []
    for name in storage_names:
        path = directory / name
        if path.is_dir():
            raw = _on_store(path, lambda s: s.load_membership())
            memberships.append(parse_membership(raw, path))
    membership = newest_membership(memberships)
    if membership.change is not None:
        raise CloneError(
            f"the source is replacing {membership.change.old} with {membership.change.new}: "
            "clone it once that change is complete or reverted"
        )
    return {p: directory / h for p, h in zip(POSITIONS, membership.holders, strict=True)}
