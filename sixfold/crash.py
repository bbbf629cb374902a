"""Bugs end the process (issue 13): an invariant violation is not logged and lived with.

Server processes handle operating errors (`OPERATING_ERRORS`: a node down, a corrupt record, a
full disk) and nothing else. Anything else escaping a background task (an AssertionError, a
TypeError) is a bug: it is logged with BUG_MARK and the process exits with BUG_EXIT_CODE,
as TigerBeetle does, so a supervisor restarts it from its durable state and tests notice
(tests/conftest.py fails a test whose cluster logged one).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Coroutine

import grpc
import lmdb

from sixfold.core.errors import SixfoldError

log = logging.getLogger("sixfold.crash")

BUG_EXIT_CODE = 70  # EX_SOFTWARE
BUG_MARK = "sixfold bug, the process exits"
OPERATING_ERRORS: tuple[type[BaseException], ...] = (
    SixfoldError,
    lmdb.Error,
    OSError,
    grpc.RpcError,
    asyncio.TimeoutError,
)


def _exit(exc: BaseException) -> None:
    logging.shutdown()
    os._exit(BUG_EXIT_CODE)


on_bug: Callable[[BaseException], None] = _exit  # tests running nodes in-process replace it


def crash_on_bug(task: asyncio.Task[object]) -> None:
    """A task's done-callback: a task that ended with an error that is not an operating one
    (or with any error, for tasks that must never end) takes the process down."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is None:
        return
    log.critical("%s: %s ended with %r", BUG_MARK, task.get_name(), exc, exc_info=exc)
    on_bug(exc)


def guarded_task(coro: Coroutine[object, object, object], name: str) -> asyncio.Task[object]:
    """A background task whose escaping exception ends the process (`crash_on_bug`)."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    task.add_done_callback(crash_on_bug)
    return task
