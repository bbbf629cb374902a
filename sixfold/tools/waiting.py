"""Say what a slow command waits for, on a terminal, instead of sitting silent (issue 12).

A write with no write quorum waits up to its timeout for nodes to come back. On a terminal
the CLI then shows, on one line redrawn in place:

    waiting for a write quorum: 3 of 6 reachable, 4 needed (4 s of 10)

The line comes from the writer's own view of its nodes (GetWriterState), asked by a thread
beside the waiting call, and is cleared when the call returns.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

import grpc

from sixfold import tls
from sixfold.clients import CHANNEL_OPTIONS
from sixfold.core.quorum import NODE_NAMES, WRITE_QUORUM
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc

QUIET_S = 1.0  # a call that returns sooner shows nothing
REFRESH_S = 0.5
PROBE_TIMEOUT_S = 0.5


def write_quorum_line(state: pb.WriterState | None, waited_s: float, timeout_s: float) -> str:
    """The line shown while a write waits: the quorum when it is short, else the writer."""
    clock = f"({waited_s:.0f} s of {timeout_s:g})"
    if state is None:
        return f"waiting for the writer to answer {clock}"
    if state.nodes:
        reachable = sum(1 for n in state.nodes if n.reachable)
        if reachable < WRITE_QUORUM:
            return (
                f"waiting for a write quorum: {reachable} of {len(NODE_NAMES)} reachable, "
                f"{WRITE_QUORUM} needed {clock}"
            )
    if not state.recovered:
        return f"waiting for the writer: {state.status or state.role} {clock}"
    return f"waiting for the commit to become durable {clock}"


def _writer_state(address: str) -> pb.WriterState | None:
    try:
        with tls.channel(address, options=CHANNEL_OPTIONS) as channel:
            stub = pb_grpc.WriterStub(channel)
            return stub.GetWriterState(pb.GetWriterStateRequest(), timeout=PROBE_TIMEOUT_S)
    except grpc.RpcError:
        return None


@contextlib.contextmanager
def write_notice(
    writer_address: str, timeout_s: float, stream: TextIO | None = None
) -> Iterator[None]:
    """While the body runs longer than QUIET_S, show what the write waits for (terminals
    only: a pipe or a file gets nothing)."""
    out = stream or sys.stderr
    if not out.isatty():
        yield
        return
    done = threading.Event()
    started = time.monotonic()

    def show() -> None:
        shown = False
        while not done.wait(QUIET_S if not shown else REFRESH_S):
            state = _writer_state(writer_address)
            if done.is_set():
                break
            line = write_quorum_line(state, time.monotonic() - started, timeout_s)
            out.write(f"\r\x1b[K{line}")
            out.flush()
            shown = True
        if shown:
            out.write("\r\x1b[K")
            out.flush()

    thread = threading.Thread(target=show, name="write-notice", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=PROBE_TIMEOUT_S * 2)
