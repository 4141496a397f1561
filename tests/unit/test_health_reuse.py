"""ControlPlane.health_report: callers at the same time share one assessment, one that started
less than HEALTH_REUSE_S ago is reused, a failed one is not (the assessment itself, actor pings
and the registry, is covered on a live runtime by tests/integration/test_gateway.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rayinfra import control
from rayinfra.control import ControlPlane


class Counting(ControlPlane):
    def __init__(self, fail_first: bool = False) -> None:
        super().__init__(caller=None)  # type: ignore[arg-type]  # never called here
        self.assessed: list[tuple[str, ...]] = []
        self.fail_first = fail_first
        self.gate = asyncio.Event()

    async def _assess_health(self, required_services: Any) -> tuple[bool, dict[str, str]]:
        self.assessed.append(tuple(required_services))
        await self.gate.wait()
        if self.fail_first and len(self.assessed) == 1:
            raise RuntimeError("GCS unreachable")
        return True, {"scheduler": f"healthy #{len(self.assessed)}"}


async def test_callers_at_the_same_time_share_one_assessment() -> None:
    cp = Counting()
    callers = [asyncio.ensure_future(cp.health_report()) for _ in range(50)]
    await asyncio.sleep(0)
    cp.gate.set()
    answers = await asyncio.gather(*callers)
    assert cp.assessed == [()] and {a[1]["scheduler"] for a in answers} == {"healthy #1"}
    # other required services are another question
    assert (await cp.health_report(["redis"]))[1]["scheduler"] == "healthy #2"


async def test_an_assessment_is_reused_only_while_young(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(control, "HEALTH_REUSE_S", 0.2)
    cp = Counting()
    cp.gate.set()
    assert (await cp.health_report())[1]["scheduler"] == "healthy #1"
    assert (await cp.health_report())[1]["scheduler"] == "healthy #1"
    await asyncio.sleep(0.25)
    assert (await cp.health_report())[1]["scheduler"] == "healthy #2"


async def test_a_failed_assessment_is_not_reused() -> None:
    cp = Counting(fail_first=True)
    cp.gate.set()
    with pytest.raises(RuntimeError, match="GCS unreachable"):
        await cp.health_report()
    assert (await cp.health_report())[1]["scheduler"] == "healthy #2"


async def test_a_caller_that_gives_up_does_not_end_it_for_the_others() -> None:
    cp = Counting()
    impatient = asyncio.ensure_future(cp.health_report())
    patient = asyncio.ensure_future(cp.health_report())
    await asyncio.sleep(0)
    impatient.cancel()
    cp.gate.set()
    assert (await patient)[1]["scheduler"] == "healthy #1"
    assert impatient.cancelled()


def test_an_assessment_is_not_carried_to_another_event_loop() -> None:
    # a client's ControlPlane may outlive its loop (AgentInfraSync, asyncio.run twice)
    cp = Counting()

    async def ask() -> str:
        cp.gate.set()
        return (await cp.health_report())[1]["scheduler"]

    assert asyncio.run(ask()) == "healthy #1"
    cp.gate = asyncio.Event()
    assert asyncio.run(ask()) == "healthy #2"
