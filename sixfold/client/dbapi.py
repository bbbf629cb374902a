"""A DB-API 2.0 (PEP 249) client for SQLite on sixfold, over gRPC (the `Sql` service).

    import sixfold
    conn = sixfold.connect("127.0.0.1:7101")        # any seed: a storage node, an instance
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO t (name) VALUES (?)", ("ada",))   # opens a transaction
    conn.commit()                                                # answers once durable
    print(conn.execute("SELECT * FROM t").fetchall())
    conn.execute("SELECT count(*) FROM t", read_only=True)      # served by a reader

Finding the cluster (issue 6). `connect(seeds)` takes one address or a comma-separated list
(a storage node, the writer, a reader). On the first statement the connection asks the seeds
for the topology (TopologyService.GetTopology; among the answers naming a writer, the newest
epoch wins) and from then on:

- writes, transactions and unmarked statements go to the current writer;
- statements marked read-only go to a live reader, chosen per statement in turn (round robin
  over the readers the topology lists, shared by the process's connections to the same
  seeds), so a connection's reads spread over every reader. Mark one statement with
  `cursor.execute(sql, params, read_only=True)`, or make it the connection's default with
  `connect(..., read_only=True)` (then `read_only=False` sends one statement to the writer).
  A reader refuses writes (ReadOnlyError). A read-only statement inside an open transaction
  is a ProgrammingError (the transaction's reads must see its own writes, on the writer).
  Readers lag the writer a little: a reader whose snapshot is older than this connection's
  last commit is not used for that statement (it runs on the writer, so a connection reads
  its own writes); with no reader answering, read statements run on the writer.
  `cursor.endpoint` says which address served the statement.
- A single seed that is a reader keeps the connection on that reader, as before: everything
  runs there at its own read point, no transactions, writes raise ReadOnlyError. (Give a
  storage node, the writer or several seeds to have writes routed.) So does a single seed
  that serves no topology.

Failover. When the writer stops answering (connection refused, the connection lost) or
answers that it is not the writer (it stepped down, is handing the role over in a
switchover, or was fenced), the connection asks the topology again, with jittered
exponential backoff, for at most FAILOVER_WAIT_S in all (or the connection's timeout, if
shorter), and goes on with the new writer. The application does not reconnect. What is
retried is only what is safe to retry:

- a standalone read, and a Begin (nothing was written);
- a statement that was never sent (the connection to the writer could not be made) or that
  the old writer refused before running it (not the writer, a reader's read-only refusal).

Otherwise one of two documented errors, both OperationalError subclasses:

- TransactionOutcomeUnknownError: a commit (commit(), or a write run on its own) was sent
  and its answer was lost, or the writer was fenced while committing. It may or may not have
  taken effect, never half: read the data back before retrying.
- TransactionAbortedError: the open transaction died before its commit was sent (its writer
  stopped, stepped down, or rolled it back as idle). Nothing of it was committed: run the
  whole transaction again, from its first statement.

Connection storms are kept down: gRPC channels come from one process-wide pool keyed by
address (CHANNELS_MAX, the least recently used closed beyond it), connections to the same
seeds share one topology and refresh it one at a time, and every retry waits a jittered,
growing delay (BACKOFF_S_FIRST up to BACKOFF_S_MAX).

Transactions behave like Python's sqlite3 module with its default isolation: an INSERT,
UPDATE, DELETE or REPLACE (or executemany), when no transaction is open, opens one (a server
session) and every statement after it runs inside it until commit() or rollback(); other
statements outside a transaction (SELECT, CREATE ...) run on their own, each one committed
(writer) or read at one snapshot (reader) before execute() returns. BEGIN, COMMIT/END and
ROLLBACK sent through execute() open and end the session too. With autocommit=True every
statement runs on its own unless the application sends BEGIN.

Differences from sqlite3 the application should know:

- While a transaction is open, other writes on the writer wait: commit or roll back soon.
  A transaction idle for more than 10 s is rolled back by the server; its next statement
  then raises TransactionAbortedError.
- A statement that fails inside a transaction rolls the whole transaction back (SQLite's
  message is kept; the connection stays usable and the next write opens a new transaction).
- A connection to a reader has no transactions (its Begin is refused): each statement runs
  at its own read point, commit() and rollback() do nothing, writes raise ReadOnlyError.
- A commit whose outcome cannot be known (the write quorum was lost after it was sent, or
  the writer stopped answering) raises TransactionOutcomeUnknownError: it may or may not
  have taken effect. Check (read it back) before retrying.
- Values are SQLite's five types: None, int (64-bit), float, str, bytes. No adapters or
  converters, and only positional `?` parameters (paramstyle "qmark").
- `with conn:` commits on success and rolls back on an exception, like sqlite3; it does not
  close the connection (`contextlib.closing(conn)` does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import queue
import random
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from sixfold import sqlvalues
from sixfold.client.discovery import newest_answer
from sixfold.clients import CHANNEL_OPTIONS
from sixfold.core import errors
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.wire import ERROR_KEY, FIELDS_KEY, error_from_rpc

apilevel = "2.0"
threadsafety = 1  # threads may share the module, not a connection
paramstyle = "qmark"

TIMEOUT_S_DEFAULT = 30.0
ROLLBACK_TIMEOUT_S = 2.0  # a best-effort rollback after a failure must not hold things up
ROLE_PROBE_TIMEOUT_S = 5.0
FAILOVER_WAIT_S = 15.0  # longest a call waits, in all, for a (new) writer to answer
BACKOFF_S_FIRST = 0.05  # the first wait before asking the topology again
BACKOFF_S_MAX = 1.0  # the waits double up to this, each one jittered
TOPOLOGY_TIMEOUT_S = 2.0  # one GetTopology call
TOPOLOGY_TTL_S = 5.0  # a topology older than this is asked again before routing a read
TOPOLOGY_ANSWERS_MAX = 3  # answers naming a writer gathered before taking the newest epoch
ENDPOINTS_MAX = 16  # instance addresses a topology remembers (besides the seeds) to ask later
READER_SKIP_S = 2.0  # a reader that did not answer is left out of the rotation this long
# Execute goes over one stream per connection and address (Sql/ExecuteStream); False: a
# unary call each, as against servers from before the stream (their UNIMPLEMENTED says so).
STREAMING = True
CHANNELS_MAX = 32  # gRPC channels open in this process; the least recently used closed beyond
DIRECTORIES_MAX = 64  # seed lists whose shared topology this process keeps
SEEDS_MAX = 16


# -- PEP 249 exceptions ---------------------------------------------------------------------


class Warning(Exception):  # the name PEP 249 gives it, shadowing the builtin here
    """Important warnings (PEP 249). sixfold raises none."""


class Error(Exception):
    """Base of every error this module raises.

    `sixfold_error` holds the server's named exception (a sixfold.core.errors.SixfoldError) when
    there was one; the message is the server's text, with what it means for the
    transaction added where that matters.
    """

    sixfold_error: Exception | None = None


class InterfaceError(Error):
    """The client was misused: a closed connection or cursor, a malformed request."""


class DatabaseError(Error):
    """An error reported by, or about, the database."""


class DataError(DatabaseError):
    """A value the database cannot hold (an integer outside 64 bits, a value too big)."""


class OperationalError(DatabaseError):
    """The database could not do it: no such table, the endpoint or a quorum unreachable."""


class IntegrityError(DatabaseError):
    """A constraint failed (UNIQUE, NOT NULL, CHECK, FOREIGN KEY): the transaction was
    rolled back."""


class InternalError(DatabaseError):
    """The server failed in a way it did not expect."""


class ProgrammingError(DatabaseError):
    """The statement is wrong: a syntax error, wrong number of parameters, a closed cursor."""


class NotSupportedError(DatabaseError):
    """Something sixfold does not do (named parameters, transactions on a reader)."""


class ReadOnlyError(OperationalError):
    """A write was sent to a reader: only the writer changes the database."""


class TransactionOutcomeUnknownError(OperationalError):
    """A commit was sent but its outcome is unknown: it may or may not have taken effect.

    Raised when the write quorum was lost after the commit was sent (it becomes durable,
    whole, if a fourth storage node returns, or is truncated by the next recovery), when the
    commit timed out, or when the writer stopped answering mid-commit. Never half applied:
    read the data back to learn whether it took effect, and only then retry.
    """


class TransactionAbortedError(OperationalError):
    """The open transaction died before its commit was sent: nothing of it was committed.

    Its writer stopped answering, stepped down (a failover or a switchover), or rolled the
    transaction back (idle too long, or its session is otherwise gone). The connection stays
    usable and follows the new writer: run the whole transaction again.
    """


__all__ = [
    "Connection",
    "Cursor",
    "DataError",
    "DatabaseError",
    "Error",
    "IntegrityError",
    "InterfaceError",
    "InternalError",
    "NotSupportedError",
    "OperationalError",
    "ProgrammingError",
    "ReadOnlyError",
    "TransactionAbortedError",
    "TransactionOutcomeUnknownError",
    "Warning",
    "apilevel",
    "connect",
    "paramstyle",
    "threadsafety",
]


# -- statement classification ---------------------------------------------------------------

_LEADING_NOISE = re.compile(r"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?(?:\*/|$))*", re.DOTALL)
_FIRST_WORD = re.compile(r"[A-Za-z]+")
DML_KEYWORDS = frozenset({"INSERT", "UPDATE", "DELETE", "REPLACE"})
READ_KEYWORDS = frozenset({"SELECT", "VALUES", "EXPLAIN"})
_TRANSACTION_CONTROL = re.compile(
    r"(?P<verb>BEGIN(?:\s+(?:DEFERRED|IMMEDIATE|EXCLUSIVE))?|COMMIT|END|ROLLBACK)"
    r"(?:\s+TRANSACTION)?\s*;?\s*$",
    re.IGNORECASE,
)


def first_keyword(sql: str) -> str:
    """The statement's first keyword, upper case, after whitespace and comments ('' if none).

    Like sqlite3, only this word decides whether a statement opens a transaction.
    """
    match = _FIRST_WORD.match(sql, _LEADING_NOISE.match(sql).end())
    return match.group(0).upper() if match else ""


def transaction_control(sql: str) -> str | None:
    """'BEGIN', 'COMMIT' or 'ROLLBACK' when `sql` is that one statement alone, else None.

    `ROLLBACK TO savepoint` is not one: it runs inside the session like any statement.
    """
    match = _TRANSACTION_CONTROL.match(sql, _LEADING_NOISE.match(sql).end())
    if match is None:
        return None
    verb = match.group("verb").split()[0].upper()
    return "COMMIT" if verb == "END" else verb


# -- errors from the server -----------------------------------------------------------------

_INTEGRITY = ("constraint failed", "datatype mismatch")
_PROGRAMMING = ("syntax error", "incomplete input", "unrecognized token", "binding", "parameter")
_DATA = ("too big", "string or blob too big", "integer overflow")
_CHECK_HINT = "read the data back before retrying"
_OUTCOME_UNKNOWN_HINT = (
    "the transaction's outcome is unknown: it may or may not have taken effect; "
    "read the data back before retrying"
)


def _sql_error_class(message: str) -> type[DatabaseError]:
    """The PEP 249 class of SQLite's message, as sqlite3 would choose it where it can."""
    lowered = message.lower()
    if any(s in lowered for s in _INTEGRITY):
        return IntegrityError
    if any(s in lowered for s in _PROGRAMMING):
        return ProgrammingError
    if any(s in lowered for s in _DATA):
        return DataError
    return OperationalError  # no such table / column, already exists, ...


def _with_cause(cls: type[Error], message: str, cause: Exception | None) -> Error:
    exc = cls(message)
    exc.sixfold_error = cause if isinstance(cause, errors.SixfoldError) else None
    return exc


def translate_error(exc: Exception, *, commit: bool, endpoint: str) -> Error:
    """The PEP 249 exception for a failed call.

    `commit`: the call could have committed a transaction (End(commit=True), or a write run
    on its own), so a failure that leaves its outcome open is TransactionOutcomeUnknownError.
    """
    if isinstance(exc, grpc.RpcError):
        named = error_from_rpc(exc)
        if named is exc:
            return _transport_error(exc, commit=commit, endpoint=endpoint)
        exc = named
    message = str(exc)
    if isinstance(exc, errors.SqlLimitError | errors.BusyError):
        return _with_cause(OperationalError, message, exc)
    if isinstance(exc, errors.SqlError):
        return _with_cause(_sql_error_class(message), message, exc)
    if isinstance(exc, sqlvalues.SqlValueError):
        cls = DataError if exc.out_of_range else ProgrammingError
        return _with_cause(cls, message, exc)
    if isinstance(exc, errors.ReadOnlyError):
        return _with_cause(ReadOnlyError, message, exc)
    if isinstance(exc, errors.SessionError):
        return _with_cause(
            TransactionAbortedError, f"{message}; the transaction was rolled back", exc
        )
    fenced = isinstance(exc, errors.WriterFencedError)  # what it had sent may or may not stay
    outcome_unknown = fenced or getattr(exc, "outcome_unknown", False)
    if commit and outcome_unknown:
        # A fenced writer's message does not say the outcome is unknown; the others' do.
        hint = _OUTCOME_UNKNOWN_HINT if fenced else _CHECK_HINT
        return _with_cause(TransactionOutcomeUnknownError, f"{message}; {hint}", exc)
    if isinstance(exc, errors.InvalidRequestError):
        return _with_cause(InterfaceError, message, exc)
    return _with_cause(OperationalError, message, exc)


def _transport_error(err: grpc.RpcError, *, commit: bool, endpoint: str) -> Error:
    code = err.code()
    details = err.details() or ""
    text = f"{endpoint}: {code.name}: {details}"
    if code == grpc.StatusCode.UNIMPLEMENTED:
        return NotSupportedError(f"{text} (the endpoint does not serve the Sql service)")
    never_sent = code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in details.lower()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        if commit and not never_sent:
            return TransactionOutcomeUnknownError(f"{text}; {_OUTCOME_UNKNOWN_HINT}")
        return OperationalError(text)
    if code in (grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED):
        return OperationalError(text)  # e.g. a result larger than the message bound
    return InternalError(text)


# -- failover: what a failed call means ------------------------------------------------------

NEVER_SENT = "never sent"  # the connection could not be made: the call did not leave
REFUSED = "refused"  # the instance is not the writer: it refused before running anything
LOST = "lost"  # sent, and the connection died: it may have run
FENCED = "fenced"  # the writer was superseded: what it was committing may or may not stay


def failover_kind(err: grpc.RpcError) -> str | None:
    """Why a call to the writer failed, when the reason is that it is no longer the writer
    (or not reachable): NEVER_SENT, REFUSED, LOST or FENCED. None for any other failure."""
    named = error_from_rpc(err)
    if named is err:
        if err.code() != grpc.StatusCode.UNAVAILABLE:
            return None
        return NEVER_SENT if "failed to connect" in (err.details() or "").lower() else LOST
    if isinstance(named, errors.NotWriterError | errors.ReadOnlyError | errors.RecoveryError):
        return REFUSED  # a stepped-down writer answers as a reader; a new one may be recovering
    if isinstance(named, errors.SessionError) and getattr(named, "on_reader", False):
        return REFUSED
    if isinstance(named, errors.WriterFencedError):
        return FENCED
    return None


def retry_safe(kind: str, failure: str) -> bool:
    """May a call of `kind` ("read", "begin" or "commit") be sent again after `failure`?

    A read or a Begin changes nothing, so always. A commit (End(commit) or a write run on
    its own) only when it certainly did not run: never sent, or refused before running.
    """
    return kind != "commit" or failure in (NEVER_SENT, REFUSED)


def backoff_s(attempt: int) -> float:
    """Jittered exponential backoff: half the doubled delay, plus up to as much at random."""
    delay = min(BACKOFF_S_MAX, BACKOFF_S_FIRST * 2 ** min(attempt, 16))
    return delay / 2 + random.uniform(0, delay / 2)


def _describe(address: str, err: grpc.RpcError) -> str:
    return f"{address}: {err.code().name}: {err.details() or ''}"


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
                entry = _Channel(grpc.insecure_channel(address, options=CHANNEL_OPTIONS))
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


# -- Execute on one stream per connection and address (issue 11) -----------------------------


class StreamedCallError(grpc.RpcError):
    """A request on an Execute stream that failed: it reads like the unary call's failure
    (code, details, the sixfold-error name), so the failover rules apply unchanged."""

    def __init__(
        self, code: grpc.StatusCode, details: str, name: str = "", fields: str = ""
    ) -> None:
        super().__init__(details)
        self._code, self._details, self._name, self._fields = code, details, name, fields

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        if not self._name:
            return ()
        return ((ERROR_KEY, self._name), (FIELDS_KEY, self._fields))


_STATUS_BY_NAME = {code.name: code for code in grpc.StatusCode}
_STREAM_ENDED = object()  # what the answer reader queues when the stream ends


class ExecuteStream:
    """Sql/ExecuteStream to one address: one message each way per request instead of a call
    (the server spends half the CPU on it). Requests go one at a time, as a connection is
    not shared between threads; a thread of its own reads the answers, so a silent server
    meets the request's deadline. A stream that broke is not reused: its next request opens
    a new one, so a failure is never blamed on a request it could not have reached."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._ids = itertools.count(1)
        self._requests: queue.SimpleQueue[pb.ExecuteStreamRequest | None] = queue.SimpleQueue()
        self._answers: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._hold = contextlib.ExitStack()  # the pooled channel stays open while streaming
        stub = self._hold.enter_context(CHANNELS.stub(address, pb_grpc.SqlStub))
        self._call = stub.ExecuteStream(iter(self._requests.get, None))
        self._reader = threading.Thread(
            target=self._read, name=f"sixfold-stream-{address}", daemon=True
        )
        self._reader.start()

    @property
    def usable(self) -> bool:
        return self._reader.is_alive() and self._answers.empty()

    def _read(self) -> None:
        try:
            for answer in self._call:
                self._answers.put(answer)
        except grpc.RpcError as err:
            self._answers.put(err)
        else:
            self._answers.put(_STREAM_ENDED)

    def execute(self, request: pb.ExecuteRequest, timeout: float) -> pb.ExecuteResponse:
        request_id = next(self._ids)
        self._requests.put(
            pb.ExecuteStreamRequest(id=request_id, request=request, timeout_s=timeout)
        )
        try:
            answer = self._answers.get(timeout=timeout)
        except queue.Empty:
            self.close()
            raise StreamedCallError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded (on the Execute stream)"
            ) from None
        if isinstance(answer, grpc.RpcError):
            raise answer
        if answer is _STREAM_ENDED:
            raise StreamedCallError(grpc.StatusCode.UNAVAILABLE, "the Execute stream ended")
        assert answer.id == request_id, (answer.id, request_id)  # one request at a time
        if answer.error_code:
            code = _STATUS_BY_NAME.get(answer.error_code, grpc.StatusCode.UNKNOWN)
            raise StreamedCallError(
                code, answer.error_message, answer.error_name, answer.error_fields
            )
        return answer.response

    def close(self) -> None:
        self._requests.put(None)  # the request side ends; the server finishes the stream
        self._call.cancel()
        self._hold.close()


def _close_streams(streams: dict[str, ExecuteStream]) -> None:
    for stream in streams.values():
        stream.close()
    streams.clear()


def _topology_of(address: str) -> pb.Topology:
    with CHANNELS.stub(address, pb_grpc.TopologyServiceStub) as stub:
        return stub.GetTopology(pb.GetTopologyRequest(), timeout=TOPOLOGY_TIMEOUT_S)


# -- the topology, shared by the connections to the same seeds -------------------------------


class NoTopologyError(OperationalError):
    """No seed or known instance answered with a writer."""


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
        if not topology.writer_address:
            return
        with self._lock:
            self._learn(topology)
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
            if answer.writer_address:
                answers.append(answer)
                if len(answers) >= TOPOLOGY_ANSWERS_MAX:
                    break
        if not answers:
            why = "; ".join(failures) if failures else "no writer has recovered yet"
            raise NoTopologyError(f"no writer found from {','.join(self.seeds)}: {why}")
        for answer in answers:
            self._learn(answer)
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


# -- connection and cursor ------------------------------------------------------------------


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


def connect(
    seeds: str | Sequence[str] | None = None,
    *,
    timeout: float = TIMEOUT_S_DEFAULT,
    autocommit: bool = False,
    read_only: bool = False,
) -> Connection:
    """A connection to the cluster that `seeds` ("host:port", or several, comma-separated)
    belong to: storage nodes or instances. A single reader's address is a connection to
    that reader alone. No seeds: the local cluster (`local_seeds`).

    `timeout` is the deadline in seconds of every call (a statement, a commit); a failover
    waits at most FAILOVER_WAIT_S or `timeout`, whichever is shorter. `read_only`: the
    default of `execute(..., read_only=)`, whether a statement goes to a reader. Nothing is
    sent until the first statement, so an unreachable seed shows up there.
    """
    if seeds is None:
        seeds = local_seeds()
    return Connection(seeds, timeout=timeout, autocommit=autocommit, read_only=read_only)


PINNED = "pinned"  # everything to one address: a reader seed, or a server with no topology
ROUTED = "routed"  # writes to the writer the topology names, marked reads to readers


class Connection:
    """One client of the cluster (or of one reader); not to be shared between threads."""

    Warning = Warning
    Error = Error
    InterfaceError = InterfaceError
    DatabaseError = DatabaseError
    DataError = DataError
    OperationalError = OperationalError
    IntegrityError = IntegrityError
    InternalError = InternalError
    ProgrammingError = ProgrammingError
    NotSupportedError = NotSupportedError

    def __init__(
        self,
        seeds: str | Sequence[str],
        *,
        timeout: float,
        autocommit: bool,
        read_only: bool = False,
    ) -> None:
        assert timeout > 0, timeout
        self.seeds = parse_seeds(seeds)
        self.address = ",".join(self.seeds)
        self.timeout = timeout
        self._autocommit = bool(autocommit)
        self._read_only_default = bool(read_only)
        self._directory = directory_for(self.seeds)
        self._mode = ""  # PINNED or ROUTED once the first statement found out
        self._closed = False
        self._session = ""  # the open transaction's server session, "" when none
        self._session_address = ""  # the writer that holds it
        self.last_commit_lsn = 0  # durable LSN of the last commit through this connection
        self._streams: dict[str, ExecuteStream] = {}  # Execute streams by address
        # A connection dropped without close() still ends its streams (and their threads).
        weakref.finalize(self, _close_streams, self._streams)

    # -- state

    @property
    def in_transaction(self) -> bool:
        return bool(self._session)

    @property
    def autocommit(self) -> bool:
        return self._autocommit

    @autocommit.setter
    def autocommit(self, value: bool) -> None:
        if value and self._session:
            self.commit()  # sqlite3 commits a pending transaction on the switch too
        self._autocommit = bool(value)

    @property
    def read_only(self) -> bool:
        """True when statements go to a reader unless marked otherwise: a connection opened
        with read_only=True, or one kept on a reader. For the latter it is asked each time,
        since roles change (a reader promoted to writer)."""
        self._check_open()
        self._find_mode()
        if self._mode == ROUTED:
            return self._read_only_default
        try:
            with CHANNELS.stub(self.seeds[0], pb_grpc.TopologyServiceStub) as stub:
                topology = stub.GetTopology(pb.GetTopologyRequest(), timeout=ROLE_PROBE_TIMEOUT_S)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                return False  # no topology service: a plain writer
            raise translate_error(err, commit=False, endpoint=self.address) from None
        return _answers_as_reader(topology)

    @property
    def writer_address(self) -> str:
        """Where this connection sends writes now ("" before the first statement)."""
        if self._mode == PINNED:
            return self.seeds[0]
        route = self._directory.route
        return route.writer if route else ""

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed database.")

    # -- PEP 249

    def cursor(self) -> Cursor:
        self._check_open()
        return Cursor(self)

    def commit(self) -> None:
        """Commit the open transaction; returns once it is durable. No-op when none is open.

        TransactionOutcomeUnknownError: the answer was lost (check before retrying);
        TransactionAbortedError: the transaction died first (nothing of it committed).
        """
        self._check_open()
        if not self._session:
            return
        request = pb.EndRequest(session=self._session, commit=True)
        response = self._session_call("End", request, commit=True, forget=True)
        self.last_commit_lsn = response.commit_lsn or self.last_commit_lsn
        self._directory.saw_writer_lsn(response.commit_lsn)

    def rollback(self) -> None:
        """Roll back the open transaction. No-op when none is open."""
        self._check_open()
        if not self._session:
            return
        request = pb.EndRequest(session=self._session, commit=False)
        # The session gone (expired, ended by an error, its writer stopped): its transaction
        # is rolled back all the same.
        with contextlib.suppress(TransactionAbortedError):
            self._session_call("End", request, commit=False, forget=True)

    def close(self) -> None:
        """Roll back an open transaction (best effort). The channels stay in the pool."""
        if self._closed:
            return
        self._abandon_session()
        self._closed = True
        _close_streams(self._streams)

    def __enter__(self) -> Connection:
        self._check_open()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    # -- sqlite3 conveniences

    def execute(
        self, sql: str, parameters: Sequence[Any] = (), *, read_only: bool | None = None
    ) -> Cursor:
        return self.cursor().execute(sql, parameters, read_only=read_only)

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]]) -> Cursor:
        return self.cursor().executemany(sql, seq_of_parameters)

    def executescript(self, sql_script: str) -> Cursor:
        """Commit an open transaction, then run the `;`-separated script as one Execute
        (on the writer)."""
        self.commit()
        cursor = self.cursor()
        cursor._run(sql_script, pb.SqlStatement(sql=sql_script), dml=False, force_standalone=True)
        return cursor

    # -- finding the cluster

    def _failover_wait_s(self) -> float:
        return min(FAILOVER_WAIT_S, self.timeout)

    def _find_mode(self) -> None:
        """On first use: a single seed that is a reader (or serves no topology) keeps the
        connection on it; anything else routes through the topology."""
        if self._mode:
            return
        if len(self.seeds) > 1:
            self._mode = ROUTED
            return
        seed = self.seeds[0]
        deadline = time.monotonic() + self._failover_wait_s()
        for attempt in itertools.count():
            try:
                topology = _topology_of(seed)
                break
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                    self._mode = PINNED
                    return
                if failover_kind(err) is None:
                    raise translate_error(err, commit=False, endpoint=seed) from None
                if time.monotonic() + backoff_s(attempt) >= deadline:
                    raise OperationalError(_describe(seed, err)) from None
                time.sleep(backoff_s(attempt))
        if _answers_as_reader(topology) or not topology.writer_address:
            self._mode = PINNED
            return
        self._directory.offer(topology)
        self._mode = ROUTED

    # -- calls

    def _invoke(self, address: str, method: str, request: Any, timeout: float = 0.0) -> Any:
        if method == "Execute" and STREAMING:
            return self._stream_to(address).execute(request, timeout or self.timeout)
        with CHANNELS.stub(address, pb_grpc.SqlStub) as stub:
            return getattr(stub, method)(request, timeout=timeout or self.timeout)

    def _stream_to(self, address: str) -> ExecuteStream:
        """This connection's Execute stream to `address`: the open one, or a new one when
        that one broke (or was never opened)."""
        stream = self._streams.get(address)
        if stream is None or not stream.usable:
            if stream is not None:
                stream.close()
            stream = self._streams[address] = ExecuteStream(address)
        return stream

    def _writer_call(self, method: str, request: Any, kind: str) -> tuple[Any, str]:
        """Call the writer, following a failover: (the answer, the address that gave it).

        `kind` ("read", "begin" or "commit") decides what may be sent again (retry_safe).
        """
        self._check_open()
        self._find_mode()
        commit = kind == "commit"
        if self._mode == PINNED:
            address = self.seeds[0]
            try:
                return self._invoke(address, method, request), address
            except grpc.RpcError as err:
                raise translate_error(err, commit=commit, endpoint=address) from None
        if isinstance(request, pb.ExecuteRequest | pb.BeginRequest):
            # An instance that is not the writer (any more, or yet) must refuse, not answer
            # as a reader: NotWriterError sends this client to the topology again.
            request.writer_only = True
        deadline = time.monotonic() + self._failover_wait_s()
        newer_than_s = -math.inf  # the route is good as it is until a call fails
        last = ""
        for attempt in itertools.count():
            try:
                address = self._directory.current(newer_than_s).writer
            except NoTopologyError as exc:
                address, last = "", str(exc)
            if address:
                try:
                    response = self._invoke(address, method, request)
                except grpc.RpcError as err:
                    failure = failover_kind(err)
                    if failure is None or not retry_safe(kind, failure):
                        raise self._writer_error(err, commit, address, failure) from None
                    last = _describe(address, err)
                else:
                    if not self._stale_writer_answer(method, response):
                        return response, address
                    last = f"{address}: answered from an older snapshot: not the writer yet"
            newer_than_s = time.monotonic()  # a refresh by another connection since will do
            pause_s = backoff_s(attempt)
            if newer_than_s + pause_s >= deadline:
                raise OperationalError(
                    f"no writer answered within {self._failover_wait_s():g} s "
                    f"(FAILOVER_WAIT_S): {last}"
                )
            time.sleep(pause_s)
        raise AssertionError("unreachable")

    def _stale_writer_answer(self, method: str, response: Any) -> bool:
        """True when an Execute answered "by the writer" read an older snapshot than some
        commit already acknowledged: a reader served it, so it wrote nothing and is safe
        to send again. (The writer answers reads at or above its VDL, and acknowledges a
        commit only once VDL has passed it.)"""
        if method != "Execute" or response.commit_lsn:
            return False  # a commit's answer comes from the writer: readers write nothing
        directory = self._directory
        if response.read_point < max(directory.writer_lsn_seen, self.last_commit_lsn):
            return True
        directory.saw_writer_lsn(max(response.commit_lsn, response.read_point))
        return False

    def _writer_error(
        self, err: grpc.RpcError, commit: bool, address: str, failure: str | None
    ) -> Error:
        if failure is not None:
            self._directory.mark_stale()  # the next call asks who the writer is
        if failure == FENCED and commit:
            return TransactionOutcomeUnknownError(
                f"{address}: {err.details()}; {_OUTCOME_UNKNOWN_HINT}"
            )
        return translate_error(err, commit=commit, endpoint=address)

    def _reader_call(self, request: pb.ExecuteRequest, sql: str) -> tuple[Any, str]:
        """Run a read-only statement on the next live reader (on the writer when none can)."""
        self._check_open()
        self._find_mode()
        if self._mode == PINNED:
            return self._writer_call("Execute", request, "read")
        try:
            self._directory.current(time.monotonic() - TOPOLOGY_TTL_S)
        except NoTopologyError:
            if self._directory.route is None:
                raise
        # Read your writes: a reader behind this connection's last commit waits a moment
        # for it, or refuses (UNAVAILABLE) and the next one is tried.
        request.min_read_point = self.last_commit_lsn
        for address in self._directory.readers_in_turn():
            try:
                response = self._invoke(address, "Execute", request)
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNAVAILABLE:  # down, or no read quorum there
                    self._directory.skip_reader(address)
                    continue
                raise translate_error(err, commit=False, endpoint=address) from None
            if response.read_point >= self.last_commit_lsn:
                return response, address
            break  # the reader has not caught up with this connection's own commit
        if first_keyword(sql) not in READ_KEYWORDS:
            raise OperationalError(
                "no reader could run the statement marked read-only (none answered, or none "
                "had caught up with this connection's last commit); it is not sent to the "
                "writer since it may write"
            )
        return self._writer_call("Execute", request, "read")

    def _session_call(self, method: str, request: Any, *, commit: bool, forget: bool) -> Any:
        """Call the writer that holds the open session. A failure that ends the session's
        transaction before its commit was sent raises TransactionAbortedError.

        `forget`: the call ends the session (End), whatever its outcome.
        """
        self._check_open()
        session, address = self._session, self._session_address
        if forget:
            self._session = self._session_address = ""
        try:
            return self._invoke(address, method, request)
        except grpc.RpcError as err:
            failure = failover_kind(err)
            named = error_from_rpc(err)
            sent_and_lost = commit and failure in (LOST, FENCED)
            if failure is not None and not sent_and_lost:
                self._directory.mark_stale()
                # If the old writer still holds the session (it refused while handing over),
                # free its connection now rather than when the session expires.
                self._session, self._session_address = session, address
                self._abandon_session()
                raise TransactionAbortedError(
                    f"{_describe(address, err)}; the transaction was aborted: its writer "
                    "stopped or stepped down before it committed, and nothing of it was "
                    "committed; run the whole transaction again"
                ) from None
            if isinstance(named, errors.SqlError | errors.SessionError):
                self._session = self._session_address = ""  # the server rolled it back
            elif not forget:
                self._abandon_session()
            raise self._writer_error(err, commit, address, failure) from None

    def _begin(self) -> None:
        assert not self._session
        response, address = self._writer_call("Begin", pb.BeginRequest(), "begin")
        assert response.session, "Begin answered no session"
        self._session, self._session_address = response.session, address

    def _begin_unless_reader(self) -> bool:
        """Open a transaction; False (and none open) when the endpoint is a reader.

        Begin is tried first: a reader refuses it with SessionError, and only then is the
        role asked, so a transaction on the writer costs no extra round trip.
        """
        try:
            self._begin()
            return True
        except OperationalError as exc:
            reader_refused = isinstance(exc.sixfold_error, errors.SessionError)
            if self._mode == PINNED and reader_refused and self.read_only:
                return False  # run on its own: the reader refuses a write, with its message
            raise

    def _abandon_session(self) -> None:
        """Forget the open transaction; tell the server to roll it back if it still can."""
        session, address = self._session, self._session_address
        self._session = self._session_address = ""
        if session:
            # On failure the server rolls the idle session back by itself.
            with contextlib.suppress(grpc.RpcError):
                request = pb.EndRequest(session=session, commit=False)
                self._invoke(address, "End", request, timeout=ROLLBACK_TIMEOUT_S)

    def _execute(
        self, statement: pb.SqlStatement, *, dml: bool, standalone: bool, read_only: bool
    ) -> tuple[pb.ExecuteResponse, str]:
        """Run one statement: in the open transaction, in a new one, on its own on the
        writer, or (read_only) on its own on a reader."""
        if self._session:
            request = pb.ExecuteRequest(statements=[statement], session=self._session)
            address = self._session_address
            return self._session_call("Execute", request, commit=False, forget=False), address
        request = pb.ExecuteRequest(statements=[statement])
        if read_only:
            return self._reader_call(request, statement.sql)
        if dml and not standalone and self._begin_unless_reader():
            return self._execute(statement, dml=dml, standalone=standalone, read_only=False)
        writes_maybe = first_keyword(statement.sql) not in READ_KEYWORDS
        return self._writer_call("Execute", request, "commit" if writes_maybe else "read")

    def _transaction_statement(self, verb: str) -> None:
        """BEGIN, COMMIT or ROLLBACK sent as a statement: SQLite's messages when misplaced."""
        if verb == "BEGIN":
            if self._session:
                raise OperationalError("cannot start a transaction within a transaction")
            if not self._begin_unless_reader():
                raise NotSupportedError(
                    f"{self.address} is a reader: it runs each statement at its own read "
                    "point and has no transactions; BEGIN needs the writer"
                )
            return
        if not self._session:
            action = "commit" if verb == "COMMIT" else "rollback"
            raise OperationalError(f"cannot {action} - no transaction is active")
        if verb == "COMMIT":
            self.commit()
        else:
            self.rollback()


def _answers_as_reader(topology: pb.Topology) -> bool:
    """True when the instance that answered says it is a reader (a node answers as none)."""
    me = [v.role for v in topology.instances if v.name == topology.answered_by]
    return bool(me) and me[0] != "writer"


class Cursor:
    """Runs statements and holds the last one's rows (all fetched at once by the server)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.arraysize = 1
        self.description: tuple[tuple[Any, ...], ...] | None = None
        self.rowcount = -1
        self.lastrowid: int | None = None
        self.rows_changed = 0  # the server's count, also for statements that are not DML
        self.commit_lsn = 0  # a statement run on its own on the writer: its durable LSN
        self.read_point = 0  # the snapshot the statement read
        self.endpoint = ""  # the address that ran the last statement
        self._rows: list[tuple[Any, ...]] = []
        self._next = 0
        self._last_row_id = 0
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise ProgrammingError("Cannot operate on a closed cursor.")
        self.connection._check_open()

    def _reset(self) -> None:
        self.description = None
        self.rowcount = -1
        self.rows_changed = 0
        self.commit_lsn = 0
        self.read_point = 0
        self.endpoint = ""
        self._rows = []
        self._next = 0

    def execute(
        self, sql: str, parameters: Sequence[Any] = (), *, read_only: bool | None = None
    ) -> Cursor:
        """Run `sql`. `read_only` (default: the connection's): run it on a reader, on its
        own; a reader refuses writes. Not allowed inside an open transaction."""
        self._check_open()
        self._reset()
        if not isinstance(sql, str):
            raise ProgrammingError(f"sql must be a str, not {type(sql).__name__}")
        conn = self.connection
        if read_only and conn.in_transaction:
            raise ProgrammingError(
                "read_only=True inside an open transaction: its statements run on the writer, "
                "in the transaction; commit or roll back first"
            )
        verb = transaction_control(sql)
        if verb is not None and not parameters:
            if verb == "BEGIN" and read_only is not False and conn._read_only_default:
                raise NotSupportedError(
                    "a read-only connection has no transactions: execute BEGIN with "
                    "read_only=False to open one on the writer"
                )
            conn._transaction_statement(verb)
            return self
        statement = self._statement(sql, params=parameters)
        keyword = first_keyword(sql)
        on_reader = conn._read_only_default if read_only is None else read_only
        self._run(
            sql,
            statement,
            dml=keyword in DML_KEYWORDS,
            read_only=on_reader and not conn.in_transaction,
        )
        if keyword in ("INSERT", "REPLACE"):
            self.lastrowid = self._last_row_id
        return self

    def executemany(self, sql: str, seq_of_parameters: Iterable[Sequence[Any]]) -> Cursor:
        self._check_open()
        self._reset()
        statement = self._statement(sql, param_sets=seq_of_parameters)
        if not statement.param_sets:
            self.rowcount = 0  # nothing to run, as sqlite3 does
            return self
        self._run(sql, statement, dml=True)
        return self

    def _statement(self, sql: str, params: Any = (), param_sets: Any = None) -> pb.SqlStatement:
        try:
            return sqlvalues.statement_to_proto(sql, params or None, param_sets)
        except sqlvalues.SqlValueError as exc:
            raise translate_error(exc, commit=False, endpoint=self.connection.address) from None

    def _run(
        self,
        sql: str,
        statement: pb.SqlStatement,
        *,
        dml: bool,
        force_standalone: bool = False,
        read_only: bool = False,
    ) -> None:
        conn = self.connection
        standalone = force_standalone or conn.autocommit
        response, self.endpoint = conn._execute(
            statement, dml=dml, standalone=standalone, read_only=read_only
        )
        assert len(response.results) == 1, f"{len(response.results)} results for one statement"
        result = sqlvalues.result_from_proto(response.results[0])
        if result.columns:
            self.description = tuple(
                (name, None, None, None, None, None, None) for name in result.columns
            )
        self._rows = result.rows
        self.rows_changed = result.rows_changed
        self.rowcount = result.rows_changed if dml else -1
        self._last_row_id = result.last_row_id
        self.commit_lsn = response.commit_lsn
        self.read_point = response.read_point
        if response.commit_lsn:
            conn.last_commit_lsn = response.commit_lsn

    # -- fetching

    def fetchone(self) -> tuple[Any, ...] | None:
        self._check_open()
        if self._next >= len(self._rows):
            return None
        row = self._rows[self._next]
        self._next += 1
        return row

    def fetchmany(self, size: int | None = None) -> list[tuple[Any, ...]]:
        self._check_open()
        count = self.arraysize if size is None else size
        rows = self._rows[self._next : self._next + max(count, 0)]
        self._next += len(rows)
        return rows

    def fetchall(self) -> list[tuple[Any, ...]]:
        self._check_open()
        rows = self._rows[self._next :]
        self._next = len(self._rows)
        return rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self

    def __next__(self) -> tuple[Any, ...]:
        row = self.fetchone()
        if row is None:
            raise StopIteration
        return row

    def close(self) -> None:
        self._closed = True
        self._rows = []

    def setinputsizes(self, sizes: object) -> None:
        """PEP 249: a no-op here."""

    def setoutputsize(self, size: object, column: object = None) -> None:
        """PEP 249: a no-op here."""
