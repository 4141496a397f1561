"""gRPC acknowledged-submit latency and throughput through the gateway, beside a plain echo.

Starts a private loopback runtime, then measures from one asyncio client process:

- a plain ``grpc.aio`` echo server in this process (the same ``Health`` messages), the floor of a
  unary call on this machine;
- ``SubmitTask`` through the gateway actor (the reply means the task is committed to SQLite):
  p50/p99 with one client (calls one after another), and throughput with N concurrent callers.

    .venv/bin/python bench/bench_gateway.py --calls 2000 --concurrency 16
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import pct, print_table
from rayinfra import runtime
from rayinfra.api import stubs
from rayinfra.config import dial_addr, load_config
from tests.conftest import make_runtime_spec

pb2, pb2_grpc = stubs.orchestrator()


class Echo(pb2_grpc.OrchestratorServiceServicer):  # type: ignore[misc]
    async def Health(self, request: Any, context: Any) -> Any:
        return pb2.HealthResponse(healthy=True, version="echo")

    async def SubmitTask(self, request: Any, context: Any) -> Any:
        return pb2.SubmitTaskResponse(success=True, task_id=request.id)


async def sequential(call: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        await call()
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def concurrent(call: Any, n: int, workers: int) -> float:
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return n / (time.perf_counter() - t0)


async def main(args: argparse.Namespace) -> None:
    spec = make_runtime_spec("bgw", "")
    cfg = load_config(env=spec.env()).config
    runtime.start(cfg)
    rows: list[tuple[str, str, str]] = []
    try:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        pb2_grpc.add_OrchestratorServiceServicer_to_server(Echo(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        target = dial_addr(cfg.gateway.orchestrator_grpc_addr)
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ech,
            grpc.aio.insecure_channel(target) as gch,
        ):
            echo = pb2_grpc.OrchestratorServiceStub(ech)
            gw = pb2_grpc.OrchestratorServiceStub(gch)
            run = uuid.uuid4().hex[:8]
            counter = iter(range(10**9))

            def submit(stub: Any) -> Any:
                req = pb2.SubmitTaskRequest(id=f"b-{run}-{next(counter)}", payload={"type": "noop"})
                return lambda: stub.SubmitTask(req)

            async def echo_call() -> Any:
                return await submit(echo)()

            async def gw_call() -> Any:
                return await submit(gw)()

            for c in (echo_call, gw_call):  # warm up channels, executors
                await sequential(c, 200)
            e = await sequential(echo_call, args.calls)
            g = await sequential(gw_call, args.calls)
            ep50, gp50 = statistics.median(e), statistics.median(g)
            rows.append(
                ("plain grpc.aio echo p50 / p99 (ms)", f"{ep50:.2f} / {pct(e, 99):.2f}", "floor")
            )
            rows.append(
                (
                    "gateway SubmitTask (acknowledged) p50 / p99 (ms)",
                    f"{gp50:.2f} / {pct(g, 99):.2f}",
                    f"{gp50 / ep50:.1f}x the echo p50 (must <= 6x, aim <= 3x)",
                )
            )
            rows.append(
                (
                    "plain echo / gateway SubmitTask throughput, 1 caller (calls/s)",
                    f"{len(e) / (sum(e) / 1000):,.0f} / {len(g) / (sum(g) / 1000):,.0f}",
                    "one call after another",
                )
            )
            et = await concurrent(echo_call, args.calls * 2, args.concurrency)
            gt = await concurrent(gw_call, args.calls * 2, args.concurrency)
            rows.append(
                (f"plain echo throughput, {args.concurrency} callers (calls/s)", f"{et:,.0f}", "")
            )
            rows.append(
                (
                    f"gateway SubmitTask throughput, {args.concurrency} callers (tasks/s)",
                    f"{gt:,.0f}",
                    f"{gt / et:.2f}x the echo",
                )
            )
        await server.stop(0)
    finally:
        runtime.stop(cfg.state.dir, force=True)
    print_table("gateway", rows)


if __name__ == "__main__":
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--calls", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=16)
    asyncio.run(main(p.parse_args()))
