"""Metrics and the live view against a real process cluster (issue 12).

Every process serves Prometheus metrics; a scrape before and after a load shows the figures
move. `sixfold watch` runs in a real terminal (tmux), and a user killing an AZ plus one node
in another terminal sees the quorum go and come back.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from sixfold import cluster
from tests.conftest import LocalCluster

pytestmark = pytest.mark.processes

SCRAPE_TIMEOUT_S = 5.0
SCREEN_WAIT_S = 30.0


def scrape(url: str) -> dict[str, float]:
    """Every sample of one process, by name (labels dropped: the histograms' count and sum
    have none)."""
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def test_every_process_serves_metrics_that_move_under_load(local_cluster: LocalCluster) -> None:
    c = local_cluster
    status = c.status()
    urls = {m["name"]: m["metrics_url"] for m in [*status["nodes"], *status["instances"]]}
    assert set(urls) == set(cluster.ALL_NAMES) and all(urls.values()), urls
    before = {name: scrape(url) for name, url in urls.items()}
    assert before["a1"]["sixfold_node_serving"] == 1
    assert before["writer"]["sixfold_instance_is_writer"] == 1
    assert before["r1"]["sixfold_instance_is_writer"] == 0

    lsn = 0
    for i in range(20):
        lsn = c.write(i, f"metrics {i}")
    c.wait_for(lambda: c.reader_sees("r1", lsn), "r1 to reach the last write")
    c.read(3, reader="r1")
    after = {name: scrape(url) for name, url in urls.items()}

    for node in ("a1", "b2", "c2"):
        a, b = after[node], before[node]
        assert (
            a["sixfold_node_records_received_total"]
            >= b["sixfold_node_records_received_total"] + 20
        )
        assert a["sixfold_node_bytes_received_total"] > b["sixfold_node_bytes_received_total"]
        assert a["sixfold_node_fsync_seconds_count"] > b["sixfold_node_fsync_seconds_count"]
        assert (
            a["sixfold_node_lmdb_write_seconds_count"] > b["sixfold_node_lmdb_write_seconds_count"]
        )
        assert a["sixfold_node_scl"] >= lsn
        assert a["sixfold_node_frame_connections"] >= 1, "the writer appends on the frame port"
    w, wb = after["writer"], before["writer"]
    assert (
        w["sixfold_writer_commit_seconds_count"] >= wb["sixfold_writer_commit_seconds_count"] + 20
    )
    assert w["sixfold_writer_vdl"] >= lsn and w["sixfold_writer_vcl"] >= lsn
    assert w["sixfold_writer_write_quorum_available"] == 1
    assert w["sixfold_writer_nodes_reachable"] == 6
    r = after["r1"]
    assert r["sixfold_reader_read_point"] >= lsn
    assert r["sixfold_reader_page_read_seconds_count"] >= 1

    c.kill("a1", "a2", "b1")  # AZ+1: the writer's gauges say the quorum is gone
    c.wait_for(
        lambda: scrape(urls["writer"])["sixfold_writer_write_quorum_available"] == 0,
        "the writer's metrics to show the lost write quorum",
    )


def tmux(socket: str, *args: str) -> str:
    done = subprocess.run(["tmux", "-L", socket, *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_watch_shows_the_quorum_go_and_come_back(local_cluster: LocalCluster) -> None:
    c = local_cluster
    socket = f"sixfold-test-{id(c)}"
    command = f"{sys.executable} -m sixfold.tools.cli --dir {c.directory} watch --seconds 90"
    tmux(socket, "new-session", "-d", "-s", "watch", "-x", "100", "-y", "30", command)
    try:
        tmux(socket, "resize-window", "-t", "watch", "-x", "100", "-y", "30")

        def screen_shows(*needles: str) -> str:
            deadline = time.monotonic() + SCREEN_WAIT_S
            while True:
                screen = tmux(socket, "capture-pane", "-p", "-t", "watch")
                if all(n in screen for n in needles):
                    return screen
                assert time.monotonic() < deadline, f"never saw {needles} in:\n{screen}"
                time.sleep(0.25)

        screen_shows("a1  UP", "c2  UP", "write quorum: available", "cluster: writable")
        c.kill("a1", "a2", "b1")
        screen_shows(
            "a1  DOWN",
            "b1  DOWN",
            "write quorum: UNAVAILABLE",
            "read quorum: available",
            "cluster: read-only",
            "write quorum LOST: 3 of 6 nodes up",
        )
        c.start("a1", "a2", "b1")
        screen_shows("write quorum regained", "storage node a1 back")
        screen_shows("a1  UP", "cluster: writable")
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, timeout=30)
