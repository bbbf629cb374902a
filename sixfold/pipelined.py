"""Requests on one stream, each answered as it finishes (issue 11's streaming client API):
Sql/ExecuteStream and Writer/WritePagesStream. A stream message costs a server less than
half of a unary call (docs/BENCHMARKS.md, "What one message costs, by transport"), and a
client sends its next request without waiting for the last answer.

Errors are answered in band, in the answer's error fields, as the unary call would have
ended: the stream goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

from sixfold.wire import status_of

Request = TypeVar("Request")
Answer = TypeVar("Answer")


async def answer_pipelined(
    requests: AsyncIterator[Request],
    answer: Callable[[Request], Awaitable[Answer]],
    in_flight_max: int,
    answers_per_yield_max: int = 1,
) -> AsyncIterator[list[Answer]]:
    """Run `answer` on each request as it comes, and yield the answers ready, at least one
    and at most `answers_per_yield_max` at a time. At most `in_flight_max` requests are
    running or answered and not yet sent: a client sending more, or not reading its
    answers, waits (the stream's flow control holds it). `answer` answers operating errors
    itself; anything else it raises (a bug) ends the stream with it, as it would have ended
    a unary call, and so does the request side's own failure (the client went away)."""
    answers: asyncio.Queue[Answer | None] = asyncio.Queue()
    slots = asyncio.Semaphore(in_flight_max)
    running: set[asyncio.Task[None]] = set()
    failures: list[Exception] = []

    async def run(request: Request) -> None:
        try:
            answers.put_nowait(await answer(request))
        except Exception as exc:
            failures.append(exc)
            slots.release()
            answers.put_nowait(None)

    async def take() -> None:
        try:
            async for request in requests:
                await slots.acquire()
                task = asyncio.create_task(run(request))
                running.add(task)
                task.add_done_callback(running.discard)
            while running:
                await asyncio.wait(set(running))
        finally:
            answers.put_nowait(None)

    taker = asyncio.create_task(take())
    try:
        while (first := await answers.get()) is not None:
            ready = [first]
            while len(ready) < answers_per_yield_max and not answers.empty():
                more = answers.get_nowait()
                if more is None:  # the end: after what is ready
                    answers.put_nowait(None)
                    break
                ready.append(more)
            yield ready
            for _ in ready:  # sent: room for more
                slots.release()
        if failures:
            raise failures[0]
        await taker
    finally:
        taker.cancel()
        for task in running:
            task.cancel()


def error_in_band(exc: Exception) -> dict[str, str]:
    """The error fields of a stream's answer (error_code, error_name, error_message,
    error_fields) for `exc`, as `sixfold.wire.abort` would have ended a unary call."""
    code, name, message, fields = status_of(exc)
    return {
        "error_code": code.name,
        "error_name": name,
        "error_message": message,
        "error_fields": fields,
    }
