"""The writer instance: recovery at start, then the commit pipeline and page reads at VDL."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable

from sixfold.clients import NodeClient
from sixfold.core.commit_log import CommitLog, PageWrite, WriterLimits
from sixfold.core.drain import DrainHolds
from sixfold.core.errors import (
    CommitTimeoutError,
    InvalidRequestError,
    NotWriterError,
    RecoveryError,
    SixfoldError,
)
from sixfold.core.membership import Membership, describe
from sixfold.core.record import PAGE_SIZE_BYTES
from sixfold.crash import guarded_task
from sixfold.page_reader import PageReader
from sixfold.sql.layout import SQL_PAGE_BASE
from writer.pipeline import CommitPipeline
from writer.read_index import EpochConfirmer
from writer.recovery import recover
from writer.replacement import adopt_newest, auto_replace, begin_replacement, settle_change

log = logging.getLogger("sixfold.writer")

RECOVERY_RETRY_S = 0.5
PAGE_WRITES_MAX = 1_024  # pages one mini-transaction may change


class Writer:
    def __init__(
        self, nodes: dict[str, str], limits: WriterLimits | None = None, owner: str = ""
    ) -> None:
        self.clients = [NodeClient(name, address) for name, address in nodes.items()]
        self.limits = limits or WriterLimits()
        self.owner = owner or f"writer-{uuid.uuid4().hex[:8]}"
        self.reader = PageReader(self.clients)
        self.pipeline: CommitPipeline | None = None
        self.confirmer: EpochConfirmer | None = None
        self.status = "recovering"
        self.recovered = asyncio.Event()
        # A planned switchover drains the writer: page writes are refused (NotWriterError,
        # nothing taken) while a drain holds it, and those already admitted finish.
        self.drain_holds = DrainHolds()
        self.writes_active = 0
        self.writes_idle = asyncio.Event()
        self.writes_idle.set()
        # Weak: a page's lock lives only while someone holds or awaits it.
        self.page_locks: weakref.WeakValueDictionary[int, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self.membership_lock = asyncio.Lock()  # one `replace` at a time
        self.settling: asyncio.Task[None] | None = None  # a change completing
        self.background: list[asyncio.Task[object]] = []  # automatic replacement

    async def run_recovery(self) -> None:
        """Recover, retrying until a write quorum is reachable; then start the pipeline."""
        while True:
            try:
                await self.recover_once()
                return
            except SixfoldError as exc:
                self.status = f"recovering: {exc}"
                log.warning("recovery failed, retrying: %s", exc)
                await asyncio.sleep(RECOVERY_RETRY_S)

    async def recover_once(self, epoch_wanted: int = 0) -> None:
        """One recovery attempt at a new epoch (P17 §4.3); raises if it cannot win one."""
        result = await recover(self.clients, self.owner, self.limits.lal, epoch_wanted)
        plan = result.plan
        # It ships to the membership's nodes; the other nodes it knows are spares.
        members = [c for c in self.clients if c.name in result.membership.nodes]
        names = [c.name for c in members]
        unknown = sorted(result.membership.nodes - set(names))
        if unknown:  # it would ship to fewer nodes than the quorum rules count on
            raise RecoveryError(
                f"the volume's {describe(result.membership)} names {', '.join(unknown)}, which "
                "this instance has no address for: start it with every storage node in --nodes"
            )
        self.pipeline = CommitPipeline(members, CommitLog.recovered(names, result, self.limits))
        self.reader.note_membership(result.membership)
        self.pipeline.on_membership = self._on_membership
        by_name = {c.name: c for c in self.clients}
        self.pipeline.membership_refresher = lambda: adopt_newest(self, by_name)
        self.pipeline.start()
        # Only members confirm the epoch: a spare knows none, and its "not yet" would count
        # as a confirmation. The holders serve in every phase of a change: a newer writer
        # sealed 4 of them (sixfold/core/membership.py), so any 3 of them meet it.
        self.confirmer = EpochConfirmer(
            self._holders(result.membership),
            plan.epoch,
            lambda: self.pipeline.vdl,
            self.limits.append_timeout_s,
        )
        self.pipeline.on_scl(plan.source, result.node_scls[plan.source])
        self.pipeline.wake_all()  # announce the recovered VDL to every node
        self.status = "accepting writes"
        self.recovered.set()
        log.info("writer %s recovered: epoch %d, VDL %d", self.owner, plan.epoch, plan.vdl)
        if result.membership.change is not None:  # a change in progress: carry it on
            log.info("%s: carrying the change on", describe(result.membership))
            self.start_settling(plan.vdl, revertible=True)
        if self.limits.auto_replace_after_s > 0:
            for task in self.background:  # an earlier recovery's, if any
                task.cancel()
            self.background = []
            self.background.append(
                guarded_task(
                    auto_replace(self, self.limits.auto_replace_after_s),
                    "replacing storage nodes down too long",
                )
            )

    # -- membership changes (writer/replacement.py) ------------------------------------------------

    def _holders(self, membership: Membership) -> list[NodeClient]:
        return [c for c in self.clients if c.name in membership.holders]

    def _on_membership(self, membership: Membership) -> None:
        self.reader.note_membership(membership)
        if self.confirmer is not None:
            self.confirmer.clients = self._holders(membership)

    async def replace(self, old: str, new: str, force: bool) -> tuple[Membership, int]:
        """Begin replacing storage node `old` with spare `new`; see writer/replacement.py."""
        async with self.membership_lock:
            return await begin_replacement(self, old, new, force)

    def start_settling(self, durable_point: int, revertible: bool) -> None:
        """Complete (or revert) the change in progress in the background."""
        if self.settling is not None:
            self.settling.cancel()
        self.settling = guarded_task(
            settle_change(self, durable_point, revertible), "settling a membership change"
        )

    def _ready(self) -> CommitPipeline:
        if self.pipeline is None:
            raise RecoveryError(f"writer is not accepting writes yet: {self.status}")
        if self.pipeline.fenced:
            raise self.pipeline.refusal()
        return self.pipeline

    async def write_pages(self, writes: list[PageWrite]) -> int:
        """Commit page writes as one mini-transaction; return the commit LSN once durable."""
        _check_writes(writes)
        pipeline = self._ready()
        with self._admitted():
            prev_page_lsns = await self._page_links(pipeline, writes)
            async with self._page_locks(sorted({w.page_no for w in writes})):
                durable = await pipeline.submit(writes, prev_page_lsns)
        return await durable

    @contextlib.contextmanager
    def _admitted(self):
        """Count a page write until its LSNs are taken; refuse it while draining."""
        if self.drain_holds.refusing(time.monotonic()):
            raise NotWriterError(
                "this writer is handing the writer role over (switchover): the write was not "
                "applied; retry it shortly at the new writer"
            )
        self.writes_active += 1
        self.writes_idle.clear()
        try:
            yield
        finally:
            self.writes_active -= 1
            if not self.writes_active:
                self.writes_idle.set()

    async def drain(
        self, hold_s: float, quiesce: Callable[[], Awaitable[None]] | None = None
    ) -> int:
        """Refuse new page writes for `hold_s`; return the VDL once every write taken is
        durable. Nothing is then in flight: a new writer's seal fences no commit. A drain
        that fails releases its own hold only (sixfold/core/drain.py). `quiesce` waits for
        the writes of the layer above (SQL) once the hold refuses new ones."""
        pipeline = self._ready()
        drain = self.drain_holds.hold(time.monotonic(), hold_s)
        if drain is None:
            raise NotWriterError(
                f"{self.drain_holds.drains_max} switchovers are already draining this writer; "
                "wait for them to finish"
            )
        try:
            if quiesce is not None:
                await quiesce()
            await asyncio.wait_for(self.writes_idle.wait(), self.limits.write_timeout_s)
            await pipeline.wait_durable(pipeline.last_commit_lsn)
        except TimeoutError:
            self.drain_holds.release(drain)
            raise CommitTimeoutError(
                f"drain: {self.writes_active} page writes still taking their LSNs after "
                f"{self.limits.write_timeout_s:g} s"
            ) from None
        except BaseException:
            self.drain_holds.release(drain)
            raise
        return pipeline.vdl

    async def submit_commit(
        self, writes: list[PageWrite], known_links: dict[int, int]
    ) -> tuple[int, asyncio.Future[int]]:
        """Queue a SQL transaction's records without waiting for durability (P17 §4.2.1).

        Returns its commit LSN, and a future that resolves once VDL has reached it.

        The SQL engine is the only writer of the SQL pages and runs one transaction at a time,
        so no page lock is needed. `known_links` holds the latest LSNs of pages it read from
        storage; only pages neither this writer nor the engine knows are looked up.
        """
        _check_writes(writes, sql=True)
        pipeline = self._ready()
        unknown = [w for w in writes if not pipeline.knows_page(w.page_no)]
        links = {w.page_no: known_links[w.page_no] for w in unknown if w.page_no in known_links}
        missing = [w for w in unknown if w.page_no not in links]
        links.update(await self._page_links(pipeline, missing) if missing else {})
        durable = await pipeline.submit(writes, links)
        return pipeline.page_last_lsn[writes[-1].page_no], durable  # the CPL record's LSN

    async def compare_and_set(
        self, page_no: int, offset: int, expected: bytes, new: bytes
    ) -> tuple[bool, bytes, int]:
        """Write `new` at `offset` if the page holds `expected` there: (applied, found, LSN).

        Atomic: the page's lock is held from the read to the allocation of the write, and the
        read waits until every earlier write to the page is durable, so it sees them all.
        """
        write = PageWrite(page_no, ((offset, new),))
        _check_writes([write, PageWrite(page_no, ((offset, expected),))])
        pipeline = self._ready()
        with self._admitted():
            prev_page_lsns = await self._page_links(pipeline, [write])
            async with self._page_locks([page_no]):
                await pipeline.wait_durable(pipeline.page_last_lsn.get(page_no, 0))
                image, _, _ = await self.read_page(page_no)
                found = image[offset : offset + len(expected)]
                if found == expected:
                    durable = await pipeline.submit([write], prev_page_lsns)
        if found != expected:
            # A refusal is a read: answered only once the epoch is confirmed. (A write that
            # is applied needs no round: its own acknowledgements from 4 nodes confirm it.)
            await self.confirm_epoch()
            return False, found, 0
        return True, found, await durable

    async def _page_links(
        self, pipeline: CommitPipeline, writes: list[PageWrite]
    ) -> dict[int, int]:
        """Latest LSNs at or below VDL of pages this writer has not written in its epoch."""
        links = {}
        for page_no in sorted({w.page_no for w in writes if not pipeline.knows_page(w.page_no)}):
            _, page_lsn, _ = await self.read_page(page_no)
            links[page_no] = page_lsn
        return links

    @contextlib.asynccontextmanager
    async def _page_locks(self, pages: list[int]) -> AsyncIterator[None]:
        """Hold the locks of `pages` (in ascending order: no deadlock) while LSNs are taken."""
        async with contextlib.AsyncExitStack() as stack:
            for page_no in pages:
                lock = self.page_locks.get(page_no)
                if lock is None:
                    lock = self.page_locks[page_no] = asyncio.Lock()
                await stack.enter_async_context(lock)
            yield

    async def confirm_epoch(self) -> None:
        """Return once a read quorum, asked after this call, confirmed that no newer writer
        exists: a read answered after this is linearizable (sixfold/core/read_index.py)."""
        self._ready()
        assert self.confirmer is not None, "made with the pipeline"
        await self.confirmer.confirm()

    async def read_page_linearizable(self, page_no: int) -> tuple[bytes, int, int]:
        """A client's page read: the latest durable version, confirmed to be the latest
        anywhere. The epoch round and the page read run at once."""
        confirmed = asyncio.ensure_future(self.confirm_epoch())
        try:
            result = await self.read_page(page_no)
        except BaseException:
            confirmed.cancel()
            raise
        await confirmed
        return result

    async def read_page(self, page_no: int) -> tuple[bytes, int, int]:
        """The latest durable version of a page this writer knows of: never data above VDL.

        Not confirmed: a deposed writer that does not know it yet answers from its old VDL.
        Clients read through read_page_linearizable; writes use this for back-links, which
        a deposed writer can never make durable."""
        pipeline = self._ready()
        vdl = pipeline.vdl
        try:
            image, page_lsn = await self.reader.read(page_no, vdl, pipeline.epoch)
        except SixfoldError:
            if pipeline.vdl == vdl:
                raise
            # A slow read (a node that timed out) may fall below the nodes' GC horizon,
            # which moves with VDL; once more, at the newer VDL.
            vdl = pipeline.vdl
            image, page_lsn = await self.reader.read(page_no, vdl, pipeline.epoch)
        return image, page_lsn, vdl

    async def close(self, why: str = "the writer is shutting down") -> None:
        tasks = [*self.background, *([self.settling] if self.settling else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.confirmer:
            await self.confirmer.close()
        if self.pipeline:
            await self.pipeline.stop(why)
        for c in self.clients:
            await c.close()


def _check_writes(writes: list[PageWrite], sql: bool = False) -> None:
    if not writes:
        raise InvalidRequestError("a mini-transaction needs at least one page change")
    if not sql and len(writes) > PAGE_WRITES_MAX:
        raise InvalidRequestError(
            f"{len(writes)} page changes exceed PAGE_WRITES_MAX={PAGE_WRITES_MAX}"
        )
    for w in writes:
        if not sql and w.page_no >= SQL_PAGE_BASE:
            raise InvalidRequestError(
                f"page {w.page_no} belongs to the SQL database (pages from {SQL_PAGE_BASE} up): "
                "change it with SQL, not with the page API"
            )
        for offset, data in w.deltas:
            if offset < 0 or offset + len(data) > PAGE_SIZE_BYTES:
                raise InvalidRequestError(
                    f"page {w.page_no}: {len(data)} bytes at offset {offset} do not fit a "
                    f"{PAGE_SIZE_BYTES}-byte page"
                )
