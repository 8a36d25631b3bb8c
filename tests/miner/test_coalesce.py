"""Token coalescing (chutes_subnet/miner/coalesce.py): batching policy, first token at
once, window, bucket capacity, errors in order, backpressure and clean cancellation.

The sources are driven by events, not clocks: no assertion depends on timing (the
``wait_for`` bounds only keep a broken implementation from hanging the suite)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chutes_subnet.miner.coalesce import coalesce

LIVENESS_S = 5.0


def _batches(source: AsyncIterator[int], *, window: float = 0.02, capacity: int = 10,
             eager: int = 0, max_buffered: int = 256) -> AsyncIterator[list[int]]:
    """Items are ints: cost = the value; eager until the item ``eager`` passes."""
    return coalesce(source, window=window, capacity=capacity, cost=lambda v: v,
                    eager_until=lambda v: v == eager, max_buffered=max_buffered)


async def _ready(items: list[int]) -> AsyncIterator[int]:
    for item in items:
        yield item


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=12), min_size=1, max_size=30))
def test_items_ready_together_share_frames_up_to_the_capacity(costs: list[int]) -> None:
    items = [0, *costs]  # 0: the first output item (eager_until is true for it)

    async def run() -> list[list[int]]:
        async with contextlib.aclosing(_batches(_ready(items), window=0.5)) as batches:
            return [batch async for batch in batches]

    got = asyncio.run(run())
    assert [v for batch in got for v in batch] == items          # all, in order
    assert got[0] == [0]                                          # first output alone
    for batch in got[1:]:
        assert len(batch) == 1 or sum(batch) <= 10                # within one bucket
    for batch, after in itertools.pairwise(got[1:]):
        assert sum(batch) + after[0] > 10                         # closed only when full


def test_first_output_goes_out_before_the_next_token_exists() -> None:
    release = asyncio.Event

    async def run() -> None:
        gate = release()

        async def source() -> AsyncIterator[int]:
            yield 9   # a role-only chunk: no output yet (eager_until false)
            yield 0   # the first token
            await gate.wait()
            yield 1
            yield 2

        async with contextlib.aclosing(_batches(source(), eager=0)) as batches:
            it = aiter(batches)
            assert await asyncio.wait_for(anext(it), LIVENESS_S) == [9]
            assert await asyncio.wait_for(anext(it), LIVENESS_S) == [0]  # gate still closed
            gate.set()
            assert await asyncio.wait_for(anext(it), LIVENESS_S) == [1, 2]
            with pytest.raises(StopAsyncIteration):
                await anext(it)

    asyncio.run(run())


def test_window_closes_a_frame_while_the_model_is_still_generating() -> None:
    async def run() -> None:
        gate = asyncio.Event()

        async def source() -> AsyncIterator[int]:
            yield 0
            yield 1
            await gate.wait()   # the next token takes "forever"
            yield 2

        async with contextlib.aclosing(_batches(source(), window=0.01)) as batches:
            it = aiter(batches)
            assert await anext(it) == [0]
            assert await asyncio.wait_for(anext(it), LIVENESS_S) == [1]   # not held for 2
            gate.set()
            assert await asyncio.wait_for(anext(it), LIVENESS_S) == [2]

    asyncio.run(run())


def test_zero_window_sends_one_item_per_frame() -> None:
    async def run() -> list[list[int]]:
        async with contextlib.aclosing(_batches(_ready([0, 1, 1, 1]), window=0)) as batches:
            return [batch async for batch in batches]

    assert asyncio.run(run()) == [[0], [1], [1], [1]]


def test_an_item_larger_than_the_bucket_still_goes_out_alone() -> None:
    async def run() -> list[list[int]]:
        async with contextlib.aclosing(_batches(_ready([0, 3, 50, 3, 3]), window=1)) as batches:
            return [batch async for batch in batches]

    assert asyncio.run(run()) == [[0], [3], [50], [3, 3]]


def test_source_error_comes_after_the_items_read_before_it() -> None:
    class Boom(Exception):
        pass

    async def source() -> AsyncIterator[int]:
        yield 0
        yield 1
        yield 2
        raise Boom("model failed")

    async def run() -> list[list[int]]:
        got: list[list[int]] = []
        async with contextlib.aclosing(_batches(source(), window=1)) as batches:
            with pytest.raises(Boom, match="model failed"):
                async for batch in batches:
                    got.append(batch)
        return got

    assert asyncio.run(run()) == [[0], [1, 2]]


def test_backpressure_stops_reading_ahead_of_a_slow_consumer() -> None:
    produced = 0

    async def source() -> AsyncIterator[int]:
        nonlocal produced
        yield 0
        for _ in range(1000):
            produced += 1
            yield 1

    async def run() -> None:
        async with contextlib.aclosing(_batches(source(), window=1, capacity=1,
                                                max_buffered=8)) as batches:
            it = aiter(batches)
            assert await anext(it) == [0]
            assert await anext(it) == [1]
            for _ in range(50):      # the consumer stalls; the pump must stop
                await asyncio.sleep(0)
            assert produced <= 8 + 2
            rest = [batch async for batch in it]
            assert sum(len(b) for b in rest) == 999

    asyncio.run(run())


def test_closing_stops_the_pump_so_the_source_can_be_closed() -> None:
    closed = asyncio.Event

    async def run() -> None:
        done = closed()
        gate = asyncio.Event()

        async def source() -> AsyncIterator[int]:
            try:
                yield 0
                yield 1
                await gate.wait()   # the pump is inside the source here
                yield 2
            finally:
                done.set()

        src = source()
        async with contextlib.aclosing(_batches(src, window=0.01)) as batches:
            it = aiter(batches)
            assert await anext(it) == [0]
            assert await asyncio.wait_for(anext(it), LIVENESS_S) == [1]
        assert done.is_set()      # the pump's read was cancelled, the source finalised
        await src.aclose()        # and nothing is "already running"

    asyncio.run(run())


def test_a_source_cancelled_on_its_own_never_reads_as_complete() -> None:
    async def source() -> AsyncIterator[int]:
        yield 0
        yield 1
        raise asyncio.CancelledError  # e.g. an engine client torn down under the stream

    async def run() -> list[list[int]]:
        got: list[list[int]] = []
        async with contextlib.aclosing(_batches(source(), window=1)) as batches:
            with pytest.raises(asyncio.CancelledError):
                async for batch in batches:
                    got.append(batch)
        return got

    assert asyncio.run(run()) == [[0], [1]]
