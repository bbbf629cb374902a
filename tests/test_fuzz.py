"""`sixfold fuzz` against real processes with kill, pause, disk and partition faults: a
bounded run."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sixfold.check.history import load_history
from sixfold.check.linearizability import Verdict, check_history
from sixfold.check.multipage import check_groups
from tests.conftest import LocalCluster
from tests.test_deposed_writer import log_problems

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
        [
            sys.executable,
            "-m",
            "sixfold.tools.cli",
            "--dir",
            partitionable_cluster.layout.directory,
            "fuzz",
            "--time",
            "15",
            "--nemesis",
            "kill,pause,disk,partition",
            "--seed",
            "29",
            "--history",
            str(history),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
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
    assert not log_problems(partitionable_cluster), log_problems(partitionable_cluster)


def test_fuzz_with_a_deposed_writer_and_stale_clients(
    local_cluster: LocalCluster, tmp_path: Path
) -> None:
    """The writer is paused past the takeover time and resumed; half the clients keep
    sending to it. Before issue 10 a run like this answered stale reads."""
    history = tmp_path / "history.jsonl"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sixfold.tools.cli",
            "--dir",
            local_cluster.layout.directory,
            "fuzz",
            "--time",
            "20",
            "--nemesis",
            "pause-writer",
            "--clients",
            "6",
            "--seed",
            "3",
            "--history",
            str(history),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    events = load_history(history)
    assert any(e.f == "pause" for e in events if e.is_nemesis), result.stdout
    logs = Path(local_cluster.layout.directory, "logs")
    assert any("taking over" in p.read_text() for p in logs.glob("*.log")), "no takeover"
    stale = [e for e in events if not e.is_nemesis and e.process in (0, 1, 2)]
    assert sum(1 for e in stale if e.type == "ok") > 20, "the stale clients did no work"
    assert check_history(events).verdict == Verdict.OK
    assert not log_problems(local_cluster), log_problems(local_cluster)


def test_partition_is_refused_on_a_cluster_that_cannot_be_partitioned(tmp_path: Path) -> None:
    layout = LocalCluster(tmp_path / "direct").layout  # laid out, not started: refused first
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sixfold.tools.cli",
            "--dir",
            layout.directory,
            "fuzz",
            "--time",
            "1",
            "--nemesis",
            "partition",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "sixfold up --partitionable" in result.stderr


def test_fuzz_refuses_an_unknown_nemesis(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sixfold.tools.cli",
            "--dir",
            str(tmp_path),
            "fuzz",
            "--nemesis",
            "flood",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "unknown nemesis flood" in result.stderr
