"""`sixfold clone`: a copy-on-write clone of a process cluster's volume (issue 15).

The clone starts as the source at a VDL a read quorum of the source's nodes learned (as a
reader's read point), so at a consistent volume, and shares every page with the source until
one side writes it (sixfold/core/clones.py, storage_node/clone.py).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from sixfold import cluster
from sixfold.clients import NodeClient
from sixfold.core.clones import check_clone_id
from sixfold.core.errors import CloneError, SixfoldError
from sixfold.core.quorum import READ_QUORUM
from sixfold.core.read_point import advance_read_point
from sixfold.rpc import sixfold_pb2 as pb
from storage_node import clone as storage

CLONE_FILE = "clone.json"  # in the clone's directory: its source, hold and point
HOLD_TRIES_MAX = 5  # a node's GC may pass a freshly learned VDL; then a newer one is taken
HOLD_RETRY_S = 0.5
CALL_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Cloned:
    clone_id: str
    point: int
    directory: Path
    versions_written: int  # on the source, by the holds
    took_s: float


async def create(source: Path, into: Path, clone_id: str | None = None) -> Cloned:
    started = time.monotonic()
    layout = cluster.ClusterLayout.load(source)
    if into.exists() and any(into.iterdir()):
        raise CloneError(f"{into} is not empty: clone into a new directory")
    clone_id = check_clone_id(clone_id or f"{into.name}-{int(time.time())}")
    holders = storage.source_holders(source, layout.storage_names)
    clients = [
        NodeClient(n, a) for n, a in layout.nodes.items() if n in {h.name for h in holders.values()}
    ]
    try:
        for attempt in range(HOLD_TRIES_MAX):
            point = await _durable_point(clients, clone_id)
            try:
                made = await asyncio.to_thread(storage.hold_all, holders, clone_id, point)
                break
            except CloneError:
                if attempt == HOLD_TRIES_MAX - 1:
                    raise
                await asyncio.sleep(HOLD_RETRY_S)
    finally:
        # The holds keep what the clone needs: its read point would hold GC back for nothing.
        done = pb.GetStateRequest(reader=f"clone-{clone_id}", read_point=0)
        await asyncio.gather(
            *(c.get_state(done, timeout=CALL_TIMEOUT_S) for c in clients), return_exceptions=True
        )
        await asyncio.gather(*(c.close() for c in clients))
    layout = cluster.new_layout(into)
    try:
        await asyncio.to_thread(
            storage.build_clone, holders, clone_id, point, into, layout.volume_id
        )
    except BaseException:
        storage.release_all(list(holders.values()), clone_id)
        raise
    layout.save()
    record = {
        "source": str(source.resolve()),
        "id": clone_id,
        "point": point,
        "holders": [str(p) for p in holders.values()],
        "at": time.time(),
    }
    (into / CLONE_FILE).write_text(json.dumps(record, indent=1))
    return Cloned(clone_id, point, into, made, time.monotonic() - started)


async def _durable_point(clients: list[NodeClient], clone_id: str) -> int:
    """A VDL a read quorum of the source's nodes learned, held as a read point on each (so
    their GC stays below it while the holds are taken)."""
    states = await asyncio.gather(
        *(c.get_state(pb.GetStateRequest(), timeout=CALL_TIMEOUT_S) for c in clients),
        return_exceptions=True,
    )
    learned = [(s.vdl_epoch, s.vdl) for s in states if isinstance(s, pb.NodeState)]
    _, point = advance_read_point((0, 0), learned)
    if point == 0:
        raise CloneError(
            f"only {len(learned)} of the source's nodes answered with a durable point; "
            f"{READ_QUORUM} are needed to clone (is the source cluster up?)"
        )
    hold = pb.GetStateRequest(reader=f"clone-{clone_id}", read_point=point)
    await asyncio.gather(
        *(c.get_state(hold, timeout=CALL_TIMEOUT_S) for c in clients), return_exceptions=True
    )
    return point


def holds(source: Path) -> dict[str, dict[str, int]]:
    """Clone id -> {node: held point}, over the source's storage node directories."""
    layout = cluster.ClusterLayout.load(source)
    out: dict[str, dict[str, int]] = {}
    for name in layout.storage_names:
        if (source / name).is_dir():
            for clone_id, point in storage.holds_of(source / name).items():
                out.setdefault(clone_id, {})[name] = point
    return out


def drop(clone_dir: Path) -> str:
    """Stop sharing: release the source's holds and delete the clone's directory."""
    record_path = clone_dir / CLONE_FILE
    if not record_path.is_file():
        raise CloneError(f"{clone_dir} is not a clone (no {CLONE_FILE} there)")
    layout = cluster.ClusterLayout.load(clone_dir)
    running = [n for n, info in layout.processes.items() if cluster.is_running(info)]
    if running:
        raise CloneError(
            f"the clone in {clone_dir} is running ({', '.join(sorted(running))}): "
            f"stop it first (`sixfold --dir {clone_dir} down`)"
        )
    try:
        record = json.loads(record_path.read_text())
        clone_id, holders = str(record["id"]), [Path(p) for p in record["holders"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise CloneError(f"{record_path}: unreadable: {exc}") from exc
    clones_of_it = holds(clone_dir)
    if clones_of_it:
        raise CloneError(
            f"the clone in {clone_dir} is the source of clones {', '.join(sorted(clones_of_it))}, "
            f"which read its pages: drop them first"
        )
    missing = storage.release_all([p for p in holders if p.is_dir()], clone_id)
    shutil.rmtree(clone_dir)
    note = f" ({', '.join(missing)} held nothing for it)" if missing else ""
    return f"clone {clone_id} dropped: {clone_dir} deleted, the source's holds released{note}"


def release(source: Path, clone_id: str) -> str:
    """Release a clone's holds on the source, for a clone whose directory is gone."""
    layout = cluster.ClusterLayout.load(source)
    paths = [source / n for n in layout.storage_names if (source / n).is_dir()]
    missing = storage.release_all(paths, check_clone_id(clone_id))
    if len(missing) == len(paths):
        raise SixfoldError(f"no node of {source} holds clone {clone_id!r}")
    return f"clone {clone_id}: the source's holds released"
