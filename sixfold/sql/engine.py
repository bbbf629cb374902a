"""What the writer's and the readers' SQL engines share: SQLite on a thread of its own.

SQLite is synchronous and the instances are asyncio programs. Each engine runs its SQLite
connections on dedicated threads; the VFS on those threads reaches storage by handing
coroutines to the event loop and waiting for them, bounded by a timeout. The event loop,
which also answers health probes and drives replication, never runs a statement.

Every request runs within limits (SqlLimits, issue 19): a time limit SQLite itself enforces
(a progress handler stops the statement; so does the client's deadline or cancellation),
the rows and bytes of its results, the size of any one value built (SQLITE_LIMIT_LENGTH,
so `zeroblob(1e9)` fails at once), and the memory SQLite may take in this process. A request
past one is stopped and rolled back with SqlLimitError naming the limit and its option; the
connection is clean for the next request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import apsw

from sixfold.core.errors import (
    NotServingError,
    ReadOnlyError,
    SixfoldError,
    SqlError,
    SqlLimitError,
)
from sixfold.sql.values import Result, Statement

T = TypeVar("T")

LOOP_CALL_TIMEOUT_S = 30.0  # a VFS call waiting on storage gives up after this long
STATEMENTS_MAX = 10_000  # statements (or parameter sets) in one request
PROGRESS_STEPS = 1_000  # SQLite VM steps between checks of a request's time
VALUE_OVERHEAD_BYTES = 8  # counted for each value of a result, beside its own bytes


@dataclass(frozen=True)  # no slots: fields double as argparse defaults
class SqlLimits:
    statement_timeout_s: float = 10.0  # a request's statements, all together
    result_rows_max: int = 1_000_000  # rows one request may return
    result_bytes_max: int = 32 << 20  # bytes of the values one request may return
    value_bytes_max: int = 16 << 20  # the largest string or blob SQLite may build
    heap_bytes_max: int = 512 << 20  # memory SQLite may take in this process (all requests)
    session_idle_s: float = 10.0  # writer: an open session unused this long is rolled back
    connection_wait_s: float = 5.0  # writer: how long a request waits for a busy connection

    def apply_to_process(self) -> None:
        """SQLite's memory is one pool per process: bound it once, for every connection."""
        apsw.hard_heap_limit(self.heap_bytes_max)

    def apply_to(self, conn: apsw.Connection, watch: Watch) -> None:
        conn.limit(apsw.SQLITE_LIMIT_LENGTH, self.value_bytes_max)
        conn.set_progress_handler(watch.expired, PROGRESS_STEPS)


# The options that set each limit, for messages that say how to change them.
LIMIT_OPTIONS = {
    "statement_timeout_s": "--sql-statement-timeout",
    "result_rows_max": "--sql-result-rows-max",
    "result_bytes_max": "--sql-result-bytes-max",
    "value_bytes_max": "--sql-value-bytes-max",
    "heap_bytes_max": "--sql-heap-bytes-max",
    "session_idle_s": "--sql-session-idle",
    "connection_wait_s": "--sql-connection-wait",
}


@dataclass
class RequestBudget:
    """One request's time: until `deadline` (monotonic), unless cancelled first."""

    deadline: float
    timeout_s: float  # the statement timeout it was given, for the message
    cancelled: bool = False

    @classmethod
    def starting_now(cls, limits: SqlLimits, client_s: float | None = None) -> RequestBudget:
        """The statement timeout, or the client's deadline when that comes first."""
        timeout_s = limits.statement_timeout_s
        if client_s is not None:
            timeout_s = min(timeout_s, max(0.0, client_s))
        return cls(time.monotonic() + timeout_s, timeout_s)

    def expired(self) -> bool:
        return self.cancelled or time.monotonic() >= self.deadline


class Watch:
    """The progress handler of one connection: it stops the statement of the request that
    runs on it now, once that request's budget is spent (it runs on the SQL thread)."""

    def __init__(self) -> None:
        self.current: RequestBudget | None = None

    def expired(self) -> bool:
        return self.current is not None and self.current.expired()

    def running(self, budget: RequestBudget):  # a context manager, on the SQL thread
        return _Running(self, budget)


class _Running:
    def __init__(self, watch: Watch, budget: RequestBudget) -> None:
        self.watch, self.budget = watch, budget

    def __enter__(self) -> RequestBudget:
        self.watch.current = self.budget
        return self.budget

    def __exit__(self, *exc: object) -> None:
        self.watch.current = None


async def run_guarded(
    thread: SqlThread, budget: RequestBudget, fn: Callable[..., T], *args: Any
) -> T:
    """Run `fn` on the SQL thread; if the caller is cancelled (its client went away or its
    deadline passed), the statement running for it is stopped too."""
    try:
        return await thread.run(fn, *args)
    except asyncio.CancelledError:
        budget.cancelled = True
        raise


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a SQL request gave: its results, what it committed and the snapshot it read."""

    results: list[Result]
    commit_lsn: int  # 0: nothing written
    read_point: int


class SqlThread:
    """One thread that owns a SQLite connection: every call on it runs there, in order."""

    def __init__(self, name: str) -> None:
        self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
        self.closed = False

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.closed:
            raise NotServingError(
                "this instance's SQL engine has stopped (it changed role, or is shutting "
                "down): retry, and the client finds where to"
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args))

    def close(self) -> None:
        self.closed = True
        self.executor.shutdown(wait=False, cancel_futures=True)


def call_in_loop(
    loop: asyncio.AbstractEventLoop, coro: Awaitable[T], timeout: float = LOOP_CALL_TIMEOUT_S
) -> T:
    """Run `coro` on the event loop from a SQL thread and wait for its result."""
    future = asyncio.run_coroutine_threadsafe(coro, loop)  # type: ignore[arg-type]
    try:
        return future.result(timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise SixfoldError(f"storage did not answer within {timeout:g} s") from None


def run_statements(
    conn: apsw.Connection,
    statements: Sequence[Statement],
    limits: SqlLimits | None = None,
    budget: RequestBudget | None = None,
) -> list[Result]:
    """Run statements in order on `conn`; SQLite's errors become SqlError / ReadOnlyError,
    and a limit passed SqlLimitError."""
    limits = limits or SqlLimits()
    if len(statements) > STATEMENTS_MAX:
        raise SqlError(f"{len(statements)} statements exceed STATEMENTS_MAX={STATEMENTS_MAX}")
    returned = _Returned(limits)
    try:
        return [_run_one(conn, s, returned) for s in statements]
    except apsw.InterruptError:
        raise time_limit_error(limits, budget) from None
    except apsw.TooBigError:
        raise SqlLimitError(
            f"a value would be larger than {_size(limits.value_bytes_max)} (value_bytes_max; "
            f"{LIMIT_OPTIONS['value_bytes_max']}): the statement was stopped and rolled back"
        ) from None
    except apsw.NoMemError:
        raise SqlLimitError(
            f"SQLite ran out of the {_size(limits.heap_bytes_max)} it may use in this process "
            f"(heap_bytes_max; {LIMIT_OPTIONS['heap_bytes_max']}): the statement was stopped "
            "and rolled back"
        ) from None
    except apsw.ReadOnlyError as exc:
        raise ReadOnlyError(
            f"read-only: {exc}; this is a reader, send writes to the writer"
        ) from None
    except apsw.Error as exc:
        raise SqlError(_sqlite_message(exc)) from None
    except UnicodeDecodeError as exc:
        raise SqlError(
            f"a TEXT value is not valid UTF-8 ({exc.reason} at byte {exc.start}): select it "
            "as a BLOB, e.g. CAST(column AS BLOB)"
        ) from None


def time_limit_error(limits: SqlLimits, budget: RequestBudget | None) -> SqlLimitError:
    """Why a request's time ran out: its client left, its deadline, or the timeout."""
    if budget is not None and budget.cancelled:
        return SqlLimitError("the client went away (cancelled): its statement was stopped")
    if budget is not None and budget.timeout_s < limits.statement_timeout_s:
        return SqlLimitError(
            f"the client's deadline ({budget.timeout_s:.3g} s) passed: the statement was "
            "stopped and rolled back"
        )
    return SqlLimitError(
        f"the request ran longer than {limits.statement_timeout_s:g} s (statement_timeout_s; "
        f"{LIMIT_OPTIONS['statement_timeout_s']}): it was stopped and rolled back"
    )


def _size(count: int) -> str:
    return f"{count >> 20} MiB" if count >= 1 << 20 else f"{count} bytes"


class _Returned:
    """Rows and bytes a request's results hold so far, against its limits."""

    def __init__(self, limits: SqlLimits) -> None:
        self.limits = limits
        self.rows = 0
        self.bytes = 0

    def add(self, row: tuple[Any, ...]) -> None:
        self.rows += 1
        self.bytes += sum(VALUE_OVERHEAD_BYTES + _value_bytes(v) for v in row)
        lim = self.limits
        if self.rows > lim.result_rows_max:
            raise SqlLimitError(
                f"the results have more than {lim.result_rows_max:,} rows (result_rows_max; "
                f"{LIMIT_OPTIONS['result_rows_max']}): add a LIMIT"
            )
        if self.bytes > lim.result_bytes_max:
            raise SqlLimitError(
                f"the results are larger than {_size(lim.result_bytes_max)} (result_bytes_max; "
                f"{LIMIT_OPTIONS['result_bytes_max']}): select fewer rows or columns"
            )


def _value_bytes(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes) else 0


def _run_one(conn: apsw.Connection, statement: Statement, returned: _Returned) -> Result:
    before = conn.total_changes()
    cursor = conn.cursor()
    columns: list[str] = []

    def note_columns(cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
        # Each statement's columns as it starts: a SELECT with no rows still has them.
        columns[:] = [d[0] for d in cursor.get_description()] or columns
        return True

    cursor.exec_trace = note_columns
    if statement.param_sets:
        if len(statement.param_sets) > STATEMENTS_MAX:
            raise SqlError(
                f"{len(statement.param_sets)} parameter sets exceed STATEMENTS_MAX={STATEMENTS_MAX}"
            )
        cursor.executemany(statement.sql, statement.param_sets)
    else:
        cursor.execute(statement.sql, statement.params)
    rows = _collect(cursor, returned)
    return Result(tuple(columns), rows, conn.total_changes() - before, conn.last_insert_rowid())


def _collect(cursor: apsw.Cursor, returned: _Returned) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for row in cursor:
        returned.add(row)
        rows.append(row)
    return rows


# PRAGMAs that take an argument yet only read: any other PRAGMA with an argument changes the
# connection, which clients share, and is refused.
READING_PRAGMAS = frozenset(
    {
        "foreign_key_check",
        "foreign_key_list",
        "index_info",
        "index_list",
        "index_xinfo",
        "integrity_check",
        "quick_check",
        "table_info",
        "table_list",
        "table_xinfo",
    }
)


def guard_shared_connection(conn: apsw.Connection) -> None:
    """Refuse what would change a connection every client shares: ATTACH, DETACH, and
    PRAGMAs that set something. Called after the engine's own PRAGMAs."""
    conn.authorizer = _authorize


def _authorize(
    action: int, arg1: str | None, arg2: str | None, db: str | None, trigger: str | None
) -> int:
    if action in (apsw.SQLITE_ATTACH, apsw.SQLITE_DETACH):
        return apsw.SQLITE_DENY
    if (
        action == apsw.SQLITE_PRAGMA
        and arg2 is not None
        and (arg1 or "").lower() not in READING_PRAGMAS
    ):
        return apsw.SQLITE_DENY
    return apsw.SQLITE_OK


def _sqlite_message(exc: apsw.Error) -> str:
    """SQLite's own message; apsw's binding errors are phrased for Python callers."""
    message = str(exc.args[0]) if exc.args else type(exc).__name__
    if isinstance(exc, apsw.BindingsError):
        return f"wrong parameters: {message}"
    return message


class VolumeVFS(apsw.VFS):
    """A VFS whose main database file lives on the volume; other files use the default VFS.

    The rollback journal is kept in memory (journal_mode=MEMORY), so no journal file exists:
    xAccess answers "no" for it rather than looking at the local disk, where a stray file of
    the same name would make SQLite try to play it back.
    """

    def __init__(self, name: str, open_main: Callable[[str, list[int]], object]) -> None:
        self.open_main = open_main
        super().__init__(name, base="")

    def xOpen(self, name: Any, flags: list[int]) -> object:
        if flags[0] & apsw.SQLITE_OPEN_MAIN_DB:
            filename = name.filename() if hasattr(name, "filename") else str(name)
            return self.open_main(filename, flags)
        return super().xOpen(name, flags)

    def xAccess(self, pathname: str, flags: int) -> bool:
        if pathname.endswith(("-journal", "-wal", "-shm")):
            return False
        return super().xAccess(pathname, flags)

    def xFullPathname(self, name: str) -> str:
        return name


class VolumeFileBase:
    """The parts of a VFS file that are the same on the writer and on readers."""

    def xCheckReservedLock(self) -> bool:
        return False

    def xFileControl(self, op: int, ptr: int) -> bool:
        return False

    def xSectorSize(self) -> int:
        return 4096

    def xDeviceCharacteristics(self) -> int:
        # Page writes are atomic here: a commit reaches storage whole or not at all.
        return apsw.SQLITE_IOCAP_ATOMIC4K | apsw.SQLITE_IOCAP_SAFE_APPEND

    def xLock(self, level: int) -> None:
        pass

    def xUnlock(self, level: int) -> None:
        pass

    def xClose(self) -> None:
        pass
