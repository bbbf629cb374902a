"""`sixfold bench`: placeholder until the benchmark lands."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--committers", type=int, default=64)


def main(args: argparse.Namespace) -> int:
    raise SystemExit("not yet")
