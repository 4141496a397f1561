"""How a start operation orders instance starts: chain heights, priority slots, and the
``services start`` CLI path that needs no typed config."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from rayinfra.services.manager import PrioritySlots, chain_heights
from rayinfra.services.spec import ServiceSpec, parse_spec


def svc(name: str, deps: Any = ()) -> ServiceSpec:
    return parse_spec(name, {"driver": "process", "argv": ["true"], "depends_on": list(deps)})


def test_chain_heights_count_the_longest_chain_waiting_on_a_service() -> None:
    specs = {
        s.name: s
        for s in (
            svc("db"),
            svc("cache"),
            svc("migrate", ["db"]),
            svc("api", ["migrate", "cache"]),
            svc("web", ["api"]),
            svc("lonely"),
        )
    }
    order = ["db", "cache", "migrate", "api", "web", "lonely"]
    assert chain_heights(specs, order) == {
        "db": 3,
        "cache": 2,
        "migrate": 2,
        "api": 1,
        "web": 0,
        "lonely": 0,
    }
    # a dependant outside this start does not count
    assert chain_heights(specs, ["db", "migrate"]) == {"db": 1, "migrate": 0}


async def test_priority_slots_serve_the_highest_priority_first() -> None:
    slots = PrioritySlots(1)
    await slots.acquire(0)  # held
    served: list[str] = []

    async def want(name: str, priority: int) -> None:
        await slots.acquire(priority)
        served.append(name)
        slots.release()

    waiters = [asyncio.ensure_future(want(n, p)) for n, p in (("low", 1), ("high", 3), ("mid", 2))]
    await asyncio.sleep(0)
    assert served == []
    slots.release()
    await asyncio.gather(*waiters)
    assert served == ["high", "mid", "low"]
    assert slots.free == 1


async def test_a_cancelled_waiter_does_not_keep_a_slot() -> None:
    slots = PrioritySlots(1)
    await slots.acquire()
    gone = asyncio.ensure_future(slots.acquire(5))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    slots.release()  # nobody is left waiting: the slot is free again
    assert slots.free == 1
    await asyncio.wait_for(slots.acquire(), 1)


def test_services_start_with_names_loads_no_typed_config() -> None:
    """`rayinfra services start NAMES` needs only the gateway's address: no pydantic (~0.15 s
    of a command that starts a stack)."""
    code = (
        "import sys\n"
        "from rayinfra.cli.main import app\n"
        "try:\n"
        "    app(['services', 'start', 'kv', '--state-dir', '/nonexistent-rayinfra'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('pydantic', 'rayinfra.config', 'ray', 'docker')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
