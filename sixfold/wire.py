"""Operating errors across gRPC: status codes on the way out, named exceptions on the way in.

The exception's class name travels in trailing metadata (`sixfold-error`) so a client raises
the same named exception the server did, with the server's message.
"""

from __future__ import annotations

import json
import sys
from typing import NoReturn

import grpc

from sixfold.core import errors
from sixfold.core.errors import MembershipError
from sixfold.core.membership import Change, Membership, checked_membership
from sixfold.core.truncation import TruncationRange
from sixfold.rpc import sixfold_pb2 as pb

ERROR_KEY = "sixfold-error"
FIELDS_KEY = "sixfold-error-fields"  # JSON of the error's simple fields (outcome_unknown, ...)
_FIELD_TYPES = (bool, int, float, str)

_CODES: dict[type[Exception], grpc.StatusCode] = {
    errors.StaleEpochError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.EpochAheadError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.WriterFencedError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.CorruptRecordError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.BatchTooLargeError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.WatchersFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
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
    errors.StaleMembershipError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.MembershipError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.NotAMemberError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.WrongNodeError: grpc.StatusCode.FAILED_PRECONDITION,
}

_BY_NAME: dict[str, type[errors.SixfoldError]] = {
    cls.__name__: cls for cls in vars(errors).values() if isinstance(cls, type)
}


async def abort(
    context: grpc.aio.ServicerContext, exc: Exception, code: grpc.StatusCode | None = None
) -> NoReturn:
    """End an RPC with the status that fits an operating error."""
    status, name, message, fields = status_of(exc, code)
    metadata = ((ERROR_KEY, name), (FIELDS_KEY, fields)) if fields else ((ERROR_KEY, name),)
    context.set_trailing_metadata(metadata)
    await context.abort(status, message)


def status_of(
    exc: Exception, code: grpc.StatusCode | None = None
) -> tuple[grpc.StatusCode, str, str, str]:
    """(status code, error name, message, fields as JSON) that tell a client an operating
    error: as a call's status (`abort`) or in band, on a stream (instance/sql_service.py)."""
    if _is_map_full(exc):
        code = grpc.StatusCode.RESOURCE_EXHAUSTED
    exc = reportable(exc)
    status = code or _CODES.get(type(exc), grpc.StatusCode.INTERNAL)
    return status, type(exc).__name__, str(exc), error_fields(exc)


def error_fields(exc: Exception) -> str:
    """The exception's simple instance fields as JSON ("" when none)."""
    fields = {
        k: v for k, v in vars(exc).items() if not k.startswith("_") and isinstance(v, _FIELD_TYPES)
    }
    return json.dumps(fields, sort_keys=True) if fields else ""


def _is_map_full(exc: Exception) -> bool:
    # lmdb only when loaded: a client (import sixfold.client.dbapi) never imports it.
    lmdb = sys.modules.get("lmdb")
    return lmdb is not None and isinstance(exc, lmdb.MapFullError)


def reportable(exc: Exception) -> Exception:
    """The error a client is told: an operating error as raised, a full store explained."""
    if _is_map_full(exc):
        return errors.SixfoldError(
            "storage full: the LMDB map size is used up; restart the node with a larger "
            "--map-size-mib"
        )
    return exc


def error_from_rpc(err: grpc.aio.AioRpcError | grpc.RpcError) -> Exception:
    """The named exception an RPC failure stands for (the RpcError itself when not ours)."""
    metadata = dict(err.trailing_metadata() or ())
    name = metadata.get(ERROR_KEY)
    if name not in _BY_NAME:
        return err
    return named_error(name, err.details() or "", metadata.get(FIELDS_KEY, ""))


def named_error(name: str, message: str, fields: str = "") -> Exception:
    """The exception a server named (class, message and fields); a SixfoldError for a name
    we do not know."""
    cls = _BY_NAME.get(name)
    if cls is None:
        return errors.SixfoldError(f"{name}: {message}")
    exc = cls.__new__(cls)  # the server already formatted the message: keep it verbatim
    Exception.__init__(exc, message)
    for key, value in _parse_fields(fields).items():
        setattr(exc, key, value)
    return exc


def _parse_fields(fields: str) -> dict[str, object]:
    """Fields sent with an error, keeping only well-formed simple ones (a peer may be hostile)."""
    if not fields:
        return {}
    try:
        raw = json.loads(fields)
    except ValueError:
        return {}
    if not isinstance(raw, dict):
        return {}
    return {
        k: v
        for k, v in raw.items()
        if isinstance(k, str)
        and k.isidentifier()
        and not k.startswith("_")
        and not hasattr(BaseException, k)
        and isinstance(v, _FIELD_TYPES)
    }


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


def membership_to_proto(m: Membership) -> pb.MembershipView:
    c = m.change
    return pb.MembershipView(
        epoch=m.epoch,
        holders=list(m.holders),
        change_position=c.position if c else "",
        change_old=c.old if c else "",
        change_new=c.new if c else "",
        writer_epoch=m.writer_epoch,
    )


def membership_from_proto(view: pb.MembershipView) -> Membership | None:
    """A membership from the wire; None when the sender gave none (epoch 0). Malformed:
    InvalidRequestError, nothing adopted."""
    if not view.epoch:
        return None
    change = (
        Change(view.change_position, view.change_old, view.change_new)
        if view.change_position
        else None
    )
    try:
        return checked_membership(view.epoch, tuple(view.holders), change, view.writer_epoch)
    except MembershipError as exc:
        raise errors.InvalidRequestError(f"malformed membership: {exc}") from None


def membership_or_none(view: pb.MembershipView) -> Membership | None:
    """A membership a node reports; None if it reports none or a malformed one (then it is
    not believed: a well-formed one from another node carries the change)."""
    try:
        return membership_from_proto(view)
    except errors.InvalidRequestError:
        return None
