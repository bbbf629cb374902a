"""`sixfold bench-transport`: each transport's server answers, and the figures come out."""

from __future__ import annotations

import json

import pytest

from sixfold.tools import cli
from sixfold.tools.transportbench import MODES

pytestmark = pytest.mark.processes


def test_every_mode_is_measured(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.build_parser(["bench-transport"]).parse_args(
        ["bench-transport", "--seconds", "0.5", "--warmup", "0.3", "--clients", "4", "--json"]
    )
    assert args.fn(args) == 0
    results = json.loads(capsys.readouterr().out)["results"]
    assert [r["mode"] for r in results] == list(MODES)
    for r in results:
        assert r["messages"] > 0 and r["messages_per_s"] > 0, r
        assert r["server_cpu_ms_per_message"] > 0, r  # the server's CPU was read, not 0


def test_an_unknown_mode_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.build_parser(["bench-transport"]).parse_args(
        ["bench-transport", "--modes", "unary,pigeon"]
    )
    assert args.fn(args) == 2
    assert "unknown mode(s) pigeon" in capsys.readouterr().out


def test_counts_below_one_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    args = cli.build_parser(["bench-transport"]).parse_args(
        ["bench-transport", "--window", "0", "--records", "0"]
    )
    assert args.fn(args) == 2
    assert "--window, --records must be at least 1" in capsys.readouterr().out
