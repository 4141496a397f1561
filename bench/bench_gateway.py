"""gRPC acknowledged-submit latency and throughput through the gateway, beside a plain echo.

Starts a private loopback runtime, then measures from one asyncio client process:

- a plain ``grpc.aio`` echo server in this process (the same ``Health`` messages), the floor of a
  unary call on this machine;
- ``SubmitTask`` through the gateway actor (the reply means the task is committed to SQLite):
  p50/p99 with one client (calls one after another), and throughput with N concurrent callers;
- ``SubmitTasks`` of ``--batch`` tasks, beside the echo answering the same batch;
- where a submit's time goes: the admission itself (validate, commit: the ``Submitter`` the
  gateway runs, here on a private store in this process) against the whole call.

    .venv/bin/python bench/bench_gateway.py --calls 2000 --concurrency 16 [--batch 10]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import echo_server, pct, print_table
from rayinfra import admission, runtime
from rayinfra.api import stubs
from rayinfra.config import NAMESPACE, dial_addr, load_config
from rayinfra.store import StateStore
from tests.conftest import make_runtime_spec

pb2, pb2_grpc = stubs.orchestrator()


async def admission_only(cfg: Any, n: int, batch: int) -> list[float]:
    """ms per ``Submitter.submit`` of ``batch`` no-op tasks on a private store (same config)."""
    with tempfile.TemporaryDirectory() as d:
        store = StateStore(Path(d) / "state.db", synchronous=cfg.state.synchronous)
        sub = admission.Submitter(store, cfg, wake=lambda _admitted: None)
        out = []
        for _ in range(n):
            specs = [
                {"task_id": uuid.uuid4().hex, "payload": {"type": "noop"}} for _ in range(batch)
            ]
            t0 = time.perf_counter()
            await sub.submit(specs, trusted=False, source="grpc")
            out.append((time.perf_counter() - t0) * 1000)
        store.close()
        return out


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
        server, port = await echo_server()
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

            def submit_many(stub: Any) -> Any:
                req = pb2.SubmitTasksRequest(
                    tasks=[
                        pb2.SubmitTaskRequest(
                            id=f"b-{run}-{next(counter)}", payload={"type": "noop"}
                        )
                        for _ in range(args.batch)
                    ]
                )
                return lambda: stub.SubmitTasks(req)

            repeat = pb2.SubmitTaskRequest(id=f"b-{run}-repeat", payload={"type": "noop"})

            async def gw_repeat() -> Any:  # an idempotent repeat: no new task, nothing to run
                return await gw.SubmitTask(repeat)

            async def echo_many() -> Any:
                return await submit_many(echo)()

            async def gw_many() -> Any:
                return await submit_many(gw)()

            for c in (echo_call, gw_call, echo_many, gw_many):  # warm up channels, executors
                await sequential(c, 200)
            gateway = ray.get_actor("gateway", namespace=NAMESPACE)
            e = await sequential(echo_call, args.calls)
            s0 = await gateway.store_stats.remote()
            g = await sequential(gw_call, args.calls)
            s1 = await gateway.store_stats.remote()
            em = await sequential(echo_many, args.calls // 2)
            gm = await sequential(gw_many, args.calls // 2)
            s2 = await gateway.store_stats.remote()
            gr = await sequential(gw_repeat, args.calls)
            a1 = await admission_only(cfg, args.calls // 2, 1)
            am = await admission_only(cfg, args.calls // 2, args.batch)
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
            emp50, gmp50 = statistics.median(em), statistics.median(gm)
            rows.append(
                (
                    f"plain echo SubmitTasks of {args.batch} p50 / p99 (ms)",
                    f"{emp50:.2f} / {pct(em, 99):.2f}",
                    "floor",
                )
            )
            rows.append(
                (
                    f"gateway SubmitTasks of {args.batch} (acknowledged) p50 / p99 (ms)",
                    f"{gmp50:.2f} / {pct(gm, 99):.2f}",
                    f"{gmp50 / emp50:.1f}x the echo p50 (aim <= 3x)",
                )
            )
            rows.append(
                (
                    "gateway SubmitTask of an existing id p50 / p99 (ms)",
                    f"{statistics.median(gr):.2f} / {pct(gr, 99):.2f}",
                    f"{statistics.median(gr) / ep50:.1f}x the echo p50: the same call path, no "
                    "insert and no task to run meanwhile",
                )
            )
            for what, (before, after) in (
                ("SubmitTask", (s0, s1)),
                (f"SubmitTasks of {args.batch}", (s1, s2)),
            ):
                commits = max(1, after["commits"] - before["commits"])
                waits = after["lock_waits"] - before["lock_waits"]
                waited = after["lock_wait_s"] - before["lock_wait_s"]
                busy = after["inline_busy"] - before["inline_busy"]
                rows.append(
                    (
                        f"{what}: gateway commits that waited for the write lock",
                        f"{waits / commits:.0%}, {1000 * waited / commits:.2f} ms per commit",
                        f"{busy / commits:.0%} found it held and went to the writer thread "
                        "(the scheduler was writing results)",
                    )
                )
            for n, a, whole in ((1, a1, gp50), (args.batch, am, gmp50)):
                rows.append(
                    (
                        f"of which admission of {n} (validate + commit) p50 (ms)",
                        f"{statistics.median(a):.2f}",
                        f"{statistics.median(a) / whole:.0%} of the call; in this process, "
                        "private store",
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
    p.add_argument("--batch", type=int, default=10, help="tasks per SubmitTasks call")
    asyncio.run(main(p.parse_args()))
