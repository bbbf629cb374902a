"""`python -m writer`: run an instance that starts as the writer.

It recovers and takes writes, unless another instance already answers as the writer (a
reader took over while this one was down): then it joins as a reader.
"""

from __future__ import annotations

import argparse

from sixfold.instance_server import add_instance_arguments, run_instance
from sixfold.serving import configure_logging, run_process


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m writer", description="Run the sixfold writer.")
    add_instance_arguments(p, default_name="writer")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    return run_process("writer", run_instance(args, as_writer=True))
