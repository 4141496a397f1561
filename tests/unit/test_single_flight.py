"""SharedCalls (rayinfra/single_flight.py), the sharing under ControlPlane.health_report
(tests/unit/test_health_reuse.py) and the gateway's runtime status: who shares a call, and
that entries do not pile up."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from rayinfra.single_flight import SharedCalls


class Calls:
    def __init__(self) -> None:
        self.made: list[str] = []
        self.gate = asyncio.Event()

    def of(self, key: str, fail: bool = False) -> Callable[[], Awaitable[str]]:
        async def call() -> str:
            self.made.append(key)
            await self.gate.wait()
            if fail:
                raise RuntimeError(f"{key} failed")
            return f"{key} #{len(self.made)}"

        return call


async def test_without_reuse_only_callers_at_the_same_time_share() -> None:
    calls, shared = Calls(), SharedCalls[str]()
    together = [asyncio.ensure_future(shared.get("k", calls.of("k"))) for _ in range(20)]
    other = asyncio.ensure_future(shared.get("j", calls.of("j")))  # another key: its own
    await asyncio.sleep(0)
    calls.gate.set()
    assert set(await asyncio.gather(*together)) == {"k #1"}
    assert await other == "j #2"
    assert len(shared) == 0  # nothing kept once answered
    assert await shared.get("k", calls.of("k")) == "k #3"  # asked after: a call of its own


async def test_an_answer_is_given_again_while_young_then_forgotten() -> None:
    calls, shared = Calls(), SharedCalls[str](reuse_s=0.15)
    calls.gate.set()
    assert await shared.get("k", calls.of("k")) == "k #1"
    assert await shared.get("k", calls.of("k")) == "k #1"
    assert len(shared) == 1
    await asyncio.sleep(0.2)
    assert len(shared) == 0  # dropped when it could no longer be given
    assert await shared.get("k", calls.of("k")) == "k #2"


async def test_a_failure_is_shared_by_those_waiting_but_never_given_again() -> None:
    calls, shared = Calls(), SharedCalls[str](reuse_s=10)
    waiting = [asyncio.ensure_future(shared.get("k", calls.of("k", fail=True))) for _ in range(3)]
    await asyncio.sleep(0)
    calls.gate.set()
    for w in waiting:
        with pytest.raises(RuntimeError, match="k failed"):
            await w
    assert len(shared) == 0
    assert await shared.get("k", calls.of("k")) == "k #2"


async def test_many_keys_leave_nothing_behind() -> None:
    calls, shared = Calls(), SharedCalls[str]()
    calls.gate.set()
    for i in range(500):  # a client naming new services each time
        await shared.get(f"k{i}", calls.of(f"k{i}"))
    assert len(shared) == 0


async def test_a_caller_that_gives_up_does_not_end_the_call() -> None:
    calls, shared = Calls(), SharedCalls[str]()
    impatient = asyncio.ensure_future(shared.get("k", calls.of("k")))
    patient = asyncio.ensure_future(shared.get("k", calls.of("k")))
    await asyncio.sleep(0)
    impatient.cancel()
    calls.gate.set()
    assert await patient == "k #1"
    assert impatient.cancelled()


def test_a_settings_function_is_read_at_each_call() -> None:
    setting = [0.0]
    shared = SharedCalls[str](lambda: setting[0])
    assert shared.reuse_s == 0.0
    setting[0] = 2.5
    assert shared.reuse_s == 2.5
