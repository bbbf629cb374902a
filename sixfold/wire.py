"""Operating errors across gRPC: status codes on the way out, named exceptions on the way in.

The exception's class name travels in trailing metadata (`sixfold-error`) so a client raises
the same named exception the server did, with the server's message.
"""

from __future__ import annotations

from typing import NoReturn

import grpc
import lmdb

from sixfold import errors
from sixfold.truncation import TruncationRange

ERROR_KEY = "sixfold-error"

_CODES: dict[type[Exception], grpc.StatusCode] = {
    errors.StaleEpochError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.EpochAheadError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.WriterFencedError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.CorruptRecordError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.BatchTooLargeError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.NotServingError: grpc.StatusCode.UNAVAILABLE,
    errors.QuorumUnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.RecoveryError: grpc.StatusCode.UNAVAILABLE,
    errors.DataFormatError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.SqlError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.SqlLimitError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.BusyError: grpc.StatusCode.ABORTED,
    errors.ReadOnlyError: grpc.StatusCode.PERMISSION_DENIED,
    errors.SessionError: grpc.StatusCode.NOT_FOUND,
    errors.NotWriterError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.CommitTimeoutError: grpc.StatusCode.DEADLINE_EXCEEDED,
}

_BY_NAME: dict[str, type[errors.SixfoldError]] = {
    cls.__name__: cls for cls in vars(errors).values() if isinstance(cls, type)
}


async def abort(
    context: grpc.aio.ServicerContext, exc: Exception, code: grpc.StatusCode | None = None
) -> NoReturn:
    """End an RPC with the status that fits an operating error."""
    status, name, message = status_of(exc, code)
    context.set_trailing_metadata(((ERROR_KEY, name),))
    await context.abort(status, message)


def status_of(
    exc: Exception, code: grpc.StatusCode | None = None
) -> tuple[grpc.StatusCode, str, str]:
    """(status code, error name, message) that tell a client an operating error: as a call's
    status (`abort`) or in band, on a stream (sixfold/sql_service.py)."""
    if isinstance(exc, lmdb.MapFullError):
        code = grpc.StatusCode.RESOURCE_EXHAUSTED
    exc = reportable(exc)
    return code or _CODES.get(type(exc), grpc.StatusCode.INTERNAL), type(exc).__name__, str(exc)


def reportable(exc: Exception) -> Exception:
    """The error a client is told: an operating error as raised, a full store explained."""
    if isinstance(exc, lmdb.MapFullError):
        return errors.SixfoldError(
            "storage full: the LMDB map size is used up; restart the node with a larger "
            "--map-size-mib"
        )
    return exc


def error_from_rpc(err: grpc.aio.AioRpcError | grpc.RpcError) -> Exception:
    """The named exception an RPC failure stands for (the RpcError itself when not ours)."""
    names = [value for key, value in (err.trailing_metadata() or ()) if key == ERROR_KEY]
    if not names or names[0] not in _BY_NAME:
        return err
    return named_error(names[0], err.details() or "")


def named_error(name: str, message: str) -> Exception:
    """The exception a server named (class and message); a SixfoldError for a name we do
    not know."""
    cls = _BY_NAME.get(name)
    if cls is None:
        return errors.SixfoldError(f"{name}: {message}")
    exc = cls.__new__(cls)  # the server already formatted the message: keep it verbatim
    Exception.__init__(exc, message)
    return exc


def ranges_to_proto(ranges: tuple[TruncationRange, ...], message_cls: type) -> list:
    return [
        message_cls(epoch=r.epoch, after_lsn=r.after_lsn, through_lsn=r.through_lsn) for r in ranges
    ]


def ranges_from_proto(ranges: object, epoch_max: int | None = None) -> tuple[TruncationRange, ...]:
    """Truncation ranges from a request, each checked to be well formed."""
    out = []
    for r in ranges:
        if r.epoch < 1 or r.through_lsn < r.after_lsn:
            raise errors.InvalidRequestError(
                f"malformed truncation range: epoch {r.epoch}, ({r.after_lsn}, {r.through_lsn}]"
            )
        if epoch_max is not None and r.epoch > epoch_max:
            raise errors.InvalidRequestError(
                f"truncation range of epoch {r.epoch} is newer than its request's epoch {epoch_max}"
            )
        out.append(TruncationRange(r.epoch, r.after_lsn, r.through_lsn))
    return tuple(out)
