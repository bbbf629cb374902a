"""Cluster events, told from two successive statuses (`sixfold status`'s dict).

The foreground `sixfold up` and `sixfold watch` print them as they happen: a node lost or
back, a quorum lost or regained, a takeover or switchover (a new writer), an instance lost
or back. Pure: the caller takes the statuses and keeps the clock.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from sixfold.core.quorum import NODE_NAMES, READ_QUORUM, WRITE_QUORUM

Status = dict[str, Any]


def cluster_events(before: Status | None, after: Status) -> list[str]:
    """What changed from `before` to `after`, one sentence each (none on the first look)."""
    if before is None:
        return []
    events: list[str] = []
    events += _member_changes(before["nodes"], after["nodes"], "storage node")
    events += _member_changes(before["instances"], after["instances"], "instance")
    events += _quorum_changes(before, after)
    events += _writer_changes(before["writer"], after["writer"])
    return events


def _member_changes(before: list[dict], after: list[dict], kind: str) -> list[str]:
    was_up = {m["name"]: m["up"] for m in before}
    out = []
    for m in after:
        if was_up.get(m["name"]) and not m["up"]:
            out.append(f"{kind} {m['name']} lost ({m.get('address', '')})")
        elif m["up"] and was_up.get(m["name"]) is False:
            out.append(f"{kind} {m['name']} back")
    return out


def _quorum_changes(before: Status, after: Status) -> list[str]:
    up = after["nodes_up"]
    of = f"{up} of {len(NODE_NAMES)} nodes up"
    out = []
    if before["write_quorum"] and not after["write_quorum"]:
        out.append(f"write quorum LOST: {of}, {WRITE_QUORUM} needed; writes wait")
    elif after["write_quorum"] and not before["write_quorum"]:
        out.append(f"write quorum regained: {of}")
    if before["read_quorum"] and not after["read_quorum"]:
        out.append(f"read quorum LOST: {of}, {READ_QUORUM} needed; reads stop")
    elif after["read_quorum"] and not before["read_quorum"]:
        out.append(f"read quorum regained: {of}")
    return out


def _writer_changes(before: dict, after: dict) -> list[str]:
    if after["name"] and after["name"] != before["name"]:
        how = "took over" if before["name"] is None else "is the writer now (switchover)"
        return [f"{after['name']} {how}: epoch {after['epoch']}, VDL {after['vdl']}"]
    if before["name"] and after["name"] is None:
        return [after["status"]]
    return []


RATE_SAMPLES_MAX = 60  # commit-rate and lag history kept, one sample per look
EVENTS_KEPT_MAX = 20


class History:
    """What successive looks at a cluster add up to: commit rate and reader lag over time,
    and the events between looks. Shared by `sixfold watch` and `sixfold dashboard`."""

    def __init__(self) -> None:
        self.status: Status | None = None
        self.at = 0.0
        self.rates: deque[float] = deque(maxlen=RATE_SAMPLES_MAX)  # LSNs per second
        self.lags: deque[int] = deque(maxlen=RATE_SAMPLES_MAX)  # worst reader lag, LSNs
        self.events: deque[str] = deque(maxlen=EVENTS_KEPT_MAX)

    def update(self, status: Status, now: float) -> list[str]:
        """Take one look, at monotonic time `now`; the events since the last, with the time."""
        before, before_at = self.status, self.at
        told = [f"{time.strftime('%H:%M:%S')}  {event}" for event in cluster_events(before, status)]
        self.events.extend(told)
        vdl, old = status["writer"]["vdl"], before and before["writer"]["vdl"]
        if vdl is not None and old is not None and now > before_at:
            self.rates.append(max(vdl - old, 0) / (now - before_at))
        elif before is not None:
            self.rates.append(0.0)
        if before is not None:  # in step with `rates`
            points = [r["read_point"] for r in status["readers"] if r["up"] and r["read_point"]]
            lags = [max(vdl - p, 0) for p in points] if vdl is not None else []
            self.lags.append(max(lags, default=0))
        self.status, self.at = status, now
        return told
