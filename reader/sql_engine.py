"""SQL on a reader: read-only SQLite connections over the volume at consistent read points.

Each request runs in one read transaction, so all its statements see one snapshot. There is no
replication from the writer: pages come from the storage nodes (P18 §3). A small pool of
connections, each on its own thread, serves requests side by side.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence

import apsw

from reader.sql_vfs import ReaderFile, ReaderVolume
from sixfold.core.errors import SessionError
from sixfold.sql.engine import (
    Outcome,
    RequestBudget,
    SqlLimits,
    SqlThread,
    VolumeVFS,
    Watch,
    guard_shared_connection,
    run_guarded,
    run_statements,
)
from sixfold.sql.values import Result, Statement

CONNECTIONS = 2  # SQLite connections (threads) serving reads side by side
SQLITE_CACHE_KIB = 8_192  # each connection's own page cache; emptied when the point moves
READ_YOUR_WRITES_WAIT_S = 1.0  # how long a read waits for the read point a client asks for


class ReaderConnection:
    def __init__(self, vfs_name: str, index: int, limits: SqlLimits) -> None:
        self.thread = SqlThread(f"sql-reader-{index}")
        self.vfs_name = vfs_name
        self.limits = limits
        self.watch = Watch()
        self.conn: apsw.Connection | None = None
        self.file: ReaderFile | None = None

    def open(self, opened: list[ReaderFile]) -> None:
        self.conn = apsw.Connection(
            "sixfold.db", flags=apsw.SQLITE_OPEN_READONLY, vfs=self.vfs_name
        )
        self.file = opened.pop()
        self.conn.execute("PRAGMA query_only=ON")
        self.conn.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        self.limits.apply_to(self.conn, self.watch)
        guard_shared_connection(self.conn)

    def snapshot(
        self, statements: Sequence[Statement], budget: RequestBudget
    ) -> tuple[list[Result], int]:
        """Run the statements in one read transaction; return the results and its point."""
        assert self.conn is not None and self.file is not None
        with self.watch.running(budget):
            self.conn.execute("BEGIN")
            try:
                results = run_statements(self.conn, statements, self.limits, budget)
                point = self.file.pinned[0] if self.file.pinned else 0
            finally:
                if self.conn.in_transaction:
                    with contextlib.suppress(apsw.Error):
                        self.conn.execute("ROLLBACK")
        return results, point

    def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(apsw.Error):
                self.conn.close(True)
        self.thread.close()


class ReaderSql:
    def __init__(self, reader, limits: SqlLimits | None = None) -> None:
        self.reader = reader
        self.limits = limits or SqlLimits()
        self.vfs_name = f"sixfold-{reader.name}-{uuid.uuid4().hex[:8]}"
        self.volume: ReaderVolume | None = None
        self.vfs: VolumeVFS | None = None
        self.opened: list[ReaderFile] = []
        self.idle: asyncio.Queue[ReaderConnection] = asyncio.Queue(CONNECTIONS)
        self.connections: list[ReaderConnection] = []
        self.starting = asyncio.Lock()  # the first requests must not open connections twice

    async def execute(
        self,
        statements: Sequence[Statement],
        session: str = "",
        client_s: float | None = None,
        min_read_point: int = 0,
    ) -> Outcome:
        if session:
            raise SessionError(_NO_SESSIONS, on_reader=True)
        if min_read_point > self.reader.read_point:  # read your writes: wait, or refuse
            wait_s = min(READ_YOUR_WRITES_WAIT_S, client_s or READ_YOUR_WRITES_WAIT_S)
            await self.reader.wait_read_point_above(min_read_point, wait_s)
        await self._start()
        connection = await self.idle.get()
        budget = RequestBudget.starting_now(self.limits, client_s)
        try:
            results, point = await run_guarded(
                connection.thread, budget, connection.snapshot, statements, budget
            )
        finally:
            self.idle.put_nowait(connection)
        return Outcome(results, 0, point)

    async def warm(self) -> None:
        """Open the connections and read the schema before the first query needs them."""
        for _ in range(CONNECTIONS):
            await self.execute([Statement("SELECT count(*) FROM sqlite_master")])

    async def begin(self) -> str:
        raise SessionError(_NO_SESSIONS, on_reader=True)

    async def end(self, session: str, commit: bool) -> int:
        raise SessionError(_NO_SESSIONS, on_reader=True)

    async def _start(self) -> None:
        async with self.starting:
            if not self.connections:
                await self._open_connections()

    async def _open_connections(self) -> None:
        loop = asyncio.get_running_loop()
        self.volume = ReaderVolume(loop, self.reader)
        self.volume.current_point()  # no read point yet: a named error, at once
        self.vfs = VolumeVFS(self.vfs_name, self._open_file)
        for i in range(CONNECTIONS):
            connection = ReaderConnection(self.vfs_name, i, self.limits)
            await connection.thread.run(connection.open, self.opened)
            self.connections.append(connection)
            self.idle.put_nowait(connection)

    def _open_file(self, name: str, flags: list[int]) -> ReaderFile:
        assert self.volume is not None
        file = ReaderFile(self.volume)
        self.opened.append(file)
        return file

    def pages_counted(self) -> tuple[int, int]:
        """(pages brought forward by their newer records, pages read whole)."""
        return (self.volume.forwarded, self.volume.fetched) if self.volume else (0, 0)

    def lowest_pin(self) -> int | None:
        return self.volume.lowest_pin() if self.volume else None

    async def close(self) -> None:
        for connection in self.connections:
            await connection.thread.run(connection.close)


_NO_SESSIONS = (
    "readers have no sessions: each request runs at one snapshot, so send the statements "
    "that must agree in one request"
)
