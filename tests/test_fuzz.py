"""`sixfold fuzz` against real processes with kill, pause, disk and partition faults: a
bounded run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sixfold.history import load_history
from sixfold.linearizability import Verdict, check_history
from sixfold.multipage import check_groups
from tests.conftest import LocalCluster

pytestmark = pytest.mark.processes


@pytest.fixture
def partitionable_cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path / "cluster", partitionable=True)
    try:
        c.up()
        yield c
    finally:
        c.down()


def test_fuzz_run_is_linearizable_under_faults(
    partitionable_cluster: LocalCluster, tmp_path: Path
) -> None:
    history = tmp_path / "history.jsonl"
    # Seed 29 brings, within 15 s: a node losing its unsynced tail, an AZ split and a pause.
    result = subprocess.run(
        [sys.executable, "-m", "sixfold.cli", "--dir", partitionable_cluster.layout.directory,
         "fuzz", "--time", "15", "--nemesis", "kill,pause,disk,partition", "--seed", "29",
         "--history", str(history)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verdict: ok" in result.stdout and f"history: {history}" in result.stdout
    events = load_history(history)
    faults = [e for e in events if e.is_nemesis]
    assert any(e.f == "kill" for e in faults) and any(e.f == "heal" for e in faults)
    assert any(e.f == "partition" for e in faults), result.stdout
    assert any(e.f == "corrupt" and "lost-tail" in e.value for e in faults), result.stdout
    assert sum(1 for e in events if e.type == "ok") > 50
    assert check_history(events).verdict == Verdict.OK  # the file alone checks the same
    groups = check_groups(events)
    assert groups.shared_read_points > 0 and not groups.violations  # the check was exercised
    cuts = Path(partitionable_cluster.layout.directory, "partitions.json").read_text()
    assert json.loads(cuts)["cut"] == [], "the run must end with every link healed"


def test_partition_is_refused_on_a_cluster_that_cannot_be_partitioned(tmp_path: Path) -> None:
    layout = LocalCluster(tmp_path / "direct").layout  # laid out, not started: refused first
    result = subprocess.run(
        [sys.executable, "-m", "sixfold.cli", "--dir", layout.directory, "fuzz",
         "--time", "1", "--nemesis", "partition"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1 and "sixfold up --partitionable" in result.stderr


def test_fuzz_refuses_an_unknown_nemesis(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sixfold.cli", "--dir", str(tmp_path), "fuzz", "--nemesis", "flood"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "unknown nemesis flood" in result.stderr
