"""A planned switchover's drain: the holds that stop a writer taking new commits.

A switchover drains the writer (no new commits, and an answer once every commit taken is
durable) before the new writer seals its epoch, so nothing is in flight to be fenced and
the switchover loses nothing. Two drains may overlap (two operators, or a retry after a
timeout): each holds the writer for its own time, and one that fails releases only its own
hold. A failed drain that lifted every hold let the writer take commits while the other
drain's switchover went ahead, leaving those commits' outcome unknown (simulation seed
31298, issue 13).

Pure: the time is passed in, in whatever unit the caller's clock counts (seconds on a
writer, ticks in the simulator).
"""

from __future__ import annotations

DRAINS_MAX = 16  # drains holding one writer at once: more are refused


class DrainHolds:
    def __init__(self, drains_max: int = DRAINS_MAX) -> None:
        self.drains_max = drains_max
        self._until: dict[int, float] = {}  # drain -> the time its hold ends
        self._next_drain = 1

    def hold(self, now: float, hold: float) -> int | None:
        """Start a drain holding new commits until `now + hold`: its token, or None when
        `drains_max` drains already hold the writer."""
        assert hold > 0, "a drain holds for a positive time"
        self._forget_ended(now)
        if len(self._until) >= self.drains_max:
            return None
        drain, self._next_drain = self._next_drain, self._next_drain + 1
        self._until[drain] = now + hold
        return drain

    def release(self, drain: int) -> None:
        """A failed drain: its hold ends now; any other drain's hold stays."""
        self._until.pop(drain, None)

    def refusing(self, now: float) -> bool:
        """Whether new commits are refused now."""
        return any(until > now for until in self._until.values())

    def _forget_ended(self, now: float) -> None:
        self._until = {d: until for d, until in self._until.items() if until > now}
