"""The package layout shows the architecture (issue 13): the pure core, the consistency
checkers, the simulator, the command-line tools and the client each live in a subpackage of
their own, and none of their modules drifts back to the top of sixfold/. Reads the file tree
only."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sixfold"

LAYOUT = {
    "core": [
        "allocation",
        "checksum",
        "commit_log",
        "completeness",
        "drain",
        "durability",
        "errors",
        "gossip_round",
        "log_cleanup",
        "membership",
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
    "sql": ["layout", "engine", "values"],
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


# The packages of the project, bottom to top: each may import only those on its line. The
# instance host joins the writer and the readers, so neither of them (nor the shared shell
# in sixfold/) may reach up to it: there is no package loop. The tools sit above everything.
MAY_IMPORT = {
    "sixfold": {"sixfold"},
    "storage_node": {"sixfold", "storage_node"},
    "writer": {"sixfold", "writer"},
    "reader": {"sixfold", "reader"},
    "instance": {"sixfold", "storage_node", "writer", "reader", "instance"},
}
OURS = {*MAY_IMPORT, "tests"}
# Entry points nothing imports: `python -m writer` and `python -m reader` start the host.
ENTRY_POINTS = {"writer/__main__.py", "reader/__main__.py"}


def _our_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_packages_import_only_downwards(package: str) -> None:
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative in ENTRY_POINTS or relative.startswith("sixfold/tools/"):
            continue
        reached = _our_imports(path) - MAY_IMPORT[package]
        wrong += [f"{relative} imports {name}" for name in sorted(reached)]
    assert not wrong, "imports against the layering: " + "; ".join(wrong)


def test_the_layering_check_can_fail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from instance.host import Instance\nimport writer.writer\n")
    assert _our_imports(bad) == {"instance", "writer"}
