"""`python -m reader`: run an instance that starts as a reader.

It serves reads at the read point learned from storage, and takes over as the writer when
the writer stops answering (in the order of --promotion-rank).
"""

from __future__ import annotations

import argparse

from sixfold.instance_server import add_instance_arguments, run_instance
from sixfold.serving import configure_logging, run_process


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m reader", description="Run a sixfold reader.")
    add_instance_arguments(p, default_name=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    return run_process(f"reader {args.name}", run_instance(args, as_writer=False))
