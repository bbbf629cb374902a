"""Cursor: runs statements on its connection and holds the last one's rows."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from sixfold.client.errors import NotSupportedError, ProgrammingError, translate_error
from sixfold.client.statements import DML_KEYWORDS, first_keyword, transaction_control
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.sql import values as sqlvalues

if TYPE_CHECKING:
    from sixfold.client.connection import Connection


class Cursor:
    """Runs statements and holds the last one's rows (all fetched at once by the server)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.arraysize = 1
        self.description: tuple[tuple[Any, ...], ...] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.rows_changed = 0  # the server's count, also for statements that are not DML
        self.commit_lsn = 0  # a statement run on its own on the writer: its durable LSN
        self.read_point = 0  # the snapshot the statement read
        self.endpoint = ""  # the address that ran the last statement
        self._rows: list[tuple[Any, ...]] = []
        self._next = 0
        self._last_row_id = 0
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed cursor.")
        self.connection._check_open()

    def _reset(self) -> None:
        self.description = None
        self.rowcount = -1
        self.rows_changed = 0
        self.commit_lsn = 0
        self.read_point = 0
        self.endpoint = ""
        self._rows = []
        self._next = 0

    def execute(
        self, sql: str, parameters: Sequence[Any] = (), *, read_only: bool | None = None
    ) -> Cursor:
        """Run `sql`. `read_only` (default: the connection's): run it on a reader, on its
        own; a reader refuses writes. Not allowed inside an open transaction."""
        self._check_open()
        self._reset()
        if not isinstance(sql, str):
            raise ProgrammingError(f"sql must be a str, not {type(sql).__name__}")
        conn = self.connection
        if read_only and conn.in_transaction:
            raise ProgrammingError(
                "read_only=True inside an open transaction: its statements run on the writer, "
                "in the transaction; commit or roll back first"
            )
        verb = transaction_control(sql)
        if verb is not None and not parameters:
            if verb == "BEGIN" and read_only is not False and conn._read_only_default:
                raise NotSupportedError(
                    "a read-only connection has no transactions: execute BEGIN with "
                    "read_only=False to open one on the writer"
                )
            conn._transaction_statement(verb)
            return self
        statement = self._statement(sql, params=parameters)
        keyword = first_keyword(sql)
        on_reader = conn._read_only_default if read_only is None else read_only
        self._run(
            sql,
            statement,
            dml=keyword in DML_KEYWORDS,
            read_only=on_reader and not conn.in_transaction,
        )
        if keyword in ("INSERT", "REPLACE"):
            self.lastrowid = self._last_row_id
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]]) -> Cursor:
        self._check_open()
        self._reset()
        statement = self._statement(sql, param_sets=seq_of_parameters)
        if not statement.param_sets:
            self.rowcount = 0  # nothing to run, as sqlite3 does
            return self
        self._run(sql, statement, dml=True)
        return self

    def _statement(self, sql: str, params: Any = (), param_sets: Any = None) -> pb.SqlStatement:
        try:
            return sqlvalues.statement_to_proto(sql, params or None, param_sets)
        except sqlvalues.SqlValueError as exc:
            raise translate_error(exc, commit=False, endpoint=self.connection.address) from None

    def _run(
        self,
        sql: str,
        statement: pb.SqlStatement,
        *,
        dml: bool,
        force_standalone: bool = False,
        read_only: bool = False,
    ) -> None:
        conn = self.connection
        standalone = force_standalone or conn.autocommit
        response, self.endpoint = conn._execute(
            statement, dml=dml, standalone=standalone, read_only=read_only
        )
        assert len(response.results) == 1, f"{len(response.results)} results for one statement"
        result = sqlvalues.result_from_proto(response.results[0])
        if result.columns:
            self.description = tuple(
                (name, None, None, None, None, None, None) for name in result.columns
            )
        self._rows = result.rows
        self.rows_changed = result.rows_changed
        self.rowcount = result.rows_changed if dml else -1
        self._last_row_id = result.last_row_id
        self.commit_lsn = response.commit_lsn
        self.read_point = response.read_point
        if response.commit_lsn:
            conn.last_commit_lsn = response.commit_lsn

    # -- fetching

    def fetchone(self) -> tuple[Any, ...] | None:
        self._check_open()
        if self._next >= len(self._rows):
            return None
        row = self._rows[self._next]
        self._next += 1
        return row

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        self._check_open()
        count = self.arraysize if size is None else size
        rows = self._rows[self._next : self._next + max(count, 0)]
        self._next += len(rows)
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        self._check_open()
        rows = self._rows[self._next :]
        self._next = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self

    def __next__(self) -> tuple[Any, ...]:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def close(self) -> None:
        self._closed = True
        self._rows = []

    def setinputsizes(self, sizes: object) -> None:
        """PEP 249: a no-op here."""

    def setoutputsize(self, size: object, column: object = None) -> None:
        """PEP 249: a no-op here."""
