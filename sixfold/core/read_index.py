"""Linearizable reads on the writer: confirm the epoch on a read quorum first (read-index).

Epochs fence a deposed writer's *writes*: its appends carry an older epoch, a write quorum
has sealed a newer one, and it can never gather 4 acknowledgements again (P17 §4.3,
P18 §2.4). Its *reads* are not fenced that way. A writer that was paused (SIGSTOP, a long GC,
a stalled VM) past the takeover time resumes believing it is still the writer, and would
answer a read from its old VDL, missing commits the new writer acknowledged meanwhile.

The rule: a read that arrived at time t is answered only once a read quorum of nodes, each
asked after t, has said it has not sealed an epoch newer than this writer's. That is enough:

- a newer writer acknowledges nothing before its recovery has sealed its epoch on a write
  quorum, and a node never goes back to an older epoch;
- a read quorum overlaps every write quorum (4 + 3 > 6, quorum.py), so if any commit was
  acknowledged by a newer writer before t, one of our 3 confirmations came from a node that
  had already sealed the newer epoch before it was asked, and that node refuses instead;
- the writer reads at its VDL taken after t, which covers every commit it acknowledged, and
  recovery put every commit of older epochs at or below it.

A read quorum, not a write quorum, so that the writer goes on answering reads with an AZ
and one more node down (AZ+1), as the readers do.

Reads are batched into rounds. A read waits for the first round sent after it arrived; reads
that arrive while a round is in flight share the next one, so a burst of reads costs one
round, not one each. Only one round is in flight at a time.

Pure: the shell (writer/read_index.py) sends each round to every node and feeds the answers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from sixfold.core.quorum import COPIES, READ_QUORUM, WRITE_QUORUM

# The overlap the rule rests on: every read quorum meets every write quorum.
assert READ_QUORUM + WRITE_QUORUM > COPIES


class Answer(enum.Enum):
    CONFIRMS = "confirms"  # the node holds no epoch newer than the writer's
    REFUSES = "refuses"  # the node has sealed a newer epoch: the writer was deposed
    SILENT = "silent"  # no answer in time, or an error that says nothing about epochs


class RoundOutcome(enum.Enum):
    CONFIRMED = "confirmed"  # a read quorum confirmed: the reads waiting on it may answer
    SUPERSEDED = "superseded"  # nodes refused, and too few are left to confirm
    NO_QUORUM = "no quorum"  # too few nodes answered to confirm (down, partitioned)


@dataclass(slots=True)
class ReadIndex:
    """Rounds of epoch confirmation for one writer epoch."""

    epoch: int
    sent: int = 0  # the newest round sent
    confirmed: int = 0  # the newest round a read quorum confirmed
    wanted: int = 0  # the newest round some read waits for
    in_flight: bool = False
    answers: dict[str, Answer] = field(default_factory=dict)  # of the round in flight

    def want(self) -> int:
        """A read arrived: the round it must wait for (the next one sent from now on)."""
        self.wanted = self.sent + 1
        return self.wanted

    def start_round(self) -> int | None:
        """The round to send to every node now, or None: one is in flight, or none is wanted."""
        if self.in_flight or self.wanted <= self.sent:
            return None
        self.sent += 1
        self.in_flight = True
        self.answers = {}
        return self.sent

    def on_answer(self, round_no: int, node: str, answer: Answer) -> RoundOutcome | None:
        """A node's answer to round `round_no`; the round's outcome once it is decided.

        Answers to a round already decided are ignored (None)."""
        if not self.in_flight or round_no != self.sent or node in self.answers:
            return None
        self.answers[node] = answer
        assert len(self.answers) <= COPIES
        confirms = sum(1 for a in self.answers.values() if a is Answer.CONFIRMS)
        refuses = sum(1 for a in self.answers.values() if a is Answer.REFUSES)
        others = len(self.answers) - confirms
        if confirms >= READ_QUORUM:
            self.in_flight = False
            self.confirmed = round_no
            return RoundOutcome.CONFIRMED
        if others > COPIES - READ_QUORUM:  # not enough nodes left to make a read quorum
            self.in_flight = False
            return RoundOutcome.SUPERSEDED if refuses else RoundOutcome.NO_QUORUM
        return None

    def is_confirmed(self, round_no: int) -> bool:
        return self.confirmed >= round_no

    def is_decided(self, round_no: int) -> bool:
        """Round `round_no` was sent and decided (confirmed or not)."""
        return self.sent > round_no or (self.sent == round_no and not self.in_flight)
