"""`sixfold bench-sql`: the lag arithmetic, the pacer, and one very short real run."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sixfold.tools.sqlbench import Pacer, lags_s

ROOT = Path(__file__).resolve().parents[1]
RUN_LIMIT_S = 120.0


def test_lag_is_time_from_ack_to_first_poll_at_or_past_the_lsn() -> None:
    polls = [(1.000, 10), (1.002, 10), (1.004, 12), (1.006, 11), (1.008, 20)]
    acks = [
        (1.001, 9),  # the poll before the ack already saw it: no lag
        (1.001, 12),  # first seen at 1.004
        (1.005, 15),  # 1.006 says 11, below the 12 already seen; first past 15 at 1.008
        (1.009, 21),  # never reached
    ]
    lags, unresolved = lags_s(acks, polls)
    assert unresolved == 1
    assert [round(x, 6) for x in lags] == [0.0, 0.003, 0.003]


def test_pacer_hands_out_slots_at_the_rate_and_stops_at_the_end() -> None:
    start = time.perf_counter()
    pacer = Pacer(start, start + 60.0, rate=100.0)
    dues = [pacer.take() for _ in range(5)]
    assert dues == [pytest.approx(start + i / 100) for i in range(5)]
    ended = Pacer(start - 2.0, start - 1.0, rate=100.0)
    assert ended.take() is None


@pytest.mark.processes
def test_short_run_reports_sane_figures() -> None:
    argv = [
        sys.executable,
        "-m",
        "sixfold.tools.cli",
        "bench-sql",
        "--json",
        "--clients",
        "8",
        "--rows",
        "100",
        "--seconds",
        "1",
        "--warmup",
        "0.5",
        "--lag-rate",
        "100",
        "--lag-seconds",
        "1",
        "--lag-warmup",
        "0.2",
    ]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=RUN_LIMIT_S)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)

    t = result["throughput"]
    assert t["commits"] > 0 and t["errors"] == 0 and t["commits_per_s"] > 0
    assert 0 < t["latency_ms"]["p50"] <= t["latency_ms"]["p99"] <= t["latency_ms"]["max"]
    assert t["writer_commits"] > 0
    # Single-row changes ship byte-range deltas, far smaller than the pages they change.
    assert 0 < t["redo_bytes_per_commit"] < t["changed_page_bytes_per_commit"]
    assert 0 < t["redo_to_page_ratio"] < 1
    assert {"bench", "writer", "r1", "a1", "c2"} <= set(t["cpu_seconds"])

    lag = result["lag"]
    assert lag["reader"] == "r1" and lag["commits"] > 0 and lag["errors"] == 0
    assert lag["unresolved"] == 0 and lag["polls"] > 0
    assert 0 <= lag["lag_ms"]["p50"] <= lag["lag_ms"]["p99"] <= lag["lag_ms"]["max"]
    assert not math.isnan(lag["lag_ms"]["max"])

    assert set(result["targets"]) == {
        "commits_per_s>=3000",
        "redo_bytes<=1/5 changed_page_bytes",
        "reader_lag_p99_ms<=50",
    }
    assert result["targets"]["redo_bytes<=1/5 changed_page_bytes"] is True
    assert result["machine"]["nproc"] >= 1
