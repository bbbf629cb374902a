"""Connection: one client of the cluster (or of one reader). It finds the cluster, routes
each call to the writer or a reader, follows a failover, and holds the open transaction.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import grpc

# routing.CHANNELS and routing.TOPOLOGY_TTL_S are read through the module, so that one
# assignment there (a test's monkeypatch) reaches every module that uses them.
from sixfold.client import routing
from sixfold.client.cursor import Cursor
from sixfold.client.errors import (
    _OUTCOME_UNKNOWN_HINT,
    FENCED,
    LOST,
    DatabaseError,
    DataError,
    Error,
    IntegrityError,
    InterfaceError,
    InternalError,
    NoTopologyError,
    NotSupportedError,
    OperationalError,
    ProgrammingError,
    TransactionAbortedError,
    TransactionOutcomeUnknownError,
    Warning,
    _describe,
    failover_kind,
    retry_safe,
    translate_error,
)
from sixfold.client.routing import _topology_of, backoff_s, directory_for, parse_seeds
from sixfold.client.statements import READ_KEYWORDS, first_keyword
from sixfold.client.stream import ExecuteStream, _close_streams
from sixfold.core import errors
from sixfold.core.topology import Role
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.wire import error_from_rpc

ROLLBACK_TIMEOUT_S = 2.0  # a best-effort rollback after a failure must not hold things up
ROLE_PROBE_TIMEOUT_S = 5.0
FAILOVER_WAIT_S = 15.0  # longest a call waits, in all, for a (new) writer to answer
# Execute goes over one stream per connection and address (Sql/ExecuteStream); False: a
# unary call each, as against servers from before the stream (their UNIMPLEMENTED says so).
STREAMING = True

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
            with routing.CHANNELS.stub(self.seeds[0], pb_grpc.TopologyServiceStub) as stub:
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
                if not _deciding(topology) or time.monotonic() + backoff_s(attempt) >= deadline:
                    break
                # A writer process still deciding its role, or a reader taking over: pinned
                # to it now, the connection would stay there once it turns out a reader.
                time.sleep(backoff_s(attempt))
            except grpc.RpcError as err:
                if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                    self._mode = PINNED
                    return
                if failover_kind(err) is None:
                    raise translate_error(err, commit=False, endpoint=seed) from None
                if time.monotonic() + backoff_s(attempt) >= deadline:
                    raise OperationalError(_describe(seed, err)) from None
                time.sleep(backoff_s(attempt))
        # A storage node that has not heard of a writer yet is no place to pin: routed, the
        # connection asks again until one answers (it never serves SQL itself).
        if _answers_as_reader(topology):
            self._mode = PINNED
            return
        self._directory.offer(topology)
        self._mode = ROUTED

    # -- calls

    def _invoke(self, address: str, method: str, request: Any, timeout: float = 0.0) -> Any:
        if method == "Execute" and STREAMING:
            return self._stream_to(address).execute(request, timeout or self.timeout)
        with routing.CHANNELS.stub(address, pb_grpc.SqlStub) as stub:
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
            if isinstance(request, pb.ExecuteRequest):
                # Read your writes there too: a reader behind this connection's last commit
                # waits a moment for it or refuses, never answers from before it.
                request.min_read_point = self.last_commit_lsn
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
            self._directory.current(time.monotonic() - routing.TOPOLOGY_TTL_S)
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


def _own_role(topology: pb.Topology) -> str:
    """The role the instance that answered gives itself ("" from a node: it lists none)."""
    return next((v.role for v in topology.instances if v.name == topology.answered_by), "")


def _deciding(topology: pb.Topology) -> bool:
    """True when the instance that answered has no settled role yet (starting as the writer,
    or taking over): asked again, it answers as the writer or as a reader."""
    return _own_role(topology) in (Role.STARTING, Role.TAKING_OVER)


def _answers_as_reader(topology: pb.Topology) -> bool:
    """True when the instance that answered says it is a reader (a node answers as none)."""
    return _own_role(topology) == Role.READER
