"""`sixfold status`'s summary, cluster events and the waiting line: pure, no processes."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sixfold import cluster as layouts
from sixfold.core.errors import SixfoldError
from sixfold.core.quorum import NODE_AZ, NODE_NAMES
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.tools.events import cluster_events
from sixfold.tools.status import Health, render, summarise
from sixfold.tools.waiting import write_quorum_line


def node(name: str, up: bool = True, scl: int = 10, hydrating_to: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "az": NODE_AZ[name],
        "address": f"127.0.0.1:{name}",
        "up": up,
        "scl": scl if up else None,
        "epoch": 2 if up else None,
        "vdl": scl if up else None,
        "serving": up,
        "log_records": 0 if up else None,
        "page_versions": 3 if up else None,
        "hydrating_to": hydrating_to or None,
        "hydrated_pages": 40 if up else None,
        "hydrated_bytes": 40 * 4096 if up else None,
        "error": None if up else "UNAVAILABLE",
    }


def instance(name: str, role: str, epoch: int = 2, vdl: int | None = None) -> dict[str, Any]:
    up = role != "down"
    return {
        "name": name,
        "address": f"127.0.0.1:{name}",
        "up": up,
        "role": role,
        "epoch": epoch if up else None,
        "vdl": vdl,
        "read_point": 10 if up else None,
        "status": "accepting writes" if vdl is not None else role,
        "fenced": False,
    }


def cluster(down: int = 0, roles: tuple[str, str, str] = ("writer", "reader", "reader")):
    nodes = [node(n, up=i >= down) for i, n in enumerate(NODE_NAMES)]
    instances = [
        instance(name, role, vdl=12 if role == "writer" else None)
        for name, role in zip(("writer", "r1", "r2"), roles, strict=True)
    ]
    return summarise(nodes, instances)


def test_the_exit_code_says_what_the_cluster_can_do() -> None:
    assert cluster()["exit_code"] == Health.WRITABLE
    assert cluster(down=2)["exit_code"] == Health.WRITABLE  # an AZ down: writes go on
    az_plus_one = cluster(down=3)
    assert az_plus_one["exit_code"] == Health.READ_ONLY
    # The writer's own "accepting writes" is not shown next to a lost write quorum.
    assert az_plus_one["writer"]["status"] == (
        "writes wait: no write quorum (3 of 6 nodes up, 4 needed)"
    )
    assert cluster(down=4)["exit_code"] == Health.UNAVAILABLE
    # Nodes up but no instance answering: nothing can be read either.
    assert cluster(roles=("down", "down", "down"))["exit_code"] == Health.UNAVAILABLE
    no_writer = cluster(roles=("down", "taking-over", "reader"))
    assert no_writer["exit_code"] == Health.READ_ONLY
    assert no_writer["writer"]["status"] == "no writer: r1 is taking over"


def test_roles_follow_the_topology_not_the_start_up_names() -> None:
    after_failover = cluster(roles=("reader", "writer", "reader"))
    assert after_failover["writer"]["name"] == "r1"
    assert [r["name"] for r in after_failover["readers"]] == ["writer", "r2"]
    text = render(after_failover)
    assert "writer    reader" in text and "r1        writer" in text
    # A deposed writer still answering as one is shown stepping down, not as the writer.
    nodes = [node(n) for n in NODE_NAMES]
    both = summarise(
        nodes,
        [
            instance("writer", "writer", 1, 9),
            instance("r1", "writer", 2, 12),
            instance("r2", "reader"),
        ],
    )
    assert both["writer"]["name"] == "r1"
    assert both["instances"][0]["role"] == "stepping-down"


def test_events_tell_losses_quorums_and_takeovers() -> None:
    healthy = cluster()
    assert cluster_events(None, healthy) == []
    assert cluster_events(healthy, healthy) == []
    lost = cluster(down=3)
    events = cluster_events(healthy, lost)
    assert "storage node a1 lost (127.0.0.1:a1)" in events
    assert "write quorum LOST: 3 of 6 nodes up, 4 needed; writes wait" in events
    assert "write quorum regained: 6 of 6 nodes up" in cluster_events(lost, healthy)
    no_writer = cluster(roles=("down", "reader", "reader"))
    assert "instance writer lost (127.0.0.1:writer)" in cluster_events(healthy, no_writer)
    took_over = cluster(roles=("down", "writer", "reader"))
    assert "r1 took over: epoch 2, VDL 12" in cluster_events(no_writer, took_over)
    switched = cluster(roles=("reader", "writer", "reader"))
    assert "r1 is the writer now (switchover): epoch 2, VDL 12" in cluster_events(healthy, switched)


def test_the_waiting_line_names_what_is_missing() -> None:
    state = pb.WriterState(recovered=True, role="writer", status="accepting writes")
    for i, name in enumerate(NODE_NAMES):
        state.nodes.add(name=name, reachable=i >= 3)
    assert write_quorum_line(state, 4.2, 10) == (
        "waiting for a write quorum: 3 of 6 reachable, 4 needed (4 s of 10)"
    )
    assert write_quorum_line(None, 1, 10) == "waiting for the writer to answer (1 s of 10)"


def test_the_ready_scrape_config_names_every_metrics_port() -> None:
    from pathlib import Path

    from sixfold import cluster

    config = (Path(__file__).resolve().parents[1] / "deploy/prometheus/local.yml").read_text()
    targets = set(re.findall(r'"127\.0\.0\.1:(\d+)"', config))
    offset = cluster.METRICS_PORT_OFFSET
    ports = {str(p + offset) for p in cluster.ports_from(cluster.BASE_PORT_DEFAULT).values()}
    assert targets == ports


def test_every_topology_resolver_takes_the_newest_epoch_the_same_way() -> None:
    # sixfold/core/topology.py's rule: the newest epoch; among its answers, a complete one. The
    # nodes' views, the CLI's discovery and the DB-API's directory all go through it.
    from sixfold.client.discovery import newest_answer
    from sixfold.core import topology

    views = [
        topology.EpochView(3, ""),
        topology.EpochView(3, "r1@h:1#n"),
        topology.EpochView(2, "w"),
    ]
    assert topology.newest_epoch(views) == topology.EpochView(3, "r1@h:1#n")
    assert topology.newest_epoch([]) == topology.EpochView(0, "")
    answers = [
        pb.Topology(epoch=4, writer_address="a:1"),
        pb.Topology(epoch=4, writer_address="a:1", writer_client_address="127.0.0.1:7201"),
        pb.Topology(epoch=3, writer_address="b:1", writer_client_address="127.0.0.1:7100"),
    ]
    assert newest_answer(answers) is answers[1]
    assert newest_answer(answers[:1]) is answers[0]


def test_a_hydrating_node_shows_how_far_it_got_and_columns_stay_apart() -> None:
    nodes = [node(n, scl=10_000_350) for n in NODE_NAMES]
    nodes[0] = node("a1", scl=0, hydrating_to=10_000_330)
    text = render(summarise(nodes, [instance("writer", "writer", vdl=10_000_350)]))
    a1 = next(line for line in text.splitlines() if line.startswith("a1"))
    assert "hydrating to LSN 10000330: 40 pages, 0.2 MiB copied" in a1
    assert " 0   10000350 " in a1  # the SCL and how far behind it is, never run together


def test_ports_come_from_the_range_given_and_a_bad_range_is_named(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(layouts.PORT_RANGE_VARIABLE, "24000-27000")
    assert layouts.port_range() == (24_000, 27_000)
    for _ in range(20):
        port = layouts.free_port()
        assert port >= 24_000 and port + layouts.METRICS_PORT_OFFSET < 27_000
        base = layouts.free_base_port()
        assert base >= 24_000 and max(layouts.ports_from(base).values()) + 1000 < 27_000
    for bad in ("24000", "30000-31000", "1000-5000"):
        monkeypatch.setenv(layouts.PORT_RANGE_VARIABLE, bad)
        with pytest.raises(SixfoldError, match="SIXFOLD_PORT_RANGE"):
            layouts.port_range()


def test_a_spares_port_is_never_one_handed_out_to_another_process(tmp_path) -> None:
    layout = layouts.new_layout(tmp_path / "c")
    taken = layout.processes["writer"].port + layouts.SPARE_PORT_OFFSET  # a3's wanted port
    layouts._handed_out.update({taken, taken + 1 + layouts.METRICS_PORT_OFFSET})  # and b3's metrics
    layouts.add_spares(layout)
    ports = [p for info in layout.processes.values() for p in (info.port, info.metrics_port)]
    assert layout.processes["a3"].port != taken
    assert layout.processes["b3"].metrics_port != taken + 1 + layouts.METRICS_PORT_OFFSET
    assert len(ports) == len(set(ports)), "two processes of one layout share a port"


def test_ports_handed_out_are_remembered_for_a_while_not_for_good() -> None:
    """A long test run hands out more ports than the range holds blocks of: the oldest are
    forgotten (bound by then, or free again), so a block can still be found (the CI's "no
    free block of ports" after some hundred clusters in one worker)."""
    remembered = layouts._handed_out
    first = layouts.free_port()
    base = layouts.free_base_port()
    assert first in remembered and base in remembered
    remembered.update(range(1, layouts.HANDED_OUT_PORTS_MAX))
    assert first not in remembered, "the oldest port is forgotten"
    assert base + 1 + layouts.FRAME_PORT_OFFSET + layouts.READER_PORT_OFFSET in remembered
    assert 1 in remembered and layouts.HANDED_OUT_PORTS_MAX - 1 in remembered
