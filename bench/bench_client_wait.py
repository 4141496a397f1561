"""The client's own CPU for a large wait: ``AgentInfra.wait_tasks`` of N finished tasks.

    .venv/bin/python bench/bench_client_wait.py [--tasks 40000] [--repeat 7]

No runtime: the transport answers ``get`` with the status rows the scheduler would send (the
same :class:`~rayinfra.models.StatusRows` mapping ``ControlPlane.get`` returns) and its feed
stays quiet, so what is timed is the client alone: decoding each status, building each
result dict, registering and dropping the waiters, and the cyclic collector's passes over what
that keeps alive. The process imports Ray and grpc first, as a client process does: the
collector's full passes walk their objects too. Prints CPU per task (and the collector's share,
timed by ``gc.callbacks``) of each repeat, best first. The whole path, over a real runtime, is
``bench/profile_scheduler.py``'s "client" row.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc  # noqa: F401  # a client process's long-lived objects
import ray  # noqa: F401

from bench.common import print_table
from rayinfra import AgentInfra
from rayinfra.models import FROM_NOW, StatusRows, TaskStatus


class RowsTransport:
    """``get`` answers from ``rows`` as ``ControlPlane.get`` does; the feed has no news."""

    kind = "bench"

    def __init__(self, rows: Mapping[str, tuple[Any, ...]]) -> None:
        self.rows = rows

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def get(
        self, task_ids: Sequence[str], finished_only: bool = False
    ) -> Mapping[str, TaskStatus | None]:
        found = {t: self.rows.get(t) for t in task_ids}  # what the actor call hands back
        await asyncio.sleep(0)
        return StatusRows(found)

    async def changes(
        self, after_seq: int, task_ids: Collection[str] | None, timeout_s: float, terminal: bool
    ) -> tuple[int, list[TaskStatus]]:
        if after_seq == FROM_NOW:
            return 0, []
        await asyncio.sleep(timeout_s)
        return after_seq, []


def finished_row(task_id: str) -> tuple[Any, ...]:
    """A no-op task's status row as the scheduler reads it (``taskstore.StatusRow``)."""
    return (task_id, "cpu_short", 0, "", None, "completed", 1, '{"ok":true}', "", 1.0, 2.0, 3.0)


async def measure(n: int, repeat: int) -> list[tuple[float, float]]:
    rows = {f"bench-{i}": finished_row(f"bench-{i}") for i in range(n)}
    ids = list(rows)
    infra = AgentInfra(transport=RowsTransport(rows))  # type: ignore[arg-type]
    await infra.start_async()
    out = []
    try:
        for _ in range(repeat):
            marks: list[float] = []

            def timed(phase: str, info: dict[str, Any], marks: list[float] = marks) -> None:
                marks.append(time.perf_counter())

            gc.callbacks.append(timed)
            c0 = time.process_time()
            done = await infra.wait_tasks(ids, timeout=60)
            cpu = time.process_time() - c0
            gc.callbacks.remove(timed)
            assert len(done) == n and done[-1]["status"] == "completed"
            del done
            in_gc = sum(b - a for a, b in zip(marks[::2], marks[1::2], strict=False))
            out.append((cpu / n, in_gc / n))
    finally:
        await infra.stop()
    return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tasks", type=int, default=40000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    runs = asyncio.run(measure(args.tasks, args.repeat))
    best, median = runs[0], runs[len(runs) // 2]
    print_table(
        "client wait",
        [
            (
                f"wait_tasks of {args.tasks:,} finished tasks: client CPU per task",
                f"{best[0] * 1e6:.2f} µs (median {median[0] * 1e6:.2f})",
                "all runs, best first: " + ", ".join(f"{c * 1e6:.2f}" for c, _ in runs),
            ),
            (
                "of it, in the cyclic collector",
                f"{best[1] * 1e6:.2f} µs (median {median[1] * 1e6:.2f})",
                "timed by gc.callbacks",
            ),
        ],
    )


if __name__ == "__main__":
    main()
