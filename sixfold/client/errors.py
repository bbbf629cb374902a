"""The PEP 249 exceptions the client raises, and what a failed call means: the translation
of the server's and the transport's errors into them, and which failures may be sent again.
"""

from __future__ import annotations

import grpc

from sixfold.core import errors
from sixfold.sql import values as sqlvalues
from sixfold.wire import error_from_rpc

# -- PEP 249 exceptions ---------------------------------------------------------------------


class Warning(Exception):  # the name PEP 249 gives it, shadowing the builtin here
    """Important warnings (PEP 249). sixfold raises none."""


class Error(Exception):
    """Base of every error the DB-API client (sixfold.client.dbapi) raises.

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


class NoTopologyError(OperationalError):
    """No seed or known instance answered with a writer."""


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


def _describe(address: str, err: grpc.RpcError) -> str:
    return f"{address}: {err.code().name}: {err.details() or ''}"
