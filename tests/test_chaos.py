"""`sixfold chaos` against the process cluster: the AZ+1 story, and nothing lost."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import LocalCluster

pytestmark = [pytest.mark.processes, pytest.mark.spares]


def test_chaos_story_on_the_process_cluster(local_cluster: LocalCluster) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sixfold.tools.cli",
            "--dir",
            local_cluster.layout.directory,
            "chaos",
            "--settle",
            "1",
            "--limit",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "1. kill AZ a (a1, a2)" in out and "writes go on" in out
    assert "write quorum unavailable: 3 of 6 storage nodes reachable, 4 needed" in out
    assert "reads go on: r1" in out and "reads go on: r2" in out
    assert "writes resume" in out and "caught up by gossip" in out
    assert "4. kill the writer (writer)" in out and "r1 took over: writes resume" in out
    assert "writer started again: it rejoins as a reader" in out
    # Step 5 (issue 14): a lost disk's node replaced by a spare under the load, then AZ a.
    assert "c3 holds c2's position" in out, out
    assert "6. kill AZ a (a1, a2): writes go on with c3 in AZ c" in out
    assert "all six positions complete through the newest LSN" in out
    lines = out.split("\nsummary\n", 1)[1].splitlines()
    summary = {k.strip(): v.strip() for k, _, v in (line.partition(" : ") for line in lines) if v}
    acknowledged = int(summary["acknowledged writes"])
    assert acknowledged > 0
    assert int(summary["verified present after recovery"]) == acknowledged
    assert int(summary["lost"]) == 0
