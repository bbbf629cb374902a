"""`sixfold bench`: the pacing under --rate, the CPU per record it prints, one short real run."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from sixfold.core.errors import SixfoldError
from sixfold.tools import bench

ROOT = Path(__file__).resolve().parents[1]
RUN_LIMIT_S = 120.0


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_paced_committers_start_spread_evenly_at_their_share_of_the_rate() -> None:
    args = _args("--committers", "4", "--rate", "200")
    paces = [bench.pace_of(i, args, now=10.0) for i in range(4)]
    assert paces == [
        (10.0, 0.02),
        (pytest.approx(10.005), 0.02),
        (pytest.approx(10.01), 0.02),
        (pytest.approx(10.015), 0.02),
    ]
    assert bench.pace_of(0, _args(), now=10.0) == (0.0, 0.0), "no --rate: back to back"


def test_a_negative_rate_is_refused_by_name() -> None:
    with pytest.raises(SixfoldError, match="--rate must be 0"):
        bench.check_args(_args("--rate", "-5"))


def test_cpu_per_records_adds_the_nodes_and_names_the_others() -> None:
    cpu = {"bench": 20.0, **{n: 10.0 for n in ("a1", "a2", "b1", "b2", "c1", "c2")}}
    result = bench.Result(
        **{f.name: None for f in dataclasses.fields(bench.Result)}  # type: ignore[arg-type]
        | {"seconds": 10.0, "records": 20_000, "cpu_percent": cpu}
    )
    # Six nodes at 10% of a core for 10 s: 6 s of CPU for 20,000 records, 300 ms per 1,000.
    assert bench.cpu_per_records(result) == "nodes 300  bench 100"


@pytest.mark.processes
def test_a_paced_run_stays_at_its_rate() -> None:
    argv = [
        sys.executable,
        "-m",
        "sixfold.tools.cli",
        "bench",
        "--json",
        "--committers",
        "8",
        "--rate",
        "200",
        "--seconds",
        "2",
        "--warmup",
        "0.5",
    ]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=RUN_LIMIT_S)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["errors"] == 0 and result["commits"] > 0
    # Paced: never more than the rate allows in the window (one more per committer at its
    # edges), whatever the machine could do, and a slot missed is never caught up.
    assert result["commits"] <= 200 * 2 + 8
