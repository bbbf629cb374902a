"""The writer instance: recovery at start, then the commit pipeline and page reads at VDL."""

from __future__ import annotations

import asyncio
import logging
import uuid

from sixfold.clients import NodeClient
from sixfold.errors import InvalidRequestError, RecoveryError, SixfoldError
from sixfold.page_reader import PageReader
from sixfold.record import PAGE_SIZE_BYTES
from writer.pipeline import CommitPipeline, PageWrite, WriterLimits
from writer.recovery import recover

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
        self.status = "recovering"
        self.recovered = asyncio.Event()

    async def run_recovery(self) -> None:
        """Recover, retrying until a write quorum is reachable; then start the pipeline."""
        while True:
            try:
                result = await recover(self.clients, self.owner, self.limits.lal)
                break
            except SixfoldError as exc:
                self.status = f"recovering: {exc}"
                log.warning("recovery failed, retrying: %s", exc)
                await asyncio.sleep(RECOVERY_RETRY_S)
        plan = result.plan
        self.pipeline = CommitPipeline(
            self.clients, epoch=plan.epoch, vdl=plan.vdl, next_lsn=plan.next_lsn,
            node_scls=result.node_scls, truncations=result.truncations, limits=self.limits,
        )  # fmt: skip
        self.pipeline.start()
        self.pipeline.on_ack(plan.source, result.node_scls[plan.source])
        for sender in self.pipeline.senders:
            sender.wake.set()  # announce the recovered VDL to every node
        self.status = "accepting writes"
        self.recovered.set()
        log.info("writer %s recovered: epoch %d, VDL %d", self.owner, plan.epoch, plan.vdl)

    def _ready(self) -> CommitPipeline:
        if self.pipeline is None:
            raise RecoveryError(f"writer is not accepting writes yet: {self.status}")
        if self.pipeline.fenced:
            raise self.pipeline.fenced
        return self.pipeline

    async def write_pages(self, writes: list[PageWrite]) -> int:
        """Commit page writes as one mini-transaction; return the commit LSN once durable."""
        _check_writes(writes)
        pipeline = self._ready()
        unknown = sorted({w.page_no for w in writes if not pipeline.knows_page(w.page_no)})
        prev_page_lsns = {}
        for page_no in unknown:
            _, page_lsn, _ = await self.read_page(page_no)
            prev_page_lsns[page_no] = page_lsn
        return await pipeline.commit(writes, prev_page_lsns)

    async def read_page(self, page_no: int) -> tuple[bytes, int, int]:
        """The latest durable version of a page: never data above VDL."""
        pipeline = self._ready()
        vdl = pipeline.vdl
        image, page_lsn = await self.reader.read(page_no, vdl, pipeline.epoch)
        return image, page_lsn, vdl

    async def close(self) -> None:
        if self.pipeline:
            await self.pipeline.stop()
        for c in self.clients:
            await c.close()


def _check_writes(writes: list[PageWrite]) -> None:
    if not writes:
        raise InvalidRequestError("a mini-transaction needs at least one page change")
    if len(writes) > PAGE_WRITES_MAX:
        raise InvalidRequestError(
            f"{len(writes)} page changes exceed PAGE_WRITES_MAX={PAGE_WRITES_MAX}"
        )
    for w in writes:
        for offset, data in w.deltas:
            if offset < 0 or offset + len(data) > PAGE_SIZE_BYTES:
                raise InvalidRequestError(
                    f"page {w.page_no}: {len(data)} bytes at offset {offset} do not fit a "
                    f"{PAGE_SIZE_BYTES}-byte page"
                )
