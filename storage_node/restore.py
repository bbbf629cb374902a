"""Point-in-time restore (issue 15), the storage side: a new process cluster holding exactly the volume as of the last
commit at or below the point asked for (sixfold/core/backup.py plans which objects).

Every object is read back and CRC-checked before anything of it is used. The base's page
images have the log's records up to that commit applied, page by page, and each node of the
new cluster stores the result as page versions with that commit as its SCL, CPL, coalescing
frontier and GC horizon: the new cluster's first writer recovers with it as its VDL.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sixfold import cluster
from sixfold.backup.store import ObjectStore
from sixfold.core.backup import (
    RestorePlan,
    check_object,
    decode_pages,
    decode_records,
    restore_point,
)
from sixfold.core.errors import BackupError
from sixfold.core.page import EMPTY_PAGE, apply_records
from sixfold.core.quorum import NODE_NAMES
from sixfold.core.record import RedoRecord
from storage_node.store import MAP_SIZE_BYTES_DEFAULT, NodeStore

WRITE_BATCH_PAGES = 1_024  # page images per LMDB transaction while restoring

Progress = Callable[[int, int], None]  # (objects done, objects in all)


@dataclass(frozen=True, slots=True)
class Restored:
    lsn: int  # the commit the volume ends at
    durable_by: float  # when the backup saw it durable (seconds since the epoch)
    pages: int
    directory: Path


def restore(
    store: ObjectStore, plan: RestorePlan, into: Path, progress: Progress | None = None
) -> Restored:
    if into.exists() and any(into.iterdir()):
        raise BackupError(f"{into} is not empty: restore into a new directory")
    total = len(plan.base) + len(plan.logs)
    done = 0

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    records: list[RedoRecord] = []
    for obj in plan.logs:
        records += decode_records(obj.name, check_object(obj, store.get(obj.name)))
        step()
    base_lsn = plan.base[0].last_lsn
    point = restore_point(base_lsn, records, plan.wanted_lsn)
    durable_by = _durable_by(plan, point)
    by_page: dict[int, list[RedoRecord]] = {}
    for r in records:
        if r.lsn <= point:
            by_page.setdefault(r.page_no, []).append(r)
    # Built beside `into` and renamed at the end: a restore killed half-way leaves a hidden
    # directory, never half a volume that `sixfold up` would start.
    building = into.parent / f".{into.name}.restoring-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    layout = cluster.new_layout(into)  # a new volume, with an id of its own
    try:
        pages = _build(store, plan, building, by_page, point, step, layout.volume_id)
        if into.exists():
            into.rmdir()  # empty (checked above)
        building.rename(into)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    layout.save()
    return Restored(point, durable_by, pages, into)


def _build(
    store: ObjectStore,
    plan: RestorePlan,
    into: Path,
    by_page: dict[int, list[RedoRecord]],
    point: int,
    step: Callable[[], None],
    volume_id: str,
) -> int:
    """Every node's store in `into`, as of `point`, of volume `volume_id`; the pages
    written."""
    stores = [NodeStore(into / name, name, MAP_SIZE_BYTES_DEFAULT) for name in NODE_NAMES]
    for s in stores:
        s.claim_volume(volume_id)
    pages = 0
    try:
        batch: list[tuple[int, int, bytes]] = []
        for obj in plan.base:
            for page_no, page_lsn, image in decode_pages(
                obj.name, check_object(obj, store.get(obj.name))
            ):
                batch.append(_brought_up(page_no, page_lsn, image, by_page.pop(page_no, [])))
                if len(batch) >= WRITE_BATCH_PAGES:
                    _write(stores, batch, None)
                    pages, batch = pages + len(batch), []
            step()
        for page_no in sorted(by_page):  # pages first written after the base
            batch.append(_brought_up(page_no, 0, EMPTY_PAGE, by_page[page_no]))
        _write(stores, batch, point)
        pages += len(batch)
    finally:
        for s in stores:
            s.close()
    return pages


def _brought_up(
    page_no: int, page_lsn: int, image: bytes, records: list[RedoRecord]
) -> tuple[int, int, bytes]:
    if not records:
        return page_no, page_lsn, image
    return page_no, records[-1].lsn, apply_records(image, records)


def _write(stores: list[NodeStore], batch: list[tuple[int, int, bytes]], point: int | None) -> None:
    for s in stores:
        s.put_restored(batch, point)


def _durable_by(plan: RestorePlan, point: int) -> float:
    """When the backup saw `point` durable: the end of the object that holds it."""
    for obj in (*plan.base, *plan.logs):
        if obj.first_lsn < point <= obj.last_lsn or obj.last_lsn == point:
            return obj.durable_at
    return plan.base[0].durable_at
