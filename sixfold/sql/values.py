"""SQL values, rows, statements and results between Python and the wire (`SqlValue` & co).

Pure conversions, shared by the client (`sixfold.client.dbapi`) and the servers: no I/O.
The five SQLite storage classes map one to one:

| Python                              | SqlValue  | back to Python |
|-------------------------------------|-----------|----------------|
| None                                | null      | None           |
| int (bool too), within sint64       | integer   | int            |
| float                               | real      | float          |
| str (valid UTF-8: no lone surrogate) | text      | str            |
| bytes, bytearray, memoryview        | blob      | bytes          |

Anything else is refused with a SqlValueError naming the value's position and type, never
converted silently (no str() of an unknown object). A wire value with no kind set is an
InvalidRequestError (the server answers INVALID_ARGUMENT under that name).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sixfold.core.errors import InvalidRequestError
from sixfold.rpc import sixfold_pb2 as pb

SqlScalar = None | int | float | str | bytes

INTEGER_MIN = -(1 << 63)  # SQLite's INTEGER and the wire's sint64
INTEGER_MAX = (1 << 63) - 1


class SqlValueError(InvalidRequestError):
    """A Python value that has no SQL equivalent: an unsupported type, an integer outside
    64 bits, a string that is not valid UTF-8.

    `out_of_range` tells an integer overflow (a data error) from a wrong type.
    """

    def __init__(self, message: str, out_of_range: bool = False) -> None:
        super().__init__(message)
        self.out_of_range = out_of_range


def to_sql_value(value: object) -> pb.SqlValue:
    """One Python value as a SqlValue."""
    if value is None:
        return pb.SqlValue(null=True)
    if isinstance(value, int):  # bool is an int: True -> 1, as sqlite3 stores it
        number = int(value)
        if not INTEGER_MIN <= number <= INTEGER_MAX:
            raise SqlValueError(
                f"integer {number} does not fit SQLite's 64-bit INTEGER "
                f"[{INTEGER_MIN}, {INTEGER_MAX}]",
                out_of_range=True,
            )
        return pb.SqlValue(integer=number)
    if isinstance(value, float):
        return pb.SqlValue(real=float(value))
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SqlValueError(f"text is not valid UTF-8: {exc.reason} at {exc.start}") from None
        return pb.SqlValue(text=str(value))
    if isinstance(value, bytes | bytearray | memoryview):
        return pb.SqlValue(blob=bytes(value))
    raise SqlValueError(
        f"type {type(value).__name__!r} is not supported: use None, int, float, str or bytes"
    )


def from_sql_value(value: pb.SqlValue) -> SqlScalar:
    """One SqlValue as a Python value."""
    kind = value.WhichOneof("kind")
    if kind == "null":
        return None
    if kind == "integer":
        return value.integer
    if kind == "real":
        return value.real
    if kind == "text":
        return value.text
    if kind == "blob":
        return value.blob
    # InvalidRequestError itself, not a subclass: the servers report it under its own name.
    raise InvalidRequestError("SqlValue has no kind set (null, integer, real, text or blob)")


def params_to_proto(params: Sequence[object] | None) -> list[pb.SqlValue]:
    """Positional (`?`) parameters as SqlValues; an error names the parameter (from 1)."""
    if params is None:
        return []
    if isinstance(params, Mapping):
        raise SqlValueError(
            "named parameters are not supported: use positional ? placeholders and a sequence"
        )
    if isinstance(params, str | bytes | bytearray | memoryview):
        raise SqlValueError(
            f"parameters must be a sequence of values, not a single {type(params).__name__}: "
            "wrap it in a tuple, e.g. (value,)"
        )
    out = []
    for i, value in enumerate(params, start=1):
        try:
            out.append(to_sql_value(value))
        except SqlValueError as exc:
            raise SqlValueError(f"parameter {i}: {exc}", exc.out_of_range) from None
    return out


def params_from_proto(values: Iterable[pb.SqlValue]) -> tuple[SqlScalar, ...]:
    return tuple(from_sql_value(v) for v in values)


def row_to_proto(row: Sequence[object]) -> pb.SqlRow:
    return pb.SqlRow(values=params_to_proto(row))


def row_from_proto(row: pb.SqlRow) -> tuple[SqlScalar, ...]:
    return params_from_proto(row.values)


def rows_to_proto(rows: Iterable[Sequence[object]]) -> list[pb.SqlRow]:
    return [row_to_proto(r) for r in rows]


def rows_from_proto(rows: Iterable[pb.SqlRow]) -> list[tuple[SqlScalar, ...]]:
    return [row_from_proto(r) for r in rows]


def statement_to_proto(
    sql: str,
    params: Sequence[object] | None = None,
    param_sets: Iterable[Sequence[object]] | None = None,
) -> pb.SqlStatement:
    """A statement with its parameters; `param_sets` (executemany) excludes `params`."""
    assert not (params and param_sets is not None), "params and param_sets are exclusive"
    sets = []
    if param_sets is not None:
        for n, one_set in enumerate(param_sets, start=1):
            try:
                sets.append(row_to_proto(one_set))
            except SqlValueError as exc:
                raise SqlValueError(f"parameter set {n}, {exc}", exc.out_of_range) from None
    return pb.SqlStatement(sql=sql, params=params_to_proto(params), param_sets=sets)


@dataclass(frozen=True)
class Statement:
    """A statement as the server runs it: `param_sets` non-empty means once per set."""

    sql: str
    params: tuple[SqlScalar, ...] = ()
    param_sets: tuple[tuple[SqlScalar, ...], ...] = ()


def statement_from_proto(statement: pb.SqlStatement) -> Statement:
    return Statement(
        sql=statement.sql,
        params=params_from_proto(statement.params),
        param_sets=tuple(row_from_proto(r) for r in statement.param_sets),
    )


@dataclass(frozen=True)
class Result:
    """What one statement gave: its columns and rows (none for a statement without rows)."""

    columns: tuple[str, ...] = ()
    rows: list[tuple[SqlScalar, ...]] = field(default_factory=list)
    rows_changed: int = 0
    last_row_id: int = 0


def result_to_proto(
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    rows_changed: int = 0,
    last_row_id: int = 0,
) -> pb.SqlResult:
    return pb.SqlResult(
        columns=list(columns),
        rows=rows_to_proto(rows),
        rows_changed=rows_changed,
        last_row_id=last_row_id,
    )


def result_from_proto(result: pb.SqlResult) -> Result:
    return Result(
        columns=tuple(result.columns),
        rows=rows_from_proto(result.rows),
        rows_changed=result.rows_changed,
        last_row_id=result.last_row_id,
    )
