"""The multi-page mini-transaction check: pages written together are read together.

The fuzz workload writes one value to every page of a group in one WritePages call, which
the writer ships as one mini-transaction (its CPL on the last record). A read point is a VDL,
so a page read at read point R is the page with every record at or below R applied, and
nothing else: two reads at the same R see the same state, whichever instance served them
and whenever they ran. Hence the rule checked here, on `mread` events of a history:

    every page of a group read at the same read point shows the same value,

and every value read is one some `mwrite` of that group may have written (values are unique
per write; a write that failed certainly wrote nothing).
Reads of a group's pages are separate RPCs, so pages read at different read points are not
compared: nothing atomic joins them. The check is pure; the history format is
sixfold/check/history.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sixfold.check.history import Event, Key

Observation = tuple[int, int | None, int]  # (page, value, index of the event that read it)


@dataclass(frozen=True)
class GroupViolation:
    group: Key
    read_point: int
    seen: tuple[Observation, ...]  # what was read at this read point, page by page
    reason: str

    def __str__(self) -> str:
        shown = ", ".join(f"page {p} = {v} (event {i})" for p, v, i in self.seen)
        return f"group {self.group} at read point {self.read_point}: {self.reason}: {shown}"


@dataclass(frozen=True)
class GroupCheck:
    reads: int  # page reads checked
    shared_read_points: int  # (group, read point) pairs read by two or more page reads
    violations: tuple[GroupViolation, ...]


def check_groups(events: Sequence[Event]) -> GroupCheck:
    """Check every ok `mread` against the others at its read point and the `mwrite`s."""
    invoked: dict[Key, set[int]] = {}
    failed: dict[Key, set[int]] = {}  # writes that certainly did not happen
    at_point: dict[tuple[Key, int], list[Observation]] = {}
    for event in events:
        if event.f == "mwrite" and event.type in ("invoke", "fail"):
            into = invoked if event.type == "invoke" else failed
            into.setdefault(event.key, set()).add(event.value)
        elif event.f == "mread" and event.type == "ok":
            for page, read_point, value in event.value:
                at_point.setdefault((event.key, read_point), []).append((page, value, event.index))
    violations = []
    for (group, read_point), seen in at_point.items():
        values = {value for _, value, _ in seen}
        written = invoked.get(group, set()) - failed.get(group, set())
        invented = values - written - {None}
        if invented:
            reason = f"value {min(invented)} was never written to this group"
            violations.append(GroupViolation(group, read_point, tuple(seen), reason))
        elif len(values) > 1:
            reason = "pages written together read apart"
            violations.append(GroupViolation(group, read_point, tuple(seen), reason))
    shared = sum(1 for seen in at_point.values() if len(seen) > 1)
    reads = sum(len(seen) for seen in at_point.values())
    return GroupCheck(reads, shared, tuple(violations))
