"""A Jepsen-style history of register operations: typed events, JSON lines, paired operations.

A history is what clients saw, in the order they logged it. It is the input of the
linearizability checker (sixfold/check/linearizability.py) and is deliberately independent of how
the operations were executed, so a real cluster run, the simulation or a hand-written test
can all produce one.

JSON-lines format: one JSON object per line, blank lines ignored:

    {"index": 0, "process": 3, "type": "invoke", "f": "write", "key": "k1", "value": 5, "time": 0.25}
    {"index": 1, "process": 3, "type": "ok", "f": "write", "key": "k1", "value": 5, "time": 0.31}

- index:   int, the event's position (informational; errors name it).
- process: an int for a client, or the string "nemesis" for a fault event. Nemesis events have
           type "info", f the fault's name ("kill", "start", "pause", "partition", "heal",
           "corrupt", ...) and a value describing it; they are kept but not checked.
- type:    "invoke" starts an operation; "ok" (it happened), "fail" (it definitely did not
           happen) or "info" (outcome unknown: it may take effect at any time after its invoke,
           or never) completes it.
- f:       "read" | "write" | "cas" for a client; or "mwrite" | "mread" for a multi-page
           group (checked by sixfold/check/multipage.py, not by the register checker).
- key:     a string or int naming an independent register (or a group).
- value:   write: the int written. cas: [expected, new] (expected may be null: "unwritten").
           read: null on the invoke; on the ok completion, the value read (null when the key
           was never written). mwrite: the int written to every page of the group. mread:
           on the invoke, who serves it ("writer", "r1", ...); on the ok completion, one
           [page, read_point, value] per page of the group.
- time:    monotonic seconds (float), comparable across processes.

An invoke is completed by the next completion of the same process; a process never has two
operations outstanding. An invoke never completed by the end of the history counts as "info".
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TextIO

from sixfold.core.errors import SixfoldError

Key = str | int
Value = Any  # int | None for reads and writes, tuple[int | None, int] for cas
Process = int | str
EventType = Literal["invoke", "ok", "fail", "info"]
Status = Literal["ok", "fail", "info"]

NEMESIS = "nemesis"
EVENT_TYPES: frozenset[str] = frozenset({"invoke", "ok", "fail", "info"})
CLIENT_FUNCTIONS: frozenset[str] = frozenset({"read", "write", "cas"})
GROUP_FUNCTIONS: frozenset[str] = frozenset({"mwrite", "mread"})
FIELDS = ("index", "process", "type", "f", "key", "value", "time")


class HistoryError(SixfoldError, ValueError):
    """A history line or event sequence that is malformed; the message says where and why."""


@dataclass(frozen=True)
class Event:
    """One line of a history: an invocation, a completion, or a nemesis fault."""

    index: int
    process: Process
    type: EventType
    f: str
    key: Key | None
    value: Value
    time: float

    @property
    def is_nemesis(self) -> bool:
        return self.process == NEMESIS


@dataclass(frozen=True)
class Op:
    """A client operation: its invoke paired with its completion.

    value_in is what the client asked for (write: the value; cas: (expected, new); read: None);
    value_out is what it got back (read ok: the value read; otherwise None). complete_time and
    complete_index are None when the history ended before the operation completed.
    """

    process: int
    f: str
    key: Key
    value_in: Value
    value_out: Value
    invoke_time: float
    invoke_index: int
    complete_time: float | None
    complete_index: int | None
    status: Status

    @property
    def return_time(self) -> float:
        """The latest time the operation can have taken effect: +inf when its outcome is unknown."""
        if self.status == "info" or self.complete_time is None:
            return math.inf
        return self.complete_time


# -- JSON lines -------------------------------------------------------------------------------


def event_to_json(event: Event) -> dict[str, Any]:
    """The JSON object for one event (a cas value tuple becomes a list)."""
    value = list(event.value) if isinstance(event.value, tuple) else event.value
    return {
        "index": event.index,
        "process": event.process,
        "type": event.type,
        "f": event.f,
        "key": event.key,
        "value": value,
        "time": event.time,
    }


def write_event(file: TextIO, event: Event) -> None:
    """Append one event to an open text file as a JSON line."""
    file.write(json.dumps(event_to_json(event), separators=(", ", ": ")) + "\n")


def parse_event(line: str, line_number: int) -> Event:
    """One event from one JSON line; HistoryError names the line on anything malformed."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise HistoryError(f"line {line_number}: not valid JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise HistoryError(f"line {line_number}: expected a JSON object, got {type(obj).__name__}")
    missing = [name for name in FIELDS if name not in obj]
    if missing:
        raise HistoryError(f"line {line_number}: missing field(s) {', '.join(missing)}")
    try:
        return _validated_event(obj)
    except HistoryError as exc:
        raise HistoryError(f"line {line_number}: {exc}") from None


def parse_history(lines: Iterable[str]) -> list[Event]:
    """Events from JSON lines (numbered from 1 in errors); blank lines are skipped."""
    return [parse_event(line, number) for number, line in enumerate(lines, start=1) if line.strip()]


def load_history(path: str | Path) -> list[Event]:
    """Read a JSON-lines history file."""
    with open(path, encoding="utf-8") as file:
        return parse_history(file)


def _is_int(value: object) -> bool:
    # bool is an int subclass in Python but true/false in JSON is never a register value.
    return isinstance(value, int) and not isinstance(value, bool)


def _validated_event(obj: dict[str, Any]) -> Event:
    index, process, event_type, f, key, value, time = (obj[name] for name in FIELDS)
    if not _is_int(index):
        raise HistoryError(f"index must be an int, got {index!r}")
    if not (_is_int(time) or isinstance(time, float)) or not math.isfinite(time):
        raise HistoryError(f"time must be a finite number of seconds, got {time!r}")
    if event_type not in EVENT_TYPES:
        raise HistoryError(f"type must be one of invoke/ok/fail/info, got {event_type!r}")
    if process == NEMESIS:
        if event_type != "info":
            raise HistoryError(f"a nemesis event must have type info, got {event_type!r}")
        if not isinstance(f, str):
            raise HistoryError(f"a nemesis event's f must name the fault, got {f!r}")
        value = tuple(value) if isinstance(value, list) else value
        return Event(index, process, event_type, f, key, value, float(time))
    if not _is_int(process):
        raise HistoryError(f'process must be an int or "nemesis", got {process!r}')
    if f not in CLIENT_FUNCTIONS | GROUP_FUNCTIONS:
        raise HistoryError(f"f must be read, write, cas, mwrite or mread for a client, got {f!r}")
    if not (_is_int(key) or isinstance(key, str)):
        raise HistoryError(f"key must be a string or int, got {key!r}")
    if f in GROUP_FUNCTIONS:
        value = _group_value(f, event_type, value)
        return Event(index, process, event_type, f, key, value, float(time))
    return Event(
        index, process, event_type, f, key, _validated_value(f, event_type, value), float(time)
    )


def _group_value(f: str, event_type: str, value: Any) -> Value:
    if f == "mwrite":
        if not _is_int(value):
            raise HistoryError(f"an mwrite's value must be an int, got {value!r}")
        return value
    if event_type != "ok":
        return value  # who served it, on the invoke
    triples = isinstance(value, list) and all(
        isinstance(t, list)
        and len(t) == 3
        and _is_int(t[0])
        and _is_int(t[1])
        and (t[2] is None or _is_int(t[2]))
        for t in value
    )
    if not triples:
        raise HistoryError(
            f"an ok mread's value must be [[page, read_point, value], ...], got {value!r}"
        )
    return value


def _validated_value(f: str, event_type: str, value: Any) -> Value:
    if f == "read":
        if value is not None and not _is_int(value):
            raise HistoryError(f"a read's value must be an int or null, got {value!r}")
        return value
    if f == "write":
        # A completion may echo the value written or leave it out; an invoke must carry it.
        if not _is_int(value) and not (event_type != "invoke" and value is None):
            raise HistoryError(f"a write's value must be an int, got {value!r}")
        return value
    if event_type != "invoke" and value is None:
        return value
    if not (isinstance(value, list) and len(value) == 2):
        raise HistoryError(f"a cas value must be [expected, new], got {value!r}")
    expected, new = value
    if not (expected is None or _is_int(expected)) or not _is_int(new):
        raise HistoryError(f"a cas value must be [int or null, int], got {value!r}")
    return (expected, new)


# -- pairing ----------------------------------------------------------------------------------


def pair_operations(events: Iterable[Event]) -> list[Op]:
    """Client operations in invoke order, each invoke paired with its process's next completion.

    Nemesis events and multi-page group events are skipped (sixfold/check/multipage.py checks the
    latter). An invoke still outstanding at the end becomes an "info" op.
    """
    outstanding: dict[int, Event] = {}
    completed: list[tuple[Event, Event | None]] = []
    for event in events:
        if event.is_nemesis or event.f in GROUP_FUNCTIONS:
            continue
        assert isinstance(event.process, int)
        if event.type == "invoke":
            if event.process in outstanding:
                earlier = outstanding[event.process].index
                raise HistoryError(
                    f"event {event.index}: process {event.process} invokes while its invoke at "
                    f"event {earlier} is still outstanding"
                )
            outstanding[event.process] = event
            continue
        invoke = outstanding.pop(event.process, None)
        if invoke is None:
            raise HistoryError(
                f"event {event.index}: {event.type} completion of process {event.process} "
                "with no outstanding invoke"
            )
        _check_completion_matches(invoke, event)
        completed.append((invoke, event))
    completed.extend((invoke, None) for invoke in outstanding.values())
    completed.sort(key=lambda pair: pair[0].index)
    return [_op(invoke, completion) for invoke, completion in completed]


def _check_completion_matches(invoke: Event, completion: Event) -> None:
    if (completion.f, completion.key) != (invoke.f, invoke.key):
        raise HistoryError(
            f"event {completion.index}: completion {completion.f} {completion.key!r} does not "
            f"match process {invoke.process}'s invoke {invoke.f} {invoke.key!r} at event "
            f"{invoke.index}"
        )
    if completion.time < invoke.time:
        raise HistoryError(
            f"event {completion.index}: completes at {completion.time} before its invoke at "
            f"{invoke.time} (event {invoke.index})"
        )


def _op(invoke: Event, completion: Event | None) -> Op:
    assert isinstance(invoke.process, int) and invoke.key is not None
    status: Status = "info" if completion is None else completion.type  # type: ignore[assignment]
    read_ok = invoke.f == "read" and status == "ok"
    return Op(
        process=invoke.process,
        f=invoke.f,
        key=invoke.key,
        value_in=None if invoke.f == "read" else invoke.value,
        value_out=completion.value if read_ok and completion is not None else None,
        invoke_time=invoke.time,
        invoke_index=invoke.index,
        complete_time=None if completion is None else completion.time,
        complete_index=None if completion is None else completion.index,
        status=status,
    )
