"""`sixfold backup run|status` and `sixfold restore` (issue 15)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from sixfold import cluster
from sixfold.backup.agent import BASE_INTERVAL_S_DEFAULT, BackupAgent, Shipped
from sixfold.backup.store import open_store
from sixfold.clients import NodeClient
from sixfold.core.backup import (
    Manifest,
    Snapshot,
    dump_snapshot,
    load_snapshot,
    plan_restore,
    snapshot_object_name,
)
from sixfold.core.errors import BackupError, BackupLeaseError, SixfoldError
from sixfold.core.quorum import NODE_NAMES
from sixfold.metrics import BackupMetrics, serve
from sixfold.sql.layout import SQL_META_PAGE, decode_commit_info
from sixfold.targets import ComposeTarget, ProcessTarget
from storage_node.restore import Restored, restore
from storage_node.store import MAP_SIZE_BYTES_DEFAULT, NodeStore

ROUNDS_UNBOUNDED = 0


RETENTION_MIN_S = 86_400.0  # 1 day (Aurora's backup retention: 1 to 35 days)
RETENTION_MAX_S = 35 * 86_400.0
_UNITS_S = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


@dataclass
class AgentProgress:
    """The running agent's view of itself: its metrics, and (through the store, for
    `backup status`) its last round."""

    protected_since: float = 0.0  # when the last round that succeeded began
    durable: int = 0
    shipped: int = 0
    stored_bytes: int = 0
    oldest_point_at: float = 0.0
    error: str = ""

    def rpo_s(self, now: float) -> float:
        """Seconds of acknowledged commits the backup may not hold yet: those since the last
        successful round began (it ships what the nodes had learned durable then, a few ms
        behind the writer's acknowledgements). NaN before the first round."""
        return now - self.protected_since if self.protected_since else math.nan

    def succeeded(self, started: float, shipped: Shipped) -> None:
        window, times = shipped.manifest.window(), shipped.manifest.time_window()
        self.protected_since, self.durable, self.error = started, shipped.durable_point, ""
        self.shipped = window[1] if window else 0
        self.oldest_point_at = times[0] if times else 0.0
        self.stored_bytes = shipped.manifest.stored[1]

    def gauges(self) -> dict[str, tuple[str, float]]:
        return {
            "sixfold_backup_rpo_seconds": (
                "Seconds of acknowledged commits the backup may not hold yet (since the "
                "last successful round began)",
                self.rpo_s(time.time()),
            ),
            "sixfold_backup_shipped_lsn": ("Newest LSN the backup holds", self.shipped),
            "sixfold_backup_durable_lsn": (
                "VDL a read quorum of nodes had learned at the last successful round",
                self.durable,
            ),
            "sixfold_backup_stored_bytes": (
                "Bytes of objects the manifest names",
                self.stored_bytes,
            ),
            "sixfold_backup_oldest_restore_point_timestamp_seconds": (
                "When the oldest restorable point was durable (Unix time)",
                self.oldest_point_at,
            ),
            "sixfold_backup_failing": ("1 while the last round failed", float(bool(self.error))),
        }

    def as_json(self, now: float) -> bytes:
        return json.dumps(
            {
                "at": now,
                "protected_since": self.protected_since,
                "durable": self.durable,
                "error": self.error,
            }
        ).encode()


async def run(
    target: ProcessTarget | ComposeTarget,
    url: str,
    interval_s: float,
    rounds: int,
    retention_s: float = 0,
    base_interval_s: float = BASE_INTERVAL_S_DEFAULT,
    metrics_port: int = 0,
) -> None:
    """Ship the committed log to `url` every `interval_s` until interrupted (or `rounds`
    rounds; 0: no bound), deleting what no point within `retention_s` needs (0: keep all).
    A failed round is reported and tried again. With `metrics_port`, Prometheus metrics on
    127.0.0.1 there (docs/METRICS.md)."""
    clients = [NodeClient(n, a) for n, a in target.nodes.items()]
    agent = BackupAgent(clients, open_store(url), retention_s, base_interval_s)
    progress, metrics = AgentProgress(), BackupMetrics()
    metrics.watch(progress.gauges)
    if metrics_port:
        serve(metrics.registry, "127.0.0.1", metrics_port, "backup agent")
    done = 0
    try:
        while rounds == ROUNDS_UNBOUNDED or done < rounds:
            started = time.time()
            try:
                shipped = await agent.round()
                for obj in shipped.objects:
                    print(f"{obj.kind} {obj.name}: LSNs to {obj.last_lsn}, {obj.size:,} bytes")
                progress.succeeded(started, shipped)
                metrics.rounds.inc()
                metrics.bytes_shipped.inc(sum(o.size for o in shipped.objects))
            except BackupLeaseError:
                raise  # another agent ships there: trying again would only race it
            except SixfoldError as exc:
                print(f"backup round failed (tried again): {exc}")
                progress.error = str(exc)
                metrics.round_errors.inc()
            metrics.round_seconds.observe(time.time() - started)
            _report(agent, progress)
            done += 1
            if rounds == ROUNDS_UNBOUNDED or done < rounds:
                await asyncio.sleep(interval_s)
    finally:
        await agent.close()


AGENT_STATUS = "agent/status.json"  # the agent's last round, for `backup status`


def _report(agent: BackupAgent, progress: AgentProgress) -> None:
    """What `backup status` shows of the agent: its last round, and its last error."""
    with contextlib.suppress(SixfoldError):  # a store that refuses this refused the round too
        agent.store.put(AGENT_STATUS, progress.as_json(time.time()))


def status(url: str) -> str:
    store = open_store(url)
    text = describe(store.latest_manifest(), url)
    if AGENT_STATUS in store.names("agent/"):
        try:
            report = json.loads(store.get(AGENT_STATUS))
            now, since = time.time(), float(report.get("protected_since") or 0.0)
            lag = f"{now - since:.1f} s" if since else "unknown (no round has succeeded)"
            text += (
                f"\n  backup lag (RPO): {lag}: commits acknowledged since the last successful "
                "round began may not be in it yet"
                f"\n  agent: last round {now - report['at']:.1f} s ago"
                f"{'; nodes durable to LSN ' + str(report['durable']) if report['durable'] else ''}"
                f"; last error: {report['error'] or 'none'}"
            )
        except (ValueError, KeyError, TypeError):
            text += f"\n  agent: {AGENT_STATUS} is unreadable"
    lease = store.lease()
    if lease is not None:
        age = time.time() - lease.renewed_at
        state = "running" if age < lease.ttl_s else "lapsed: no agent runs"
        text += f"\n  agent: {lease.holder}, lease renewed {age:.0f} s ago ({state})"
    return text


def describe(manifest: Manifest, url: str) -> str:
    window, times = manifest.window(), manifest.time_window()
    if window is None or times is None:
        return f"backup at {url}: no base yet (run `sixfold backup run --to {url}`)"
    objects, stored = manifest.stored
    return "\n".join(
        [
            f"backup at {url} (manifest {manifest.seq})",
            f"  restore points: LSN {window[0]} ({when(times[0])}) to LSN {window[1]} "
            f"({when(times[1])})",
            f"  objects: {objects:,} in {len(manifest.chapters) + 1} chapters, {stored:,} "
            "bytes; newest "
            f"{time.time() - times[1]:.1f} s ago",
        ]
    )


def restore_into(url: str, into: Path, to_lsn: int | None, to_time: float | None) -> Restored:
    store = open_store(url)
    plan = plan_restore(store.latest_manifest(), to_lsn, to_time, store.read_chapter)
    with Progress() as bar:
        task = bar.add_task("restoring", total=len(plan.base) + len(plan.logs))
        return restore(store, plan, into, lambda done, total: bar.update(task, completed=done))


def restore_onto_compose(
    url: str, to_lsn: int | None, to_time: float | None
) -> tuple[Restored, str]:
    """The compose cluster's volume replaced by the backup's as of a point: built in a
    temporary directory as a process cluster's, then copied into each node's data volume
    with every member stopped (the spares' volumes emptied: a spare holds nothing), and the
    members started again. Its first writer recovers the restored volume."""
    target = ComposeTarget()
    members = [*target.nodes, *cluster.INSTANCE_NAMES]
    with tempfile.TemporaryDirectory(prefix="sixfold-restore-") as tmp:
        restored = restore_into(url, Path(tmp) / "volume", to_lsn, to_time)
        commit = committed(restored)  # read before the directory goes
        target.kill(list(cluster.INSTANCE_NAMES))  # no writer while the volume changes
        try:
            for name in target.nodes:
                if name in NODE_NAMES:
                    target.load_volume(name, restored.directory / name)
                else:
                    target.lose_disk(name)
        except SixfoldError as exc:  # left stopped: half the nodes may hold the new volume
            raise BackupError(
                f"the restore onto compose failed part way ({exc}); its members are left "
                "stopped, since some volumes may hold the restored volume and others the old "
                "one: run the same restore again (it replaces every volume)"
            ) from exc
    target.start(members)
    return restored, commit


def parse_duration(text: str) -> float:
    """'35d', '12h', '90m' or '3600s' in seconds (NaN if it is none of those)."""
    unit = _UNITS_S.get(text[-1:])
    try:
        return float(text[:-1]) * unit if unit else float("nan")
    except ValueError:
        return float("nan")


def parse_retention(text: str) -> float:
    """A retention in seconds, within 1 to 35 days."""
    seconds = parse_duration(text)
    if not RETENTION_MIN_S <= seconds <= RETENTION_MAX_S:
        raise BackupError(
            f"--retention {text!r}: give 1d to 35d (a number and one of s m h d, e.g. 35d)"
        )
    return seconds


def snapshot_create(url: str, name: str) -> Snapshot:
    """A snapshot at the backup's newest restore point."""
    store = open_store(url)
    object_name = snapshot_object_name(name)
    if object_name in store.names("snapshot/"):
        raise BackupError(
            f"snapshot {name} already exists in {url}: delete it first, or pick another name"
        )
    manifest = store.latest_manifest()
    times = manifest.time_window()
    if times is None:
        raise BackupError(f"the backup at {url} holds no base yet: nothing to snapshot")
    snapshot = Snapshot(name, manifest.newest_lsn, times[1])
    store.put(object_name, dump_snapshot(snapshot))
    return snapshot


def snapshots(url: str) -> list[Snapshot]:
    return open_store(url).snapshots()


def snapshot_delete(url: str, name: str) -> None:
    store = open_store(url)
    object_name = snapshot_object_name(name)
    if object_name not in store.names("snapshot/"):
        raise BackupError(f"no snapshot {name} in {url}")
    store.delete(object_name)


def snapshot_restore(url: str, name: str, into: Path) -> Restored:
    store = open_store(url)
    object_name = snapshot_object_name(name)
    if object_name not in store.names("snapshot/"):
        raise BackupError(f"no snapshot {name} in {url}")
    snapshot = load_snapshot(object_name, store.get(object_name))
    return restore_into(url, into, snapshot.lsn, None)


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


def committed(restored: Restored) -> str:
    """The restored point's commit time: the SQL commit's own (its meta page records it),
    else when the backup saw it durable (a commit was at or before that)."""
    store = NodeStore(restored.directory / NODE_NAMES[0], NODE_NAMES[0], MAP_SIZE_BYTES_DEFAULT)
    try:
        info = decode_commit_info(store.page_at(SQL_META_PAGE, restored.lsn)[0])
    except SixfoldError:  # not a SQL volume's meta page: raw page writes only
        info = None
    finally:
        store.close()
    if info is not None and info.commits:
        return f"the SQL commit of {when(info.commit_time_us / 1e6)}"
    return f"a commit seen durable by {when(restored.durable_by)}"
