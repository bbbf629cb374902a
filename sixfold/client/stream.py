"""Execute over one Sql/ExecuteStream per connection and address: the stream, and the error
a request on it raises (read like a unary call's, so the failover rules apply unchanged).
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from typing import Any

import grpc

from sixfold.client import routing  # routing.CHANNELS, read through the module: see connection
from sixfold.rpc import sixfold_pb2 as pb
from sixfold.rpc import sixfold_pb2_grpc as pb_grpc
from sixfold.wire import ERROR_KEY, FIELDS_KEY

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
        stub = self._hold.enter_context(routing.CHANNELS.stub(address, pb_grpc.SqlStub))
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
