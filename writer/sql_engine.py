"""SQL on the writer: one SQLite connection, transactions one after another (P17 §4.2.1).

A transaction runs without waiting for storage: its commit (xSync) stages redo records and
returns, and the next transaction starts at once, reading the writer's own newest pages.
Requests that arrive while the connection is busy queue up, and the SQL thread takes them
all in one hop (a group, at most GROUP_REQUESTS_MAX): it runs their transactions back to back,
each in its own SQLite transaction, then the loop submits their redo to the commit pipeline
in order (issue 11: the hops between the loop and the thread were most of a commit's cost).
Each client is answered once VDL has passed its commit LSN, so an acknowledged transaction is
durable, and a crash truncates every unacknowledged one whole (P17 §4.3). A read-only request
may have seen a commit that is not durable yet: it is answered only once VDL covers the newest
commit it could have seen (the read barrier), and once a read quorum has confirmed that no
newer writer exists (sixfold/core/read_index.py), so a deposed writer never answers a stale read.

Sessions hold the connection across requests for an interactive transaction, as SQLite's
single writer does; they are rolled back when idle too long (SqlLimits.session_idle_s). A
request that cannot get the connection within SqlLimits.connection_wait_s is refused with
BusyError (retry), naming the session that holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import apsw

from sixfold.core.errors import BusyError, SessionError, SixfoldError, SqlError
from sixfold.futures import settle
from sixfold.sql.engine import (
    LIMIT_OPTIONS,
    Outcome,
    RequestBudget,
    SqlLimits,
    SqlThread,
    VolumeVFS,
    Watch,
    guard_shared_connection,
    run_guarded,
    run_statements,
    time_limit_error,
)
from sixfold.sql.values import Result, Statement
from writer.sql_vfs import (
    Commit,
    ShippedCounters,
    StagedCommitError,
    WriterFile,
    WriterVolume,
)
from writer.writer import Writer

log = logging.getLogger("sixfold.writer.sql")

SESSIONS_MAX = 64  # open sessions (all but one wait for the connection)
GROUP_REQUESTS_MAX = 256  # requests the SQL thread runs back to back in one hop
QUEUED_REQUESTS_MAX = 4_096  # requests waiting for the next group; more are refused as busy
SESSION_ID_CHARS = 32  # a session id is this many hex digits
SQLITE_CACHE_KIB = 65_536  # SQLite's own page cache on the writer

PRAGMAS = (
    "PRAGMA locking_mode=EXCLUSIVE",  # the only connection: keep the lock and the cache
    "PRAGMA journal_mode=MEMORY",  # the rollback journal never reaches storage
    "PRAGMA cache_spill=OFF",  # no page reaches the file before commit
    "PRAGMA synchronous=NORMAL",  # xSync at each commit: where redo leaves
    f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}",
)


@dataclass(slots=True)
class _Queued:
    """A request waiting for the next group."""

    statements: Sequence[Statement]
    budget: RequestBudget
    done: asyncio.Future[tuple[list[Result], list[Commit], int]]  # results, commits, seen


@dataclass(slots=True)
class _Ran:
    """A request's transaction, run on the SQL thread."""

    results: list[Result] | None
    error: BaseException | None
    staged_before: int  # commits the group had staged when it started, and when it ended
    staged_after: int


@dataclass
class Session:
    id: str
    last_used: float
    watchdog: asyncio.Task[None] | None = None


class WriterSql:
    def __init__(self, writer: Writer, limits: SqlLimits | None = None) -> None:
        self.writer = writer
        self.limits = limits or SqlLimits()
        self.watch = Watch()
        self.thread = SqlThread("sql-writer")
        self.lock = asyncio.Lock()  # who holds the connection: one request or one session
        self.session: Session | None = None
        self.waiting_sessions = 0
        self.volume: WriterVolume | None = None
        self.conn: apsw.Connection | None = None
        self.vfs_name = f"sixfold-writer-{uuid.uuid4().hex[:8]}"
        self.vfs: VolumeVFS | None = None
        self.queue: list[_Queued] = []
        self.grouper: asyncio.Task[None] | None = None

    # -- requests ----------------------------------------------------------------------------

    async def execute(
        self,
        statements: Sequence[Statement],
        session: str = "",
        client_s: float | None = None,
        min_read_point: int = 0,  # the writer's reads are always at its newest commit
    ) -> Outcome:
        budget = RequestBudget.starting_now(self.limits, client_s)
        if session:
            return await self._execute_in_session(session, statements, budget)
        self.writer._ready()  # not recovered yet, or fenced: a named error, at once
        if len(self.queue) >= QUEUED_REQUESTS_MAX:
            raise BusyError(
                f"{len(self.queue)} SQL requests already wait for the writer's connection "
                f"(QUEUED_REQUESTS_MAX={QUEUED_REQUESTS_MAX}): nothing was done; retry"
            )
        loop = asyncio.get_running_loop()
        queued = _Queued(statements, budget, loop.create_future())
        self.queue.append(queued)
        if self.grouper is None or self.grouper.done():
            self.grouper = loop.create_task(self._run_groups())
        try:
            results, commits, seen = await asyncio.shield(queued.done)
        except asyncio.CancelledError:
            budget.cancelled = True  # its statement stops, or never starts
            raise
        return await self._answer(results, commits, seen)

    async def _run_groups(self) -> None:
        """Take the queue a group at a time: one hop to the SQL thread runs them all."""
        while self.queue:
            group: list[_Queued] = []
            try:
                async with self._connection():
                    group = self.queue[:GROUP_REQUESTS_MAX]
                    del self.queue[:GROUP_REQUESTS_MAX]
                    ran = await self.thread.run(self._run_group, group)
                    await self._submit_group(group, ran)
            except Exception as exc:  # no connection (busy, not the writer, stopped)
                waiting, self.queue = [*group, *self.queue], []
                for q in waiting:  # those of the group already answered stay so
                    settle(q.done, exc)

    def _run_group(self, group: list[_Queued]) -> list[_Ran]:
        """On the SQL thread: each request's transaction in turn, each failing alone."""
        assert self.volume is not None
        out = []
        for q in group:
            before = len(self.volume.staged)
            if q.budget.expired():  # its client left, or its time ran out, while it waited
                error: BaseException = time_limit_error(self.limits, q.budget)
                out.append(_Ran(None, error, before, before))
                continue
            try:
                results = self._transaction(q.statements, q.budget)
                out.append(_Ran(results, None, before, len(self.volume.staged)))
            except Exception as exc:
                out.append(_Ran(None, exc, before, len(self.volume.staged)))
        return out

    async def _submit_group(self, group: list[_Queued], ran: list[_Ran]) -> None:
        """Submit what the group staged, in order, and settle each request: with its
        commits, or, from the first commit that could not be submitted on, with that error
        (nothing of those reached storage: retry-safe)."""
        assert self.volume is not None
        seen_before = self.volume.last_commit_lsn
        failure: StagedCommitError | None = None
        try:
            commits = await self.volume.submit_staged()
        except StagedCommitError as exc:
            failure, commits = exc, exc.submitted
            await self.thread.run(self._reopen)  # SQLite's cache holds what was undone
        not_applied = _not_applied(failure.error) if failure is not None else None
        for q, r in zip(group, ran, strict=True):
            if not_applied is not None and r.staged_after > len(commits):
                settle(q.done, not_applied)
            elif r.error is not None:
                settle(q.done, r.error)
            else:
                mine = commits[r.staged_before : r.staged_after]
                seen = commits[r.staged_after - 1].lsn if r.staged_after else seen_before
                settle(q.done, (r.results, mine, seen))

    async def begin(self) -> str:
        if self.waiting_sessions >= SESSIONS_MAX:
            raise SessionError(f"{SESSIONS_MAX} sessions already wait for the writer")
        self.waiting_sessions += 1
        try:
            await self._acquire()
        finally:
            self.waiting_sessions -= 1
        try:
            await self.thread.run(self._begin)
        except BaseException:
            self.lock.release()
            raise
        loop = asyncio.get_running_loop()
        self.session = Session(uuid.uuid4().hex, loop.time())
        self.session.watchdog = loop.create_task(self._expire(self.session))
        return self.session.id

    async def end(self, session: str, commit: bool) -> int:
        current = self._session(session)
        self._close_session(current)
        try:
            sql = "COMMIT" if commit else "ROLLBACK"
            await self.thread.run(self._run, sql)
            commits = await self._submit_staged()
        finally:
            self.lock.release()
        outcome = await self._answer([], commits, 0)
        return outcome.commit_lsn

    async def quiesce(self) -> None:
        """Wait for the transaction running now (not for later ones) to finish."""
        async with self._connection():
            pass

    def shipped(self) -> ShippedCounters:
        return self.volume.shipped if self.volume else ShippedCounters()

    async def close(self) -> None:
        if self.session is not None:
            self._close_session(self.session)  # its transaction dies with the connection
            self.lock.release()
        if self.conn is not None:
            await self.thread.run(self._close_connection)
        self.thread.close()

    # -- the connection ------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _connection(self):
        await self._acquire()
        try:
            yield
        finally:
            self.lock.release()

    async def _acquire(self) -> None:
        self.writer._ready()  # not recovered yet, or fenced: a named error, at once
        wait_s = self.limits.connection_wait_s
        try:
            await asyncio.wait_for(self.lock.acquire(), wait_s)
        except TimeoutError:
            raise self._busy(wait_s) from None
        if self.conn is None:
            await self.thread.run(self._open, asyncio.get_running_loop())

    def _busy(self, wait_s: float) -> BusyError:
        holder = self.session
        if holder is None:
            who = "another request (a long statement)"
        else:
            idle = asyncio.get_running_loop().time() - holder.last_used
            who = (
                f"session {holder.id[:8]}… (idle {idle:.1f} s; rolled back after "
                f"{self.limits.session_idle_s:g} s idle, {LIMIT_OPTIONS['session_idle_s']})"
            )
        return BusyError(
            f"the writer's SQL connection stayed held by {who} for {wait_s:g} s "
            f"({LIMIT_OPTIONS['connection_wait_s']}): nothing was done; retry"
        )

    def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        writer = self.writer
        pipeline = writer._ready()

        async def read_page(vpage: int) -> tuple[bytes, int]:
            image, lsn, _ = await writer.read_page(vpage)
            return image, lsn

        if self.volume is None:
            self.volume = WriterVolume(loop, read_page, writer.submit_commit, lambda: pipeline.vdl)
            self.vfs = VolumeVFS(self.vfs_name, lambda name, flags: WriterFile(self.volume))
        self.conn = apsw.Connection("sixfold.db", vfs=self.vfs_name)
        for pragma in PRAGMAS:
            self.conn.execute(pragma)
        self.limits.apply_to(self.conn, self.watch)
        guard_shared_connection(self.conn)

    def _reopen(self) -> None:
        self._close_connection()
        self._open(self.volume.loop if self.volume else asyncio.get_event_loop())

    async def _submit_staged(self) -> list[Commit]:
        """Submit what a session's statements staged; if that fails, reopen SQLite."""
        assert self.volume is not None
        try:
            return await self.volume.submit_staged()
        except StagedCommitError as exc:
            await self.thread.run(self._reopen)
            raise _not_applied(exc.error) from None

    def _close_connection(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(apsw.Error):
                self.conn.close(True)
            self.conn = None

    # -- on the SQL thread -------------------------------------------------------------------

    def _transaction(self, statements: Sequence[Statement], budget: RequestBudget) -> list[Result]:
        with self.watch.running(budget):
            if _is_vacuum(statements):  # SQLite runs VACUUM only outside a transaction
                return self._run_statements(statements, budget)
            self._run("BEGIN IMMEDIATE")
            try:
                results = self._run_statements(statements, budget)
            except BaseException:
                self._rollback_quietly()
                raise
            self._run("COMMIT")
            return results

    def _begin(self) -> None:
        self._run("BEGIN IMMEDIATE")

    def _in_session(self, statements: Sequence[Statement], budget: RequestBudget) -> list[Result]:
        with self.watch.running(budget):
            try:
                return self._run_statements(statements, budget)
            except BaseException:
                self._rollback_quietly()
                raise

    def _run(self, sql: str) -> None:
        self._run_statements([Statement(sql)])

    def _run_statements(
        self, statements: Sequence[Statement], budget: RequestBudget | None = None
    ) -> list[Result]:
        assert self.conn is not None and self.volume is not None
        try:
            return run_statements(self.conn, statements, self.limits, budget)
        except SixfoldError:
            failure, self.volume.failure = self.volume.failure, None
            if failure is None:
                raise
            # The commit never reached storage: SQLite's cache may still hold it. Reopen.
            self._close_connection()
            self._open(self.volume.loop)
            raise failure from None

    def _rollback_quietly(self) -> None:
        assert self.conn is not None
        if self.conn.in_transaction:
            with contextlib.suppress(apsw.Error):
                self.conn.execute("ROLLBACK")

    # -- sessions -----------------------------------------------------------------------------

    async def _execute_in_session(
        self, session: str, statements: Sequence[Statement], budget: RequestBudget
    ) -> Outcome:
        current = self._session(session)
        try:
            results = await run_guarded(self.thread, budget, self._in_session, statements, budget)
        except SqlError as exc:
            self._close_session(current)
            self.lock.release()
            raise SqlError(f"{exc} (the session's transaction was rolled back)") from None
        current.last_used = asyncio.get_running_loop().time()
        if self.volume is not None and self.volume.staged:  # a COMMIT among its statements
            commits = await self._submit_staged()
            return await self._answer(results, commits, 0)
        await self.writer.confirm_epoch()  # what it read is answered only by the writer
        return Outcome(results, 0, self.writer.pipeline.vdl if self.writer.pipeline else 0)

    def _session(self, session: str) -> Session:
        if self.session is None or self.session.id != session:
            shown = (
                session if len(session) <= SESSION_ID_CHARS else session[:SESSION_ID_CHARS] + "…"
            )
            raise SessionError(
                f"no open session {shown!r}: it was committed, rolled back, or rolled back "
                f"after {self.limits.session_idle_s:g} s idle"
            )
        return self.session

    def _close_session(self, session: Session) -> None:
        if session.watchdog and session.watchdog is not asyncio.current_task():
            session.watchdog.cancel()
        self.session = None

    async def _expire(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        while self.session is session:
            idle = loop.time() - session.last_used
            if idle >= self.limits.session_idle_s:
                log.warning("session %s idle %.1f s: rolled back", session.id, idle)
                self._close_session(session)
                try:
                    await self.thread.run(self._rollback_quietly)
                finally:
                    self.lock.release()
                return
            await asyncio.sleep(self.limits.session_idle_s - idle)

    # -- answers ------------------------------------------------------------------------------

    async def _answer(self, results: list[Result], commits: list[Commit], seen: int) -> Outcome:
        """Wait until what the request wrote, or could have read, is durable."""
        pipeline = self.writer._ready()
        for commit in commits:
            await commit.durable
        if commits:
            return Outcome(results, commits[-1].lsn, commits[-1].lsn)
        if seen > pipeline.vdl:
            try:
                await pipeline.wait_durable(seen)  # the read barrier
            except SixfoldError as exc:
                exc.args = (
                    f"this read may have seen commit LSN {seen}, which is not durable, so it is "
                    f"not answered: {exc}",
                )
                raise
        await self.writer.confirm_epoch()
        return Outcome(results, 0, max(seen, pipeline.vdl))


def _not_applied(error: Exception) -> Exception:
    """A transaction whose redo was never submitted: nothing of it is anywhere."""
    if isinstance(error, SixfoldError):
        error.args = (f"{error} (nothing of this transaction was applied: retry it)",)
    return error


def _is_vacuum(statements: Sequence[Statement]) -> bool:
    return len(statements) == 1 and statements[0].sql.strip().upper().startswith("VACUUM")
