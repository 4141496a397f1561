"""What every benchmark in bench/ shares: percentiles, the markdown table it prints, and a plain
grpc.aio echo of the orchestrator service (the floor of a unary call on this machine)."""

from __future__ import annotations

import time
from typing import Any

import grpc
import psutil
import ray

from rayinfra.api import stubs

pb2, pb2_grpc = stubs.orchestrator()


def pct(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def print_table(title: str, rows: list[tuple[str, str, str]]) -> None:
    """``## rayinfra <title> benchmark (machine, date, Ray)`` and a measure/value/note table."""
    print(
        f"\n## rayinfra {title} benchmark ({psutil.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d')}, ray {ray.__version__})\n"
    )
    print("| measure | value | note |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")


class Echo(pb2_grpc.OrchestratorServiceServicer):  # type: ignore[misc,name-defined]
    async def Health(self, request: Any, context: Any) -> Any:
        return pb2.HealthResponse(healthy=True, version="echo")

    async def SubmitTask(self, request: Any, context: Any) -> Any:
        return pb2.SubmitTaskResponse(success=True, task_id=request.id)

    async def SubmitTasks(self, request: Any, context: Any) -> Any:
        return pb2.SubmitTasksResponse(
            results=[pb2.SubmitTaskResponse(success=True, task_id=t.id) for t in request.tasks]
        )


async def echo_server() -> tuple[Any, int]:
    """A started grpc.aio server on 127.0.0.1 answering :class:`Echo`, and its port."""
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    pb2_grpc.add_OrchestratorServiceServicer_to_server(Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port
