"""A linearizability checker for per-key registers (Wing & Gong, Lowe; as in Porcupine).

A history is linearizable when every operation can be given one instant between its invoke
and its completion such that, taken in that order, the operations are a legal run of a single
register: a read returns the latest value written (None before any write), a cas(expected,
new) applies exactly when the current value equals expected.

How operations count:
- ok:   happened; it must be linearized inside [invoke, complete].
- fail: definitely did not happen; dropped (a failed cas never applied, a failed read saw
        nothing).
- info: outcome unknown; it may be linearized at any instant after its invoke, or never. An
        info read is dropped (it observed nothing); an info write or cas may or may not apply.

Keys are independent registers (linearizability is compositional), so each key is checked on
its own, which keeps every search small. Long histories stay checkable (issue 18):

- A key's history is cut at quiescent points, where no operation on the key is open: every
  operation before the cut returned before any after it was invoked. The search goes depth
  first over segments: the first state a segment can end in, then the next segment from
  there; only when a segment cannot go on does it ask the one before for its next end
  state, and a (segment, start state) that failed is never searched again. A search is
  then as long as a segment, not as the whole run. An info write or cas invoked before a
  cut may still take effect after it: in later segments it is a move the register may make
  at any time, as often as needed (more permissive than once, never a false violation,
  and no subsets of pending info ops to search).
- A key with only reads and writes, each value written at most once, is decided without a
  search, in O(n log n): Gibbons and Korach's zones (SIAM J. Comput. 26(4), 1997). Each
  value's cluster (its write and the reads of it) has a zone from the earliest return to
  the latest invoke of its ops; the history is linearizable iff no read of a value returns
  before its write is invoked, no two forward zones (earliest return before latest invoke)
  overlap, and no backward zone lies inside a forward one.

The search is Lowe's just-in-time linearization with memoisation: walk the call/return entries
in time order, try to linearize each pending call, and backtrack when a return is reached whose
operation is not yet linearized; the set of (linearized operations, register value) states
already explored is cached, since reaching one again by another order cannot succeed where the
first failed. The search counts its steps and gives up with "unknown" past a step budget or a
deadline instead of hanging on a pathological history.

On a violation the key's operations are shrunk (delta debugging) to a small sub-history that is
still not linearizable, which is what a human needs to read.

Usage: python -m sixfold.check.linearizability HISTORY.jsonl [--time-limit S] [--max-steps N]
exit status 0 linearizable, 1 violation, 2 unknown (budget exhausted), 3 unreadable history.
"""

from __future__ import annotations

import argparse
import bisect
import itertools
import json
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sixfold.check.history import Event, HistoryError, Key, Op, Value, load_history, pair_operations

# -- bounds (units last) ----------------------------------------------------------------------

MAX_STEPS_DEFAULT = 2_000_000  # search steps per key (~1-2 s of Python) before "unknown"
SHRINK_MAX_STEPS_DEFAULT = 200_000  # search steps per shrinking trial
SHRINK_TOTAL_STEPS = 1_000_000  # search steps for all shrinking trials of one key together
DEADLINE_CHECK_EVERY_STEPS = 4096  # how often the search reads the clock, when it has a deadline
TIME_LIMIT_S_DEFAULT = 60.0  # the command line's default bound on the whole check

Clock = Callable[[], float]


class Verdict(StrEnum):
    OK = "ok"
    VIOLATION = "violation"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Budget:
    """How long a search may run: steps, and optionally an absolute deadline on `clock`."""

    max_steps: int | None = MAX_STEPS_DEFAULT
    deadline: float | None = None
    clock: Clock = time.monotonic

    def expired(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline


@dataclass(frozen=True)
class SearchResult:
    verdict: Verdict
    steps: int


@dataclass(frozen=True)
class KeyResult:
    """The verdict for one key; on a violation, a small failing sub-history and why."""

    key: Key
    verdict: Verdict
    op_count: int
    steps: int
    failing_ops: tuple[Op, ...] = ()
    explanation: str = ""


@dataclass(frozen=True)
class CheckResult:
    verdict: Verdict
    keys: tuple[KeyResult, ...]

    def for_key(self, key: Key) -> KeyResult:
        return next(result for result in self.keys if result.key == key)


# -- the register model -----------------------------------------------------------------------


def step_register(state: Value, op: Op) -> tuple[bool, Value]:
    """Apply `op` to a register holding `state`: (is it legal here, the state after)."""
    if op.f == "read":
        return state == op.value_out, state
    if op.f == "write":
        return True, op.value_in
    expected, new = op.value_in
    # An ok cas applied, so it needs a match; an info cas that applied did too (one that did
    # not apply changes nothing, the same as never linearizing it).
    return (True, new) if state == expected else (False, state)


def is_checked(op: Op) -> bool:
    """Whether `op` constrains the register: fail ops never happened, info reads saw nothing."""
    if op.status == "fail":
        return False
    return not (op.f == "read" and op.status == "info")


# -- the search -------------------------------------------------------------------------------


def check_register(ops: Sequence[Op], budget: Budget | None = None) -> SearchResult:
    """Is this single register's history linearizable? Ops not `is_checked` are ignored."""
    checked = [op for op in ops if is_checked(op)]
    if _unwritten_observations(checked):
        # Decided without a search, which with many info ops could run out of budget first.
        return SearchResult(Verdict.VIOLATION, 0)
    unique = _unique_values_verdict(checked)
    if unique is not None:
        return SearchResult(unique, len(checked))
    return _search_segments(checked, budget or Budget())


def _search_segments(ops: Sequence[Op], budget: Budget) -> SearchResult:
    """Depth first over segments: take the first state a segment can end in, go on from it,
    and only when a later segment cannot go on from there, ask for its next end state. A
    (segment, start state) that failed once is never searched again."""
    cut = segments(ops)
    counter = _StepCounter(budget)
    failed: set[tuple[int, Value]] = set()
    stack: list[tuple[int, Value, Iterator[Value]]] = [(0, None, _ends(cut[0], None, counter))]
    try:
        while stack:
            index, start, ends = stack[-1]
            end = next(ends, _NO_MORE)
            if end is _NO_MORE:
                failed.add((index, start))
                stack.pop()
                continue
            if index + 1 == len(cut):
                return SearchResult(Verdict.OK, counter.steps)
            if (index + 1, end) not in failed:
                stack.append((index + 1, end, _ends(cut[index + 1], end, counter)))
    except _OutOfBudget:
        return SearchResult(Verdict.UNKNOWN, counter.steps)
    return SearchResult(Verdict.VIOLATION, counter.steps)


_NO_MORE = object()


@dataclass(frozen=True)
class Segment:
    """A stretch of one key's history between quiescent points: its own ops, and the info
    ops invoked before it, which may still take effect at any time (`carried`)."""

    ops: tuple[Op, ...]
    carried: tuple[Op, ...]


def segments(ops: Sequence[Op]) -> list[Segment]:
    """The ops cut at quiescent points: every op before a cut returned before any op after
    it was invoked. Info ops never return, so they never hold a cut open."""
    ordered = sorted(ops, key=lambda op: (op.invoke_time, op.invoke_index))
    out: list[Segment] = []
    current: list[Op] = []
    carried: list[Op] = []  # info ops invoked in earlier segments
    open_until = -math.inf  # the latest return of an op in the current segment
    for op in ordered:
        if current and open_until < op.invoke_time:  # nothing open: a cut before `op`
            out.append(Segment(tuple(current), tuple(carried)))
            carried += [o for o in current if o.return_time == math.inf]
            current = []
            open_until = -math.inf
        current.append(op)
        if op.return_time != math.inf:
            open_until = max(open_until, op.return_time)
    out.append(Segment(tuple(current), tuple(carried)))
    return out


def _free_moves(carried: Sequence[Op]) -> Callable[[Value], frozenset[Value]]:
    """The values the register may hold before any op of a segment, given what it held:
    each carried info op may take effect at any time, as often as needed (more permissive
    than once each, and far cheaper: no subsets of them to search)."""
    writes = {op.value_in for op in carried if op.f == "write"}
    cas = [op.value_in for op in carried if op.f == "cas"]
    cache: dict[Value, frozenset[Value]] = {}

    def reachable(value: Value) -> frozenset[Value]:
        if value not in cache:
            found = {value, *writes}
            grew = True
            while grew:
                grew = False
                for expected, new in cas:
                    if expected in found and new not in found:
                        found.add(new)
                        grew = True
            cache[value] = frozenset(found)
        return cache[value]

    return reachable


class _OutOfBudget(Exception):
    pass


class _StepCounter:
    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        if _out_of_budget(self.steps, self.budget):
            raise _OutOfBudget


def _ends(segment: Segment, initial: Value, counter: _StepCounter) -> Iterator[Value]:
    """Each state the register can end a segment in, starting from `initial`, as the search
    finds them (raises _OutOfBudget past the budget)."""
    free = _free_moves(segment.carried) if segment.carried else None
    yield from _search_ends(segment.ops, initial, free, counter)


def _unique_values_verdict(ops: Sequence[Op]) -> Verdict | None:
    """Gibbons and Korach's test for reads and writes of values each written at most once;
    None where it does not apply (a cas, or a value written twice)."""
    if any(op.f == "cas" for op in ops):
        return None
    writes = [op for op in ops if op.f == "write"]
    values = [op.value_in for op in writes]
    if len(set(values)) != len(values) or None in values:
        return None
    # A cluster per value: its write (the initial None is written before everything) and
    # the reads of it. An info write nobody read may never have happened: left out.
    clusters: dict[Value, list[tuple[float, float]]] = {None: [(-math.inf, -math.inf)]}
    write_of = {op.value_in: op for op in writes}
    for op in ops:
        if op.f == "read":
            clusters.setdefault(op.value_out, []).append((op.invoke_time, op.return_time))
            write = write_of.get(op.value_out)
            if write is not None and op.return_time < write.invoke_time:
                return Verdict.VIOLATION  # read before it was written
    for value, write in write_of.items():
        if write.status == "ok" or value in clusters:
            clusters.setdefault(value, []).append((write.invoke_time, write.return_time))
    forward: list[tuple[float, float]] = []
    backward: list[tuple[float, float]] = []
    for spans in clusters.values():
        earliest_return = min(end for _, end in spans)
        latest_invoke = max(start for start, _ in spans)
        if earliest_return < latest_invoke:
            forward.append((earliest_return, latest_invoke))
        else:
            backward.append((latest_invoke, earliest_return))
    forward.sort()
    for (_, end), (start, _) in itertools.pairwise(forward):
        if start < end:
            return Verdict.VIOLATION  # two forward zones overlap
    starts = [start for start, _ in forward]
    for low, high in backward:
        i = bisect.bisect_left(starts, low) - 1  # the forward zone starting before it
        if i >= 0 and forward[i][0] < low and high < forward[i][1]:
            return Verdict.VIOLATION  # a backward zone inside a forward one
    return Verdict.OK


def _unwritten_observations(ops: Sequence[Op]) -> list[Op]:
    """The ok reads and cas that saw a value no operation (even an info one) wrote."""
    written = _written_values(ops)
    return [
        op
        for op in ops
        if op.status == "ok"
        and any(value is not None and value not in written for value in _observed_values(op))
    ]


def _entries(ops: Sequence[Op]) -> list[int]:
    """Call entry 2i and return entry 2i+1 of op i, in time order.

    At equal times calls sort before returns, so operations touching at an instant count as
    concurrent (the permissive reading of a clock's resolution). Info ops have no return entry:
    nothing ever forces them to be linearized.
    """
    keyed: list[tuple[float, int, int, int]] = []
    for i, op in enumerate(ops):
        keyed.append((op.invoke_time, 0, op.invoke_index, 2 * i))
        if op.return_time != math.inf:
            keyed.append((op.return_time, 1, op.invoke_index, 2 * i + 1))
    keyed.sort()
    return [entry for *_, entry in keyed]


def _search(ops: Sequence[Op], budget: Budget) -> SearchResult:
    """Lowe's search over one stretch of history from the unwritten register: OK as soon as
    one linearization is found."""
    counter = _StepCounter(budget)
    try:
        found = next(_search_ends(ops, None, None, counter), _NO_MORE)
    except _OutOfBudget:
        return SearchResult(Verdict.UNKNOWN, counter.steps)
    return SearchResult(Verdict.VIOLATION if found is _NO_MORE else Verdict.OK, counter.steps)


def _search_ends(
    ops: Sequence[Op],
    initial: Value,
    free: Callable[[Value], frozenset[Value]] | None,
    counter: _StepCounter,
) -> Iterator[Value]:
    """Lowe's just-in-time linearization (with memoisation), yielding each distinct state
    the register can be left in once every op with a return is linearized. Info ops still
    pending then are left out: they may never happen (or happen later). `free`: the values
    the register may jump to before any op (carried info ops; None: no jumps)."""
    order = _entries(ops)
    head = len(ops) * 2  # a sentinel before the first entry
    nxt = [-1] * (head + 1)
    prv = [-1] * (head + 1)
    previous = head
    for entry in order:
        nxt[previous], prv[entry] = entry, previous
        previous = entry
    has_return = [op.return_time != math.inf for op in ops]
    waits_for = _interchangeable_predecessors(ops)

    def lift(entry: int) -> None:  # unlink a call and its return
        for node in (entry, entry + 1) if has_return[entry >> 1] else (entry,):
            nxt[prv[node]] = nxt[node]
            if nxt[node] != -1:
                prv[nxt[node]] = prv[node]

    def unlift(entry: int) -> None:  # relink them, in reverse order of lift
        for node in (entry + 1, entry) if has_return[entry >> 1] else (entry,):
            nxt[prv[node]] = node
            if nxt[node] != -1:
                prv[nxt[node]] = node

    def apply(state: Value, op: Op) -> tuple[bool, Value]:
        if free is None:
            return step_register(state, op)
        for before in sorted(free(state), key=repr):  # sorted: the same steps every run
            legal, after = step_register(before, op)
            if legal:
                return True, after
        return False, state

    pending_returns = sum(has_return)
    linearized = 0  # bitset of linearized op indices
    state: Value = initial
    seen: set[tuple[int, Value]] = set()
    failed = _FailedStates(info_mask=sum(1 << i for i, op in enumerate(ops) if not has_return[i]))
    stack: list[tuple[int, Value]] = []
    ends: set[Value] = set()
    entry = nxt[head]
    while True:
        if not pending_returns:
            if state not in ends:
                ends.add(state)
                yield state
            entry = -1  # look for other ends: back out of this one as from a dead end
        counter.step()
        if entry != -1 and not entry & 1:  # a call: try to linearize it now
            op_index = entry >> 1
            legal, new_state = apply(state, ops[op_index])
            new_linearized = linearized | (1 << op_index)
            predecessor = waits_for[op_index]
            if predecessor is not None and not linearized >> predecessor & 1:
                legal = False
            if (
                legal
                and (new_linearized, new_state) not in seen
                and not failed.dominates(new_linearized, new_state)
            ):
                seen.add((new_linearized, new_state))
                stack.append((entry, state))
                state, linearized = new_state, new_linearized
                lift(entry)
                pending_returns -= has_return[op_index]
                entry = nxt[head]
            else:
                entry = nxt[entry]
            continue
        # A return whose op is not linearized (or an end already counted): undo the last
        # choice.
        if not stack:
            return
        failed.add(linearized, state)
        entry, state = stack.pop()
        op_index = entry >> 1
        linearized &= ~(1 << op_index)
        unlift(entry)
        pending_returns += has_return[op_index]
        entry = nxt[entry]


class _FailedStates:
    """Explored states that cannot be completed, for pruning states they dominate.

    A state (L, v) is dominated by a failed (L', v) when L' is L less some info ops: any
    completion of (L, v) would complete (L', v) too, by never linearizing those info ops. The
    exact cache cannot see this, and without it n pending info writes cost 2^n states.
    """

    def __init__(self, info_mask: int) -> None:
        self.info_mask = info_mask
        # (register value, linearized ops with a return) -> the info-op subsets that failed
        self.by_required: dict[tuple[Value, int], list[int]] = defaultdict(list)

    def add(self, linearized: int, state: Value) -> None:
        if not self.info_mask:
            return
        subsets = self.by_required[(state, linearized & ~self.info_mask)]
        new = linearized & self.info_mask
        # Keep only the minimal subsets (a superset of a failed subset adds nothing): a parent
        # state fails after its children, so this keeps the lists short.
        subsets[:] = [subset for subset in subsets if new & ~subset != 0]
        subsets.append(new)

    def dominates(self, linearized: int, state: Value) -> bool:
        if not self.info_mask:
            return False
        subsets = self.by_required.get((state, linearized & ~self.info_mask), ())
        return any(subset & ~linearized == 0 for subset in subsets)


def _interchangeable_predecessors(ops: Sequence[Op]) -> list[int | None]:
    """For each info op, the previous info op (by invoke) doing exactly the same thing.

    Identical info ops are interchangeable: neither has a return to meet, so a linearization
    using the later-invoked one where the earlier is still pending can use the earlier one
    there instead. Linearizing them in invoke order only therefore loses no history, and it
    cuts the 2^n subsets of n identical pending writes (a crash-heavy run leaves many) to n+1.
    """
    previous: dict[tuple[str, Value], int] = {}
    waits_for: list[int | None] = [None] * len(ops)
    by_invoke = sorted(range(len(ops)), key=lambda i: (ops[i].invoke_time, ops[i].invoke_index))
    for i in by_invoke:
        if ops[i].return_time == math.inf:
            identity = (ops[i].f, ops[i].value_in)
            waits_for[i] = previous.get(identity)
            previous[identity] = i
    return waits_for


def _out_of_budget(steps: int, budget: Budget) -> bool:
    if budget.max_steps is not None and steps > budget.max_steps:
        return True
    return steps % DEADLINE_CHECK_EVERY_STEPS == 0 and budget.expired()


# -- shrinking --------------------------------------------------------------------------------


def shrink_violation(
    ops: Sequence[Op], budget: Budget | None = None, total_steps: int = SHRINK_TOTAL_STEPS
) -> list[Op]:
    """A small sub-history of a non-linearizable register history that is still violating.

    Delta debugging over the checked ops: remove chunks, halving the chunk size when no chunk
    can go, down to single ops. Removing an op that writes v also removes every op that
    observes v (a read's result, a cas's expected value), transitively. Without that, a
    sub-history could fail for a reason the full history does not have (drop the only write
    of 2 and a correct read of 2 fails); with it, removal never turns a linearizable history
    into a failing one, so whatever the shrink returns is a faithful witness.

    Each trial search has `budget`; the trials together stop after `total_steps` (or the
    budget's deadline), returning the smallest failing sub-history found so far.
    """
    budget = budget or Budget(max_steps=SHRINK_MAX_STEPS_DEFAULT)
    current = [op for op in ops if is_checked(op)]
    unexplained = _unwritten_observations(current)
    if unexplained:
        return unexplained[:1]  # a read of a value nobody wrote fails on its own
    spent = 0

    def still_fails(candidate: list[Op]) -> bool:
        nonlocal spent
        result = _search(candidate, budget)
        spent += result.steps
        return result.verdict == Verdict.VIOLATION

    chunks = 2
    while len(current) > 1 and spent < total_steps and not budget.expired():
        size = math.ceil(len(current) / chunks)
        removed_one = False
        for start in range(0, len(current), size):
            removed = _with_observers(current[start : start + size], current)
            candidate = [op for op in current if id(op) not in removed]
            if candidate and still_fails(candidate):
                current, removed_one = candidate, True
                break
        if removed_one:
            chunks = max(chunks - 1, 2)
        elif size == 1:
            break
        else:
            chunks = min(chunks * 2, len(current))
    return current


def _with_observers(removed: Sequence[Op], current: Sequence[Op]) -> set[int]:
    """The ids of `removed` plus every op of `current` that observes a value they write,
    transitively (a removed cas writes too)."""
    observers: dict[Value, list[Op]] = defaultdict(list)
    for op in current:
        for value in _observed_values(op):
            observers[value].append(op)
    out = {id(op) for op in removed}
    queue = list(removed)
    while queue:
        op = queue.pop()
        if op.f == "read":
            continue
        for observer in observers.get(_written_value(op), ()):
            if id(observer) not in out:
                out.add(id(observer))
                queue.append(observer)
    return out


def _written_values(ops: Sequence[Op]) -> set[Value]:
    return {_written_value(op) for op in ops if op.f != "read"}


def _observed_values(op: Op) -> list[Value]:
    if op.f == "read":
        return [op.value_out]
    return [op.value_in[0]] if op.f == "cas" else []


def _written_value(op: Op) -> Value:
    return op.value_in if op.f == "write" else op.value_in[1]


# -- checking a whole history -----------------------------------------------------------------


def check_operations(
    ops: Sequence[Op],
    *,
    time_limit_s: float | None = None,
    max_steps: int | None = MAX_STEPS_DEFAULT,
    shrink: bool = True,
    clock: Clock = time.monotonic,
) -> CheckResult:
    """Check each key's register; max_steps bounds each key's search, time_limit_s the whole."""
    deadline = None if time_limit_s is None else clock() + time_limit_s
    budget = Budget(max_steps=max_steps, deadline=deadline, clock=clock)
    by_key: dict[Key, list[Op]] = defaultdict(list)
    for op in ops:
        by_key[op.key].append(op)
    results = tuple(
        check_key(key, by_key[key], budget, shrink=shrink) for key in sorted(by_key, key=_key_order)
    )
    return CheckResult(_overall(results), results)


def check_key(key: Key, ops: Sequence[Op], budget: Budget, *, shrink: bool = True) -> KeyResult:
    """One key's verdict; on a violation, its shrunk failing sub-history and an explanation."""
    searched = check_register(ops, budget)
    if searched.verdict != Verdict.VIOLATION:
        return KeyResult(key, searched.verdict, len(ops), searched.steps)
    shrink_budget = Budget(
        max_steps=min(budget.max_steps or SHRINK_MAX_STEPS_DEFAULT, SHRINK_MAX_STEPS_DEFAULT),
        deadline=budget.deadline,
        clock=budget.clock,
    )
    failing = shrink_violation(ops, shrink_budget) if shrink else [o for o in ops if is_checked(o)]
    return KeyResult(
        key, Verdict.VIOLATION, len(ops), searched.steps, tuple(failing), explain(failing)
    )


def check_history(events: Sequence[Event], **options: Any) -> CheckResult:
    """Pair a history's events into operations and check them (options as check_operations)."""
    return check_operations(pair_operations(events), **options)


def _overall(results: Sequence[KeyResult]) -> Verdict:
    verdicts = {result.verdict for result in results}
    if Verdict.VIOLATION in verdicts:
        return Verdict.VIOLATION
    return Verdict.UNKNOWN if Verdict.UNKNOWN in verdicts else Verdict.OK


def _key_order(key: Key) -> tuple[str, str | int]:
    # Keys may mix ints and strings; group by type so sorting never compares across them.
    return (type(key).__name__, key)


# -- reporting --------------------------------------------------------------------------------


def _json(value: Value) -> str:
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def _time(seconds: float | None, status: str) -> str:
    if seconds is None:
        return "?"
    return f"{seconds:.6g}" + ("(info)" if status == "info" else "")


def format_op(op: Op) -> str:
    """One op as "[t_invoke..t_complete] p3 write 5 -> ok" (a read shows the value it read)."""
    shown = op.value_out if op.f == "read" else op.value_in
    value = "" if op.f == "read" and op.status != "ok" else " " + _json(shown)
    span = f"[{op.invoke_time:.6g}..{_time(op.complete_time, op.status)}]"
    return f"{span} p{op.process} {op.f}{value} -> {op.status}"


def format_ops(ops: Sequence[Op]) -> str:
    """Ops one per line in invoke order."""
    ordered = sorted(ops, key=lambda op: (op.invoke_time, op.invoke_index))
    return "\n".join(format_op(op) for op in ordered)


def explain(failing: Sequence[Op]) -> str:
    """Why a (shrunk) sub-history is not linearizable, in words, then the ops."""
    written = _written_values(failing)
    unwritten = [
        op
        for op in failing
        if op.f == "read" and op.value_out is not None and op.value_out not in written
    ]
    if unwritten:
        op = unwritten[0]
        reason = f"p{op.process} read {_json(op.value_out)}, a value no operation wrote."
    else:
        reason = (
            f"No order of these {len(failing)} operations both respects real time (an operation "
            "that completed before another was invoked comes first) and is a legal run of one "
            "register: some read or cas sees a value other than the latest write."
        )
    return reason + "\n" + format_ops(failing)


def format_result(result: CheckResult) -> str:
    lines = []
    for key_result in result.keys:
        lines.append(
            f"key {key_result.key!r}: {key_result.verdict} "
            f"({key_result.op_count} ops, {key_result.steps} search steps)"
        )
        if key_result.verdict == Verdict.VIOLATION:
            count = len(key_result.failing_ops)
            lines.append(f"  smallest failing sub-history found ({count} ops):")
            lines.extend("    " + line for line in key_result.explanation.splitlines())
    lines.append(f"overall: {result.verdict}")
    return "\n".join(lines)


EXIT_STATUS = {Verdict.OK: 0, Verdict.VIOLATION: 1, Verdict.UNKNOWN: 2}
EXIT_UNREADABLE = 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sixfold.check.linearizability",
        description="Check a JSON-lines register history for linearizability, key by key.",
    )
    parser.add_argument(
        "history", help="the history file (JSON lines, see sixfold/check/history.py)"
    )
    parser.add_argument("--time-limit", type=float, default=TIME_LIMIT_S_DEFAULT, metavar="S")
    parser.add_argument("--max-steps", type=int, default=MAX_STEPS_DEFAULT, metavar="N")
    args = parser.parse_args(argv)
    try:
        ops = pair_operations(load_history(args.history))
    except (OSError, HistoryError) as exc:
        print(f"error: {args.history}: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    result = check_operations(ops, time_limit_s=args.time_limit, max_steps=args.max_steps)
    print(format_result(result))
    return EXIT_STATUS[result.verdict]


if __name__ == "__main__":
    sys.exit(main())
