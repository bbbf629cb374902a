"""The history format and the register linearizability checker, on hand-made histories.

Each hand-made history is a small timeline; the ones that must fail name the anomaly a real
store would show (a stale read, a lost write, a read of a value never written). A property
test drives a simulated atomic register and checks that what it produces always passes, and
that corrupting one read always fails.
"""

from __future__ import annotations

import io
import itertools
import random
import time
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sixfold.check.history import (
    NEMESIS,
    Event,
    HistoryError,
    Op,
    load_history,
    pair_operations,
    parse_history,
    write_event,
)
from sixfold.check.linearizability import (
    Budget,
    Verdict,
    check_history,
    check_operations,
    check_register,
    format_op,
    is_checked,
    main,
    segments,
    shrink_violation,
    step_register,
)

_indices = itertools.count()


def _op(f, value_in, value_out, start, end, status="ok", process=0, key="k") -> Op:
    index = next(_indices)
    return Op(process, f, key, value_in, value_out, start, index, end, index, status)


def w(value, start, end, status="ok", process=0, key="k") -> Op:
    return _op("write", value, None, start, end, status, process, key)


def r(value, start, end, status="ok", process=0, key="k") -> Op:
    return _op("read", None, value if status == "ok" else None, start, end, status, process, key)


def cas(expected, new, start, end, status="ok", process=0, key="k") -> Op:
    return _op("cas", (expected, new), None, start, end, status, process, key)


def verdict(*ops: Op) -> Verdict:
    return check_operations(ops).verdict


# -- linearizable and not ---------------------------------------------------------------------


def test_sequential_history_is_linearizable() -> None:
    assert verdict(r(None, 0, 1), w(1, 2, 3), r(1, 4, 5), w(2, 6, 7), r(2, 8, 9)) == Verdict.OK


def test_empty_history_is_linearizable() -> None:
    assert check_operations([]).verdict == Verdict.OK


def test_stale_read_after_a_newer_write_completed_is_a_violation() -> None:
    assert verdict(w(1, 0, 1), w(2, 2, 3), r(1, 4, 5)) == Verdict.VIOLATION


def test_stale_read_after_another_read_saw_the_newer_value_is_a_violation() -> None:
    # w2 is still in flight, so reading 1 or 2 is fine alone; but once a read has seen 2 and
    # completed, a read that starts afterwards may not go back to 1.
    slow_write = w(2, 2, 10, process=1)
    assert verdict(w(1, 0, 1), slow_write, r(2, 3, 4, process=2), r(1, 5, 6, process=3)) == (
        Verdict.VIOLATION
    )
    assert verdict(w(1, 0, 1), slow_write, r(1, 3, 4, process=2), r(2, 5, 6, process=3)) == (
        Verdict.OK
    )


def test_lost_write_is_a_violation() -> None:
    # Acknowledged, then a read strictly after shows the value from before it.
    assert verdict(w(5, 0, 1), r(None, 2, 3)) == Verdict.VIOLATION
    assert verdict(w(4, 0, 1), w(5, 2, 3), r(4, 4, 5)) == Verdict.VIOLATION


def test_read_of_a_value_never_written_is_a_violation() -> None:
    result = check_operations([w(1, 0, 1), r(7, 2, 3)])
    assert result.verdict == Verdict.VIOLATION
    assert "a value no operation wrote" in result.keys[0].explanation


def test_concurrent_read_and_write_may_take_either_order() -> None:
    assert verdict(w(1, 0, 3), r(None, 1, 2, process=1)) == Verdict.OK
    assert verdict(w(1, 0, 3), r(1, 1, 2, process=1)) == Verdict.OK


def test_concurrent_writes_may_take_either_order() -> None:
    for last in (1, 2):
        assert verdict(w(1, 0, 2), w(2, 1, 3, process=1), r(last, 4, 5)) == Verdict.OK
    assert verdict(w(1, 0, 2), w(2, 1, 3, process=1), r(None, 4, 5)) == Verdict.VIOLATION


def test_ops_touching_at_an_instant_count_as_concurrent() -> None:
    assert verdict(w(1, 0, 1), r(None, 1, 2, process=1)) == Verdict.OK


def test_cas_applies_only_when_the_value_matches() -> None:
    assert verdict(w(1, 0, 1), cas(1, 2, 2, 3), r(2, 4, 5)) == Verdict.OK
    assert verdict(cas(None, 2, 0, 1), r(2, 2, 3)) == Verdict.OK
    # An acknowledged cas from 0 when the register holds 1 cannot have succeeded.
    assert verdict(w(1, 0, 1), cas(0, 2, 2, 3), r(2, 4, 5)) == Verdict.VIOLATION
    # A successful cas must be visible afterwards.
    assert verdict(w(1, 0, 1), cas(1, 2, 2, 3), r(1, 4, 5)) == Verdict.VIOLATION


def test_failed_cas_did_not_apply() -> None:
    assert verdict(w(1, 0, 1), cas(1, 2, 2, 3, status="fail"), r(1, 4, 5)) == Verdict.OK
    assert verdict(w(1, 0, 1), cas(1, 2, 2, 3, status="fail"), r(2, 4, 5)) == Verdict.VIOLATION


def test_info_write_may_or_may_not_have_happened() -> None:
    history = [w(1, 0, 1), w(2, 2, 3, status="info", process=1)]
    assert verdict(*history, r(1, 4, 5)) == Verdict.OK  # never happened (or not yet)
    assert verdict(*history, r(2, 4, 5)) == Verdict.OK  # happened
    # ... possibly long after its client gave up on it.
    assert verdict(*history, r(1, 4, 5), r(2, 6, 7)) == Verdict.OK
    # But once seen it cannot be undone.
    assert verdict(*history, r(2, 4, 5), r(1, 6, 7)) == Verdict.VIOLATION


def test_info_write_cannot_take_effect_before_its_invoke() -> None:
    assert verdict(r(2, 0, 1), w(2, 2, 3, status="info")) == Verdict.VIOLATION


def test_info_cas_may_or_may_not_have_applied() -> None:
    history = [w(1, 0, 1), cas(1, 2, 2, 3, status="info", process=1)]
    assert verdict(*history, r(1, 4, 5)) == Verdict.OK
    assert verdict(*history, r(2, 4, 5)) == Verdict.OK


def test_fail_ops_are_ignored() -> None:
    assert verdict(w(1, 0, 1), w(2, 2, 3, status="fail"), r(1, 4, 5)) == Verdict.OK
    assert verdict(w(1, 0, 1), r(None, 2, 3, status="fail"), r(1, 4, 5)) == Verdict.OK
    assert verdict(w(1, 0, 1), w(2, 2, 3, status="fail"), r(2, 4, 5)) == Verdict.VIOLATION


def test_only_the_bad_key_is_a_violation() -> None:
    good = [w(1, 0, 1, key="a"), r(1, 2, 3, key="a")]
    bad = [w(1, 0, 1, key="b"), w(2, 2, 3, key="b"), r(1, 4, 5, key="b")]
    other = [w(9, 0, 1, key=7), r(9, 2, 3, key=7)]
    result = check_operations(good + bad + other)
    assert result.verdict == Verdict.VIOLATION
    assert result.for_key("a").verdict == Verdict.OK
    assert result.for_key(7).verdict == Verdict.OK
    assert result.for_key("b").verdict == Verdict.VIOLATION
    assert len(result.for_key("b").failing_ops) == 3


# -- the search bound -------------------------------------------------------------------------


def _pathological_history(width: int) -> list[Op]:
    """Many overlapping writes and reads, then a read of the initial value: proving the
    violation means exploring a huge number of interleavings of the concurrent part. One
    value is written twice, so the unique-values test does not apply and it takes a search."""
    ops = [w(v, 0, 10, process=v) for v in range(width)]
    ops += [r(v, 0, 10, process=width + v) for v in range(width)]
    return [*ops, w(0, 0, 10, process=2 * width), r(None, 11, 12, process=0)]


def test_step_budget_gives_unknown_rather_than_hanging() -> None:
    started = time.monotonic()
    result = check_operations(_pathological_history(20), max_steps=20_000)
    assert result.verdict == Verdict.UNKNOWN
    assert result.keys[0].steps > 20_000
    assert time.monotonic() - started < 5


def test_time_limit_gives_unknown_rather_than_hanging() -> None:
    started = time.monotonic()
    result = check_operations(_pathological_history(20), max_steps=None, time_limit_s=0.2)
    assert result.verdict == Verdict.UNKNOWN
    assert time.monotonic() - started < 5


def test_deadline_is_read_from_the_injected_clock() -> None:
    ticks = itertools.count()
    budget = Budget(max_steps=None, deadline=3, clock=lambda: next(ticks))
    assert check_register(_pathological_history(20), budget).verdict == Verdict.UNKNOWN


# -- shrinking --------------------------------------------------------------------------------


def _sequential_history(count: int, rng: random.Random) -> list[Op]:
    """A correct history of `count` sequential writes of distinct values and reads."""
    ops, current, now = [], None, 0.0
    for i in range(count):
        if rng.random() < 0.5:
            current = i
            ops.append(w(i, now, now + 0.5, process=i % 3))
        else:
            ops.append(r(current, now, now + 0.5, process=i % 3))
        now += 1
    return ops


def test_minimal_failing_sub_history_of_a_buried_stale_read_is_three_ops() -> None:
    ops = _sequential_history(200, random.Random(7))
    middle = 100
    written = [op for op in ops[:middle] if op.f == "write"]
    stale_value = written[-3].value_in  # two writes have completed since
    stale = r(stale_value, ops[middle].invoke_time - 0.25, ops[middle].invoke_time - 0.1)
    result = check_operations([*ops[:middle], stale, *ops[middle:]])
    failing = result.keys[0].failing_ops
    assert result.verdict == Verdict.VIOLATION
    assert len(failing) == 3
    assert stale in failing
    assert written[-3] in failing  # the write the stale read saw stays, so the story is readable


def test_shrinking_a_read_of_an_unwritten_value_leaves_just_the_read() -> None:
    ops = _sequential_history(50, random.Random(3))
    bad = r(-1, 100, 101)
    assert shrink_violation([*ops, bad]) == [bad]


def test_format_op() -> None:
    assert format_op(w(5, 1.0, 2.5, process=3)) == "[1..2.5] p3 write 5 -> ok"
    assert format_op(r(None, 1, 2)) == "[1..2] p0 read null -> ok"
    assert format_op(cas(1, 2, 1, 2, status="fail")) == "[1..2] p0 cas [1, 2] -> fail"
    assert format_op(w(5, 1, 2, status="info")) == "[1..2(info)] p0 write 5 -> info"


# -- the JSON-lines format --------------------------------------------------------------------


def _events() -> list[Event]:
    return [
        Event(0, 1, "invoke", "write", "k", 5, 0.0),
        Event(1, 2, "invoke", "cas", "k", (5, 6), 0.1),
        Event(2, NEMESIS, "info", "partition", None, ["a1", "b1"], 0.15),
        Event(3, 1, "ok", "write", "k", 5, 0.2),
        Event(4, 2, "info", "cas", "k", (5, 6), 0.3),
        Event(5, 1, "invoke", "read", "k", None, 0.4),
        Event(6, 1, "ok", "read", "k", 6, 0.5),
        Event(7, 3, "invoke", "write", 9, 1, 0.6),
    ]


def test_jsonl_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    with open(path, "w", encoding="utf-8") as file:
        for event in _events():
            write_event(file, event)
    loaded = load_history(path)
    expected = [replace(e, value=tuple(e.value)) if e.is_nemesis else e for e in _events()]
    assert loaded == expected
    assert path.read_text().splitlines()[0] == (
        '{"index": 0, "process": 1, "type": "invoke", "f": "write", "key": "k", "value": 5, '
        '"time": 0.0}'
    )


def test_pairing_operations() -> None:
    ops = pair_operations(_events())
    assert [(op.f, op.status) for op in ops] == [
        ("write", "ok"),
        ("cas", "info"),
        ("read", "ok"),
        ("write", "info"),  # never completed: its outcome is unknown
    ]
    assert ops[2].value_out == 6 and ops[1].value_in == (5, 6)
    assert ops[3].complete_time is None and ops[3].return_time == float("inf")
    assert check_history(_events()).verdict == Verdict.OK


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"index": 1}', "missing field(s) process, type"),
        (
            '{"index": 1, "process": 1, "type": "done", "f": "read", "key": "k", "value": null, '
            '"time": 0}',
            "type must be",
        ),
        (
            '{"index": 1, "process": "p1", "type": "ok", "f": "read", "key": "k", "value": null, '
            '"time": 0}',
            "process must be",
        ),
        (
            '{"index": 1, "process": 1, "type": "ok", "f": "append", "key": "k", "value": 1, '
            '"time": 0}',
            "f must be",
        ),
        (
            '{"index": 1, "process": 1, "type": "invoke", "f": "write", "key": "k", "value": true, '
            '"time": 0}',
            "write's value must be an int",
        ),
        (
            '{"index": 1, "process": 1, "type": "invoke", "f": "cas", "key": "k", "value": [1], '
            '"time": 0}',
            "cas value must be",
        ),
        (
            '{"index": 1, "process": 1, "type": "invoke", "f": "read", "key": "k", "value": null, '
            '"time": "soon"}',
            "time must be",
        ),
        (
            '{"index": 1, "process": "nemesis", "type": "ok", "f": "kill", "key": null, '
            '"value": "a1", "time": 0}',
            "nemesis event must have type info",
        ),
    ],
)
def test_malformed_line_is_named(line: str, message: str) -> None:
    good = '{"index": 0, "process": 1, "type": "invoke", "f": "read", "key": "k", "value": null, "time": 0}'
    with pytest.raises(HistoryError, match="line 3: ") as caught:
        parse_history([good, "", line])
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ([Event(0, 1, "ok", "write", "k", 1, 0.0)], "no outstanding invoke"),
        (
            [
                Event(0, 1, "invoke", "write", "k", 1, 0.0),
                Event(1, 1, "invoke", "read", "k", None, 1),
            ],
            "still outstanding",
        ),
        (
            [Event(0, 1, "invoke", "write", "k", 1, 0.0), Event(1, 1, "ok", "write", "j", 1, 1)],
            "does not match",
        ),
        (
            [Event(0, 1, "invoke", "write", "k", 1, 2.0), Event(1, 1, "ok", "write", "k", 1, 1)],
            "before its invoke",
        ),
    ],
)
def test_inconsistent_pairing_is_named(events: list[Event], message: str) -> None:
    with pytest.raises(HistoryError, match=message):
        pair_operations(events)


# -- the command line -------------------------------------------------------------------------


def _write_history(path: Path, ops_events: list[Event]) -> Path:
    buffer = io.StringIO()
    for event in ops_events:
        write_event(buffer, event)
    path.write_text(buffer.getvalue())
    return path


def test_command_line_exit_status_and_report(tmp_path: Path, capsys) -> None:
    ok = _write_history(tmp_path / "ok.jsonl", _events())
    assert main([str(ok)]) == 0
    assert "overall: ok" in capsys.readouterr().out

    bad_events = [
        *_events(),
        Event(8, 1, "invoke", "read", "k", None, 1.0),
        Event(9, 1, "ok", "read", "k", 5, 1.1),  # 6 was already read: a stale read
    ]
    bad = _write_history(tmp_path / "bad.jsonl", bad_events)
    assert main([str(bad)]) == 1
    out = capsys.readouterr().out
    assert "key 'k': violation" in out and "p1 read 5 -> ok" in out

    malformed = tmp_path / "malformed.jsonl"
    malformed.write_text("{}\n")
    assert main([str(malformed)]) == 3
    assert "line 1: missing field" in capsys.readouterr().err


def test_command_line_unknown(tmp_path: Path) -> None:
    events = []
    for op in _pathological_history(14):
        events.append(
            Event(len(events), op.process, "invoke", op.f, op.key, op.value_in, op.invoke_time)
        )
        value = op.value_out if op.f == "read" else op.value_in
        events.append(Event(len(events), op.process, "ok", op.f, op.key, value, op.complete_time))
    events.sort(key=lambda e: (e.time, e.type != "invoke"))
    path = _write_history(tmp_path / "hard.jsonl", events)
    assert main([str(path), "--max-steps", "1000"]) == 2


# -- a simulated atomic register always passes ------------------------------------------------

VALUE_COUNT = 5  # values written are 0..4, so duplicates are common


def simulate(
    rng: random.Random, processes: int, keys: list, steps: int, crash_percent: int
) -> list[Event]:
    """Clients run ops against a real atomic register; each op takes effect at one instant
    between its invoke and its completion, so the history is linearizable by construction.
    Ops may crash before taking effect (fail, info or never completed) or lose their
    acknowledgement after it (info), and nemesis events are sprinkled in."""
    registers: dict[object, int | None] = dict.fromkeys(keys)
    pending: dict[int, dict] = {}  # process -> its op in flight
    events: list[Event] = []

    def emit(process, event_type, f, key, value) -> None:
        events.append(Event(len(events), process, event_type, f, key, value, len(events) * 0.01))

    for _ in range(steps):
        process = rng.randrange(processes)
        op = pending.get(process)
        if rng.random() < 0.05:
            emit(NEMESIS, "info", rng.choice(["kill", "partition", "heal"]), None, "a1")
        elif op is None:
            f, key = rng.choice(["read", "write", "cas"]), rng.choice(keys)
            pair = (rng.randrange(VALUE_COUNT), rng.randrange(VALUE_COUNT))
            value = {"read": None, "write": pair[0], "cas": pair}[f]
            pending[process] = {"f": f, "key": key, "value": value, "applied": False}
            emit(process, "invoke", f, key, value)
        elif not op["applied"]:
            if rng.randrange(100) >= crash_percent:
                _apply(op, registers)
            else:  # crashed before taking effect: fail, info or no answer yet are all truthful
                ending = rng.choice(["fail", "info", "no answer yet"])
                if ending != "no answer yet":
                    emit(process, ending, op["f"], op["key"], op["value"])
                    del pending[process]
        else:
            lost_ack = rng.randrange(100) < crash_percent
            status = "info" if lost_ack else op["status"]
            value = op["result"] if op["f"] == "read" and status == "ok" else op["value"]
            emit(process, status, op["f"], op["key"], value)
            del pending[process]
    # Ops still pending at the end were never completed: pair_operations makes them info.
    return events


# Hypothesis picks the shape; a seeded Random makes the many small choices, which keeps
# generation fast enough for hundreds of examples (a failure prints the seed to replay).
simulated_history = st.builds(
    lambda seed, processes, keys, steps, crash_percent: simulate(
        random.Random(seed), processes, keys, steps, crash_percent
    ),
    seed=st.integers(min_value=0, max_value=2**32),
    processes=st.integers(min_value=1, max_value=6),
    keys=st.sampled_from([["k"], ["a", "b"], ["a", "b", 3]]),
    steps=st.integers(min_value=1, max_value=150),
    crash_percent=st.sampled_from([0, 5, 20, 50]),
)


def _apply(op: dict, registers: dict) -> None:
    key, current = op["key"], registers[op["key"]]
    op["applied"] = True
    if op["f"] == "read":
        op["result"], op["status"] = current, "ok"
    elif op["f"] == "write":
        registers[key], op["status"] = op["value"], "ok"
    elif current == op["value"][0]:
        registers[key], op["status"] = op["value"][1], "ok"
    else:
        op["status"] = "fail"  # the comparison failed: definitely did not apply


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(simulated_history)
def test_simulated_register_histories_are_linearizable(events: list[Event]) -> None:
    result = check_history(events, max_steps=1_000_000)
    assert result.verdict == Verdict.OK, "\n".join(k.explanation for k in result.keys)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(simulated_history, st.data())
def test_a_read_of_a_value_never_written_is_always_a_violation(events, data) -> None:
    ops = pair_operations(events)
    reads = [i for i, op in enumerate(ops) if op.f == "read" and op.status == "ok"]
    assume(reads)
    target = data.draw(st.sampled_from(reads))
    ops[target] = replace(ops[target], value_out=999)  # never written: values are 0..4
    result = check_operations(ops, max_steps=1_000_000)
    assert result.verdict == Verdict.VIOLATION
    assert result.for_key(ops[target].key).verdict == Verdict.VIOLATION


# -- agreement with brute force on small arbitrary histories ---------------------------------


def _brute_force_linearizable(ops: list[Op]) -> bool:
    """Try every subset of info ops and every order: the definition, without cleverness."""
    checked = [op for op in ops if is_checked(op)]
    required = [op for op in checked if op.status == "ok"]
    optional = [op for op in checked if op.status == "info"]
    for size in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, size):
            for order in itertools.permutations([*required, *chosen]):
                if _respects_real_time(order) and _is_legal_run(order):
                    return True
    return False


def _respects_real_time(order: tuple[Op, ...]) -> bool:
    return all(
        not later.return_time < earlier.invoke_time
        for i, earlier in enumerate(order)
        for later in order[i + 1 :]
    )


def _is_legal_run(order: tuple[Op, ...]) -> bool:
    state = None
    for op in order:
        legal, state = step_register(state, op)
        if not legal:
            return False
    return True


SMALL_VALUES = st.sampled_from([None, 0, 1, 2])


@st.composite
def arbitrary_op(draw: st.DrawFn) -> Op:
    f = draw(st.sampled_from(["read", "write", "cas"]))
    status = draw(st.sampled_from(["ok", "ok", "info", "fail"]))
    start = draw(st.integers(0, 8))
    end = start + draw(st.integers(0, 4))
    value_in = {"read": None, "write": draw(st.integers(0, 2))}.get(f)
    if f == "cas":
        value_in = (draw(SMALL_VALUES), draw(st.integers(0, 2)))
    value_out = draw(SMALL_VALUES) if f == "read" and status == "ok" else None
    return _op(f, value_in, value_out, start, end, status)


@settings(max_examples=500, deadline=None)
@given(st.lists(arbitrary_op(), max_size=6))
def test_checker_agrees_with_brute_force(ops: list[Op]) -> None:
    """Exact, except that an info op carried past a quiescent point may take effect more
    than once in the checker (sixfold.check.linearizability._free_moves): then it may accept a
    history brute force rejects, never the other way round."""
    linearizable = _brute_force_linearizable(ops)
    verdict = check_register(ops).verdict
    if linearizable:
        assert verdict == Verdict.OK
    elif _carries_info_ops(ops):
        assert verdict in (Verdict.OK, Verdict.VIOLATION)
    else:
        assert verdict == Verdict.VIOLATION
    if verdict == Verdict.VIOLATION:
        assert not _brute_force_linearizable(shrink_violation(ops))


def _carries_info_ops(ops: list[Op]) -> bool:
    return any(segment.carried for segment in segments([op for op in ops if is_checked(op)]))


# -- performance ------------------------------------------------------------------------------


def _big_history(op_count: int, key_count: int, clients_per_key: int, seed: int) -> list[Op]:
    """Clients with overlapping ops against atomic registers, each op taking effect at a random
    instant inside its interval: linearizable by construction, and concurrent enough to search."""
    rng = random.Random(seed)
    effects: list[tuple[float, int, str, object]] = []  # (instant, op id, ...)
    shapes = []
    for op_id in range(op_count):
        key = op_id % key_count
        client = (op_id // key_count) % clients_per_key
        # Each client runs one op per round, so a key's clients overlap but a client never does.
        round_start = (op_id // (key_count * clients_per_key)) * 1.0
        start = round_start + rng.random() * 0.5
        end = start + 0.05 + rng.random() * 0.44
        f = rng.choice(["read", "write", "write", "cas"])
        value = rng.randrange(10) if f == "write" else (rng.randrange(10), rng.randrange(10))
        shapes.append(
            (key, client * key_count + key, f, value if f != "read" else None, start, end)
        )
        effects.append((rng.uniform(start, end), op_id))
    registers: dict[int, int | None] = {}
    ops: list[Op | None] = [None] * op_count
    for _, op_id in sorted(effects):
        key, process, f, value, start, end = shapes[op_id]
        current = registers.get(key)
        out, status = None, "ok"
        if f == "read":
            out = current
        elif f == "write":
            registers[key] = value
        elif current == value[0]:
            registers[key] = value[1]
        else:
            status = "fail"
        ops[op_id] = Op(process, f, key, value, out, start, op_id, end, op_id, status)
    return [op for op in ops if op is not None]


def test_five_thousand_ops_over_twenty_keys_check_quickly() -> None:
    ops = _big_history(5000, 20, 4, seed=1)
    started = time.monotonic()
    result = check_operations(ops)
    elapsed = time.monotonic() - started
    assert result.verdict == Verdict.OK
    assert elapsed < 5.0, f"took {elapsed:.2f}s"


# -- long histories (issue 18) -----------------------------------------------------------------


@st.composite
def unique_values_history(draw: st.DrawFn) -> list[Op]:
    """Reads and writes where each value is written once (some writes' outcome unknown)."""
    ops = []
    values = draw(st.lists(st.integers(1, 9), unique=True, max_size=3))
    for value in values:
        start = draw(st.integers(0, 8))
        status = draw(st.sampled_from(["ok", "ok", "info"]))
        ops.append(w(value, start, start + draw(st.integers(0, 4)), status))
    for _ in range(draw(st.integers(0, 4))):
        start = draw(st.integers(0, 8))
        seen = draw(st.sampled_from([None, *values]))
        ops.append(r(seen, start, start + draw(st.integers(0, 4))))
    return ops


@settings(max_examples=1000, deadline=None)
@given(unique_values_history())
def test_the_unique_values_test_agrees_with_brute_force(ops: list[Op]) -> None:
    from sixfold.check.linearizability import _unique_values_verdict

    expected = Verdict.OK if _brute_force_linearizable(ops) else Verdict.VIOLATION
    assert _unique_values_verdict([op for op in ops if op.status != "fail"]) == expected


@settings(max_examples=300, deadline=None)
@given(st.lists(arbitrary_op(), max_size=9))
def test_searching_segment_by_segment_agrees_with_one_search(ops: list[Op]) -> None:
    from sixfold.check.linearizability import _search, _search_segments, is_checked

    checked = [op for op in ops if is_checked(op)]
    whole = _search(checked, Budget(max_steps=None)).verdict
    by_segments = _search_segments(checked, Budget(max_steps=None)).verdict
    if all(op.status == "ok" for op in checked):
        assert by_segments == whole
    else:  # an info op carried into later segments may apply in two: never stricter
        assert not (whole == Verdict.OK and by_segments == Verdict.VIOLATION)
