"""The package layout shows the architecture (issue 13): the pure core, the consistency
checkers, the simulator, the command-line tools and the client each live in a subpackage of
their own, and none of their modules drifts back to the top of sixfold/. Reads the file tree
only."""

from __future__ import annotations

from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "sixfold"

LAYOUT = {
    "core": [
        "allocation",
        "checksum",
        "commit_log",
        "completeness",
        "durability",
        "errors",
        "gossip_round",
        "log_cleanup",
        "node_commit",
        "node_requests",
        "node_restart",
        "page",
        "page_read",
        "quorum",
        "read_index",
        "read_point",
        "record",
        "recovery",
        "recovery_machine",
        "redo_delta",
        "segment",
        "shipping",
        "takeover",
        "topology",
        "truncation",
    ],
    "check": ["history", "linearizability", "multipage"],
    "sim": [
        "faults",
        "network",
        "node",
        "writer",
        "reader",
        "oracle",
        "simulation",
        "driven",
        "__main__",
    ],
    "tools": [
        "cli",
        "bench",
        "sqlbench",
        "failoverbench",
        "restartbench",
        "soak",
        "chaos",
        "fuzz",
        "interposer",
        "partition",
        "watch",
        "dashboard",
        "status",
        "logs",
        "events",
        "waiting",
        "shell",
    ],
    "client": [
        "dbapi",
        "errors",
        "statements",
        "routing",
        "stream",
        "connection",
        "cursor",
        "discovery",
    ],
}


@pytest.mark.parametrize("subpackage", sorted(LAYOUT))
def test_each_subpackage_holds_its_modules(subpackage: str) -> None:
    directory = PACKAGE / subpackage
    init = directory / "__init__.py"
    assert init.is_file(), f"sixfold/{subpackage}/ is not a package"
    assert init.read_text().startswith('"""'), f"sixfold/{subpackage}/__init__.py: no docstring"
    present = {p.stem for p in directory.glob("*.py")}
    missing = sorted(set(LAYOUT[subpackage]) - present)
    assert not missing, f"sixfold/{subpackage}/ lacks {missing}"


def test_the_dashboard_page_sits_beside_its_server() -> None:
    assert (PACKAGE / "tools" / "dashboard.html").is_file()
    assert not (PACKAGE / "dashboard.html").exists()


def test_no_moved_module_is_back_at_the_top() -> None:
    moved = {name for names in LAYOUT.values() for name in names} - {"__main__"}
    top = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if p.is_dir()}
    assert not sorted(moved & top), f"back at the top of sixfold/: {sorted(moved & top)}"
