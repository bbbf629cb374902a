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
the writer answers or another writer is named. Pure: the shell (instance/host.py) and
the simulator send the probes, run the promotions and pass in the time; WriterWatch says
whom to probe, when to take over and when a writer must step down.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from sixfold.core.topology import EpochView, newest_epoch, parse_owner

PROBE_INTERVAL_S = 0.2  # how often a reader checks that the writer answers
PROBE_TIMEOUT_S = 1.0  # the longest a probe waits for an answer
PROBE_TIMEOUT_S_MIN = 0.2  # a probe near the takeover time still waits this long
WRITER_GONE_AFTER_S = 1.0
WRITER_SILENT_AFTER_S = 5.0
PROMOTION_STAGGER_S = 0.5


@dataclass(frozen=True, slots=True)
class TakeoverLimits:
    """The timing of takeovers (the simulator runs them on a shorter clock)."""

    probe_interval_s: float = PROBE_INTERVAL_S
    probe_timeout_s: float = PROBE_TIMEOUT_S
    probe_timeout_s_min: float = PROBE_TIMEOUT_S_MIN
    gone_after_s: float = WRITER_GONE_AFTER_S
    silent_after_s: float = WRITER_SILENT_AFTER_S
    stagger_s: float = PROMOTION_STAGGER_S

    def __post_init__(self) -> None:
        assert self.probe_timeout_s_min <= self.probe_timeout_s < self.silent_after_s
        assert self.gone_after_s <= self.silent_after_s


TAKEOVER_LIMITS = TakeoverLimits()


class Probe(enum.Enum):
    WRITER = "writer"  # it answered as the recovered, unfenced writer
    GONE = "gone"  # nothing listens at its address (refused, unreachable)
    NOT_WRITER = "not writer"  # it answered, as a reader or a fenced writer
    SILENT = "silent"  # no answer in time, or it answered but not as the writer


@dataclass(slots=True)
class TakeoverDetector:
    rank: int  # promotion rank: 0 goes first
    limits: TakeoverLimits = TAKEOVER_LIMITS
    watched: str = ""  # the owner id of the writer being watched
    silent_since: float | None = None
    after_s: float = field(init=False)  # the silence that makes it take over
    silence_s: float = 0.0  # how long the writer had been silent at the last takeover

    def __post_init__(self) -> None:
        self.after_s = self.limits.silent_after_s

    def deadline(self) -> float | None:
        """The monotonic time at which it takes over if nothing answers, None when the
        writer is answering."""
        if self.silent_since is None:
            return None
        return self.silent_since + self.after_s + self.rank * self.limits.stagger_s

    def probe_timeout(self, now: float) -> float:
        """How long the next probe may wait: never past the takeover deadline by much, so
        ranks half a second apart stay half a second apart."""
        lim = self.limits
        deadline = self.deadline()
        if deadline is None:
            return lim.probe_timeout_s
        return min(lim.probe_timeout_s, max(lim.probe_timeout_s_min, deadline - now))

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
            self.after_s = self.limits.silent_after_s
        if probe in (Probe.GONE, Probe.NOT_WRITER):
            self.after_s = self.limits.gone_after_s
        deadline = self.deadline()
        assert deadline is not None
        if now < deadline:
            return False
        self.silence_s = now - self.silent_since
        self.silent_since = None  # one attempt per deadline; a failed one starts over
        return True


@dataclass(frozen=True, slots=True)
class ProbeWriter:
    """Probe the writer that owns `epoch` (owner id `owner`), waiting at most `timeout_s`."""

    owner: str
    epoch: int
    timeout_s: float


@dataclass(frozen=True, slots=True)
class TakeOver:
    """Recover at exactly `epoch_wanted`: of several readers racing, the first to seal it
    wins and the others give up rather than fence it with the epoch after."""

    epoch_wanted: int
    silence_s: float


class WriterWatch:
    """A reader instance's watch on the writer, from the epochs the nodes report."""

    def __init__(self, rank: int, limits: TakeoverLimits = TAKEOVER_LIMITS) -> None:
        self.detector = TakeoverDetector(rank, limits)

    def probe(self, views: Iterable[EpochView], now: float) -> ProbeWriter | None:
        """Whom to probe now: the owner of the newest epoch; None while no writer ever
        said where it serves (a fresh volume waits for its writer to start)."""
        newest = newest_epoch(views)
        if not parse_owner(newest.owner).address:
            return None
        return ProbeWriter(newest.owner, newest.epoch, self.detector.probe_timeout(now))

    def on_probe(
        self,
        asked: ProbeWriter,
        probe: Probe,
        views_now: Iterable[EpochView],
        asked_at: float,
        now: float,
    ) -> TakeOver | None:
        """The probe's answer: take over now, or not (yet)."""
        if newest_epoch(views_now) != EpochView(asked.epoch, asked.owner):
            return None  # another instance took over during the probe: watch the new writer
        if self.detector.on_probe(asked.owner, probe, asked_at, now):
            return TakeOver(asked.epoch + 1, self.detector.silence_s)
        return None


def superseded(views: Iterable[EpochView], epoch: int) -> str | None:
    """Why the writer of `epoch` must step down (a newer epoch on the nodes: another writer
    won), or None."""
    newest = newest_epoch(views)
    if newest.epoch <= epoch:
        return None
    return f"epoch {newest.epoch} was taken by {parse_owner(newest.owner).name}"
