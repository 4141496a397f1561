"""``iterate_in_thread``: how the gateway streams a blocking log reader (Ray's ``get_log``) to a
gRPC caller — items in order, errors reach the caller, an early stop ends the reader."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from rayinfra.api.grpc_env_manager import iterate_in_thread


async def test_items_arrive_in_order_then_the_stream_ends() -> None:
    assert [x async for x in iterate_in_thread(lambda: iter(range(5)))] == [0, 1, 2, 3, 4]


async def test_an_error_of_the_reader_reaches_the_consumer() -> None:
    def failing() -> Iterator[str]:
        yield "first"
        raise LookupError("no actor named 'x'")

    seen: list[str] = []
    with pytest.raises(LookupError, match="no actor named"):
        async for x in iterate_in_thread(failing):
            seen.append(x)
    assert seen == ["first"]


async def test_an_error_making_the_reader_reaches_the_consumer() -> None:
    def make() -> Iterator[str]:
        raise RuntimeError("no runtime is recorded")

    with pytest.raises(RuntimeError, match="no runtime is recorded"):
        _ = [x async for x in iterate_in_thread(make)]


async def test_stopping_early_closes_the_reader_at_its_next_item() -> None:
    closed = threading.Event()

    def endless() -> Iterator[int]:
        n = 0
        try:
            while True:
                yield n
                n += 1
        finally:
            closed.set()

    stream = iterate_in_thread(endless)
    assert await anext(stream) == 0
    await stream.aclose()
    assert await asyncio.to_thread(closed.wait, 5)
