"""Reading a page at a read point from the storage nodes (P18 §3), sans I/O.

A normal read needs no quorum: one node whose SCL covers the read point materialises the
page. Only when no single node does is a read quorum used: the base version from the most
complete node, plus the page's records above it gathered from 3 nodes. Every record at or
below the read point (<= VDL) reached 4 nodes, so any 3 include one that holds it (4 + 3 > 6).

`read_page` is a generator: it yields `{node: request}` (sixfold/core/node_requests.py) and is
sent `{node: answer}`: a PageImage for GetPage, a SegmentReport for GetState, the records
for ReadRecords, or the exception the call ended with. Readers and the writer
(sixfold/page_reader.py) and the simulator drive it.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

from sixfold.core.errors import CorruptRecordError, QuorumUnavailableError
from sixfold.core.membership import Membership
from sixfold.core.node_requests import GetPage, GetState, NodeRequest, ReadRecords
from sixfold.core.page import apply_records
from sixfold.core.quorum import COPIES, READ_QUORUM
from sixfold.core.record import RedoRecord
from sixfold.core.recovery import SegmentReport


@dataclass(frozen=True, slots=True)
class PageImage:
    """A node's answer to GetPage: the page and the LSN of its newest change, with the
    node's SCL when it answered."""

    image: bytes
    page_lsn: int
    scl: int


Answer = PageImage | SegmentReport | tuple[RedoRecord, ...] | Exception
Reading = Generator[dict[str, NodeRequest], dict[str, Answer], tuple[bytes, int]]


class NodeChoice:
    """Which node a reader asks first: one believed complete to the read point, taken in
    turn so that reads spread over them; then the rest."""

    def __init__(self, nodes: list[str], membership: Membership | None = None) -> None:
        self.nodes = list(nodes)
        self.membership = membership or Membership.initial()  # whose answers make a quorum
        self.scl_hint = dict.fromkeys(self.nodes, 0)
        self._turn = 0

    def note_scl(self, node: str, scl: int) -> None:
        self.scl_hint[node] = scl

    def candidates(self, lsn: int) -> list[str]:
        """Nodes believed to cover `lsn` first (spread in turn), then the rest."""
        self._turn = (self._turn + 1) % len(self.nodes)
        ordered = self.nodes[self._turn :] + self.nodes[: self._turn]
        covering = [n for n in ordered if self.scl_hint[n] >= lsn]
        return covering + [n for n in ordered if self.scl_hint[n] < lsn]

    def covering(self, lsn: int) -> list[str]:
        """Nodes believed complete to `lsn`, in turn."""
        return [n for n in self.candidates(lsn) if self.scl_hint[n] >= lsn]


def read_page(choice: NodeChoice, page_no: int, lsn: int, min_epoch: int) -> Reading:
    """The page at `lsn` and the LSN of its newest change, from a node that holds epoch
    `min_epoch`'s truncations."""
    for node in choice.candidates(lsn):
        answer = (yield {node: GetPage(page_no, lsn, min_epoch, choice.membership.epoch)})[node]
        if isinstance(answer, Exception):
            choice.note_scl(node, 0)
            continue
        assert isinstance(answer, PageImage), answer
        choice.note_scl(node, answer.scl)
        return answer.image, answer.page_lsn
    return (yield from _quorum_read(choice.nodes, choice.membership, page_no, lsn, min_epoch))


def _quorum_read(
    nodes: list[str], membership: Membership, page_no: int, lsn: int, min_epoch: int
) -> Reading:
    states = yield {n: GetState() for n in nodes}
    usable = [
        s
        for s in (states[n] for n in nodes)
        if isinstance(s, SegmentReport) and s.serving and s.truncations_version >= min_epoch
    ]
    if not membership.is_read_quorum(s.name for s in usable):
        raise QuorumUnavailableError("read", len(usable), READ_QUORUM, COPIES)
    usable.sort(key=lambda s: s.scl, reverse=True)
    best = usable[0]
    base_lsn = min(best.scl, lsn)
    base = (yield {best.name: GetPage(page_no, base_lsn, min_epoch, membership.epoch)})[best.name]
    if isinstance(base, Exception):
        raise base
    assert isinstance(base, PageImage), base
    gathered: dict[int, RedoRecord] = {}
    answered: list[str] = []
    for state in usable:
        if membership.is_read_quorum(answered):
            break
        asked = ReadRecords(base_lsn, lsn, 0, page_no, membership.epoch)
        got = (yield {state.name: asked})[state.name]
        if isinstance(got, Exception):
            continue
        assert isinstance(got, tuple), got
        answered.append(state.name)
        gathered.update((r.lsn, r) for r in got)
    if not membership.is_read_quorum(answered):
        raise QuorumUnavailableError("read", len(answered), READ_QUORUM, COPIES)
    records = [gathered[x] for x in sorted(gathered)]
    _check_page_chain(page_no, base.page_lsn, records)
    image = apply_records(base.image, records) if records else base.image
    return image, (records[-1].lsn if records else base.page_lsn)


def _check_page_chain(page_no: int, base_page_lsn: int, records: list[RedoRecord]) -> None:
    """The per-page back-links must join the base version to every record gathered."""
    previous = base_page_lsn
    for record in records:
        if record.prev_page_lsn != previous:
            raise CorruptRecordError(
                f"page {page_no}: record LSN {record.lsn} links back to LSN "
                f"{record.prev_page_lsn}, expected {previous}: the read quorum is missing a record"
            )
        previous = record.lsn
