"""Where backups go: an object store named by a URL.

- `file://PATH`, a local directory (the embedded default): each object is written to a
  temporary name, synced, then renamed, so a crash leaves the whole object or none of it.
- `s3://BUCKET/PREFIX`, any S3-compatible store, through boto3: an object PUT is atomic.
  The endpoint and credentials come from the usual AWS variables (AWS_ENDPOINT_URL,
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION) or files.
Either way the manifest is written after the objects it names."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sixfold.core.backup import (
    LEASE_NAME,
    BackupObject,
    Chapter,
    Lease,
    Manifest,
    Snapshot,
    dump_lease,
    dump_manifest,
    load_chapter,
    load_lease,
    load_manifest,
    load_snapshot,
    manifest_name,
)
from sixfold.core.errors import BackupError, CorruptBackupError

MANIFEST_PREFIX = "manifest/"
SNAPSHOT_PREFIX = "snapshot/"

T = TypeVar("T")


class ObjectStore:
    """What a backup needs of a store: put, get and list objects by name."""

    url: str

    def put(self, name: str, data: bytes) -> None:
        raise NotImplementedError

    def get(self, name: str) -> bytes:
        raise NotImplementedError

    def names(self, prefix: str) -> list[str]:
        """The objects whose names start with `prefix`, in name order."""
        raise NotImplementedError

    def delete(self, name: str) -> None:
        """Remove an object (nothing if it is gone already)."""
        raise NotImplementedError

    def snapshots(self) -> list[Snapshot]:
        return [load_snapshot(n, self.get(n)) for n in self.names(SNAPSHOT_PREFIX)]

    def latest_manifest(self) -> Manifest:
        """The newest manifest (an empty one when there is none yet); a damaged newest one is
        reported (CorruptBackupError), never passed over for an older one silently."""
        names = self.names(MANIFEST_PREFIX)
        if not names:
            return Manifest(0, ())
        return load_manifest(names[-1], self.get(names[-1]))

    def put_manifest(self, manifest: Manifest) -> None:
        self.put(manifest_name(manifest.seq), dump_manifest(manifest))

    def read_chapter(self, chapter: Chapter) -> tuple[BackupObject, ...]:
        """The objects a chapter names, checked (CorruptBackupError names it otherwise)."""
        return load_chapter(chapter, self.get(chapter.name))

    def lease(self) -> Lease | None:
        """The agent's lease, None when there is none (or it is damaged: it only ever
        stops a second agent, so a damaged one is taken over, not trusted)."""
        if LEASE_NAME not in self.names(LEASE_NAME.rsplit("/", 1)[0] + "/"):
            return None
        try:
            return load_lease(self.get(LEASE_NAME))
        except CorruptBackupError:
            return None

    def put_lease(self, lease: Lease) -> None:
        self.put(LEASE_NAME, dump_lease(lease))

    def delete_partials(self, prefixes: tuple[str, ...]) -> int:
        """Remove the pieces of objects a crash cut short under `prefixes`; how many.
        An object store's PUT leaves none."""
        return 0


class FileStore(ObjectStore):
    """A directory as an object store: object names are relative paths in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"

    def put(self, name: str, data: bytes) -> None:
        try:
            self._put(name, data)
        except OSError as exc:
            raise BackupError(f"{self.url}: cannot write {name}: {exc}") from None

    def _put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself must survive a crash
        finally:
            os.close(directory)

    def get(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise BackupError(f"backup object {name} is missing from {self.url}") from None
        except OSError as exc:
            raise BackupError(f"{self.url}: cannot read {name}: {exc}") from None

    def names(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        if not folder.is_dir():
            return []
        return sorted(
            f"{prefix}{p.name}"
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".")
        )

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def delete_partials(self, prefixes: tuple[str, ...]) -> int:
        swept = 0
        for prefix in prefixes:
            folder = self._path(prefix)
            if folder.is_dir():
                for partial in folder.glob(".*.partial-*"):
                    partial.unlink(missing_ok=True)
                    swept += 1
        return swept

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        assert path.is_relative_to(self.root.resolve()), name
        return path


class S3Store(ObjectStore):
    """An S3 bucket (and a key prefix) as an object store."""

    def __init__(self, bucket: str, prefix: str) -> None:
        import boto3  # only when an s3:// store is used

        self.bucket, self.prefix = bucket, prefix
        self.url = f"s3://{bucket}/{prefix}"
        self.client = boto3.client("s3")

    def put(self, name: str, data: bytes) -> None:
        self._call(
            "put",
            name,
            lambda: self.client.put_object(Bucket=self.bucket, Key=self._key(name), Body=data),
        )

    def get(self, name: str) -> bytes:
        def read() -> bytes:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(name))
            body: Any = response["Body"]
            return bytes(body.read())  # inside _call: a broken read is a BackupError too

        return self._call("get", name, read)

    def names(self, prefix: str) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self._key(prefix)
        )
        keys = self._call(
            "list", prefix, lambda: [o["Key"] for p in pages for o in p.get("Contents", [])]
        )
        return sorted(k.removeprefix(self.prefix) for k in keys)

    def delete(self, name: str) -> None:
        self._call(
            "delete",
            name,
            lambda: self.client.delete_object(Bucket=self.bucket, Key=self._key(name)),
        )

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _call(self, what: str, name: str, fn: Callable[[], T]) -> T:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404"):
                raise BackupError(f"backup object {name} is missing from {self.url}") from None
            raise BackupError(f"{self.url}: {what} {name}: {code or exc}") from None
        except BotoCoreError as exc:
            raise BackupError(f"{self.url}: {what} {name}: {exc}") from None


def open_store(url: str) -> ObjectStore:
    """The store a URL names: file://PATH or s3://BUCKET/PREFIX."""
    if url.startswith("file://"):
        path = Path(url.removeprefix("file://"))
        if not str(path):
            raise BackupError(f"{url!r} names no directory: use file:///absolute/path")
        path.mkdir(parents=True, exist_ok=True)
        return FileStore(path)
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise BackupError(f"{url!r} names no bucket: use s3://BUCKET/PREFIX")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return S3Store(bucket, prefix)
    raise BackupError(f"{url!r} is not a backup store URL: use file://PATH or s3://BUCKET/PREFIX")
