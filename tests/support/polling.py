"""Waiting in tests for something that becomes true in its own time: one rule for every test.

``pred`` is asked at once and then every ``step`` seconds; the first truthy value it returns is
the result (a state, a record, ``True``). After ``timeout`` seconds it is asked one last time,
then the wait fails with an AssertionError naming ``what`` and the last value. No caller needs
to tell None from another falsy value (0, "", []): "not yet" is anything falsy.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

T = TypeVar("T")

#: what ``pred`` returns: the value waited for, or something falsy for "not yet"
Pending = Literal[False] | None


def wait_until(
    what: str, pred: Callable[[], T | Pending], timeout: float = 30.0, step: float = 0.1
) -> T:
    """Poll ``pred`` until it returns something truthy (returned); fail naming ``what`` and
    the last value after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}: last {last!r}")
        time.sleep(step)


async def wait_until_async(
    what: str,
    pred: Callable[[], T | Pending | Awaitable[T | Pending]],
    timeout: float = 30.0,
    step: float = 0.1,
) -> T:
    """:func:`wait_until` on the event loop: ``pred`` is a plain function or returns an
    awaitable (awaited for its value); the pauses are ``asyncio.sleep`` (what is awaited
    meanwhile runs)."""
    deadline = time.monotonic() + timeout
    while True:
        last = pred()
        if inspect.isawaitable(last):
            last = await last
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}: last {last!r}")
        await asyncio.sleep(step)
