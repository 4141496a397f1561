"""Workflow engine benchmark: N runs of a 5-step chain vs. the same tasks without the engine.

    .venv/bin/python bench/bench_workflows.py [--runs 1000] [--steps 5]

Starts a private loopback runtime and measures, in the same run, with no-op steps:
- raw Ray: the same number of no-op ``@ray.remote`` tasks as five dependent calls per chain
  (each step ``.remote()`` with the previous step's ref as its argument), all chains at once;
- tasks, all at once: runs x steps no-op tasks through ``AgentInfra.submit_tasks`` + ``wait_tasks``
  (no dependencies: the floor of the task path);
- tasks, client-driven chains: each chain submitted step by step by the client (submit, wait,
  next), all chains concurrently: what a user writes without a workflow engine;
- workflows: ``create_workflow`` once, then ``start_workflow_run`` per run (all at once), waiting
  until every run succeeded.
The engine's overhead per step is (workflows - client-driven chains) / (runs x steps). Prints a
table; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray

from bench.common import print_table
from rayinfra import AgentInfra, runtime
from rayinfra.config import load_config
from tests.conftest import make_runtime_spec


def raw_ray_chains(runs: int, steps: int) -> float:
    @ray.remote
    def step(_prev: object = None) -> int:
        return 1

    ray.get([step.remote() for _ in range(100)])  # warm the workers
    t0 = time.perf_counter()
    lasts = []
    for _ in range(runs):
        ref = step.remote()
        for _ in range(steps - 1):
            ref = step.remote(ref)
        lasts.append(ref)
    ray.get(lasts)
    return time.perf_counter() - t0


async def tasks_at_once(infra: AgentInfra, n: int) -> float:
    tag = uuid.uuid4().hex[:8]
    ids = [f"flat-{tag}-{i}" for i in range(n)]
    t0 = time.perf_counter()
    for i in range(0, n, 1000):
        await infra.submit_tasks(
            [{"task_id": t, "payload": {"type": "noop"}} for t in ids[i : i + 1000]]
        )
    done = await infra.wait_tasks(ids, timeout=900)
    assert {d["status"] for d in done} == {"completed"}
    return time.perf_counter() - t0


async def client_chains(infra: AgentInfra, runs: int, steps: int) -> float:
    tag = uuid.uuid4().hex[:8]

    async def chain(r: int) -> None:
        for s in range(steps):
            tid = f"chain-{tag}-{r}-{s}"
            await infra.submit_task(tid, {"type": "noop"})
            assert (await infra.wait_task(tid, timeout=900))["status"] == "completed"

    t0 = time.perf_counter()
    await asyncio.gather(*(chain(r) for r in range(runs)))
    return time.perf_counter() - t0


async def workflow_runs(infra: AgentInfra, runs: int, steps: int) -> float:
    nodes = [
        {"id": f"s{i}", "name": f"s{i}", "type": "task",
         "task": {"class": "cpu_short", "payload": {"type": "noop"}}}
        for i in range(steps)
    ]  # fmt: skip
    edges = [{"source": f"s{i}", "target": f"s{i + 1}"} for i in range(steps - 1)]
    wf = await infra.create_workflow({"name": "bench-chain", "nodes": nodes, "edges": edges})
    t0 = time.perf_counter()
    started = await asyncio.gather(*(infra.start_workflow_run(wf["id"]) for _ in range(runs)))
    pending = {r["id"] for r in started}
    while pending:
        await asyncio.sleep(0.5)
        for run_id in list(pending):
            record = await infra.get_workflow_run(run_id)
            if record["status"] in ("succeeded", "failed", "cancelled"):
                assert record["status"] == "succeeded", record
                pending.discard(run_id)
    return time.perf_counter() - t0


async def main(args: argparse.Namespace) -> None:
    spec = make_runtime_spec("bwf")
    cfg = load_config(env=spec.env()).config
    runtime.start(cfg)
    n = args.runs * args.steps
    try:
        raw = raw_ray_chains(args.runs, args.steps)
        async with AgentInfra.start(config=cfg) as infra:
            flat = await tasks_at_once(infra, n)
            chains = await client_chains(infra, args.runs, args.steps)
            flows = await workflow_runs(infra, args.runs, args.steps)
    finally:
        runtime.stop(cfg.state.dir, force=True)
    per_step_ms = (flows - chains) / n * 1000
    print_table(
        f"workflows ({args.runs} runs x {args.steps} no-op steps = {n} tasks)",
        [
            ("raw Ray, dependent chains", f"{raw:.1f} s", f"{n / raw:,.0f} steps/s"),
            (
                "rayinfra tasks, all at once (no dependencies)",
                f"{flat:.1f} s",
                f"{n / flat:,.0f} tasks/s",
            ),
            (
                "rayinfra tasks, client-driven chains",
                f"{chains:.1f} s",
                f"{n / chains:,.0f} steps/s",
            ),
            ("workflow runs", f"{flows:.1f} s", f"{n / flows:,.0f} steps/s"),
            (
                "engine overhead per step vs client chains",
                f"{per_step_ms:+.2f} ms",
                "wall time / steps",
            ),
            ("workflow runs / client-driven chains", f"{flows / chains:.2f}x", ""),
        ],
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--steps", type=int, default=5)
    asyncio.run(main(p.parse_args()))
