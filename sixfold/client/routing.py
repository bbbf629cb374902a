"""Finding the writer and the readers: the seeds, the process-wide channel pool, the
topology shared by the connections to the same seeds, and the backoff between its refreshes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from sixfold import tls
from sixfold.client.discovery import SEEDS_ASKED_MAX as TOPOLOGY_ANSWERS_MAX
from sixfold.client.discovery import TOPOLOGY_TIMEOUT_S, newest_answer
from sixfold.client.errors import InterfaceError, NoTopologyError, _describe
from sixfold.clients import CHANNEL_OPTIONS
from sixfold.core import errors
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc

BACKOFF_S_FIRST = 0.05  # the first wait before asking the topology again
BACKOFF_S_MAX = 1.0  # the waits double up to this, each one jittered
TOPOLOGY_TTL_S = 5.0  # a topology older than this is asked again before routing a read
ENDPOINTS_MAX = 16  # instance addresses a topology remembers (besides the seeds) to ask later
READER_SKIP_S = 2.0  # a reader that did not answer is left out of the rotation this long
CHANNELS_MAX = 32  # gRPC channels open in this process; the least recently used closed beyond
DIRECTORIES_MAX = 64  # seed lists whose shared topology this process keeps
SEEDS_MAX = 16


def backoff_s(attempt: int) -> float:
    """Jittered exponential backoff: half the doubled delay, plus up to as much at random."""
    delay = min(BACKOFF_S_MAX, BACKOFF_S_FIRST * 2 ** min(attempt, 16))
    return delay / 2 + random.uniform(0, delay / 2)


def parse_seeds(seeds: str | Sequence[str]) -> tuple[str, ...]:
    """'host:port' or 'a:1,b:2' (or a list of them) as a tuple of addresses, in order."""
    parts = seeds.split(",") if isinstance(seeds, str) else list(seeds)
    out = tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))
    if not out:
        raise InterfaceError(f"no seed address in {seeds!r}: give host:port[,host:port...]")
    if len(out) > SEEDS_MAX:
        raise InterfaceError(f"{len(out)} seeds given; at most {SEEDS_MAX} (SEEDS_MAX)")
    return out


# -- channels: one bounded pool per process --------------------------------------------------


@dataclass
class _Channel:
    channel: grpc.Channel
    stubs: dict[type, Any] = field(default_factory=dict)
    users: int = 0  # calls in flight: an evicted channel is closed once they are done
    evicted: bool = False


class ChannelPool:
    """gRPC channels keyed by address, at most `channels_max`: the least recently used one
    is closed beyond that (once its calls in flight are done). Many connections to one
    writer share its channel, so a failover does not open one channel per connection."""

    def __init__(self, channels_max: int) -> None:
        assert channels_max >= 1, channels_max
        self.channels_max = channels_max
        self._lock = threading.Lock()
        self._channels: OrderedDict[str, _Channel] = OrderedDict()

    def __len__(self) -> int:
        return len(self._channels)

    @contextlib.contextmanager
    def stub(self, address: str, stub_cls: type) -> Iterator[Any]:
        """A stub of `stub_cls` on the channel to `address`, held open while in use."""
        with self._lock:
            entry = self._channels.get(address)
            if entry is None:
                entry = _Channel(tls.channel(address, options=CHANNEL_OPTIONS))
                self._channels[address] = entry
            self._channels.move_to_end(address)
            entry.users += 1
            stub = entry.stubs.get(stub_cls)
            if stub is None:
                stub = entry.stubs[stub_cls] = stub_cls(entry.channel)
            idle = self._evict_locked()
        for old in idle:
            old.channel.close()
        try:
            yield stub
        finally:
            with self._lock:
                entry.users -= 1
                close_now = entry.evicted and entry.users == 0
            if close_now:
                entry.channel.close()

    def _evict_locked(self) -> list[_Channel]:
        idle = []
        while len(self._channels) > self.channels_max:
            _, old = self._channels.popitem(last=False)
            old.evicted = True
            if old.users == 0:
                idle.append(old)
        return idle

    def close_all(self) -> None:
        with self._lock:
            entries = list(self._channels.values())
            self._channels.clear()
        for entry in entries:
            entry.evicted = True
            if entry.users == 0:
                entry.channel.close()


CHANNELS = ChannelPool(CHANNELS_MAX)


def _topology_of(address: str) -> pb.Topology:
    with CHANNELS.stub(address, pb_grpc.TopologyServiceStub) as stub:
        return stub.GetTopology(pb.GetTopologyRequest(), timeout=TOPOLOGY_TIMEOUT_S)


# -- the topology, shared by the connections to the same seeds -------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    epoch: int
    writer: str  # where clients reach the writer
    writer_name: str
    readers: tuple[str, ...]  # where clients reach the live readers, by name
    at_s: float  # time.monotonic() of the answer


def route_of(newest: pb.Topology, answers: Sequence[pb.Topology], at_s: float) -> Route:
    """The route `newest` gives, with the readers that any answer of its epoch lists (one
    instance may not have heard of every other)."""
    writer = newest.writer_client_address or newest.writer_address
    views: dict[str, pb.InstanceView] = {}
    for answer in answers:
        if answer.epoch != newest.epoch or answer.writer_name != newest.writer_name:
            continue
        for view in answer.instances:
            known = views.get(view.name)
            if known is None or view.seen_s_ago < known.seen_s_ago:
                views[view.name] = view
    readers = tuple(
        v.client_address or v.address
        for _, v in sorted(views.items())
        if v.role == "reader" and v.name != newest.writer_name and (v.client_address or v.address)
    )
    if not newest.writer_client_address and newest.writer_name in views:
        writer = views[newest.writer_name].client_address or writer  # e.g. a published port
    return Route(newest.epoch, writer, newest.writer_name, readers, at_s)


class Directory:
    """The newest topology known from one list of seeds, and the readers' rotation.

    One refresh at a time: connections that fail together wait for one answer instead of
    each asking every endpoint (a storm of GetTopology calls at the moment of a failover).
    """

    def __init__(self, seeds: tuple[str, ...]) -> None:
        self.seeds = seeds
        self.route: Route | None = None
        self._lock = threading.Lock()
        self._learned: OrderedDict[str, None] = OrderedDict()  # instance addresses seen
        self._turn = itertools.count(random.randrange(1 << 16))
        self._skip_until: dict[str, float] = {}
        # The newest commit LSN (or writer read point) any connection got from a writer: a
        # read sent to "the writer" that answers from an older snapshot was served by an
        # instance that is not the writer yet (the topology named it as it took over).
        self.writer_lsn_seen = 0

    def saw_writer_lsn(self, lsn: int) -> None:
        self.writer_lsn_seen = max(self.writer_lsn_seen, lsn)

    def offer(self, topology: pb.Topology) -> None:
        """An answer got elsewhere (the first probe of a seed): kept if no older than ours."""
        with self._lock:
            self._learn(topology)  # the instances it has seen: asked next, writer or not
            if not topology.writer_address:
                return
            route = self.route
            stale = route is None or time.monotonic() - route.at_s > TOPOLOGY_TTL_S
            if stale or topology.epoch >= route.epoch:
                self.route = route_of(topology, [topology], time.monotonic())

    def current(self, newer_than_s: float) -> Route:
        """The route, asked again unless it was answered after `newer_than_s` (monotonic)."""
        route = self.route
        if route is not None and route.at_s > newer_than_s:
            return route
        with self._lock:
            route = self.route
            if route is not None and route.at_s > newer_than_s:
                return route  # another connection refreshed it while this one waited
            self.route = self._ask()
            return self.route

    def mark_stale(self) -> None:
        """The writer failed in a way not retried here: the next call asks again."""
        route = self.route
        if route is not None:
            self.route = dataclasses.replace(route, at_s=-math.inf)

    def _endpoints(self) -> list[str]:
        """Whom to ask: instances first (each answers with the newest epoch it hears), the
        writer last (when it failed it is the least likely to answer), then the seeds."""
        writer = self.route.writer if self.route else ""
        learned = [a for a in self._learned if a != writer]
        ordered = learned + ([writer] if writer else []) + list(self.seeds)
        return list(dict.fromkeys(ordered))

    def _ask(self) -> Route:
        answers: list[pb.Topology] = []
        failures: list[str] = []
        for address in self._endpoints():
            try:
                answer = _topology_of(address)
            except grpc.RpcError as err:
                failures.append(_describe(address, err))
                self._learned.pop(address, None)  # learned again when an answer lists it
                continue
            # A node not yet sealed by the writer names none, but may list the instances
            # it has seen: they are asked next time.
            self._learn(answer)
            if answer.writer_address:
                answers.append(answer)
                if len(answers) >= TOPOLOGY_ANSWERS_MAX:
                    break
        if not answers:
            why = "; ".join(failures) if failures else "no writer has recovered yet"
            raise NoTopologyError(f"no writer found from {','.join(self.seeds)}: {why}")
        return route_of(newest_answer(answers), answers, time.monotonic())

    def _learn(self, topology: pb.Topology) -> None:
        for view in topology.instances:
            address = view.client_address or view.address
            if address:
                self._learned[address] = None
                self._learned.move_to_end(address)
        while len(self._learned) > ENDPOINTS_MAX:
            self._learned.popitem(last=False)

    def readers_in_turn(self) -> list[str]:
        """The live readers, starting with the next one in the rotation."""
        route = self.route
        if route is None or not route.readers:
            return []
        now = time.monotonic()
        readers = [r for r in route.readers if self._skip_until.get(r, 0.0) <= now]
        if not readers:
            return []
        start = next(self._turn) % len(readers)
        return readers[start:] + readers[:start]

    def skip_reader(self, address: str) -> None:
        self._skip_until[address] = time.monotonic() + READER_SKIP_S


_DIRECTORIES: OrderedDict[tuple[str, ...], Directory] = OrderedDict()
_DIRECTORIES_LOCK = threading.Lock()


def directory_for(seeds: tuple[str, ...]) -> Directory:
    with _DIRECTORIES_LOCK:
        directory = _DIRECTORIES.get(seeds)
        if directory is None:
            directory = _DIRECTORIES[seeds] = Directory(seeds)
        _DIRECTORIES.move_to_end(seeds)
        while len(_DIRECTORIES) > DIRECTORIES_MAX:
            _DIRECTORIES.popitem(last=False)
        return directory


# -- no seeds given: the local cluster ------------------------------------------------------


def local_seeds() -> list[str]:
    """Where the local cluster answers: the process cluster in $SIXFOLD_DIR or ./.sixfold
    while any of its processes runs, else (or with SIXFOLD_COMPOSE=1) the compose cluster's
    ports, which are also the process cluster's defaults. Storage nodes first: they answer
    for the topology whichever instance is the writer."""
    from sixfold import cluster, targets  # only here: a connection with seeds needs neither

    directory = Path(os.environ.get("SIXFOLD_DIR") or cluster.DEFAULT_DIR)
    try:
        if not targets.use_compose(False):
            with contextlib.suppress(cluster.NoClusterError):
                layout = cluster.ClusterLayout.load(directory)
                if any(cluster.is_running(info) for info in layout.processes.values()):
                    return [layout.processes[name].address for name in cluster.ALL_NAMES]
        return [f"{cluster.HOST}:{targets.compose_port(name)}" for name in cluster.ALL_NAMES]
    except errors.SixfoldError as exc:  # a bad SIXFOLD_<NAME>_PORT, an unreadable layout
        raise InterfaceError(f"cannot find the local cluster: {exc}") from None
