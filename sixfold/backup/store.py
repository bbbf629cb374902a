"""Where backups go: an object store named by a URL. `file://PATH` is a local directory
(the embedded default); each object is written to a temporary name, synced, then renamed,
so a crash leaves either the whole object or none of it under its name."""

from __future__ import annotations

import os
from pathlib import Path

from sixfold.core.backup import Manifest, dump_manifest, load_manifest, manifest_name
from sixfold.core.errors import BackupError

MANIFEST_PREFIX = "manifest/"


class FileStore:
    """A directory as an object store: object names are relative paths in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"file://{root}"

    def put(self, name: str, data: bytes) -> None:
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

    def names(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        if not folder.is_dir():
            return []
        return sorted(
            f"{prefix}{p.name}"
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".")
        )

    def latest_manifest(self) -> Manifest:
        """The newest manifest (an empty one when there is none yet); a damaged newest one is
        reported (CorruptBackupError), never passed over for an older one silently."""
        names = self.names(MANIFEST_PREFIX)
        if not names:
            return Manifest(0, ())
        return load_manifest(names[-1], self.get(names[-1]))

    def put_manifest(self, manifest: Manifest) -> None:
        self.put(manifest_name(manifest.seq), dump_manifest(manifest))

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        assert path.is_relative_to(self.root.resolve()), name
        return path


def open_store(url: str) -> FileStore:
    """The store a URL names: file://PATH (s3:// is not built yet)."""
    if url.startswith("file://"):
        path = Path(url.removeprefix("file://"))
        if not str(path):
            raise BackupError(f"{url!r} names no directory: use file:///absolute/path")
        path.mkdir(parents=True, exist_ok=True)
        return FileStore(path)
    if url.startswith("s3://"):
        raise BackupError(f"{url}: S3 stores are not supported yet; use file://PATH")
    raise BackupError(f"{url!r} is not a backup store URL: use file://PATH")
