"""What the writer's and the readers' SQL engines share: SQLite on a thread of its own.

SQLite is synchronous and the instances are asyncio programs. Each engine runs its SQLite
connections on dedicated threads; the VFS on those threads reaches storage by handing
coroutines to the event loop and waiting for them, bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import apsw

from sixfold.errors import NotServingError, ReadOnlyError, SixfoldError, SqlError
from sixfold.sqlvalues import Result, Statement

T = TypeVar("T")

LOOP_CALL_TIMEOUT_S = 30.0  # a VFS call waiting on storage gives up after this long
ROWS_MAX = 1_000_000  # rows one statement may return in one response
STATEMENTS_MAX = 10_000  # statements (or parameter sets) in one request


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


def run_statements(conn: apsw.Connection, statements: Sequence[Statement]) -> list[Result]:
    """Run statements in order on `conn`; SQLite's errors become SqlError / ReadOnlyError."""
    if len(statements) > STATEMENTS_MAX:
        raise SqlError(f"{len(statements)} statements exceed STATEMENTS_MAX={STATEMENTS_MAX}")
    try:
        return [_run_one(conn, s) for s in statements]
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


def _run_one(conn: apsw.Connection, statement: Statement) -> Result:
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
    rows = _collect(cursor)
    return Result(tuple(columns), rows, conn.total_changes() - before, conn.last_insert_rowid())


def _collect(cursor: apsw.Cursor) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for row in cursor:
        if len(rows) >= ROWS_MAX:
            raise SqlError(f"the statement returns more than ROWS_MAX={ROWS_MAX} rows: add a LIMIT")
        rows.append(row)
    return rows


# PRAGMAs that take an argument yet only read: any other PRAGMA with an argument changes the
# connection, which clients share, and is refused.
READING_PRAGMAS = frozenset({
    "foreign_key_check", "foreign_key_list", "index_info", "index_list", "index_xinfo",
    "integrity_check", "quick_check", "table_info", "table_list", "table_xinfo",
})  # fmt: skip


def guard_shared_connection(conn: apsw.Connection) -> None:
    """Refuse what would change a connection every client shares: ATTACH, DETACH, and
    PRAGMAs that set something. Called after the engine's own PRAGMAs."""
    conn.authorizer = _authorize


def _authorize(action: int, arg1: str | None, arg2: str | None, db: str | None,
               trigger: str | None) -> int:  # fmt: skip
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
