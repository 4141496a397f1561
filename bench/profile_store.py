"""The state store's share of a task, in one process: what SQLite and the Python around it cost
per task on the three store paths every task takes.

    .venv/bin/python bench/profile_store.py [--tasks 60000] [--batch 10] [--finish-batch 500]

No Ray and no runtime: two :class:`~rayinfra.store.StateStore` s on one database file, as the
gateway and the scheduler hold it. The first admits no-op tasks in batches of ``--batch``
(``admission.Submitter``: validation, identity, the insert of rows and ``task_submitted``
events, the commit); each time ``--finish-batch`` tasks are in, the second reads them back
(``taskstore.read_submitted``, as the scheduler's catch-up does) and commits each one's
completion (``taskstore.persist``: the row update and the ``task_completed`` event). Every
statement on each store's writer connection is timed, so the table splits each path into its
SQL statements and the Python left over. CPU-bound in one thread at a time: steadier than the
whole runtime's profile (``bench/profile_scheduler.py``), whose "scheduler" and "gateway" rows
these paths are part of.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table
from rayinfra import admission, taskstore
from rayinfra.config import load_config
from rayinfra.store import StateStore
from tests.conftest import make_runtime_spec


class TimedConnection:
    """A writer connection whose ``execute`` calls are timed by their statement's first words."""

    def __init__(self, conn: Any, spent: dict[str, float], calls: collections.Counter[str]):
        self._conn, self._spent, self._calls = conn, spent, calls

    def execute(self, sql: str, *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return self._conn.execute(sql, *args)
        finally:
            key = " ".join(sql.split()[:3])
            self._spent[key] += time.perf_counter() - t0
            self._calls[key] += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def timed(store: StateStore) -> tuple[dict[str, float], collections.Counter[str]]:
    spent: dict[str, float] = collections.defaultdict(float)
    calls: collections.Counter[str] = collections.Counter()
    store._wconn = TimedConnection(store._wconn, spent, calls)  # type: ignore[assignment]
    return spent, calls


async def run(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    spec = make_runtime_spec("pstore")  # a config as the tests write one
    cfg = load_config(env={"RAYINFRA_CONFIG": str(spec.config_path)}).config
    shutil.rmtree(spec.root, ignore_errors=True)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "state.db"
        gateway = StateStore(path, synchronous=cfg.state.synchronous)
        scheduler = StateStore(path, synchronous=cfg.state.synchronous)
        g_sql, g_calls = timed(gateway)
        s_sql, s_calls = timed(scheduler)
        submitter = admission.Submitter(gateway, cfg, wake=lambda _admitted: None)
        admit_s = read_s = finish_s = 0.0
        after, pending, n = 0, 0, 0
        while n < args.tasks:
            specs = [
                {"task_id": f"p{n + i:011d}", "payload": {"type": "noop"}}
                for i in range(args.batch)
            ]
            t0 = time.perf_counter()
            await submitter.submit(specs, trusted=False, source="grpc")
            admit_s += time.perf_counter() - t0
            n += args.batch
            pending += args.batch
            if pending < args.finish_batch and n < args.tasks:
                continue
            pending = 0
            t0 = time.perf_counter()
            rows = []
            for last, got in taskstore.read_submitted(scheduler, after):
                rows += got
                after = last
            t1 = time.perf_counter()
            read_s += t1 - t0
            now = time.time()
            ends = []
            for row in rows:
                row.status, row.attempts, row.result = "completed", 1, {"ok": True}
                row.started_at, row.finished_at = now - 0.001, now
                ends.append(
                    taskstore.Transition(row, "task_completed", {"attempts": 1, "duration_ms": 1.0})
                )
            await taskstore.persist(scheduler, ends, now)
            finish_s += time.perf_counter() - t1
        gateway.close()
        scheduler.close()

    def us(seconds: float) -> str:
        return f"{seconds / n * 1e6:.1f}"

    def split(label: str, total: float, sql: dict[str, float], calls: Any) -> None:
        table.append((f"**{label}**", f"**{us(total)}**", "µs per task, all of it"))
        for key, s in sorted(sql.items(), key=lambda kv: -kv[1]):
            per = f"{calls[key] / (n / 1000):.0f} per 1000 tasks"
            table.append((f"{label}: `{key}`", us(s), per))
        table.append((f"{label}: Python (the rest)", us(total - sum(sql.values())), ""))

    table: list[tuple[str, str, str]] = []
    split(f"admission, batches of {args.batch} (gateway)", admit_s, g_sql, g_calls)
    table.append(
        (
            f"**read back, {args.finish_batch} at a time (scheduler)**",
            f"**{us(read_s)}**",
            "read_submitted: the join of events and tasks, a TaskRow per task",
        )
    )
    split(f"completion, {args.finish_batch} at a time (scheduler)", finish_s, s_sql, s_calls)
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=60000)
    p.add_argument("--batch", type=int, default=10, help="tasks per admission")
    p.add_argument("--finish-batch", type=int, default=500, help="tasks per read-back/completion")
    args = p.parse_args()
    print_table("state store per task", asyncio.run(run(args)))


if __name__ == "__main__":
    main()
