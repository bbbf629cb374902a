"""Errors across the wire: named, with their fields, never matched by message text."""

from __future__ import annotations

import subprocess
import sys

import grpc

from sixfold.client import dbapi
from sixfold.client.dbapi import StreamedCallError
from sixfold.core import errors
from sixfold.wire import error_fields, error_from_rpc, named_error


def test_an_errors_fields_travel_with_it() -> None:
    sent = errors.QuorumUnavailableError("write", 3, 4)
    sent.outcome_unknown = True
    fields = error_fields(sent)
    assert '"outcome_unknown": true' in fields and '"reachable": 3' in fields
    # The message says nothing of the outcome: the client decides by the field alone.
    failed = StreamedCallError(
        grpc.StatusCode.UNAVAILABLE, "quorum lost", type(sent).__name__, fields
    )
    got = error_from_rpc(failed)
    assert isinstance(got, errors.QuorumUnavailableError)
    assert got.outcome_unknown is True and got.reachable == 3 and str(got) == "quorum lost"
    told = dbapi.translate_error(failed, commit=True, endpoint="w")
    assert isinstance(told, dbapi.TransactionOutcomeUnknownError)
    assert not isinstance(
        dbapi.translate_error(failed, commit=False, endpoint="w"),
        dbapi.TransactionOutcomeUnknownError,
    )


def test_a_readers_refusal_of_sessions_is_known_by_its_field() -> None:
    refusal = errors.SessionError("no sessions here", on_reader=True)
    failed = StreamedCallError(
        grpc.StatusCode.NOT_FOUND, str(refusal), "SessionError", error_fields(refusal)
    )
    assert dbapi.failover_kind(failed) == dbapi.REFUSED
    plain = StreamedCallError(grpc.StatusCode.NOT_FOUND, "have no sessions", "SessionError")
    assert dbapi.failover_kind(plain) is None  # the text alone decides nothing


def test_hostile_fields_are_ignored() -> None:
    exc = named_error(
        "NotWriterError",
        "not the writer",
        '{"args": "x", "__class__": 1, "_private": 2, "nested": [1], "writer_address": "w:1"}',
    )
    assert str(exc) == "not the writer" and exc.args == ("not the writer",)
    assert exc.writer_address == "w:1" and not hasattr(exc, "nested")
    assert not hasattr(exc, "_private")
    assert str(named_error("BusyError", "busy", "not json")) == "busy"


def test_the_client_does_not_import_lmdb() -> None:
    code = "import sys, sixfold.client.dbapi; print('lmdb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
