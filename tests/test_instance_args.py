"""An instance's command line: bad values are refused at start with the flag named."""

from __future__ import annotations

import subprocess
import sys

import pytest

from instance.server import build_parser, writer_limits
from sixfold.core.commit_log import WriterLimits

NODES = "a1=127.0.0.1:1,a2=127.0.0.1:2,b1=127.0.0.1:3,b2=127.0.0.1:4,c1=127.0.0.1:5,c2=127.0.0.1:6"


def start_writer(*extra: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "writer", "--nodes", NODES, "--port", "0", *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("wait_ms", ["-1", "1001"])
def test_a_group_commit_wait_out_of_range_is_refused(wait_ms: str) -> None:
    done = start_writer("--group-commit-wait-max", wait_ms)
    assert done.returncode != 0
    assert f"--group-commit-wait-max must be from 0 to 1000 ms, got {wait_ms}" in done.stderr


def test_the_group_commit_wait_defaults_to_the_writers_limit() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "writer", "--help"], capture_output=True, text=True, timeout=60
    )
    default_ms = WriterLimits().append_linger_s * 1000
    assert f"(default {default_ms:g}; 0: never wait" in " ".join(done.stdout.split())


def test_the_group_commit_wait_is_given_in_milliseconds() -> None:
    args = build_parser("writer").parse_args(
        ["--nodes", NODES, "--port", "0", "--group-commit-wait-max", "7.5"]
    )
    assert writer_limits(args).append_linger_s == pytest.approx(0.0075)
    args = build_parser("writer").parse_args(["--nodes", NODES, "--port", "0"])
    assert writer_limits(args).append_linger_s == WriterLimits().append_linger_s
