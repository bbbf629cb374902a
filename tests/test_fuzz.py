"""`sixfold fuzz` against real processes with kill, pause and disk faults: a bounded run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sixfold.history import load_history
from sixfold.linearizability import Verdict, check_history
from tests.conftest import LocalCluster

pytestmark = pytest.mark.processes


def test_fuzz_run_is_linearizable_under_faults(local_cluster: LocalCluster, tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "sixfold.cli", "--dir", local_cluster.layout.directory, "fuzz",
         "--time", "15", "--nemesis", "kill,pause,disk", "--seed", "11", "--history", str(history)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: ok" in result.stdout and f"history: {history}" in result.stdout
    events = load_history(history)
    faults = [e for e in events if e.is_nemesis]
    assert any(e.f == "kill" for e in faults) and any(e.f == "heal" for e in faults)
    assert sum(1 for e in events if e.type == "ok") > 50
    assert check_history(events).verdict == Verdict.OK  # the file alone checks the same


def test_fuzz_refuses_an_unknown_nemesis(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sixfold.cli", "--dir", str(tmp_path), "fuzz", "--nemesis", "flood"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "unknown nemesis flood" in result.stderr
