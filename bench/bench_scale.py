"""Scale benchmark: a million tasks queued, listing and status over them, and a purge of a
million finished ones while single submits go on.

    .venv/bin/python bench/bench_scale.py [--tasks 1000000] [--quick]

``--quick`` is ``--tasks 50000`` (about a minute and a half). Starts a private runtime (own ports
and state dir, loopback), then measures:
- submit of the lot: ``--tasks`` tasks to a class no node can run (they stay queued), through
  AgentInfra (``submit_tasks`` in batches of ``--batch``, ``--concurrency`` batches in flight),
  each batch acknowledged once committed; and the scheduler's RSS per queued task;
- with them all in the store: ``rayinfra status`` and ``rayinfra task list`` as a user runs them
  (fresh processes over the gateway, median of ``--runs``), the same Python calls
  (``runtime_status``, ``list_tasks_page``: the first page, one filtered by status, one by class,
  and a page from the middle of the listing via its cursor), the scheduler's ``status()``;
- purge under load: every queued task is marked finished two days ago directly in the state
  store (with its events), the scheduler restarted so it lets them go, then single submits
  (``submit_task``, one at a time, each acknowledged once committed) are timed for
  ``--ack-seconds`` with nothing else going on, and again during ``purge_tasks`` of all those
  rows (``state.purge_chunk_rows`` per step, ``state.purge_pause_s`` between steps; the purge
  runs in the scheduler's process, the submits are committed by the gateway's).
Prints a markdown table; docs/benchmarks.md records a run.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import ray

from bench.common import pct, print_table
from rayinfra import AgentInfra, runtime
from rayinfra.config import NAMESPACE, load_config
from rayinfra.models import encode_list_cursor
from tests.conftest import make_runtime_spec

RAYINFRA = str(Path(sys.executable).with_name("rayinfra"))
PARKED = "parked"
BENCH_TOML = f"""
[scheduler]
unschedulable_timeout_s = 86400
[classes.{PARKED}]
num_cpus = 0
label_selector = {{"rayinfra.io/role" = "nowhere"}}
"""
TWO_DAYS_S = 2 * 86400.0
MARK_CHUNK = 50_000


def scheduler() -> Any:
    return ray.get_actor("scheduler", namespace=NAMESPACE)


def scheduler_rss() -> int:
    pid = ray.get(scheduler().ping.remote())["pid"]
    return int(psutil.Process(pid).memory_info().rss)


async def scheduler_status() -> dict[str, Any]:
    status: dict[str, Any] = await scheduler().status.remote()
    return status


def queued() -> int:
    return int(ray.get(scheduler().status.remote())["classes"][PARKED]["pending"])


async def submit_lot(infra: AgentInfra, n: int, batch: int, concurrency: int) -> float:
    """Submit ``n`` parked tasks; seconds until the last batch was acknowledged."""
    run = uuid.uuid4().hex[:8]
    gate = asyncio.Semaphore(concurrency)

    async def one(start: int) -> None:
        async with gate:
            await infra.submit_tasks(
                [
                    {
                        "task_id": f"s-{run}-{j:07d}",
                        "payload": {"type": "noop"},
                        "task_class": PARKED,
                    }
                    for j in range(start, min(n, start + batch))
                ]
            )

    t0 = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(0, n, batch)))
    return time.perf_counter() - t0


def wait_queued(n: int, timeout_s: float = 600.0) -> float:
    t0 = time.perf_counter()
    while queued() < n:
        if time.perf_counter() - t0 > timeout_s:
            raise SystemExit(f"only {queued()} of {n} queued after {timeout_s:g}s")
        time.sleep(0.5)
    return time.perf_counter() - t0


def timed_cli(args: list[str], env: dict[str, str], runs: int) -> list[float]:
    out = []
    for i in range(runs + 1):  # the first warms the page cache, untimed
        t0 = time.perf_counter()
        proc = subprocess.run(
            [RAYINFRA, *args], env=env, capture_output=True, text=True, timeout=60
        )
        if i:
            out.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"rayinfra {args} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return out


async def timed_async(fn: Any, runs: int) -> list[float]:
    await fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await fn()
        out.append(time.perf_counter() - t0)
    return out


def middle_cursor(db: Path, n: int) -> str:
    """The cursor of the listing's position half way down (read from the store, untimed)."""
    with sqlite3.connect(db) as conn:
        at, rowid = conn.execute(
            "SELECT submitted_at, rowid FROM tasks ORDER BY submitted_at DESC, rowid DESC"
            " LIMIT 1 OFFSET ?",
            (n // 2,),
        ).fetchone()
    return encode_list_cursor(float(at), int(rowid))


def mark_finished(db: Path, finished_at: float) -> tuple[int, int, float]:
    """Every task finished at ``finished_at`` and every event stamped then: what a store looks
    like after those tasks ran and were kept for two days. Chunks of rows per transaction (the
    runtime keeps serving meanwhile). Returns (tasks, events, seconds)."""
    t0 = time.perf_counter()
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 60000")
        tasks = events = 0
        (top,) = conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM tasks").fetchone()
        for lo in range(0, top + 1, MARK_CHUNK):
            conn.execute("BEGIN IMMEDIATE")
            tasks += conn.execute(
                "UPDATE tasks SET status = 'completed', started_at = ?, finished_at = ?"
                " WHERE rowid > ? AND rowid <= ? AND status = 'pending' AND class = ?",
                (finished_at, finished_at, lo, lo + MARK_CHUNK, PARKED),
            ).rowcount
            conn.execute("COMMIT")
        (top,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
        for lo in range(0, top + 1, MARK_CHUNK):
            conn.execute("BEGIN IMMEDIATE")
            events += conn.execute(
                "UPDATE events SET ts = ? WHERE seq > ? AND seq <= ?",
                (int(finished_at), lo, lo + MARK_CHUNK),
            ).rowcount
            conn.execute("COMMIT")
    finally:
        conn.close()
    return tasks, events, time.perf_counter() - t0


def restart_scheduler() -> float:
    """Kill the scheduler actor; Ray restarts it and it recovers only unfinished tasks."""
    t0 = time.perf_counter()
    old_pid = ray.get(scheduler().ping.remote())["pid"]
    ray.kill(scheduler(), no_restart=False)
    while True:
        time.sleep(0.5)
        try:
            if ray.get(scheduler().ping.remote(), timeout=10)["pid"] != old_pid:
                break
        except Exception:  # noqa: BLE001 - restarting
            continue
        if time.perf_counter() - t0 > 300:
            raise SystemExit("the scheduler did not come back within 300 s")
    return time.perf_counter() - t0


async def acks(infra: AgentInfra, until: Any, gap_s: float) -> list[float]:
    """Single submits one after another (``gap_s`` apart) until ``until()``; ack times in ms."""
    out = []
    run = uuid.uuid4().hex[:8]
    i = 0
    while not until():
        t0 = time.perf_counter()
        await infra.submit_task(f"a-{run}-{i}", {"type": "noop"}, task_class=PARKED)
        out.append((time.perf_counter() - t0) * 1000)
        i += 1
        await asyncio.sleep(gap_s)
    return out


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms"


def ack_cell(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} / {pct(values, 99):.2f} / {max(values):.1f}"


async def main(args: argparse.Namespace) -> None:
    n = args.tasks
    spec = make_runtime_spec("scale", BENCH_TOML)
    text = spec.config_path.read_text()
    knobs = f"purge_chunk_rows = {args.chunk_rows}\npurge_pause_s = {args.pause_s}\n"
    spec.config_path.write_text(text.replace("[state]\n", f"[state]\n{knobs}", 1))
    cfg = load_config(env=spec.env()).config
    env = spec.env()
    db = cfg.state.db_path
    rows: list[tuple[str, str, str]] = []
    runtime.start(cfg)
    try:
        async with AgentInfra.start(config=cfg) as infra:
            # ---------------------------------------------------------------- submit the lot
            rss0 = scheduler_rss()
            submit_s = await submit_lot(infra, n, args.batch, args.concurrency)
            settle_s = wait_queued(n)
            rss1 = scheduler_rss()
            target = 60.0 * n / 1_000_000
            rows.append(
                (
                    f"submit {n:,} tasks (s)",
                    f"{submit_s:.1f}",
                    f"{n / submit_s:,.0f} tasks/s; batches of {args.batch}, {args.concurrency} in "
                    f"flight; target <= {target:.0f} s: {'met' if submit_s <= target else 'MISSED'}"
                    f" (all queued {settle_s:.1f} s later)",
                )
            )
            per_task = (rss1 - rss0) / n
            rows.append(
                (
                    f"scheduler RSS with {n:,} queued (MiB)",
                    f"{rss1 / 2**20:,.0f}",
                    f"{per_task:,.0f} B/task over idle {rss0 / 2**20:.0f} MiB; target <= 1024 B/task:"
                    f" {'met' if per_task <= 1024 else 'MISSED'}",
                )
            )
            rows.append(
                (
                    "state store size (MiB)",
                    f"{sum(p.stat().st_size for p in db.parent.glob(db.name + '*')) / 2**20:,.0f}",
                    "db + WAL",
                )
            )
            # ---------------------------------------------------------------- status, listing
            for name, argv in (
                ("rayinfra status", ["status"]),
                ("rayinfra task list", ["task", "list"]),
                ("rayinfra task list --status pending", ["task", "list", "--status", "pending"]),
            ):
                t = timed_cli(argv, env, args.runs)
                verdict = "met" if statistics.median(t) < 1.0 else "MISSED"
                rows.append(
                    (f"`{name}` (CLI process)", ms(t), f"max {max(t):.2f} s; < 1 s: {verdict}")
                )
            middle = middle_cursor(db, n)
            calls = {
                "runtime_status()": lambda: infra.runtime_status(),
                "scheduler status()": scheduler_status,
                "list_tasks_page(limit=100)": lambda: infra.list_tasks_page(limit=100),
                "list_tasks_page(status=pending)": lambda: infra.list_tasks_page(
                    "pending", limit=100
                ),
                f"list_tasks_page(task_class={PARKED})": lambda: infra.list_tasks_page(
                    None, PARKED, 100
                ),
                f"list_tasks_page(after=<{n // 2:,} down>)": lambda: infra.list_tasks_page(
                    limit=100, after=middle
                ),
            }
            for name, call in calls.items():
                t = await timed_async(call, args.runs)
                rows.append((f"{name} (Python, actors)", ms(t), f"max {max(t) * 1000:.0f} ms"))
            # ---------------------------------------------------------------- purge under load
            marked, events, mark_s = mark_finished(db, time.time() - TWO_DAYS_S)
            restart_s = restart_scheduler()
            rss2 = scheduler_rss()
            rows.append(
                (
                    "made purgeable",
                    f"{marked:,} tasks + {events:,} events",
                    f"marked finished 2 days ago in {mark_s:.0f} s; scheduler restarted in "
                    f"{restart_s:.0f} s (RSS {rss2 / 2**20:.0f} MiB)",
                )
            )
            stop_at = time.monotonic() + args.ack_seconds
            idle = await acks(infra, lambda: time.monotonic() > stop_at, args.gap_s)
            purge = asyncio.create_task(infra.purge_tasks(3600.0))
            t0 = time.perf_counter()
            during = await acks(infra, purge.done, args.gap_s)
            deleted = await purge
            purge_s = time.perf_counter() - t0
            rows.append(
                (
                    "single-submit ack p50 / p99 / max, no purge (ms)",
                    ack_cell(idle),
                    f"{len(idle)} submits, one at a time, {args.gap_s * 1000:.0f} ms apart",
                )
            )
            rows.append(
                (
                    "single-submit ack p50 / p99 / max, during the purge (ms)",
                    ack_cell(during),
                    f"{len(during)} submits; p99 {pct(during, 99) / pct(idle, 99):.1f}x without",
                )
            )
            total = sum(deleted.values())
            rows.append(
                (
                    "purge (s)",
                    f"{purge_s:.1f}",
                    f"{total:,} rows ({', '.join(f'{k} {v:,}' for k, v in deleted.items())}), "
                    f"{total / purge_s:,.0f} rows/s; steps of {args.chunk_rows} rows, "
                    f"{args.pause_s * 1000:g} ms apart",
                )
            )
            t = timed_cli(["status"], env, args.runs)
            rows.append(("`rayinfra status` after the purge", ms(t), f"max {max(t):.2f} s"))
    finally:
        runtime.stop(cfg.state.dir, force=True)
        shutil.rmtree(spec.root, ignore_errors=True)
    print_table(f"scale ({n:,} tasks)", rows)


if __name__ == "__main__":
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", type=int, default=1_000_000)
    p.add_argument("--quick", action="store_true", help="--tasks 50000")
    p.add_argument("--batch", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--ack-seconds", type=float, default=10.0)
    p.add_argument("--gap-s", type=float, default=0.005)
    p.add_argument("--chunk-rows", type=int, default=1000)
    p.add_argument("--pause-s", type=float, default=0.005)
    parsed = p.parse_args()
    if parsed.quick:
        parsed.tasks = 50_000
    asyncio.run(main(parsed))
