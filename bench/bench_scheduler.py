"""Scheduler benchmark: rayinfra vs raw Ray no-op tasks, measured in the same run.

    .venv/bin/python bench/bench_scheduler.py [--tasks 20000] [--queued 100000]

Starts a private runtime (own ports and state dir, loopback), then measures:
- raw Ray: N no-op ``@ray.remote`` tasks, submitted and fetched (tasks/s);
- rayinfra: N acknowledged no-op tasks through AgentInfra (``submit_tasks`` in batches of 1000,
  then ``wait_tasks``), i.e. durable (committed) submit, dispatch, execution and result;
- single-task ack latency p50/p99 (``submit_task`` returns once the task is committed): idle
  (each submit meets a settled scheduler) and under load (back-to-back submits while another
  client keeps 500-task batches flowing), beside one bare Ray actor call. Over actor handles
  an ack is one call to the gateway actor, over gRPC one SubmitTask to the gateway; either way
  the gateway admits and commits, then rings the scheduler's doorbell;
- scheduler memory (RSS) with 100k tasks queued (a class no node can run, so they stay queued).
Prints a markdown table; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc
import psutil
import ray

from bench.common import echo_server, pb2, pb2_grpc, pct, print_table
from rayinfra import AgentInfra, runtime
from rayinfra.client.discovery import grpc_transport
from rayinfra.config import NAMESPACE, dial_addr, load_config
from tests.conftest import make_runtime_spec

BENCH_TOML = """
[scheduler]
unschedulable_timeout_s = 3600
[classes.parked]
num_cpus = 0
label_selector = {"rayinfra.io/role" = "nowhere"}
"""


def raw_ray_noop(n: int) -> float:
    @ray.remote
    def noop() -> None:
        return None

    ray.get([noop.remote() for _ in range(200)])  # warm the workers
    t0 = time.perf_counter()
    ray.get([noop.remote() for _ in range(n)])
    return n / (time.perf_counter() - t0)


@ray.remote(num_cpus=0)
class _Echo:
    async def ping(self, spec: dict) -> list[dict]:
        return [spec]


async def raw_actor_rtt(n: int) -> list[float]:
    """One bare async-actor call carrying a task-sized dict, spaced like the idle ack measurement
    (10 ms apart, so each call meets idle threads): what an ack would cost if it crossed an actor
    (a client on the head's host admits locally and rings the scheduler's doorbell instead)."""
    echo = _Echo.remote()
    spec = {"task_id": "x" * 14, "payload": {"type": "noop"}, "task_class": "cpu_short"}
    await echo.ping.remote(spec)
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await echo.ping.remote(spec)
        out.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.01)
    ray.kill(echo)
    return out


async def rayinfra_noop(infra: AgentInfra, n: int, batch: int = 1000) -> float:
    run = uuid.uuid4().hex[:8]
    warm = [{"task_id": f"w-{run}-{i}", "payload": {"type": "noop"}} for i in range(2000)]
    await infra.submit_tasks(warm)
    await infra.wait_tasks([t["task_id"] for t in warm], timeout=300)
    ids = [f"b-{run}-{i}" for i in range(n)]
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        await infra.submit_tasks(
            [{"task_id": t, "payload": {"type": "noop"}} for t in ids[i : i + batch]]
        )
    done = await infra.wait_tasks(ids, timeout=600)
    elapsed = time.perf_counter() - t0
    assert all(d["status"] == "completed" for d in done)
    return n / elapsed


async def ack_latencies(infra: AgentInfra, n: int, settle: bool) -> list[float]:
    """Time ``submit_task`` (returns once committed). With ``settle`` each task is waited for
    (untimed) before the next submit, so every submit meets an otherwise idle scheduler."""
    out = []
    run = uuid.uuid4().hex[:8]
    for i in range(n):
        t0 = time.perf_counter()
        await infra.submit_task(f"a-{run}-{i}", {"type": "noop"})
        out.append((time.perf_counter() - t0) * 1000)
        if settle:
            await infra.wait_task(f"a-{run}-{i}", timeout=60)
            await asyncio.sleep(0.01)  # let the finished task's bookkeeping drain
    return out


async def grpc_echo_rtt(n: int) -> list[float]:
    """A plain grpc.aio SubmitTask echo in this process, spaced like the idle ack measurement:
    the floor of a gRPC ack on this machine when every thread has to wake up for it."""
    server, port = await echo_server()
    out = []
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb2_grpc.OrchestratorServiceStub(ch)
        req = pb2.SubmitTaskRequest(id="x" * 14, payload={"type": "noop"})
        await stub.SubmitTask(req)
        for _ in range(n):
            t0 = time.perf_counter()
            await stub.SubmitTask(req)
            out.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.01)
    await server.stop(0)
    return out


def background_load(cfg, stop: threading.Event) -> None:
    async def load() -> None:
        async with AgentInfra.start(config=cfg) as other:
            run = uuid.uuid4().hex[:8]
            n = 0
            while not stop.is_set():
                ids = [f"l-{run}-{n + i}" for i in range(500)]
                await other.submit_tasks([{"task_id": t, "payload": {"type": "noop"}} for t in ids])
                n += 500
                await other.wait_tasks(ids, timeout=300)

    asyncio.run(load())


def scheduler_rss() -> int:
    pid = ray.get(ray.get_actor("scheduler", namespace=NAMESPACE).ping.remote())["pid"]
    return int(psutil.Process(pid).memory_info().rss)


async def main(args: argparse.Namespace) -> None:
    spec = make_runtime_spec("bench", BENCH_TOML)
    cfg = load_config(env=spec.env()).config
    runtime.start(cfg)
    gateway = dial_addr(cfg.gateway.orchestrator_grpc_addr)
    rows: list[tuple[str, str, str]] = []
    try:
        raw = raw_ray_noop(args.tasks)
        async with AgentInfra.start(config=cfg) as infra:
            ours = await rayinfra_noop(infra, args.tasks)
            rows.append(("no-op throughput, raw Ray (tasks/s)", f"{raw:,.0f}", "baseline"))
            rows.append(
                (
                    "no-op throughput, rayinfra acknowledged (tasks/s)",
                    f"{ours:,.0f}",
                    f"{ours / raw:.1f}x raw Ray",
                )
            )
            floor = await raw_actor_rtt(args.acks)
            idle = await ack_latencies(infra, args.acks, settle=True)
            rows.append(
                (
                    "raw Ray async-actor call p50 / p99, idle (ms)",
                    f"{statistics.median(floor):.2f} / {pct(floor, 99):.2f}",
                    "what an ack through the scheduler actor could not beat",
                )
            )
            rows.append(
                (
                    "single-task ack p50 / p99, idle (ms)",
                    f"{statistics.median(idle):.2f} / {pct(idle, 99):.2f}",
                    f"must p50 <= 3, aim <= 1; ActorTransport: one gateway actor call "
                    f"({statistics.median(idle) / statistics.median(floor):.1f}x the bare call)",
                )
            )
            async with AgentInfra.start(transport=grpc_transport(cfg, gateway)) as over_grpc:
                via_gateway = await ack_latencies(over_grpc, args.acks, settle=True)
            echo_idle = await grpc_echo_rtt(args.acks)
            rows.append(
                (
                    "plain grpc.aio echo p50 / p99, idle (ms)",
                    f"{statistics.median(echo_idle):.2f} / {pct(echo_idle, 99):.2f}",
                    "spaced as the acks: the floor of any gRPC ack here",
                )
            )
            rows.append(
                (
                    "single-task ack p50 / p99 via the gateway, idle (ms)",
                    f"{statistics.median(via_gateway):.2f} / {pct(via_gateway, 99):.2f}",
                    "GrpcTransport: the gateway commits, then rings the doorbell "
                    f"({statistics.median(via_gateway) / statistics.median(echo_idle):.1f}x "
                    "the idle echo)",
                )
            )
            stop = threading.Event()
            loader = threading.Thread(target=background_load, args=(cfg, stop), daemon=True)
            loader.start()
            time.sleep(2.0)
            busy = await ack_latencies(infra, args.acks, settle=False)
            stop.set()
            loader.join(timeout=120)
            rows.append(
                (
                    "single-task ack p50 / p99, under load (ms)",
                    f"{statistics.median(busy):.2f} / {pct(busy, 99):.2f}",
                    "another client submitting 500-task batches",
                )
            )
            rss0 = scheduler_rss()
            run = uuid.uuid4().hex[:8]
            t0 = time.perf_counter()
            for i in range(0, args.queued, 5000):
                await infra.submit_tasks(
                    [
                        {
                            "task_id": f"q-{run}-{j}",
                            "payload": {"type": "noop"},
                            "task_class": "parked",
                        }
                        for j in range(i, min(args.queued, i + 5000))
                    ]
                )
            queued_rate = args.queued / (time.perf_counter() - t0)
            rss1 = scheduler_rss()
            rows.append(
                (
                    f"scheduler RSS with {args.queued:,} queued (MiB)",
                    f"{rss1 / 2**20:.0f}",
                    f"{(rss1 - rss0) / args.queued:.0f} B/task over idle {rss0 / 2**20:.0f} MiB",
                )
            )
            rows.append(
                (
                    "bulk submit rate into the queue (tasks/s)",
                    f"{queued_rate:,.0f}",
                    "batches of 5000, committed",
                )
            )
    finally:
        runtime.stop(cfg.state.dir, force=True)
    print_table("scheduler", rows)


if __name__ == "__main__":
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--acks", type=int, default=500)
    p.add_argument("--queued", type=int, default=100000)
    asyncio.run(main(p.parse_args()))
