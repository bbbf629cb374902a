"""An instance: a reader that can take over as the writer, and a writer that can step down.

Every instance follows the read point from storage and serves reads. One of them is the
writer: the owner of the newest volume epoch (sixfold/core/topology.py). When the writer stops
answering, readers take over without an operator (issue 6):

- each reader probes the writer named by the newest epoch, and once it has gone unanswered
  long enough (sixfold/core/takeover.py: 1 s when its port refuses connections, 5 s when it is
  there but silent, plus a stagger by promotion rank), the reader runs the writer's
  recovery at a new epoch: it seals it on at least 4 nodes, truncates above VDL and starts
  taking writes. No redo is replayed (P17 §4.3);
- two readers trying at once cannot both win: a node takes one owner per epoch and a seal
  needs 4 of 6 (2 x 4 > 6). The loser stays a reader;
- a writer that finds itself fenced (a newer epoch on the nodes) steps down to a reader, and
  a writer process that starts while another writer answers joins as a reader.

A planned switchover drains the current writer first (no new commits, and every commit it
took durable), so nothing is in flight when the new writer seals its epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid

from instance.writer_probe import WriterProbe, probe_once
from reader.reader import Reader
from reader.sql_engine import ReaderSql
from sixfold.core import topology
from sixfold.core.commit_log import WriterLimits
from sixfold.core.errors import NotWriterError, SixfoldError
from sixfold.core.quorum import WRITE_QUORUM
from sixfold.core.takeover import PROBE_INTERVAL_S, PROBE_TIMEOUT_S, Probe, WriterWatch, superseded
from sixfold.core.topology import Role
from sixfold.crash import OPERATING_ERRORS, guarded_task
from sixfold.metrics import InstanceMetrics
from sixfold.sql.engine import SqlLimits
from writer.sql_engine import WriterSql
from writer.writer import Writer

log = logging.getLogger("sixfold.instance")

DRAIN_HOLD_S_MAX = 30.0  # a drained writer takes writes again if nobody took over by then
WARM_WAIT_S = 30.0  # how long a starting instance waits for a read point to warm its reads


class Instance:
    def __init__(
        self,
        name: str,
        address: str,
        nodes: dict[str, str],
        *,
        limits: WriterLimits | None = None,
        rank: int = 0,
        client_address: str = "",
        takeover: bool = True,
        sql_limits: SqlLimits | None = None,
        starting_as_writer: bool = False,
    ) -> None:
        self.name = name
        self.address = address
        self.client_address = client_address or address
        self.nodes = nodes
        self.limits = limits or WriterLimits()
        self.sql_limits = sql_limits or SqlLimits()
        self.rank = rank
        self.takeover = takeover  # False: never take over from a dead writer
        self.reader = Reader(name, nodes)
        # Started as the writer, it says "starting" from its first answer, not "reader": a
        # client that took it for a reader then would stay pinned to it (sixfold/client).
        self.reader.address = address
        self.reader.role = Role.STARTING if starting_as_writer else Role.READER
        self.reader.client_address = self.client_address
        self.reader_sql = ReaderSql(self.reader, self.sql_limits)
        self.reader.pins = self.reader_sql.lowest_pin
        self.writer: Writer | None = None
        self.writer_sql: WriterSql | None = None
        self.metrics = InstanceMetrics()
        self.metrics.watch(self._gauges)
        self.role_lock = asyncio.Lock()  # one promotion or demotion at a time
        self.role_change = ""  # what the holder of role_lock is doing, for error messages
        self.taking_over = False  # recovering at a new epoch to become the writer
        self.stepping_down = False  # the writer role is being given up: no SQL is served
        self._tasks: list[asyncio.Task[None]] = []
        self.writer_probe = WriterProbe()

    # -- roles ------------------------------------------------------------------------------

    @property
    def role(self) -> Role:
        """The role now: writer, reader, or starting (a writer process deciding which)."""
        return self.reader.role

    def role_now(self) -> Role:
        """The role as GetWriterState reports it: "taking-over" while recovering to become
        the writer, which readers watching the writer give as long as a silent writer."""
        return Role.TAKING_OVER if self.taking_over else self.role

    @property
    def sql(self) -> WriterSql | ReaderSql:
        if self.stepping_down:
            # As the writer it did not follow the nodes: until it has caught up, its read
            # engine's snapshot is older than the commits it acknowledged, and a read there
            # would miss a client's own writes (a table just made: "no such table").
            raise NotWriterError(f"{self.name} is {self.role_change}: retry shortly")
        writer, writer_sql = self.writer, self.writer_sql
        if writer_sql is not None and writer and writer.drain_holds.refusing(time.monotonic()):
            raise NotWriterError(
                f"{self.name} is handing the writer role over (switchover): retry shortly at "
                "the new writer",
                self.address,
            )
        return writer_sql or self.reader_sql

    def writer_sql_or_refuse(self) -> WriterSql:
        """The writer's SQL engine, or NotWriterError naming where the writer is."""
        self.writer_or_refuse()
        engine = self.sql  # refuses while drained for a switchover
        assert isinstance(engine, WriterSql)
        return engine

    def writer_or_refuse(self) -> Writer:
        if self.writer is None or self.writer_sql is None:
            if self.role_change:
                raise NotWriterError(f"{self.name} is {self.role_change}")
            current = self.current_writer()
            raise NotWriterError(
                f"{self.name} is a reader; the writer is {current.name or 'unknown'}"
                + (f" at {current.address}" if current.address else ""),
                current.address,
            )
        return self.writer

    def _gauges(self) -> dict[str, tuple[str, float]]:
        """The instance's points, read when metrics are scraped (sixfold/metrics.py)."""
        reader = self.reader
        learned = [s.vdl for s in reader.node_states.values() if s is not None]
        gauges = {
            "sixfold_instance_is_writer": ("1 while this instance is the writer", 0.0),
            "sixfold_reader_read_point": ("The LSN reads are served at", reader.read_point),
            "sixfold_reader_lag_lsn": (
                "Newest VDL a node has learned, less the read point (LSNs)",
                max(max(learned, default=0) - reader.read_point, 0),
            ),
            "sixfold_reader_nodes_heard": (
                "Storage nodes whose state this instance hears",
                len(learned),
            ),
        }
        pipeline = self.writer.pipeline if self.writer is not None else None
        if pipeline is None:
            return gauges
        reachable = pipeline.live_count()
        gauges.update(
            {
                "sixfold_instance_is_writer": ("1 while this instance is the writer", 1.0),
                "sixfold_writer_vdl": (
                    "Volume durable LSN (VDL) the writer computed",
                    pipeline.vdl,
                ),
                "sixfold_writer_vcl": (
                    "Volume complete LSN (VCL) the writer computed",
                    pipeline.vcl,
                ),
                "sixfold_writer_epoch": ("Volume epoch the writer writes at", pipeline.epoch),
                "sixfold_writer_nodes_reachable": ("Storage nodes the writer reaches", reachable),
                "sixfold_writer_write_quorum_available": (
                    "1 while a write quorum (4 of 6) of nodes is reachable",
                    float(reachable >= WRITE_QUORUM),
                ),
                "sixfold_writer_commits_waiting": (
                    "Commits waiting to become durable",
                    pipeline.waiting,
                ),
            }
        )
        return gauges

    def current_writer(self) -> topology.Owner:
        if self.writer_sql is not None:
            return topology.Owner(self.name, self.address)
        return topology.parse_owner(topology.newest_epoch(self._epoch_views()).owner)

    async def become_writer(self, epoch_wanted: int = 0) -> bool:
        """Try to win a new epoch (`epoch_wanted` only, if given) and take writes; False if
        another instance won it."""
        async with self.role_lock:
            if self.writer_sql is not None:
                return True
            owner = topology.owner_id(self.name, self.address, uuid.uuid4().hex[:8])
            writer = Writer(self.nodes, self.limits, owner=owner)
            self.role_change = "recovering to take over as the writer"
            self.taking_over = True
            try:
                await writer.recover_once(epoch_wanted)
            except SixfoldError as exc:
                log.warning("%s: did not take over as the writer: %s", self.name, exc)
                await writer.close()
                return False
            finally:
                self.role_change = ""
                self.taking_over = False
            self.writer, self.writer_sql = writer, WriterSql(writer, self.sql_limits)
            self.reader.role = Role.WRITER
            assert writer.pipeline is not None, "recovered"
            writer.pipeline.observe_commit = self.metrics.commit.observe
            self.metrics.takeovers.inc()
            log.warning("%s is the writer now (epoch %d)", self.name, writer.pipeline.epoch)
            return True

    async def step_down(self, why: str) -> None:
        async with self.role_lock:
            writer, writer_sql = self.writer, self.writer_sql
            if writer is None or writer_sql is None:
                return
            self.writer = self.writer_sql = None
            self.reader.role = Role.READER
            self.role_change = "stepping down from the writer role (another writer took over)"
            self.stepping_down = True
            log.warning("%s steps down to a reader: %s", self.name, why)
            try:
                # The pipeline first: commits waiting on it are answered (outcome unknown),
                # which lets the SQL requests holding the connection finish before it closes.
                await writer.close(f"{self.name} stepped down ({why})")
                await writer_sql.close()
                # As the writer it did not follow the nodes' streams: learn who won before
                # answering anyone with where the writer is.
                with contextlib.suppress(Exception):
                    await self.reader.poll_once()
            finally:
                self.role_change = ""
                self.stepping_down = False

    # -- background --------------------------------------------------------------------------

    async def start(self, as_writer: bool) -> None:
        self._tasks.append(guarded_task(self.reader.run(), f"{self.name} reader"))
        if as_writer:
            self.reader.role = Role.STARTING
            self._tasks.append(asyncio.create_task(self._start_as_writer()))
        self._tasks.append(guarded_task(self._watch_writer(), f"{self.name} writer watch"))
        self._tasks.append(asyncio.create_task(self._warm_reads()))

    async def _warm_reads(self) -> None:
        """Open the read engine as soon as there is a read point: a restarted reader then
        answers its first query without opening SQLite and reading its pages first."""
        deadline = time.monotonic() + WARM_WAIT_S
        while not self.reader.epoch and time.monotonic() < deadline:
            await asyncio.sleep(PROBE_INTERVAL_S / 4)
        with contextlib.suppress(SixfoldError):
            await self.reader_sql.warm()

    async def _start_as_writer(self) -> None:
        """Take the writer role unless another writer answers: then join as a reader."""
        while self.writer_sql is None:
            current = await self._known_writer()
            if current is not None and current.name != self.name and await self._answers(current):
                log.warning(
                    "%s: %s at %s is the writer; joining as a reader",
                    self.name,
                    current.name,
                    current.address,
                )
                self.reader.role = Role.READER
                return
            if await self.become_writer():
                return
            await asyncio.sleep(PROBE_INTERVAL_S)

    async def _known_writer(self) -> topology.Owner | None:
        """The owner of the newest epoch among at least a write quorum of nodes: any 4 of 6
        include a node that took the newest seal (it went to 4; 4 + 4 > 6)."""
        for _ in range(25):  # wait (bounded) for the nodes' states to arrive
            heard = sum(1 for s in self.reader.node_states.values() if s is not None)
            if heard >= WRITE_QUORUM:
                break
            await asyncio.sleep(PROBE_INTERVAL_S)
        owner = self.current_writer()
        return owner if owner.address else None

    async def _watch_writer(self) -> None:
        watch = WriterWatch(self.rank)
        while True:
            await asyncio.sleep(PROBE_INTERVAL_S)
            try:
                await self._check_writer(watch)
            except OPERATING_ERRORS:  # reported, and checked again; a bug ends the process
                log.exception("%s: checking the writer failed", self.name)

    async def _check_writer(self, watch: WriterWatch) -> None:
        writer = self.writer
        if writer is not None:
            await self._step_down_if_superseded(writer)
            return
        asked_at = time.monotonic()
        asked = watch.probe(self._epoch_views(), asked_at)
        if asked is None or not self.takeover:
            return
        current = topology.parse_owner(asked.owner)
        probe = await self._probe(current, asked.timeout_s)
        decision = watch.on_probe(asked, probe, self._epoch_views(), asked_at, time.monotonic())
        if decision is not None:
            log.warning(
                "%s: writer %s at %s silent for %.1f s: taking over",
                self.name,
                current.name,
                current.address,
                decision.silence_s,
            )
            await self.become_writer(epoch_wanted=decision.epoch_wanted)

    async def _step_down_if_superseded(self, writer: Writer) -> None:
        """A newer epoch on the nodes means another writer won: stop before being refused."""
        pipeline = writer.pipeline
        if pipeline is None:
            return
        if pipeline.fenced:
            await self.step_down(str(pipeline.fenced))
        elif (why := superseded(self._epoch_views(), pipeline.epoch)) is not None:
            await self.step_down(why)

    def _epoch_views(self) -> list[topology.EpochView]:
        return [
            topology.EpochView(s.epoch, s.epoch_owner)
            for s in self.reader.node_states.values()
            if s is not None
        ]

    async def _answers(self, owner: topology.Owner) -> bool:
        """True if the instance at `owner.address` answers as the writer."""
        # On a connection of its own: the writer watch may be probing at the same time.
        return await probe_once(owner.address, PROBE_TIMEOUT_S) is Probe.WRITER

    async def _probe(self, owner: topology.Owner, timeout_s: float) -> Probe:
        """What answers at the owner's address (instance/writer_probe.py); for the writer
        watch alone, which keeps the connection while the writer answers."""
        return await self.writer_probe.probe(owner.address, timeout_s)

    # -- switchover --------------------------------------------------------------------------

    async def drain(self, hold_s: float) -> int:
        """Stop taking commits (SQL and page writes) for up to `hold_s`, and wait until every
        commit taken is durable: a switchover then leaves no commit with an unknown outcome.
        Requests refused meanwhile get NotWriterError: nothing of them was applied."""
        writer = self.writer_or_refuse()
        quiesce = self.writer_sql.quiesce if self.writer_sql is not None else None
        return await writer.drain(min(hold_s, DRAIN_HOLD_S_MAX), quiesce)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.step_down("shutting down")
        await self.writer_probe.close()
        await self.reader_sql.close()
        await self.reader.close()
