"""`sixfold sql` and `sixfold shell`: SQL from the command line, over `sixfold.client.dbapi`.

The shell reads statements ending with `;` (over as many lines as they need), runs each on
its own (autocommit) unless the user typed BEGIN, and prints rows as an aligned table. It
reads a pipe as well as a terminal: `echo "SELECT 1;" | sixfold shell`.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import sqlite3
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TextIO

from sixfold.client import dbapi

BLOB_HEX_CHARS_MAX = 64  # a longer blob is shown cut, with its length
PROMPT = "sixfold> "
PROMPT_MORE = "    ...> "

HELP = """\
Statements end with ';' and may span lines. Each runs on its own (committed once durable)
unless you type BEGIN; then COMMIT or ROLLBACK ends the transaction.
  .help              this text
  .tables            the tables
  .schema [TABLE]    CREATE statements (of one table, or all)
  .quit, .exit       leave (an open transaction is rolled back)
"""


# -- formatting -----------------------------------------------------------------------------


def format_value(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        text = value.hex()
        if len(text) > BLOB_HEX_CHARS_MAX:
            return f"x'{text[:BLOB_HEX_CHARS_MAX]}...' ({len(value)} bytes)"
        return f"x'{text}'"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def format_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Header, rule and rows, columns aligned (numbers to the right), then the row count."""
    cells = [[format_value(v) for v in row] for row in rows]
    widths = [len(c) for c in columns]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    numeric = [
        bool(rows) and all(isinstance(r[i], int | float) or r[i] is None for r in rows)
        for i in range(len(columns))
    ]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip(),
        "  ".join("-" * w for w in widths),
    ]
    for row in cells:
        parts = [
            cell.rjust(w) if num else cell.ljust(w)
            for cell, w, num in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(parts).rstrip())
    lines.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return lines


def json_value(value: Any) -> Any:
    """A value as JSON can hold it: a blob as {"blob_hex": ...}, NaN and infinities as text."""
    if isinstance(value, bytes):
        return {"blob_hex": value.hex()}
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def cursor_json(cursor: dbapi.Cursor) -> dict[str, Any]:
    columns = [d[0] for d in cursor.description or ()]
    return {
        "columns": columns,
        "rows": [[json_value(v) for v in row] for row in cursor.fetchall()],
        "rows_changed": cursor.rows_changed,
        "commit_lsn": cursor.commit_lsn,
        "read_point": cursor.read_point,
    }


def cursor_lines(cursor: dbapi.Cursor, sql: str) -> list[str]:
    """What a statement gave, for people: a table of rows, or how many rows it changed."""
    if cursor.description:
        return format_table([d[0] for d in cursor.description], cursor.fetchall())
    if dbapi.first_keyword(sql) in dbapi.READ_KEYWORDS:
        return ["(0 rows)"]
    return [command_tag(sql, cursor.rows_changed)]


_SCHEMA_VERBS = frozenset({"CREATE", "DROP", "ALTER"})
_SCHEMA_NOISE = frozenset({"TEMP", "TEMPORARY", "UNIQUE", "VIRTUAL"})
_COMMENT = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)


def command_tag(sql: str, rows_changed: int) -> str:
    """What a statement did, in psql's words: `INSERT 0 2`, `UPDATE 1`, `CREATE TABLE`.
    For several statements in one request, the last one's."""
    statements, rest = split_statements(sql)
    last = rest if rest.strip() else (statements[-1] if statements else sql)
    verb = dbapi.first_keyword(last)
    if verb in ("INSERT", "REPLACE"):
        return f"INSERT 0 {rows_changed}"  # psql's 0: the OID it no longer gives
    if verb in dbapi.DML_KEYWORDS:
        return f"{verb} {rows_changed}"
    if verb in _SCHEMA_VERBS:
        words = [w.upper() for w in _COMMENT.sub(" ", last).split()[1:4]]
        kind = next((w for w in words if w not in _SCHEMA_NOISE), "")
        return f"{verb} {kind}".strip()
    return verb or "OK"


def error_line(exc: dbapi.Error) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- statements -----------------------------------------------------------------------------


def split_statements(text: str) -> tuple[list[str], str]:
    """The complete statements in `text` (each with its `;`) and the incomplete rest.

    SQLite's own tokenizer decides (sqlite3.complete_statement), so a `;` in a string, a
    quoted name, a comment or a trigger body does not end a statement.
    """
    statements = []
    start = 0
    pos = text.find(";", start)
    while pos != -1:
        candidate = text[start : pos + 1]
        if sqlite3.complete_statement(candidate):
            if candidate.strip() != ";":
                statements.append(candidate.strip())
            start = pos + 1
        pos = text.find(";", pos + 1)
    return statements, text[start:]


# -- the shell ------------------------------------------------------------------------------


class Shell:
    def __init__(
        self, connection: dbapi.Connection, out: TextIO, err: TextIO, interactive: bool
    ) -> None:
        self.connection = connection
        self.out = out
        self.err = err
        self.interactive = interactive
        self.errors = 0

    def run(self, lines: Iterable[str]) -> int:
        """Run every statement in `lines`; 0, or 1 when a statement failed on piped input."""
        buffer = ""
        for line in lines:
            if not buffer.strip() and line.strip().startswith("."):
                if not self.dot_command(line.strip()):
                    break
                continue
            buffer += line if line.endswith("\n") else line + "\n"
            statements, buffer = split_statements(buffer)
            for sql in statements:
                self.statement(sql)
        else:
            if buffer.strip():  # the last statement may lack its ';' at the end of input
                self.statement(buffer.strip())
        if self.connection.in_transaction:
            try:
                self.connection.rollback()
                print("the open transaction was rolled back", file=self.err)
            except dbapi.Error as exc:
                print(f"Error: {error_line(exc)}", file=self.err)
        return 1 if self.errors and not self.interactive else 0

    def statement(self, sql: str) -> None:
        try:
            cursor = self.connection.execute(sql)
            for line in cursor_lines(cursor, sql):
                print(line, file=self.out)
        except dbapi.Error as exc:
            self.errors += 1
            print(f"Error: {error_line(exc)}", file=self.err)
        self.out.flush()

    def dot_command(self, line: str) -> bool:
        """Run a dot command; False when it asks to leave."""
        word, _, rest = line.partition(" ")
        if word in (".quit", ".exit"):
            return False
        if word == ".help":
            print(HELP, end="", file=self.out)
        elif word == ".tables":
            self.statement(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE "
                "'sqlite_%' ORDER BY name"
            )
        elif word == ".schema":
            table = rest.strip()
            sql = "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL"
            if table:
                sql += f" AND tbl_name = '{table.replace(chr(39), chr(39) * 2)}'"
            try:
                for (text,) in self.connection.execute(sql + " ORDER BY name").fetchall():
                    print(f"{text};", file=self.out)
            except dbapi.Error as exc:
                self.errors += 1
                print(f"Error: {error_line(exc)}", file=self.err)
        else:
            self.errors += 1
            print(f"Error: unknown command {word!r}; .help lists them", file=self.err)
        return True


def terminal_lines() -> Iterator[str]:
    """Lines typed at a terminal, with a prompt that shows whether a statement is open."""
    with contextlib.suppress(ImportError):
        import readline  # noqa: F401 - line editing and history for input()
    buffer = ""
    while True:
        try:
            line = input(PROMPT_MORE if buffer.strip() else PROMPT)
        except EOFError:
            print()
            return
        yield line
        buffer = "" if line.strip().startswith(".") and not buffer.strip() else buffer + line + "\n"
        buffer = split_statements(buffer)[1]


def run_shell(address: str, label: str, timeout: float, stdin: TextIO = sys.stdin) -> int:
    interactive = stdin.isatty()
    connection = dbapi.connect(address, timeout=timeout, autocommit=True)
    try:
        if interactive:
            print(f"sixfold shell on {label} ({address}); .help for help", flush=True)
        shell = Shell(connection, sys.stdout, sys.stderr, interactive)
        return shell.run(terminal_lines() if interactive else stdin)
    finally:
        connection.close()


def run_sql(
    address: str,
    sql: str,
    timeout: float,
    as_json: bool,
    waiting: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> int:
    """Run `sql` as one Execute and print what it gave; 1 with a one-line error if it failed.
    `waiting` is entered while the request is in flight (the CLI's waiting notice)."""
    connection = dbapi.connect(address, timeout=timeout, autocommit=True)
    try:
        with waiting():
            cursor = connection.execute(sql)
        if as_json:
            print(json.dumps(cursor_json(cursor)))
        else:
            for line in cursor_lines(cursor, sql):
                print(line)
        return 0
    except dbapi.Error as exc:
        print(f"sixfold: {error_line(exc)}", file=sys.stderr)
        return 1
    finally:
        connection.close()
