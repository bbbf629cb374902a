"""`sixfold dashboard` in a real headless Chromium (driven by Playwright): load the page,
kill a node, and see its tile turn down, live, with no reload (issue 12)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sixfold import cluster
from tests.conftest import LocalCluster

pytestmark = pytest.mark.processes

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGE_WAIT_MS = 20_000


def start_dashboard(c: LocalCluster, port: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sixfold.tools.cli",
            "--dir",
            str(c.directory),
            "dashboard",
            "--port",
            str(port),
            "--seconds",
            "120",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/status.json", timeout=2):
                return proc
        except OSError:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the dashboard never answered"
            time.sleep(0.2)


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium (make test installs it as root)")
def test_a_killed_nodes_tile_turns_down_live(local_cluster: LocalCluster, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    c = local_cluster
    port = cluster.free_port()
    dashboard = start_dashboard(c, port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1100, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector('#node-a1[data-state="up"]', timeout=PAGE_WAIT_MS)
            page.wait_for_selector('#inst-writer[data-role="writer"]', timeout=PAGE_WAIT_MS)
            assert page.inner_text("#health") == "writable"
            c.kill("a1")
            page.wait_for_selector('#node-a1[data-state="down"]', timeout=PAGE_WAIT_MS)
            assert page.get_attribute("#node-a2", "data-state") == "up"
            c.kill("a2", "b1")  # AZ+1
            page.wait_for_function(
                "document.getElementById('health').textContent === 'read-only'",
                timeout=PAGE_WAIT_MS,
            )
            assert "write quorum UNAVAILABLE" in page.inner_text("#quorum")
            page.wait_for_function(
                "document.getElementById('events').textContent.includes('write quorum LOST')",
                timeout=PAGE_WAIT_MS,
            )
            page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
            c.start("a1", "a2", "b1")
            page.wait_for_selector('#node-a1[data-state="up"]', timeout=PAGE_WAIT_MS)
            browser.close()
    finally:
        dashboard.terminate()
        dashboard.wait(timeout=30)
