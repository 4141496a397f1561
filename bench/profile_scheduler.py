"""Where the CPU goes per acknowledged no-op task, in every process of the runtime.

    .venv/bin/python bench/profile_scheduler.py [--tasks 20000] [--batch 1000] [--py-spy DIR] [--idle S] [--ray-floor N]

Starts a private loopback runtime (as bench_scheduler.py), warms it up, then pushes ``--tasks``
no-op tasks through ``AgentInfra`` (``submit_tasks`` in batches, then ``wait_tasks``) and reads
every process's CPU time (user + system, psutil) before and after: the runtime's processes (the
head's process tree: GCS, raylet, the control actors, the executors, Ray's own helpers) and this
client. Prints microseconds of CPU per task by process, largest first, and the wall-clock rate.
With ``--py-spy DIR``, each of the scheduler, gateway and executor processes is sampled by
py-spy for the run (``DIR/<role>.txt``, collapsed stacks) and the top self-time frames of each
are printed (install: py-spy comes with Ray's default extras).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil
import ray

from rayinfra import AgentInfra, runtime
from rayinfra.config import NAMESPACE, load_config
from tests.conftest import make_runtime_spec

ROLES = ("scheduler", "gateway")


def role_of(p: psutil.Process, known: dict[int, str]) -> str:
    if p.pid in known:
        return known[p.pid]
    try:
        cmd = " ".join(p.cmdline())
        name = p.name()
    except psutil.Error:
        return "?"
    if "Executor" in cmd or "Executor" in name:
        return "executors"
    for key in ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "runtime_env"):
        if key in cmd or key in name:
            return key.replace(".py", "")
    if name.startswith("ray::"):
        return name
    return "other ray"


def cpu_times(pids: list[int]) -> dict[int, float]:
    out = {}
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
            out[pid] = t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return out


def runtime_pids(head_pid: int) -> list[int]:
    head = psutil.Process(head_pid)
    return [head_pid, *(c.pid for c in head.children(recursive=True))]


def actor_pids() -> dict[int, str]:
    known = {}
    for name in ROLES:
        pid = ray.get(ray.get_actor(name, namespace=NAMESPACE).ping.remote())["pid"]
        known[pid] = name
    return known


@ray.remote(num_cpus=0)
class _Floor:
    async def call(self, x: Any = None) -> Any:
        return x

    def pid(self) -> int:
        return os.getpid()


async def ray_floor(n: int) -> tuple[float, float, float]:
    """CPU of one bare async-actor call on each side, and its wall time (all per call), calls
    one after another: the floor under any work that crosses an actor here."""
    actor = _Floor.remote()  # type: ignore[attr-defined]
    theirs = psutil.Process(await actor.pid.remote())
    mine = psutil.Process()
    for _ in range(100):
        await actor.call.remote()

    def cpu(p: psutil.Process) -> float:
        t = p.cpu_times()
        return float(t.user + t.system)

    c0, a0, t0 = cpu(mine), cpu(theirs), time.perf_counter()
    for _ in range(n):
        await actor.call.remote()
    wall = time.perf_counter() - t0
    out = ((cpu(mine) - c0) / n, (cpu(theirs) - a0) / n, wall / n)
    ray.kill(actor)
    return out


async def push(
    infra: AgentInfra, n: int, batch: int, tag: str, marks: dict[str, float] | None = None
) -> float:
    """Submit ``n`` no-op tasks in batches, then wait for them all: the seconds it took
    (``marks["submitted"]``: when the last batch was acknowledged, ``time.monotonic()``)."""
    run = uuid.uuid4().hex[:6]  # one per push: a uuid per task would be the bench's own cost
    ids = [f"{tag}-{run}-{i}" for i in range(n)]
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        await infra.submit_tasks(
            [{"task_id": t, "payload": {"type": "noop"}} for t in ids[i : i + batch]]
        )
    if marks is not None:
        marks["submitted"] = time.monotonic()
    done = await infra.wait_tasks(ids, timeout=3600)
    elapsed = time.perf_counter() - t0
    assert all(d["status"] == "completed" for d in done), "a no-op task did not complete"
    return elapsed


async def sample_class(out: list[dict[str, float]], cls: str = "cpu_short") -> None:
    """The class's limit, in-flight and queued counts every 0.1 s (scheduler ``status``)."""
    sched = ray.get_actor("scheduler", namespace=NAMESPACE)
    while True:
        st = await sched.status.remote()
        c = st["classes"][cls]
        out.append({"limit": c["limit"], "inflight": c["inflight"], "pending": c["pending"]})
        await asyncio.sleep(0.1)


class Timeline(threading.Thread):
    """Every process's CPU time every ``every_s`` while the run goes (a thread of its own, so
    the client's event loop does not delay it): how busy each role was, phase by phase."""

    def __init__(self, roles: dict[int, str], every_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.roles, self.every_s = roles, every_s
        self.samples: list[tuple[float, dict[int, float]]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.samples.append((time.monotonic(), cpu_times([*self.roles])))
            self.done.wait(self.every_s)
        self.samples.append((time.monotonic(), cpu_times([*self.roles])))

    def phases(self, cuts: list[tuple[str, float]]) -> list[tuple[str, float, dict[str, float]]]:
        """``(phase, seconds, role -> share of one core)`` between consecutive cut times."""
        out = []
        for (name, start), (_, end) in itertools.pairwise(cuts):
            inside = [s for s in self.samples if start <= s[0] <= end]
            if len(inside) < 2:
                continue
            (t0, c0), (t1, c1) = inside[0], inside[-1]
            busy: collections.Counter[str] = collections.Counter()
            for pid, t in c1.items():
                busy[self.roles[pid]] += (t - c0.get(pid, t)) / (t1 - t0)
            out.append((name, t1 - t0, dict(busy)))
        return out


def top_frames(path: Path, k: int = 12) -> list[tuple[float, str]]:
    """Self-time share of the leaf frames in a py-spy collapsed-stack file."""
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        leaves[stack.split(";")[-1]] += n
    return [(c / max(total, 1), f) for f, c in leaves.most_common(k)]


async def main(args: argparse.Namespace) -> None:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    spec = make_runtime_spec("prof")
    cfg = load_config(env=spec.env()).config
    info = runtime.start(cfg)
    spies: list[subprocess.Popen[bytes]] = []
    try:
        async with AgentInfra.start(config=cfg) as infra:
            await push(infra, 3000, args.batch, "warm")
            head_pid = int(info.info.head_pid)
            known = actor_pids()
            pids = runtime_pids(head_pid)
            roles = {pid: role_of(psutil.Process(pid), known) for pid in pids}
            me = os.getpid()
            roles[me] = "client (this process)"
            if args.py_spy:
                out = Path(args.py_spy)
                out.mkdir(parents=True, exist_ok=True)
                sampled = {**{p: r for p, r in roles.items() if r in ROLES}}
                ex = [p for p, r in roles.items() if r == "executors"][:1]
                sampled.update({p: "executor" for p in ex})
                sampled[os.getpid()] = "client"
                for pid, role in sampled.items():
                    spies.append(
                        subprocess.Popen(
                            [
                                "py-spy",
                                "record",
                                "-p",
                                str(pid),
                                "-r",
                                "200",
                                "--format",
                                "raw",
                                "-o",
                                str(out / f"{role}.txt"),
                                "--nonblocking",
                                *(["--gil"] if args.gil else []),
                            ],
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                        )
                    )
                time.sleep(1.0)
            floor = await ray_floor(args.ray_floor) if args.ray_floor else None
            if args.idle:
                idle0 = cpu_times([*roles])
                await asyncio.sleep(args.idle)
                idle1 = cpu_times([*roles])
            before = cpu_times([*roles])
            samples: list[dict[str, float]] = []
            sampler = asyncio.create_task(sample_class(samples))
            timeline = Timeline(roles)
            timeline.start()
            marks = {"start": time.monotonic()}
            elapsed = await push(infra, args.tasks, args.batch, "prof", marks)
            marks["end"] = time.monotonic()
            timeline.done.set()
            timeline.join()
            sampler.cancel()
            after = cpu_times([*roles])
    finally:
        for s in spies:
            s.send_signal(signal.SIGINT)
        for s in spies:
            s.wait(timeout=60)
        runtime.stop(cfg.state.dir, force=True)

    per_role: collections.Counter[str] = collections.Counter()
    for pid, t in after.items():
        per_role[roles[pid]] += t - before.get(pid, t)
    n = args.tasks
    print(
        f"\n{n:,} no-op tasks in {elapsed:.2f} s = {n / elapsed:,.0f} tasks/s (batches of {args.batch})\n"
    )
    print("| process | CPU µs per task |\n|---|---:|")
    for role, t in per_role.most_common():
        if t * 1e6 / n >= 0.5:
            print(f"| {role} | {t * 1e6 / n:.0f} |")
    print(f"| **all** | **{sum(per_role.values()) * 1e6 / n:.0f}** |")
    if floor is not None:
        print(
            f"\nbare Ray async-actor call, {args.ray_floor} one after another: caller "
            f"{floor[0] * 1e6:.0f} µs + actor {floor[1] * 1e6:.0f} µs of CPU per call, "
            f"{floor[2] * 1e3:.2f} ms wall"
        )
    if args.idle:
        idle: collections.Counter[str] = collections.Counter()
        for pid, t in idle1.items():
            idle[roles[pid]] += t - idle0.get(pid, t)
        print(f"\nidle for {args.idle:.0f} s before the run (% of one core):\n")
        print("| process | CPU % idle |\n|---|---:|")
        for role, t in idle.most_common():
            if t / args.idle >= 0.001:
                print(f"| {role} | {100 * t / args.idle:.1f} |")
        print(f"| **all** | **{100 * sum(idle.values()) / args.idle:.1f}** |")
    if samples:
        busy = [x for x in samples if x["inflight"] or x["pending"]]
        mean = {
            k: sum(x[k] for x in busy) / max(1, len(busy)) for k in ("limit", "inflight", "pending")
        }
        print(
            f"\ncpu_short while busy ({len(busy)} samples every 0.1 s): limit {mean['limit']:.0f}, "
            f"in flight {mean['inflight']:.0f}, queued {mean['pending']:.0f} (means)"
        )
    phases = timeline.phases(
        [("submitting", marks["start"]), ("after the last ack", marks["submitted"]),
         ("", marks["end"])]
    )  # fmt: skip
    shown = ["scheduler", "gateway", "client (this process)", "executors"]
    print(
        "\nhow busy each process was (% of one core; 2 cores = 200%):\n\n"
        f"| phase | s | {' | '.join(shown)} | all |\n|---|---:|{'---:|' * (len(shown) + 1)}"
    )
    for name, secs, busy in phases:
        cells = " | ".join(f"{100 * busy.get(r, 0.0):.0f}" for r in shown)
        print(f"| {name} | {secs:.2f} | {cells} | {100 * sum(busy.values()):.0f} |")
    if args.py_spy:
        for f in sorted(Path(args.py_spy).glob("*.txt")):
            print(f"\n{f.stem}: top self-time frames")
            for share, frame in top_frames(f):
                print(f"  {share * 100:5.1f}%  {frame}")


if __name__ == "__main__":
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--tasks", type=int, default=20000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--py-spy", default="", help="write py-spy's raw stacks to this directory")
    p.add_argument(
        "--gil", action="store_true", help="with --py-spy: sample only the thread holding the GIL"
    )
    p.add_argument(
        "--ray-floor", type=int, default=0, help="also time N bare Ray actor calls (CPU per side)"
    )
    p.add_argument(
        "--idle", type=float, default=0.0, help="also measure S seconds with no tasks, first"
    )
    asyncio.run(main(p.parse_args()))
