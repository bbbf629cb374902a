"""When a reader takes over from a writer that stopped answering (issue 6, issue 10).

There is no lease and no coordinator: a reader probes the writer named by the newest epoch,
and once it has gone unanswered long enough, runs recovery at the next epoch. Recovery is
safe whenever it runs (a seal needs 4 of 6 nodes, and the old writer is fenced), so the
timing only decides availability, never safety. It must not be too eager: a writer that is
merely loaded, or paused for a moment, should stay the writer.

- GONE (its port refuses connections: the process is dead), or NOT_WRITER (it answers, as a
  reader: a recovery that sealed the epoch on some nodes and then failed, or a writer that
  stepped down), for WRITER_GONE_AFTER_S;
- SILENT (there, but no answer as the writer: paused, or too loaded) for WRITER_SILENT_AFTER_S;
- plus PROMOTION_STAGGER_S per promotion rank, so the preferred reader goes first and the
  others find a new writer in place by their turn.

Silence counts from the start of the first probe left unanswered, and starts again whenever
the writer answers or another writer is named. Pure: the shell (sixfold/instance.py) sends
the probes and passes in the monotonic time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

PROBE_INTERVAL_S = 0.2  # how often a reader checks that the writer answers
PROBE_TIMEOUT_S = 1.0  # the longest a probe waits for an answer
PROBE_TIMEOUT_S_MIN = 0.2  # a probe near the takeover time still waits this long
WRITER_GONE_AFTER_S = 1.0
WRITER_SILENT_AFTER_S = 5.0
PROMOTION_STAGGER_S = 0.5

assert PROBE_TIMEOUT_S_MIN <= PROBE_TIMEOUT_S < WRITER_SILENT_AFTER_S
assert WRITER_GONE_AFTER_S <= WRITER_SILENT_AFTER_S


class Probe(enum.Enum):
    WRITER = "writer"  # it answered as the recovered, unfenced writer
    GONE = "gone"  # nothing listens at its address (refused, unreachable)
    NOT_WRITER = "not writer"  # it answered, as a reader or a fenced writer
    SILENT = "silent"  # no answer in time, or it answered but not as the writer


@dataclass(slots=True)
class TakeoverDetector:
    rank: int  # promotion rank: 0 goes first
    watched: str = ""  # the owner id of the writer being watched
    silent_since: float | None = None
    after_s: float = WRITER_SILENT_AFTER_S  # the silence that makes it take over
    silence_s: float = 0.0  # how long the writer had been silent at the last takeover

    def deadline(self) -> float | None:
        """The monotonic time at which it takes over if nothing answers, None when the
        writer is answering."""
        if self.silent_since is None:
            return None
        return self.silent_since + self.after_s + self.rank * PROMOTION_STAGGER_S

    def probe_timeout(self, now: float) -> float:
        """How long the next probe may wait: never past the takeover deadline by much, so
        ranks half a second apart stay half a second apart."""
        deadline = self.deadline()
        if deadline is None:
            return PROBE_TIMEOUT_S
        return min(PROBE_TIMEOUT_S, max(PROBE_TIMEOUT_S_MIN, deadline - now))

    def on_probe(self, owner: str, probe: Probe, asked_at: float, now: float) -> bool:
        """The answer of a probe sent at `asked_at` to `owner`; True: take over now."""
        assert asked_at <= now
        if owner != self.watched:
            self.watched, self.silent_since = owner, None
        if probe is Probe.WRITER:
            self.silent_since = None
            return False
        if self.silent_since is None:
            self.silent_since = asked_at
            self.after_s = WRITER_SILENT_AFTER_S
        if probe in (Probe.GONE, Probe.NOT_WRITER):
            self.after_s = WRITER_GONE_AFTER_S
        deadline = self.deadline()
        assert deadline is not None
        if now < deadline:
            return False
        self.silence_s = now - self.silent_since
        self.silent_since = None  # one attempt per deadline; a failed one starts over
        return True
