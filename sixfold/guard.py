"""A server interceptor for requests that cannot be decoded: one clear answer, quiet logs.

gRPC's own handling of a request body that is not a valid protobuf message logs a full
traceback for each one and answers with UNKNOWN. A single hostile client then floods the
log (issue 19: 5,300 tracebacks from one probe). Here such a request gets INVALID_ARGUMENT
naming the method, and the log gets at most one line per peer per UNDECODABLE_LOG_INTERVAL_S,
with how many were refused meanwhile.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

log = logging.getLogger("sixfold.guard")

UNDECODABLE_LOG_INTERVAL_S = 60.0  # at most one log line per peer per this interval
PEERS_REMEMBERED_MAX = 1_024  # peers whose last log line is remembered


class Undecodable:
    """What a request deserializer gives for bytes that are not the method's message."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class UndecodableLog:
    """Rate-limited reports of undecodable requests, per peer."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.last: dict[str, float] = {}  # peer -> when it was last logged
        self.suppressed: dict[str, int] = {}  # peer -> refused since then, not logged

    def note(self, peer: str, method: str, error: Exception) -> bool:
        """Record one; True when it was logged."""
        now = self.clock()
        last = self.last.get(peer)
        if last is not None and now - last < UNDECODABLE_LOG_INTERVAL_S:
            self.suppressed[peer] = self.suppressed.get(peer, 0) + 1
            return False
        if len(self.last) >= PEERS_REMEMBERED_MAX and peer not in self.last:
            self.last.clear()
            self.suppressed.clear()
        more = self.suppressed.pop(peer, 0)
        self.last[peer] = now
        log.warning(
            "refused an undecodable %s request from %s (%s)%s",
            method,
            peer,
            error,
            f"; {more} more from it since the last report" if more else "",
        )
        return True


def _safe(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def deserialize(raw: bytes) -> Any:
        try:
            return deserializer(raw) if deserializer else raw
        except Exception as exc:  # any decoding failure is the client's, not ours
            return Undecodable(exc)

    return deserialize


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps each method's handler (`_wrap`) once: handlers do not change while serving, and
    wrapping one per call cost every RPC two closures and a handler object."""

    def __init__(self) -> None:
        self.wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = details.method
        if method not in self.wrapped:
            handler = await continuation(details)
            if handler is None:  # an unknown method: not remembered (any name may come)
                return handler
            self.wrapped[method] = self._wrap(method, handler)
        return self.wrapped[method]

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        raise NotImplementedError


class UndecodableGuard(WrappingInterceptor):
    def __init__(self, reports: UndecodableLog | None = None) -> None:
        super().__init__()
        self.reports = reports or UndecodableLog()

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        safe = _safe(handler.request_deserializer)
        if handler.stream_stream is not None:
            # The method reads with context.read() and refuses an Undecodable message itself
            # (storage_node/append_stream.py answers it in band, naming the problem).
            return grpc.stream_stream_rpc_method_handler(
                handler.stream_stream, safe, handler.response_serializer
            )
        if handler.request_streaming:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._refusing(method, handler.unary_unary), safe, handler.response_serializer
            )
        # A streaming method written as an async generator would need one too: left as is.
        if handler.unary_stream is not None and not inspect.isasyncgenfunction(
            handler.unary_stream
        ):
            return grpc.unary_stream_rpc_method_handler(
                self._refusing(method, handler.unary_stream), safe, handler.response_serializer
            )
        return handler

    def _refusing(
        self, method: str, inner: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]
    ) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
        """`inner`, refusing an undecodable request first."""

        async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
            if isinstance(request, Undecodable):
                await self._refuse(method, request, context)
            return await inner(request, context)

        return call

    async def _refuse(
        self, method: str, request: Undecodable, context: grpc.aio.ServicerContext
    ) -> None:
        self.reports.note(context.peer(), method, request.error)
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request is not a valid {method.rsplit('/', 1)[-1]} message: {request.error}",
        )
