"""Which client operation makes the client process grow: a private runtime (as ``bench/soak.py``
starts it), then one operation of the soak's load at a time, looped fast, with ``tracemalloc``
snapshots (the top differences by traceback) and this process's RSS compared across each
phase, and the ``AgentInfra`` bookkeeping that should stay empty between calls.

    .venv/bin/python bench/client_leak.py [--iterations 300] [--phases idle,submit_wait,...]

Phases (each as the soak does it, without the sleeps):

- ``idle``: nothing (this process is a Ray driver too: ``runtime.start`` connects it);
- ``submit_wait``: batches of 50 no-op tasks, each waited for ``--lag`` batches later (most
  have finished by then, as in the soak);
- ``wait_now``: batches of 50 waited for at once (finished states arrive by the task feed);
- ``cancel``: a 30 s sleep task submitted and cancelled;
- ``stream``: ``stream_task_results`` of a fresh batch of 20, read to its end;
- ``cli``: ``rayinfra status`` in a subprocess;
- ``mixed``: ``submit_wait``, ``cancel`` and ``stream`` at once, as the soak runs them (a
  stream keeps the task feed busy: it is current when a wait begins).

Python heap growth shows in the tracemalloc lines; RSS growth without it is native (grpc's C
core, Ray's core worker). A phase that leaves ``waiters`` or ``streams`` above 0 left the
client's bookkeeping behind.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import os
import shutil
import subprocess
import sys
import time
import tracemalloc
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from rayinfra import AgentInfra, runtime
from rayinfra.config import dial_addr, load_config
from tests.conftest import make_runtime_spec

RAYINFRA = [sys.executable, "-m", "rayinfra.cli.main"]
PHASES = ("idle", "submit_wait", "wait_now", "cancel", "stream", "cli", "mixed")


def rss_mib() -> float:
    return float(psutil.Process().memory_info().rss / 2**20)


def bookkeeping(infra: AgentInfra) -> dict[str, int]:
    """What the client holds for waits and streams in progress (none between calls)."""
    return {
        "waiters": len(infra._waiters),
        "waits": len({id(w) for v in infra._waiters.values() for w in v}),
        "streams": len(infra._streams),
    }


class Ops:
    """The soak's operations, one call of each per iteration."""

    def __init__(self, infra: AgentInfra, env: dict[str, str], lag: int) -> None:
        self.infra = infra
        self.env = env
        self.lag = lag
        self.run = uuid.uuid4().hex[:6]
        self.n = 0
        self.unfinished: collections.deque[list[str]] = collections.deque()

    def ids(self, k: int, tag: str) -> list[str]:
        self.n += k
        return [f"{tag}-{self.run}-{i}" for i in range(self.n - k, self.n)]

    async def submit(self, k: int) -> list[str]:
        ids = self.ids(k, "s")
        await self.infra.submit_tasks([{"task_id": t, "payload": {"type": "noop"}} for t in ids])
        return ids

    async def idle(self) -> None:
        await asyncio.sleep(0.05)

    async def submit_wait(self) -> None:
        self.unfinished.append(await self.submit(50))
        if len(self.unfinished) > self.lag:
            await self.infra.wait_tasks(self.unfinished.popleft(), timeout=600)

    async def wait_now(self) -> None:
        await self.infra.wait_tasks(await self.submit(50), timeout=600)

    async def cancel(self) -> None:
        (tid,) = self.ids(1, "c")
        await self.infra.submit_task(tid, {"type": "sleep", "seconds": 30})
        await self.infra.cancel_task(tid)

    async def stream(self) -> None:
        ids = await self.submit(20)
        async for _ in self.infra.stream_task_results(ids):
            pass

    async def cli(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            *RAYINFRA, "status", env=self.env, stdout=subprocess.DEVNULL
        )
        await proc.wait()

    async def mixed(self) -> None:
        await asyncio.gather(self.submit_wait(), self.cancel(), self.stream())

    async def drain(self) -> None:
        while self.unfinished:
            await self.infra.wait_tasks(self.unfinished.popleft(), timeout=600)


async def phase(
    name: str, op: Callable[[], Awaitable[None]], ops: Ops, iterations: int, top: int
) -> dict[str, object]:
    for _ in range(max(5, iterations // 10)):  # warm-up: caches, pools, first-call imports
        await op()
    await ops.drain()
    gc.collect()
    tracing = tracemalloc.is_tracing()
    before = tracemalloc.take_snapshot() if tracing else None
    rss0, t0 = rss_mib(), time.monotonic()
    for _ in range(iterations):
        await op()
    await ops.drain()
    gc.collect()
    after, rss1 = tracemalloc.take_snapshot() if tracing else None, rss_mib()
    diff = []
    if before is not None and after is not None:
        filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
        diff = after.filter_traces(filters).compare_to(before.filter_traces(filters), "traceback")
    heap = sum(d.size_diff for d in diff)
    print(
        f"\n## {name}: {iterations} iterations in {time.monotonic() - t0:.0f}s; "
        f"RSS {rss0:.1f} -> {rss1:.1f} MiB; Python heap {heap / 2**20:+.2f} MiB; "
        f"{bookkeeping(ops.infra)}"
    )
    for d in diff[:top]:
        if d.size_diff <= 0:
            continue
        print(f"  {d.size_diff / 1024:+9.1f} KiB {d.count_diff:+7d} blocks")
        for line in d.traceback.format()[-8:]:
            print(f"      {line}")
    return {
        "phase": name,
        "iterations": iterations,
        "rss_mib": [round(rss0, 1), round(rss1, 1)],
        "heap_mib": round(heap / 2**20, 3),
        **bookkeeping(ops.infra),
    }


async def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    spec = make_runtime_spec("leak", '[services]\nprofile = "none"\n')
    cfg = load_config(env=spec.env()).config
    runtime.start(cfg)  # as the soak: this process becomes a Ray driver of its runtime
    results = []
    try:
        if args.frames:  # 0: RSS alone, without tracemalloc's own memory in it
            tracemalloc.start(args.frames)
        addr = dial_addr(cfg.gateway.orchestrator_grpc_addr)
        async with AgentInfra.start(orchestrator_addr=addr, config=cfg) as infra:
            ops = Ops(infra, spec.env(), args.lag)
            for name in args.phases.split(","):
                results.append(
                    await phase(name, getattr(ops, name), ops, args.iterations, args.top)
                )
    finally:
        runtime.stop(cfg.state.dir, force=True)
        shutil.rmtree(spec.root, ignore_errors=True)
    print("\n" + json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--phases", default=",".join(PHASES))
    p.add_argument("--lag", type=int, default=5, help="batches in flight before submit_wait waits")
    p.add_argument("--frames", type=int, default=12, help="tracemalloc traceback depth (0: off)")
    p.add_argument("--top", type=int, default=8)
    sys.exit(asyncio.run(main(p.parse_args())))
