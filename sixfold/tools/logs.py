"""`sixfold logs [NAME] [-f]`: the members' logs, from either cluster.

The process cluster writes DIR/logs/NAME.log; the compose cluster's are `docker logs`. With
several members each line is prefixed by its member's name. `-f` follows until Ctrl-C.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import TextIO

from sixfold.core.errors import SixfoldError

FOLLOW_POLL_S = 0.2
READ_CHUNK_BYTES = 1 << 16


def tail_lines(path: Path, count: int) -> tuple[list[str], int]:
    """The last `count` whole lines of a file (read from its end, so a large log costs
    little), and the offset just after them, where following it goes on."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        block = b""
        pos = size
        while pos > 0 and block.count(b"\n") <= count:
            step = min(READ_CHUNK_BYTES, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step) + block
    whole = block[: block.rfind(b"\n") + 1]  # a line still being written waits for -f
    lines = whole.decode("utf-8", errors="replace").splitlines()
    return (lines[-count:] if count else []), pos + len(whole)


def process_logs(
    directory: Path, names: list[str], lines: int, follow: bool, out: TextIO = sys.stdout
) -> None:
    """Print the last `lines` of each member's log file; then, with `follow`, new lines."""
    logs = directory / "logs"
    paths = {name: logs / f"{name}.log" for name in names}
    missing = [n for n, p in paths.items() if not p.exists()]
    if len(missing) == len(paths):
        raise SixfoldError(f"no log in {logs} for {', '.join(missing)}: has the cluster run?")
    prefix = len(names) > 1
    offsets = {}
    for name, path in paths.items():
        if not path.exists():
            continue
        tail, offsets[name] = tail_lines(path, lines)
        for line in tail:
            out.write(f"{name:<7}| {line}\n" if prefix else f"{line}\n")
    out.flush()
    while follow:
        time.sleep(FOLLOW_POLL_S)
        for name, path in paths.items():
            offsets[name] = _print_new(path, offsets.get(name, 0), name if prefix else "", out)


def _print_new(path: Path, offset: int, prefix: str, out: TextIO) -> int:
    """Print what was appended to `path` since `offset` (whole lines); the new offset."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            if f.tell() < offset:
                offset = 0  # the file was replaced: start over
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return offset
    end = data.rfind(b"\n") + 1
    for line in data[:end].decode("utf-8", errors="replace").splitlines():
        out.write(f"{prefix:<7}| {line}\n" if prefix else f"{line}\n")
    out.flush()
    return offset + end


def container_logs(
    containers: dict[str, str], lines: int, follow: bool, out: TextIO = sys.stdout
) -> bool:
    """`docker logs` of each container (name -> container), prefixed when several; False
    when any of them failed (its error is printed in its place)."""
    if shutil.which("docker") is None:
        raise SixfoldError("docker is not installed or not on PATH")
    prefix = len(containers) > 1
    failed: list[str] = []
    args = ["--tail", str(lines)] + (["--follow"] if follow else [])
    lock = threading.Lock()
    pending: deque[threading.Thread] = deque()

    def pump(name: str, container: str) -> None:
        with subprocess.Popen(
            ["docker", "logs", *args, container],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                with lock:
                    out.write(f"{name:<7}| {line}" if prefix else line)
                    out.flush()
        if proc.returncode != 0:
            failed.append(name)

    for name, container in containers.items():
        thread = threading.Thread(target=pump, args=(name, container), daemon=True)
        thread.start()
        pending.append(thread)
    while pending:
        pending[0].join(timeout=FOLLOW_POLL_S)
        if not pending[0].is_alive():
            pending.popleft()
    return not failed
