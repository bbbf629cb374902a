"""SQL values on the wire: every Python value SQLite can store comes back as it went."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sixfold.core.errors import InvalidRequestError
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.sql import values as sv

integers = st.integers(min_value=sv.INTEGER_MIN, max_value=sv.INTEGER_MAX)
scalars = st.one_of(st.none(), integers, st.floats(allow_nan=True), st.text(), st.binary())


def same(a: object, b: object) -> bool:
    """Equal, with NaN equal to itself and -0.0 told from 0.0."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1, a) == math.copysign(1, b)
        )
    return type(a) is type(b) and a == b


@given(scalars)
def test_value_round_trip_through_bytes(value: object) -> None:
    wire = sv.to_sql_value(value).SerializeToString()
    back = sv.from_sql_value(pb.SqlValue.FromString(wire))
    assert same(back, value)


@given(st.lists(st.lists(scalars, max_size=6), max_size=5))
def test_rows_and_results_round_trip(rows: list[list[object]]) -> None:
    columns = [f"c{i}" for i in range(max((len(r) for r in rows), default=0))]
    wire = sv.result_to_proto(columns, rows, rows_changed=3, last_row_id=7).SerializeToString()
    result = sv.result_from_proto(pb.SqlResult.FromString(wire))
    assert result.columns == tuple(columns)
    assert result.rows_changed == 3 and result.last_row_id == 7
    assert len(result.rows) == len(rows)
    for got, want in zip(result.rows, rows, strict=True):
        assert isinstance(got, tuple) and len(got) == len(want)
        assert all(same(g, w) for g, w in zip(got, want, strict=True))


@given(st.lists(scalars, max_size=5), st.lists(st.lists(scalars, max_size=3), max_size=4))
def test_statement_round_trip(params: list[object], sets: list[list[object]]) -> None:
    one = sv.statement_from_proto(
        pb.SqlStatement.FromString(sv.statement_to_proto("SELECT ?", params).SerializeToString())
    )
    assert one.sql == "SELECT ?" and not one.param_sets
    assert all(same(g, w) for g, w in zip(one.params, params, strict=True))
    many = sv.statement_from_proto(sv.statement_to_proto("INSERT", param_sets=sets))
    assert many.params == () and len(many.param_sets) == len(sets)


def test_python_types_that_map_to_sql_types() -> None:
    assert sv.from_sql_value(sv.to_sql_value(True)) == 1
    assert type(sv.from_sql_value(sv.to_sql_value(False))) is int
    assert sv.from_sql_value(sv.to_sql_value(bytearray(b"ab"))) == b"ab"
    assert sv.from_sql_value(sv.to_sql_value(memoryview(b"cd"))) == b"cd"
    assert sv.to_sql_value(b"").WhichOneof("kind") == "blob"  # an empty blob is no NULL
    assert sv.to_sql_value("").WhichOneof("kind") == "text"
    assert sv.to_sql_value(0).WhichOneof("kind") == "integer"
    assert sv.to_sql_value(None).null


@pytest.mark.parametrize("number", [sv.INTEGER_MAX + 1, sv.INTEGER_MIN - 1, 10**30])
def test_integers_outside_64_bits_are_refused(number: int) -> None:
    with pytest.raises(sv.SqlValueError, match="does not fit SQLite's 64-bit INTEGER") as info:
        sv.to_sql_value(number)
    assert info.value.out_of_range


@pytest.mark.parametrize("value", [[1], {"a": 1}, object(), 1 + 2j])
def test_unsupported_types_are_refused_with_their_name(value: object) -> None:
    with pytest.raises(sv.SqlValueError, match=f"type {type(value).__name__!r} is not supported"):
        sv.to_sql_value(value)


def test_parameter_errors_name_the_position() -> None:
    with pytest.raises(sv.SqlValueError, match="parameter 2: type 'list'"):
        sv.params_to_proto((1, [2]))
    with pytest.raises(sv.SqlValueError, match="parameter set 2, parameter 1: integer"):
        sv.statement_to_proto("INSERT", param_sets=[(1,), (1 << 64,)])
    with pytest.raises(sv.SqlValueError, match="named parameters are not supported"):
        sv.params_to_proto({"a": 1})
    with pytest.raises(sv.SqlValueError, match="not a single str"):
        sv.params_to_proto("abc")
    with pytest.raises(sv.SqlValueError, match="not valid UTF-8"):
        sv.to_sql_value("a\udc80")


def test_a_wire_value_without_a_kind_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="no kind set") as info:
        sv.from_sql_value(pb.SqlValue())
    assert type(info.value) is InvalidRequestError  # a name the wire knows
