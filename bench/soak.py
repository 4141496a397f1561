"""A soak: mixed load on a private runtime for a while, every process's RSS, open fds and threads
sampled on a cadence, and a verdict on whether any of them grows.

    .venv/bin/python bench/soak.py --minutes 60 [--sample-s 60] [--plot bench/out/soak.png]
    .venv/bin/python bench/soak.py --minutes 5 --sample-s 15        # the CI version

The load, all at once for the whole run (one asyncio client, ``AgentInfra`` over the gateway's
gRPC, plus the CLI as a user runs it):

- submits: batches of 50 no-op and short-sleep tasks, every 0.2 s, with at most
  ``MAX_LAG_BATCHES`` batches unfinished (beyond that the next waits for the oldest: a soak
  looks for leaks at a load the machine sustains; an open-loop load on a machine busy with
  other work grows a backlog, and the scheduler's memory with it, which is not a leak);
- cancels: a 30 s sleep task submitted and cancelled, every second;
- streams: ``stream_task_results`` of a fresh batch of 20, read to its end, every 2 s;
- service restarts: ``rayinfra services restart ticker`` (a process service printing lines),
  every 20 s, and ``rayinfra status`` every 10 s.

Every sample (``--sample-s``) reads, for each process of the runtime (the head's process tree:
GCS, raylet, dashboard, the control actors, executors) and for this client, RSS, open file
descriptors and threads. The verdict compares the last sample of each process that lived
through the second half of the run with its first sample in that half: **flat** when no
process grew by more than ``max(--rss-slack-mib MiB, --rss-slack-pct % of its RSS)`` in RSS,
``--fd-slack`` fds or ``--thread-slack`` threads (defaults 32 MiB / 10 %, 16, 8: the noise
of Ray's own caches and pools, measured in short runs). Exit 1 when something grew, or when
an acknowledged task did not end as it should (submitted: completed; cancelled: cancelled).
Writes the samples to ``bench/out/soak.json`` and, with matplotlib installed (the ``bench``
extra), a plot per measure to ``--plot`` (without it, says so; ``--replot`` plots the last
run's samples again without running). ``--samples`` puts the samples elsewhere (the CI test:
in its temp dir, not over the recorded run's).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from rayinfra import AgentInfra, runtime
from rayinfra.config import dial_addr, load_config
from rayinfra.connection import read_connection
from tests.conftest import make_runtime_spec

OUT = Path(__file__).resolve().parent / "out"
RAYINFRA = [sys.executable, "-m", "rayinfra.cli.main"]
MAX_LAG_BATCHES = 20  # submitted batches not yet finished before the next submit waits
TICKER = (
    "import time\nwhile True:\n    print('tick', time.time(), flush=True)\n    time.sleep(0.5)\n"
)
MEASURES = ("rss_mib", "fds", "threads")


def process_name(p: psutil.Process) -> str:
    """A readable, stable name: Ray's process title (``ray::SchedulerActor``) or the program."""
    try:
        name, cmd = p.name(), " ".join(p.cmdline())
    except psutil.Error:
        return "?"
    if name.startswith("ray::"):
        return name
    for key in ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "runtime_env"):
        if key in cmd or key in name:
            return key.replace(".py", "")
    return name


def sample(head_pid: int, t: float, names: dict[int, str]) -> dict[str, dict[str, float]]:
    """``"<name> <pid>" -> {t, rss_mib, fds, threads}`` for the runtime's processes and this one
    (a process keeps the name it had when first seen: Ray retitles busy workers)."""
    procs = [psutil.Process()]
    try:
        head = psutil.Process(head_pid)
        procs += [head, *head.children(recursive=True)]
    except psutil.Error:
        pass
    out = {}
    for p in procs:
        try:
            with p.oneshot():
                if p.pid not in names:
                    names[p.pid] = "client" if p.pid == os.getpid() else process_name(p)
                key = names[p.pid] if p.pid == os.getpid() else f"{names[p.pid]} {p.pid}"
                out[key] = {
                    "t": t,
                    "rss_mib": p.memory_info().rss / 2**20,
                    "fds": float(p.num_fds()),
                    "threads": float(p.num_threads()),
                }
        except psutil.Error:
            continue
    return out


def verdict(
    series: dict[str, list[dict[str, float]]], minutes: float, args: argparse.Namespace
) -> list[str]:
    """What grew over the second half of the run (empty: flat)."""
    half = minutes * 60 / 2
    grew = []
    for key, points in series.items():
        late = [p for p in points if p["t"] >= half]
        if len(late) < 2 or points[0]["t"] > half:  # did not live through the second half
            continue
        first, last = late[0], late[-1]
        rss_slack = max(args.rss_slack_mib, first["rss_mib"] * args.rss_slack_pct / 100)
        for m, slack in (
            ("rss_mib", rss_slack),
            ("fds", args.fd_slack),
            ("threads", args.thread_slack),
        ):
            if last[m] - first[m] > slack:
                grew.append(f"{key}: {m} {first[m]:.1f} -> {last[m]:.1f} (slack {slack:.1f})")
    return grew


def plot_line(series: dict[str, list[dict[str, float]]], path: Path) -> str:
    """Plot ``series`` to ``path``; what became of it, as a line to print."""
    if plot(series, path):
        return f"plot: {path}"
    return (
        "plot: NOT written (matplotlib is missing: pip install -e .[bench]; then "
        "bench/soak.py --replot plots the samples again)"
    )


def plot(series: dict[str, list[dict[str, float]]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(len(MEASURES), 1, figsize=(11, 9), sharex=True)
    for ax, m in zip(axes, MEASURES, strict=True):
        for key, points in sorted(series.items()):
            if len(points) > 1:
                ax.plot([p["t"] / 60 for p in points], [p[m] for p in points], label=key, lw=1)
        ax.set_ylabel(m)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    axes[0].legend(fontsize=6, ncol=3, loc="upper left")
    fig.suptitle("rayinfra soak: per process")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return True


class Load:
    """The mixed load; counts what it did and checks that every task it got acknowledged ends
    as it should, holding only the ids still unfinished (so that the client's own RSS measures
    the client, not the soak's bookkeeping): a submitted batch is checked when it is waited
    for, a stream's tasks as the stream ends, a cancel's task at the end of the run."""

    def __init__(self, infra: AgentInfra, env: dict[str, str]) -> None:
        self.infra = infra
        self.env = env
        self.unfinished: collections.deque[list[str]] = collections.deque()  # submitted batches
        self.cancelled: dict[str, str] = {}  # a cancel's task id -> its final status
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.run = uuid.uuid4().hex[:6]
        self.n = 0

    def _ids(self, k: int, tag: str) -> list[str]:
        self.n += k
        return [f"{tag}-{self.run}-{i}" for i in range(self.n - k, self.n)]

    async def check(self, expect: dict[str, str]) -> None:
        """Wait for the tasks of ``expect`` (id -> final status) and note those that end
        otherwise."""
        done = await self.infra.wait_tasks(list(expect), timeout=600)
        wrong = [d["task_id"] for d in done if d["status"] != expect[d["task_id"]]]
        if wrong:
            self.errors.append(f"{len(wrong)} task(s) did not end as expected: {wrong[:5]}")
        self.counts["checked"] += len(expect)

    async def check_the_rest(self) -> None:
        while self.unfinished:
            await self.check(dict.fromkeys(self.unfinished.popleft(), "completed"))
        await self.check(self.cancelled)

    async def submits(self) -> None:
        while True:
            if len(self.unfinished) >= MAX_LAG_BATCHES:
                began = time.monotonic()
                await self.check(dict.fromkeys(self.unfinished[0], "completed"))
                self.unfinished.popleft()
                if time.monotonic() - began > 0.2:  # the runtime was behind: a slower round
                    self.counts["slowed_by_backlog"] += 1
            ids = self._ids(50, "s")
            specs = [
                {
                    "task_id": t,
                    "payload": {"type": "noop"} if i % 5 else {"type": "sleep", "seconds": 0.05},
                }
                for i, t in enumerate(ids)
            ]
            await self.infra.submit_tasks(specs)
            self.unfinished.append(ids)
            self.counts["submitted"] += len(ids)
            await asyncio.sleep(0.2)

    async def cancels(self) -> None:
        while True:
            (tid,) = self._ids(1, "c")
            await self.infra.submit_task(tid, {"type": "sleep", "seconds": 30})
            self.cancelled[tid] = "completed"  # unless the cancel below goes through
            await asyncio.sleep(0.3)
            if (await self.infra.cancel_task(tid))["cancelled"]:
                self.cancelled[tid] = "cancelled"
                self.counts["cancelled"] += 1
            await asyncio.sleep(0.7)

    async def streams(self) -> None:
        while True:
            ids = self._ids(20, "w")
            await self.infra.submit_tasks(
                [{"task_id": t, "payload": {"type": "noop"}} for t in ids]
            )
            seen = {
                s["task_id"]
                async for s in self.infra.stream_task_results(ids)
                if s["status"] == "completed"
            }
            if seen != set(ids):
                self.errors.append(f"a stream ended without {sorted(set(ids) - seen)[:3]}")
            self.counts["streams"] += 1
            self.counts["checked"] += len(ids)
            await asyncio.sleep(2.0)

    async def cli(self, every_s: float, *args: str) -> None:
        while True:
            await asyncio.sleep(every_s)
            proc = await asyncio.create_subprocess_exec(
                *RAYINFRA, *args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
            _, err = await proc.communicate()
            if proc.returncode != 0:
                self.errors.append(
                    f"rayinfra {' '.join(args)}: exit {proc.returncode}: {err[-300:]!r}"
                )
            self.counts[args[0] if args[0] != "services" else "service restarts"] += 1


async def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    spec = make_runtime_spec(
        "soak",
        f'[services]\nprofile = "none"\n[services.definitions.ticker]\ndriver = "process"\n'
        f"argv = {json.dumps([sys.executable, '-c', TICKER])}\n",
    )
    cfg = load_config(env=spec.env()).config
    print(f"runtime root: {spec.root}", flush=True)
    runtime.start(cfg)
    info = read_connection(cfg.state.dir)
    assert info is not None and info.head_pid
    series: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    t0 = time.monotonic()
    names: dict[int, str] = {}
    try:
        addr = dial_addr(cfg.gateway.orchestrator_grpc_addr)
        async with AgentInfra.start(orchestrator_addr=addr, config=cfg) as infra:
            subprocess.run([*RAYINFRA, "services", "start", "ticker"], env=spec.env(), check=True,
                           capture_output=True)  # fmt: skip
            load = Load(infra, spec.env())
            jobs = [
                asyncio.create_task(c)
                for c in (
                    load.submits(),
                    load.cancels(),
                    load.streams(),
                    load.cli(20.0, "services", "restart", "ticker"),
                    load.cli(10.0, "status"),
                )
            ]
            end = t0 + args.minutes * 60
            while True:
                now = time.monotonic()
                for key, point in sample(info.head_pid, now - t0, names).items():
                    series[key].append(point)
                if now >= end:
                    break
                await asyncio.sleep(min(args.sample_s, max(0.0, end - now)))
                failed = [j for j in jobs if j.done()]
                if failed:
                    load.errors += [f"load stopped: {j.exception()!r}" for j in failed]
                    break
            for j in jobs:
                j.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            OUT.mkdir(parents=True, exist_ok=True)
            Path(args.samples).write_text(json.dumps(series, indent=1))  # before the long wait
            await load.check_the_rest()
    finally:
        # the service started here outlives the runtime (services do): stop it first, or its
        # supervisor runs on with its state dir deleted under it
        subprocess.run([*RAYINFRA, "services", "stop", "ticker"], env=spec.env(), check=False,
                       capture_output=True, timeout=60)  # fmt: skip
        runtime.stop(cfg.state.dir, force=True)
        shutil.rmtree(spec.root, ignore_errors=True)
    OUT.mkdir(parents=True, exist_ok=True)
    Path(args.samples).write_text(json.dumps(series, indent=1))
    grew = verdict(series, args.minutes, args)
    print(f"\n## rayinfra soak ({args.minutes:g} min, a sample every {args.sample_s:g} s)\n")
    print("| process | RSS MiB first -> last | fds | threads |\n|---|---|---|---|")
    for key, points in sorted(series.items()):
        a, b = points[0], points[-1]
        print(
            f"| {key} | {a['rss_mib']:.0f} -> {b['rss_mib']:.0f} | {a['fds']:.0f} -> {b['fds']:.0f} "
            f"| {a['threads']:.0f} -> {b['threads']:.0f} |"
        )
    print(f"\nload: {dict(load.counts)}")
    if args.plot:
        print(plot_line(series, Path(args.plot)))
    for line in load.errors:
        print(f"ERROR {line}")
    for line in grew:
        print(f"GREW {line}")
    print(
        "verdict:",
        "flat" if not grew else "GROWING",
        "/",
        "no errors" if not load.errors else "ERRORS",
    )
    return 1 if grew or load.errors else 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--minutes", type=float, default=60.0)
    p.add_argument("--sample-s", type=float, default=60.0)
    p.add_argument("--plot", default=str(OUT / "soak.png"))
    p.add_argument("--samples", default=str(OUT / "soak.json"), help="where the samples go (JSON)")
    p.add_argument("--rss-slack-mib", type=float, default=32.0)
    p.add_argument("--rss-slack-pct", type=float, default=10.0)
    p.add_argument("--fd-slack", type=float, default=16.0)
    p.add_argument("--thread-slack", type=float, default=8.0)
    p.add_argument(
        "--replot", action="store_true", help="plot the samples of the last run again; no run"
    )
    a = p.parse_args()
    if a.replot:
        print(plot_line(json.loads(Path(a.samples).read_text()), Path(a.plot)))
        sys.exit(0)
    sys.exit(asyncio.run(main(a)))
