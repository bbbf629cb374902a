"""Cluster events, told from two successive statuses (`sixfold status`'s dict).

The foreground `sixfold up` and `sixfold watch` print them as they happen: a node lost or
back, a quorum lost or regained, a takeover or switchover (a new writer), an instance lost
or back. Pure: the caller takes the statuses and keeps the clock.
"""

from __future__ import annotations

from typing import Any

from sixfold.quorum import NODE_NAMES, READ_QUORUM, WRITE_QUORUM

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
