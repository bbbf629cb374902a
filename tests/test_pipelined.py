"""sixfold/pipelined.py: requests answered as each finishes, the ready ones together, with
at most a bounded number running or unsent; a bug in an answer ends the stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from sixfold.pipelined import answer_pipelined


async def _numbers(count: int) -> AsyncIterator[int]:
    for n in range(count):
        yield n


def test_answers_come_as_each_finishes_and_the_ready_ones_together() -> None:
    async def body() -> list[list[int]]:
        async def answer(n: int) -> int:
            await asyncio.sleep(0.02 if n == 0 else 0)  # the first finishes last
            return n

        return [batch async for batch in answer_pipelined(_numbers(5), answer, 8, 8)]

    batches = asyncio.run(body())
    assert sorted(n for batch in batches for n in batch) == [0, 1, 2, 3, 4]
    assert batches[-1] == [0] and len(batches) < 5  # 1-4 were ready together


def test_no_more_than_the_bound_are_running_or_unsent() -> None:
    async def body() -> int:
        started, sent, most = 0, 0, 0

        async def answer(n: int) -> int:
            nonlocal started, most
            started += 1
            most = max(most, started - sent)  # taken and not yet sent
            await asyncio.sleep(0.001)
            return n

        async for batch in answer_pipelined(_numbers(50), answer, 4):
            await asyncio.sleep(0.005)  # a slow reader: answers wait to be sent
            sent += len(batch)
        return most

    assert asyncio.run(body()) <= 4


def test_a_bug_in_an_answer_ends_the_stream_with_it() -> None:
    async def body() -> list[list[int]]:
        async def answer(n: int) -> int:
            if n == 2:
                raise ValueError("a bug")
            return n

        return [batch async for batch in answer_pipelined(_numbers(5), answer, 8)]

    with pytest.raises(ValueError, match="a bug"):
        asyncio.run(body())
