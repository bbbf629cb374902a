"""The `sixfold` command as a user runs it, against a real process cluster."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from sixfold import cluster
from sixfold.tools import cli
from tests import readme

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.processes


def sixfold(directory: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sixfold.tools.cli", "--dir", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_cli_without_a_cluster_says_how_to_start_one(tmp_path: Path) -> None:
    result = sixfold(tmp_path / "none", "status")
    assert result.returncode == 3  # pg_isready's "no attempt"
    assert "no cluster in" in result.stderr
    assert f"sixfold --dir {tmp_path / 'none'} up" in result.stderr  # valid syntax


def test_every_command_describes_itself_and_shows_its_defaults() -> None:
    parser = cli.build_parser()
    cli._finish_help(parser)
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, command in commands.items():
        assert command.description, f"{name} has no description"

    def shows(command: str, default: str) -> bool:
        text = " ".join(commands[command].format_help().split())
        return re.search(rf"\(default:? {re.escape(default)}\)", text) is not None

    assert shows("up", "60.0") and "(default 7100," in " ".join(
        commands["up"].format_help().split()
    )
    assert shows("chaos", "3.0") and shows("chaos", "60.0")  # --settle, --limit
    assert shows("bench", "600") and shows("bench", "2.0")  # --record-bytes, --warmup
    kill = commands["kill"].format_help()
    assert "a1 a2 b1 b2 c1 c2" in kill and "writer r1 r2" in kill


def test_up_names_a_taken_port(tmp_path: Path) -> None:
    base = cluster.free_base_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", base + 3))
        holder.listen()
        result = sixfold(tmp_path / "c", "up", "--detach", "--base-port", str(base))
    assert result.returncode == 1
    assert f"port {base + 3} (b1) on 127.0.0.1 is taken" in result.stderr
    assert "--base-port" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    bad = sixfold(tmp_path / "c", "up", "--detach", "--base-port", "80")
    assert bad.returncode == 1 and "choose a base from 1024" in bad.stderr


def test_cli_rejects_unknown_names(tmp_path: Path) -> None:
    result = sixfold(tmp_path, "kill", "--az", "z")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def status_of(d: Path) -> tuple[dict, int]:
    result = sixfold(d, "status", "--json")
    return json.loads(result.stdout), result.returncode


def one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sixfold: "), result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def on_a_terminal(d: Path, *args: str, timeout: float = 60) -> tuple[int, str]:
    """Run the CLI with stderr on a pseudo-terminal; (exit code, what the terminal got)."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sixfold.tools.cli", "--dir", str(d), *args],
        stdout=subprocess.DEVNULL,
        stderr=follower,
        stdin=subprocess.DEVNULL,
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    return proc.wait(timeout=10), seen.decode(errors="replace")


def test_cli_session(tmp_path: Path) -> None:
    d = tmp_path / "c"
    base = cluster.free_base_port()
    try:
        up = sixfold(d, "up", "--detach", "--base-port", str(base))
        assert up.returncode == 0, up.stderr
        assert "write quorum: available" in up.stdout

        status, code = status_of(d)
        assert code == 0 and status["health"] == "writable"
        assert [n["name"] for n in status["nodes"]] == ["a1", "a2", "b1", "b2", "c1", "c2"]
        assert [n["az"] for n in status["nodes"]] == ["a", "a", "b", "b", "c", "c"]
        assert [n["address"] for n in status["nodes"]] == [
            f"127.0.0.1:{base + i}" for i in range(1, 7)
        ]
        assert [(i["name"], i["role"], i["address"]) for i in status["instances"]] == [
            ("writer", "writer", f"127.0.0.1:{base}"),
            ("r1", "reader", f"127.0.0.1:{base + 101}"),
            ("r2", "reader", f"127.0.0.1:{base + 102}"),
        ]
        assert status["writer"]["up"] and status["write_quorum"] and status["read_quorum"]
        text = sixfold(d, "status").stdout
        assert f"127.0.0.1:{base + 101}" in text and "log: records not yet folded" in text

        written = sixfold(d, "page", "write", "5", "héllo wörld")
        assert written.returncode == 0, written.stderr
        lsn = int(written.stdout.strip())
        assert sixfold(d, "page", "read", "5").stdout.strip() == "héllo wörld"
        deadline = time.monotonic() + 10
        while status_of(d)[0]["readers"][0]["read_point"] < lsn:
            assert time.monotonic() < deadline, "r1 never reached the commit"
            time.sleep(0.1)
        assert sixfold(d, "page", "read", "5", "--reader", "r1").stdout.strip() == "héllo wörld"
        assert_bad_input_is_refused(d)
        for command in readme.sql_commands():
            done = sixfold(d, *command)
            assert done.returncode == 0 and done.stdout.strip(), done.stderr  # a psql-like tag
        assert run_readme_example(d, tmp_path) == "(350,)"

        killed = sixfold(d, "kill", "--az", "a")
        assert "killed (SIGKILL) a1, a2" in killed.stdout
        status, code = status_of(d)
        assert status["nodes_up"] == 4 and status["write_quorum"] and code == 0
        assert sixfold(d, "page", "write", "6", "still writing").returncode == 0

        sixfold(d, "kill", "b1")  # AZ+1: reads go on, writes wait, and the CLI says so
        status, code = status_of(d)
        assert code == 1 and status["health"] == "read-only"
        assert status["writer"]["status"].startswith("writes wait: no write quorum (3 of 6")
        code, terminal = on_a_terminal(d, "page", "write", "7", "waits", "--timeout", "3")
        assert code == 1
        assert "waiting for a write quorum: 3 of 6 reachable, 4 needed" in terminal, terminal
        assert re.search(r"\(\d s of 3\)", terminal), terminal
        assert sixfold(d, "start", "b1").returncode == 0

        sixfold(d, "kill", "writer")
        assert sixfold(d, "page", "read", "5", "--reader", "r2").stdout.strip() == "héllo wörld"
        # A reader takes over within seconds; the CLI finds it through the topology. r1 ranks
        # first, but on a loaded machine r2 may legitimately go first (ranks are 0.5 s apart),
        # so the test checks that exactly one did and follows whichever it was.
        deadline = time.monotonic() + 30
        while (read := sixfold(d, "page", "read", "5", "--timeout", "2")).returncode != 0:
            assert time.monotonic() < deadline, read.stderr
            time.sleep(0.2)
        assert read.stdout.strip() == "héllo wörld"
        new = status_of(d)[0]["writer"]["name"]
        assert new in ("r1", "r2"), new
        other = "r2" if new == "r1" else "r1"

        # Roles follow the topology: the old writer, restarted, is a reader by its name.
        assert sixfold(d, "start", "writer", "--az", "a").returncode == 0
        deadline = time.monotonic() + 30
        while (roles := {i["name"]: i["role"] for i in status_of(d)[0]["instances"]}) != {
            "writer": "reader",
            new: "writer",
            other: "reader",
        }:
            assert time.monotonic() < deadline, roles
            time.sleep(0.2)
        assert sorted(r["name"] for r in status_of(d)[0]["readers"]) == sorted(["writer", other])
        through_old = sixfold(d, "page", "read", "5", "--reader", "writer")
        assert through_old.stdout.strip() == "héllo wörld", through_old.stderr
        one_line_error(sixfold(d, "switchover", new), f"{new} is already the writer")
        assert run_readme_example(d, tmp_path) == "(350,)"  # after the failover too
        assert sixfold(d, "page", "read", "9", "--reader", "nope").returncode == 1

        logs = sixfold(d, "logs", "a1", "-n", "3")
        assert logs.returncode == 0 and "storage node a1" in logs.stdout
        every = sixfold(d, "logs", "-n", "1").stdout.splitlines()
        assert {line.split("|")[0].strip() for line in every} >= {"a1", "c2", "writer", other}
    finally:
        down = sixfold(d, "down")
    assert down.returncode == 0
    status, code = status_of(d)
    assert code == 2 and status["health"] == "unavailable"
    one_line_error(sixfold(d, "page", "write", "1", "x"), "no cluster is running in")


def run_readme_example(d: Path, cwd: Path) -> str:
    """The README's DB-API example as printed; `connect()` finds the cluster by $SIXFOLD_DIR."""
    return readme.run_dbapi_example({**os.environ, "SIXFOLD_DIR": str(d)}, cwd)


def assert_bad_input_is_refused(d: Path) -> None:
    """Each gets one clear line and exit 1, and nothing is written (issue 12)."""
    before = status_of(d)[0]["writer"]["vdl"]
    one_line_error(sixfold(d, "page", "read", "-1"), "page -1: page numbers run from 0 to")
    one_line_error(sixfold(d, "page", "read", str(1 << 32)), "page 4294967296: page numbers")
    one_line_error(sixfold(d, "page", "write", "-3", "x"), "page -3: page numbers")
    for size in (4096, 8192):
        one_line_error(
            sixfold(d, "page", "write", "3", "x" * size),
            f"text of {size} bytes is too long: a page holds at most 4095 bytes",
        )
    assert sixfold(d, "page", "write", "3", "x" * 4095).returncode == 0
    before = status_of(d)[0]["writer"]["vdl"]
    one_line_error(sixfold(d, "page", "read", "77"), "page 77 has never been written")
    one_line_error(sixfold(d, "sql", "  "), "no SQL given")
    one_line_error(sixfold(d, "switchover", "writer"), "writer is already the writer")
    assert status_of(d)[0]["writer"]["vdl"] == before


def test_the_foreground_up_tells_cluster_events(tmp_path: Path) -> None:
    d = tmp_path / "c"
    base = cluster.free_base_port()
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sixfold.tools.cli",
            "--dir",
            str(d),
            "up",
            "--base-port",
            str(base),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert up.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(up.stdout), daemon=True)
    reader.start()

    def wait_told(needle: str, limit_s: float = 60) -> None:
        deadline = time.monotonic() + limit_s
        while needle not in "".join(lines):
            assert up.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, f"never told {needle!r}:\n{''.join(lines)}"
            time.sleep(0.1)

    try:
        wait_told("Cluster events follow")
        assert sixfold(d, "kill", "a1", "a2", "b1").returncode == 0
        wait_told("storage node b1 lost")
        wait_told("write quorum LOST: 3 of 6 nodes up")
        assert sixfold(d, "start", "a1", "a2", "b1").returncode == 0
        wait_told("write quorum regained")
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=60)
        reader.join(timeout=10)
        sixfold(d, "down")
    assert "stopped 9 processes" in "".join(lines)
