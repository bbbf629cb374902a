"""The checker keeps its power on a long real history (issue 18).

tests/data/fuzz-history.jsonl.xz is a real `sixfold fuzz` history: over 100,000 operations,
12 minutes, every nemesis (see tests/data/README.md). Into copies of it we plant violations
of several kinds, each as late in the run as a place exists where no operation of the
history can explain it, and the checker must answer "violation" for each within its 60 s
limit, and "ok" for the original. One check of the whole history holds every
planted kind, each on its own key.
"""

from __future__ import annotations

import dataclasses
import itertools
import lzma
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest

from sixfold.check.history import Op, pair_operations, parse_history
from sixfold.check.linearizability import CheckResult, Verdict, check_operations

pytestmark = pytest.mark.slow  # ~30 s: not in the fast lane (make check)

HISTORY = Path(__file__).parent / "data" / "fuzz-history.jsonl.xz"
TIME_LIMIT_S = 60.0
OPS_MIN = 100_000
EPSILON_S = 1e-6
PLANTED_PROCESS = 10_000  # a client of its own: it never has two ops open
LOST_VALUE = 10**12  # a value the run never wrote


@cache
def real_ops() -> tuple[Op, ...]:
    with lzma.open(HISTORY, "rt") as file:
        return tuple(pair_operations(parse_history(file)))


def registers(ops: tuple[Op, ...]) -> dict[object, list[Op]]:
    by_key: dict[object, list[Op]] = {}
    for op in ops:
        if op.f in ("read", "write", "cas"):
            by_key.setdefault(op.key, []).append(op)
    for key_ops in by_key.values():
        key_ops.sort(key=lambda op: (op.invoke_time, op.invoke_index))
    return by_key


def produces(op: Op, value: object) -> bool:
    """Whether `op` may have left `value` in the register (a failed op changed nothing)."""
    if op.status == "fail" or op.f == "read":
        return False
    return (op.value_in if op.f == "write" else op.value_in[1]) == value


def nothing_can_produce(key_ops: list[Op], value: object, start: float, end: float) -> bool:
    """No op of the key may have written `value` in [start, end]: none overlapping it, and
    no info op invoked before its end (one may take effect at any time after its invoke)."""
    for op in key_ops:
        if not produces(op, value) or op.invoke_time > end:
            continue
        if op.status == "info" or op.return_time >= start:
            return False
    return True


def plant_stale_read(key_ops: list[Op]) -> tuple[Op, Op] | None:
    """An ok read changed to the value from before a write that completed before it began."""
    writes = [op for op in key_ops if op.f == "write" and op.status == "ok"]
    for before, write in reversed(list(itertools.pairwise(writes))):
        old = before.value_in
        if old == write.value_in or before.return_time >= write.invoke_time:
            continue
        for read in key_ops:
            if read.f != "read" or read.status != "ok" or read.invoke_time <= write.return_time:
                continue
            # Having returned before the read began, the write is before it: the read can
            # see `old` only if something wrote it again in between.
            if nothing_can_produce(key_ops, old, write.invoke_time, read.return_time):
                return read, dataclasses.replace(read, value_out=old)
            break
    return None


def plant_lost_write(key_ops: list[Op]) -> tuple[None, Op] | None:
    """An acknowledged write just before a read, which does not see it."""
    for read in reversed(key_ops):
        if read.f != "read" or read.status != "ok":
            continue
        start, end = read.invoke_time - 2 * EPSILON_S, read.invoke_time - EPSILON_S
        # The read began after the write returned: it sees the write, or a later one.
        if nothing_can_produce(key_ops, read.value_out, start, read.return_time):
            lost = dataclasses.replace(
                read,
                f="write",
                value_in=LOST_VALUE,
                value_out=None,
                invoke_time=start,
                complete_time=end,
                process=PLANTED_PROCESS,
            )
            return None, lost
    return None


def plant_unwritten_read(key_ops: list[Op]) -> tuple[Op, Op] | None:
    read = next(op for op in reversed(key_ops) if op.f == "read" and op.status == "ok")
    return read, dataclasses.replace(read, value_out=12_345)


def plant_double_cas(key_ops: list[Op]) -> tuple[None, Op] | None:
    """An acknowledged cas applied a second time, after a read showed its new value."""
    for cas in reversed(key_ops):
        if cas.f != "cas" or cas.status != "ok" or cas.value_in[0] == cas.value_in[1]:
            continue
        expected, new = cas.value_in
        for read in key_ops:
            if read.f != "read" or read.status != "ok" or read.invoke_time <= cas.return_time:
                continue
            start, end = read.return_time + EPSILON_S, read.return_time + 2 * EPSILON_S
            # The read saw `new`: the second cas can apply only if something wrote
            # `expected` again after it.
            if read.value_out == new and nothing_can_produce(
                key_ops, expected, read.invoke_time, end
            ):
                again = dataclasses.replace(
                    cas, invoke_time=start, complete_time=end, process=PLANTED_PROCESS
                )
                return None, again
            break
    return None


PLANTS: dict[str, Callable[[list[Op]], tuple[Op | None, Op] | None]] = {
    "stale read": plant_stale_read,
    "lost write": plant_lost_write,
    "read of a value never written": plant_unwritten_read,
    "compare-and-set applied twice": plant_double_cas,
}


@dataclasses.dataclass(frozen=True)
class Plant:
    key: object
    when: float
    removed: Op | None
    added: Op


@cache
def plants() -> dict[str, Plant]:
    """Where each kind of violation goes into the real history: as late as a key allows,
    each kind on a key of its own (so that one check can hold them all)."""
    chosen: dict[str, Plant] = {}
    by_key = registers(real_ops())
    for kind in sorted(PLANTS):
        places = []
        for key, key_ops in by_key.items():
            if key in {p.key for p in chosen.values()}:
                continue
            change = PLANTS[kind](key_ops)
            if change is not None:
                places.append(Plant(key, change[1].invoke_time, *change))
        if not places:
            raise AssertionError(f"no place in the history to plant a {kind}")
        chosen[kind] = max(places, key=lambda place: place.when)
    return chosen


def with_plants(ops: tuple[Op, ...], plants: list[Plant]) -> list[Op]:
    removed = {id(p.removed) for p in plants if p.removed is not None}
    return [op for op in ops if id(op) not in removed] + [p.added for p in plants]


@cache
def check_with_every_plant() -> CheckResult:
    """One check of the whole history with every kind planted, each on its own key: the
    planted keys must be violations and every other key ok, within the one time limit. (One
    run instead of one per kind: the others' keys are the same each time.)"""
    every = list(plants().values())
    return check_operations(with_plants(real_ops(), every), time_limit_s=TIME_LIMIT_S, shrink=False)


def test_the_history_is_long_and_real() -> None:
    ops = real_ops()
    assert len(ops) >= OPS_MIN
    assert sum(1 for op in ops if op.status == "info") > 100  # faults left outcomes unknown
    assert max(op.invoke_time for op in ops) > 600


def test_the_original_history_is_linearizable() -> None:
    planted_keys = {p.key for p in plants().values()}
    # Every key but the planted ones, from the whole check; those, from the original alone.
    whole = check_with_every_plant()
    wrong = [k for k in whole.keys if k.key not in planted_keys and k.verdict != Verdict.OK]
    assert not wrong, wrong
    by_key = registers(real_ops())
    for key in planted_keys:
        result = check_operations(by_key[key], time_limit_s=TIME_LIMIT_S, shrink=False)
        assert result.verdict == Verdict.OK, key


@pytest.mark.parametrize("kind", sorted(PLANTS))
def test_a_planted_violation_is_found(kind: str) -> None:
    p = plants()[kind]
    ops = real_ops()
    assert p.when > max(op.invoke_time for op in ops) / 2, "planted in the run's second half"
    on_key = with_plants(tuple(op for op in ops if op.key == p.key), [p])
    result = check_operations(on_key, time_limit_s=TIME_LIMIT_S, shrink=False)
    assert result.verdict == Verdict.VIOLATION, f"{kind} on key {p.key}: {result.verdict}"
    # And among all the other keys, within the same limit.
    assert check_with_every_plant().for_key(p.key).verdict == Verdict.VIOLATION
