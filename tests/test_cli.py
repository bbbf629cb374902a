"""The `sixfold` command as a user runs it, against a real process cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.processes


def sixfold(directory: Path, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sixfold.cli", "--dir", str(directory), *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_cli_without_a_cluster_says_how_to_start_one(tmp_path: Path) -> None:
    result = sixfold(tmp_path / "none", "status")
    assert result.returncode == 1
    assert "no cluster in" in result.stderr and "sixfold up" in result.stderr


def test_cli_rejects_unknown_names(tmp_path: Path) -> None:
    result = sixfold(tmp_path, "kill", "--az", "z")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_cli_session(tmp_path: Path) -> None:
    d = tmp_path / "c"
    try:
        up = sixfold(d, "up", "--detach")
        assert up.returncode == 0, up.stderr
        assert "write quorum: available" in up.stdout

        status = json.loads(sixfold(d, "status", "--json").stdout)
        assert [n["name"] for n in status["nodes"]] == ["a1", "a2", "b1", "b2", "c1", "c2"]
        assert [n["az"] for n in status["nodes"]] == ["a", "a", "b", "b", "c", "c"]
        assert status["writer"]["up"] and status["write_quorum"] and status["read_quorum"]

        written = sixfold(d, "page", "write", "5", "héllo wörld")
        assert written.returncode == 0, written.stderr
        lsn = int(written.stdout.strip())
        assert sixfold(d, "page", "read", "5").stdout.strip() == "héllo wörld"
        deadline = time.monotonic() + 10
        while json.loads(sixfold(d, "status", "--json").stdout)["readers"][0]["read_point"] < lsn:
            assert time.monotonic() < deadline, "r1 never reached the commit"
            time.sleep(0.1)
        assert sixfold(d, "page", "read", "5", "--reader", "r1").stdout.strip() == "héllo wörld"

        killed = sixfold(d, "kill", "--az", "a")
        assert "killed (SIGKILL) a1, a2" in killed.stdout
        status = json.loads(sixfold(d, "status", "--json").stdout)
        assert status["nodes_up"] == 4 and status["write_quorum"]
        assert sixfold(d, "page", "write", "6", "still writing").returncode == 0

        sixfold(d, "kill", "writer")
        assert sixfold(d, "page", "read", "5", "--reader", "r2").stdout.strip() == "héllo wörld"
        # r1 takes over within seconds; the CLI finds it through the topology.
        deadline = time.monotonic() + 30
        while (read := sixfold(d, "page", "read", "5", "--timeout", "2")).returncode != 0:
            assert time.monotonic() < deadline, read.stderr
            time.sleep(0.2)
        assert read.stdout.strip() == "héllo wörld"
        status = json.loads(sixfold(d, "status", "--json").stdout)
        assert status["writer"]["name"] == "r1"

        started = sixfold(d, "start", "--az", "a")
        assert "started a1, a2" in started.stdout
        assert sixfold(d, "page", "read", "9", "--reader", "nope").returncode == 1
    finally:
        down = sixfold(d, "down")
    assert down.returncode == 0
