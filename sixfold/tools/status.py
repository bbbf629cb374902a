"""`sixfold status`: what every member of a cluster says of itself, and what that adds up to.

Roles follow the topology, not the names given at start-up: after a failover or a switchover
the instance started as `writer` may be a reader, and `r1` the writer. The exit code sums the
cluster up, as `pg_isready`'s does (see `Health`).
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any

from sixfold.clients import NodeClient, ReaderClient, WriterClient
from sixfold.cluster import INSTANCE_NAMES, Endpoints
from sixfold.core.membership import Change, Membership, describe, newest_membership
from sixfold.core.quorum import NODE_AZ, NODE_NAMES, READ_QUORUM, SPARE_NAMES, WRITE_QUORUM
from sixfold.core.topology import Role
from sixfold.wire import membership_or_none

STATE_TIMEOUT_S = 1.0
ACCEPTING_WRITES = "accepting writes"  # the writer's own status once recovered (writer/writer.py)


class Health(enum.IntEnum):
    """`sixfold status`'s exit code."""

    WRITABLE = 0  # a writer accepts writes and a write quorum of nodes is up
    READ_ONLY = 1  # a read quorum is up, but writes cannot be made now
    UNAVAILABLE = 2  # fewer than a read quorum of nodes answer, or no instance does
    NO_CLUSTER = 3  # nothing was asked: no cluster is set up where the command looked


async def gather_status(target: Endpoints, timeout_s: float = STATE_TIMEOUT_S) -> dict[str, Any]:
    """Every node's and instance's own state; one silent for `timeout_s` is marked down."""
    nodes = [NodeClient(n, a) for n, a in target.nodes.items()]
    addresses = {name: target.instance_address(name) for name in INSTANCE_NAMES}
    as_writer = [WriterClient(addresses[name]) for name in INSTANCE_NAMES]
    as_reader = [ReaderClient(addresses[name], name) for name in INSTANCE_NAMES]
    try:
        results = await asyncio.gather(
            *(c.get_state(timeout=timeout_s) for c in nodes),
            *(c.state(timeout=timeout_s) for c in as_writer),
            *(c.state(timeout=timeout_s) for c in as_reader),
            return_exceptions=True,
        )
    finally:
        for c in [*nodes, *as_writer, *as_reader]:
            await c.close()
    count, names = len(INSTANCE_NAMES), list(target.nodes)
    node_results = results[: len(names)]
    writer_results = results[len(names) : len(names) + count]
    reader_results = results[len(names) + count :]
    out_nodes = [
        _node(name, target.nodes[name], r) for name, r in zip(names, node_results, strict=True)
    ]
    instances = [
        _instance(name, addresses[name], w, r)
        for name, w, r in zip(INSTANCE_NAMES, writer_results, reader_results, strict=True)
    ]
    for member in [*out_nodes, *instances]:
        member["metrics_url"] = target.metrics_url(member["name"])
    return summarise(out_nodes, instances)


def _node(name: str, address: str, state: object) -> dict[str, Any]:
    up = not isinstance(state, BaseException)
    return {
        "name": name,
        "az": NODE_AZ[name],
        "address": address,
        "up": up,
        "scl": state.scl if up else None,
        "epoch": state.epoch if up else None,
        "vdl": state.vdl if up else None,
        "serving": state.serving if up else False,
        # The log holds records until every node has them in page versions (log_cleanup.py):
        # after a quiet moment it is often 0, and the data lives in the versions.
        "log_records": state.records_stored if up else None,
        "page_versions": state.page_versions_stored if up else None,
        # Rebuilding from peers' page images after a lost disk (sixfold/core/hydration.py).
        "hydrating_to": (state.hydrating_to or None) if up else None,
        "hydrated_pages": state.hydrated_pages if up else None,
        "hydrated_bytes": state.hydrated_bytes if up else None,
        "membership": _node_membership(state) if up else None,
        "error": None if up else str(state),
    }


def _membership_data(m: Membership) -> dict[str, Any]:
    """A membership as JSON-ready data (`_as_membership` reads it back)."""
    change = m.change
    return {
        "epoch": m.epoch,
        "holders": list(m.holders),
        "change": None
        if change is None
        else {"position": change.position, "old": change.old, "new": change.new},
        "writer_epoch": m.writer_epoch,
    }


def holds_data(node: dict[str, Any]) -> bool:
    """Whether a node (as `gather_status` reports it) holds anything: a spare must not."""
    return bool(node["epoch"] or node["scl"] or node["log_records"] or node["page_versions"])


def _node_membership(state: Any) -> dict[str, Any] | None:
    m = membership_or_none(state.membership)
    return None if m is None else _membership_data(m)


def _as_membership(data: dict[str, Any] | None) -> Membership:
    if data is None:
        return Membership.initial()
    c = data["change"]
    change = Change(c["position"], c["old"], c["new"]) if c else None
    return Membership(data["epoch"], tuple(data["holders"]), change, data.get("writer_epoch", 0))


def _place(name: str, m: Membership) -> str:
    """A node's place in the membership: member, joining, leaving, or spare."""
    if m.change is not None and name == m.change.new:
        return "joining"
    if m.change is not None and name == m.change.old:
        return "leaving"
    if name in m.holders:
        return "member"
    return "spare" if name in SPARE_NAMES else "not a member"


def _instance(name: str, address: str, writer: object, reader: object) -> dict[str, Any]:
    up = not isinstance(writer, BaseException) and not isinstance(reader, BaseException)
    info: dict[str, Any] = {"name": name, "address": address, "up": up}
    if not up:
        failed = writer if isinstance(writer, BaseException) else reader
        info.update(role="down", epoch=None, vdl=None, read_point=None, status=str(failed))
        info["fenced"] = False
        return info
    is_writer = writer.role == Role.WRITER and writer.recovered
    info.update(
        role=writer.role or Role.READER,
        epoch=writer.epoch if is_writer else reader.epoch,
        vdl=writer.vdl if is_writer else None,
        read_point=reader.read_point,
        status=writer.status if is_writer else writer.role,
        fenced=writer.fenced,
    )
    return info


def summarise(nodes: list[dict[str, Any]], instances: list[dict[str, Any]]) -> dict[str, Any]:
    """The cluster as a whole: who writes, who reads, the quorums and the exit code."""
    membership = newest_membership(
        _as_membership(n["membership"]) for n in nodes if n["up"] and n.get("membership")
    )
    for n in nodes:
        n["place"] = _place(n["name"], membership)
    up = [n["name"] for n in nodes if n["up"] and n["name"] in membership.nodes]
    up_count = len(up)
    write_quorum = membership.is_write_quorum(up)
    read_quorum = membership.is_read_quorum(up)
    writers = [i for i in instances if i["role"] == "writer" and i["vdl"] is not None]
    writer = max(writers, key=lambda i: i["epoch"] or 0) if writers else None
    for i in writers:
        if i is not writer:  # an older epoch's writer, still stepping down
            i["role"], i["status"] = (
                "stepping-down",
                f"deposed: epoch {i['epoch']} is not the newest",
            )
    writer_info = (
        dict(writer)
        if writer
        else {
            "name": None,
            "address": None,
            "up": False,
            "role": None,
            "epoch": None,
            "vdl": None,
            "read_point": None,
            "fenced": False,
            "status": _no_writer(instances),
        }
    )
    if writer and writer_info["status"] == ACCEPTING_WRITES and not write_quorum:
        writer_info["status"] = (
            f"writes wait: no write quorum ({up_count} of {len(NODE_NAMES)} nodes up, "
            f"{WRITE_QUORUM} needed)"
        )
    vdl = writer_info["vdl"] if writer else max((n["vdl"] or 0 for n in nodes), default=0)
    for n in nodes:
        counted = n["up"] and n["name"] in membership.nodes  # a spare holds nothing yet
        n["behind_vdl"] = max(vdl - n["scl"], 0) if counted else None
    readers = [i for i in instances if i is not writer]
    writable = bool(writer) and writer_info["status"] == ACCEPTING_WRITES and write_quorum
    readable = read_quorum and any(i["up"] and i["read_point"] is not None for i in instances)
    health = Health.WRITABLE if writable else Health.READ_ONLY if readable else Health.UNAVAILABLE
    return {
        "health": health.name.lower().replace("_", "-"),
        "exit_code": int(health),
        "nodes": nodes,
        "writer": writer_info,
        "readers": readers,
        "instances": instances,
        "write_quorum": write_quorum,
        "read_quorum": read_quorum,
        "nodes_up": up_count,
        "membership": {**_membership_data(membership), "text": describe(membership)},
        "quorum_sizes": {"copies": len(NODE_NAMES), "write": WRITE_QUORUM, "read": READ_QUORUM},
    }


def _no_writer(instances: list[dict[str, Any]]) -> str:
    taking_over = [i["name"] for i in instances if i["role"] == Role.TAKING_OVER]
    if taking_over:
        return f"no writer: {', '.join(taking_over)} is taking over"
    if not any(i["up"] for i in instances):
        return "no writer: no instance answers"
    return "no writer: none has recovered yet (`sixfold logs` tells why)"


def render(status: dict[str, Any]) -> str:
    """The text `sixfold status` prints."""

    def show(value: object) -> str:
        return "-" if value is None else str(value)

    lines = [
        f"{'node':<6}{'az':<4}{'up':<6}{'scl':>11} {'behind':>10}{'epoch':>7}{'log':>7}"
        f"{'versions':>10}  address"
    ]
    for n in status["nodes"]:
        hydrating = (
            f"  hydrating to LSN {n['hydrating_to']}: {n['hydrated_pages']} pages, "
            f"{n['hydrated_bytes'] / (1 << 20):.1f} MiB copied"
            if n["hydrating_to"]
            else ""
        )
        place = n.get("place", "member")
        place = "" if place == "member" else f"  ({place})"
        lines.append(
            f"{n['name']:<6}{n['az']:<4}{'up' if n['up'] else 'DOWN':<6}{show(n['scl']):>11} "
            f"{show(n['behind_vdl']):>10}{show(n['epoch']):>7}{show(n['log_records']):>7}"
            f"{show(n['page_versions']):>10}  {n['address']}{place}{hydrating}"
        )
    lines.append(status["membership"]["text"])
    lines.append("")
    lines.append(f"{'instance':<10}{'role':<13}{'epoch':>6}  {'position':<24}{'address':<22}status")
    for i in status["instances"]:
        position = (
            f"vdl {show(i['vdl'])}"
            if i["vdl"] is not None
            else f"read point {show(i['read_point'])}"
            if i["read_point"] is not None
            else "-"
        )
        role = "DOWN" if not i["up"] else i["role"]
        state = status["writer"]["status"] if i["name"] == status["writer"]["name"] else ""
        if not i["up"]:
            state = "not answering"  # why, in --json
        lines.append(
            f"{i['name']:<10}{role:<13}{show(i['epoch']):>6}  {position:<24}{i['address']:<22}"
            f"{state}"
        )
    if status["writer"]["name"] is None:
        lines.append(status["writer"]["status"])
    n_up = status["nodes_up"]
    lines.append("")
    lines.append(
        f"write quorum: {'available' if status['write_quorum'] else 'UNAVAILABLE'} "
        f"({n_up} of {len(NODE_NAMES)} nodes up, {WRITE_QUORUM} needed); read quorum: "
        f"{'available' if status['read_quorum'] else 'UNAVAILABLE'} ({READ_QUORUM} needed)"
    )
    lines.append(f"cluster: {status['health']}")
    lines.append(
        "behind: LSNs below the writer's VDL; log: records not yet folded into page versions "
        "on every node (then dropped); versions: page versions kept"
    )
    return "\n".join(lines)
