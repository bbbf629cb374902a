"""`sixfold backup run|status` and `sixfold restore` (issue 15)."""

from __future__ import annotations

import asyncio
import datetime
import time
from pathlib import Path

from rich.progress import Progress

from sixfold.backup.agent import BackupAgent
from sixfold.backup.store import open_store
from sixfold.clients import NodeClient
from sixfold.core.backup import Manifest, plan_restore
from sixfold.core.errors import BackupError, SixfoldError
from sixfold.targets import ComposeTarget, ProcessTarget
from storage_node.restore import Restored, restore

ROUNDS_UNBOUNDED = 0


async def run(
    target: ProcessTarget | ComposeTarget, url: str, interval_s: float, rounds: int
) -> None:
    """Ship the committed log to `url` every `interval_s` until interrupted (or `rounds`
    rounds; 0: no bound). A failed round is reported and tried again."""
    agent = BackupAgent([NodeClient(n, a) for n, a in target.nodes.items()], open_store(url))
    done = 0
    try:
        while rounds == ROUNDS_UNBOUNDED or done < rounds:
            try:
                shipped = await agent.round()
                for obj in shipped.objects:
                    print(f"{obj.kind} {obj.name}: LSNs to {obj.last_lsn}, {obj.size:,} bytes")
            except SixfoldError as exc:
                print(f"backup round failed (tried again): {exc}")
            done += 1
            if rounds == ROUNDS_UNBOUNDED or done < rounds:
                await asyncio.sleep(interval_s)
    finally:
        await agent.close()


def status(url: str) -> str:
    manifest = open_store(url).latest_manifest()
    return describe(manifest, url)


def describe(manifest: Manifest, url: str) -> str:
    window, times = manifest.window(), manifest.time_window()
    if window is None or times is None:
        return f"backup at {url}: no base yet (run `sixfold backup run --to {url}`)"
    stored = sum(o.size for o in manifest.objects)
    return "\n".join(
        [
            f"backup at {url} (manifest {manifest.seq})",
            f"  restore points: LSN {window[0]} ({when(times[0])}) to LSN {window[1]} "
            f"({when(times[1])})",
            f"  objects: {len(manifest.objects)}, {stored:,} bytes; newest "
            f"{time.time() - times[1]:.1f} s ago",
        ]
    )


def restore_into(url: str, into: Path, to_lsn: int | None, to_time: float | None) -> Restored:
    store = open_store(url)
    plan = plan_restore(store.latest_manifest(), to_lsn, to_time)
    with Progress() as bar:
        task = bar.add_task("restoring", total=len(plan.base) + len(plan.logs))
        return restore(store, plan, into, lambda done, total: bar.update(task, completed=done))


def parse_time(text: str) -> float:
    """An ISO 8601 time (local time unless it says otherwise), or seconds since the epoch."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise BackupError(
            f"{text!r} is not a time: give ISO 8601 (2026-11-30T15:04:05) or seconds since the epoch"
        ) from None


def when(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds).isoformat(timespec="seconds")
