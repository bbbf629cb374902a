"""A hypothesis state machine over real processes: writes, reads, kills and restarts.

Few examples, no deadline: each example starts a real cluster on loopback.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from sixfold.core.errors import SixfoldError
from sixfold.core.quorum import NODE_NAMES
from tests.conftest import LocalCluster

pytestmark = pytest.mark.processes
PAGES = (200, 201, 202)
NODES_DOWN_MAX = 2  # within this, every write must succeed


class RealCluster(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.cluster = LocalCluster(Path(self.tmp.name) / "c")
        self.cluster.up()
        self.acknowledged: dict[int, str] = {}  # page -> last acknowledged text
        self.down: set[str] = set()
        self.counter = 0

    def teardown(self) -> None:
        try:
            self.cluster.start(*self.down)
            self.cluster.wait_for(self.cluster.writer_ready, "the writer after healing")
            for page, text in self.acknowledged.items():
                assert self.cluster.read(page) == text, f"acknowledged write to page {page} lost"
        finally:
            self.cluster.down()
            self.tmp.cleanup()

    @rule(page=st.sampled_from(PAGES))
    def write(self, page: int) -> None:
        self.counter += 1
        text = f"v{self.counter}"
        if len(self.down) <= NODES_DOWN_MAX:
            self.cluster.write(page, text)  # a write quorum is up: it must succeed
            self.acknowledged[page] = text

    @precondition(lambda self: len(self.down) < NODES_DOWN_MAX + 1)
    @rule(name=st.sampled_from(NODE_NAMES))
    def kill_node(self, name: str) -> None:
        if name not in self.down:
            self.cluster.kill(name)
            self.down.add(name)

    @precondition(lambda self: self.down)
    @rule(data=st.data())
    def start_node(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted(self.down)))
        self.cluster.start(name)
        self.down.discard(name)

    @rule()
    def restart_writer(self) -> None:
        self.cluster.kill("writer")
        self.cluster.start("writer")
        if len(self.down) <= NODES_DOWN_MAX:
            self.cluster.wait_for(self.cluster.writer_ready, "the writer to recover")

    @invariant()
    def acknowledged_writes_are_read_back(self) -> None:
        if len(self.down) > NODES_DOWN_MAX or not self.cluster.writer_ready():
            return
        for page, text in self.acknowledged.items():
            try:
                assert self.cluster.read(page) == text, f"page {page} lost {text!r}"
            except SixfoldError:
                continue  # unavailable is allowed; a wrong answer is not


RealCluster.TestCase.settings = settings(
    max_examples=3,
    stateful_step_count=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
TestRealCluster = RealCluster.TestCase
