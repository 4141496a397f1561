"""Service start benchmark: time to all-healthy vs the dependency graph's critical path.

    .venv/bin/python bench/bench_services.py [--driver docker|process] [--repeat 1]
        [--docker-host unix:///run/ci-docker.sock]

A synthetic stack shaped like the shipped ``dspy`` profile: the same nine names, the same
``depends_on`` edges and conditions, and the same health-check intervals (all read from the
profile itself), but every service is a fast stand-in whose readiness delay is known: it sleeps
``DELAYS[name]`` seconds, then serves HTTP ``/health`` on a free 127.0.0.1 port (busybox
``httpd``), and its health check is an ``http`` probe of that route. With ``--driver docker``
(default) each service is a container of the busybox stand-in image (``tests/support/images``)
on the host network; with ``--driver process`` it is a supervised host process
(``/bin/busybox``).

Readiness delays (seconds after the instance started), chosen to resemble the real services'
relative start costs:

    redis 0.8  redb 1.0  ollama 1.5  prometheus 1.0  zookeeper 2.0  kafka 2.5
    infermesh-node-a 1.2  infermesh-node-b 1.2  infermesh-router 0.8

Critical path (longest chain of delays through the graph): zookeeper -> kafka = 4.5 s
(redis -> node -> router is 2.8 s). The ServiceManager (no Ray) starts the whole stack three
times, each on a fresh cluster label: parallel with the default ``max_concurrent_starts`` (5),
parallel unlimited (0), and sequential (``parallel=False``). For each it reports the wall time
from ``start()`` to the operation's end (every service healthy), the ratio to the critical
path, and, from the operation's own updates, the per-service create/start overhead (update
"Starting" -> "started") and the health-detection lag (started -> healthy, minus the delay).
The critical path plus the measured overheads along it is printed too. Everything started is
removed by its cluster label (containers) or instance id (processes).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rayinfra.services import manager as manager_mod
from rayinfra.services.catalog import load_profile
from rayinfra.services.drivers.base import Driver
from rayinfra.services.drivers.docker import DockerDriver
from rayinfra.services.drivers.process import ProcessDriver
from rayinfra.services.manager import ServiceManager
from rayinfra.services.spec import LABEL_CLUSTER, ServiceSpec, parse_spec
from rayinfra.store import StateStore

PROFILE = "dspy"
DELAYS: dict[str, float] = {
    "redis": 0.8,
    "redb": 1.0,
    "ollama": 1.5,
    "prometheus": 1.0,
    "zookeeper": 2.0,
    "kafka": 2.5,
    "infermesh-node-a": 1.2,
    "infermesh-node-b": 1.2,
    "infermesh-router": 0.8,
}
BUSYBOX_HOST = "/bin/busybox"
CI_SOCKET = "/run/ci-docker.sock"  # the private test engine (TESTING.md)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def critical_path(
    deps: Mapping[str, list[str]], cost: Mapping[str, float]
) -> tuple[float, list[str]]:
    """Longest chain of ``cost`` through the dependency graph: (length, chain)."""
    memo: dict[str, tuple[float, list[str]]] = {}

    def longest(n: str) -> tuple[float, list[str]]:
        if n not in memo:
            best: tuple[float, list[str]] = (0.0, [])
            for d in deps[n]:
                cand = longest(d)
                if cand[0] > best[0]:
                    best = cand
            memo[n] = (best[0] + cost[n], [*best[1], n])
        return memo[n]

    return max((longest(n) for n in deps), key=lambda x: x[0])


def synthetic_catalog(driver: str, www: Path) -> dict[str, ServiceSpec]:
    """The dspy profile's names, edges, conditions and intervals; fast known-delay services."""
    profile = load_profile(PROFILE)
    assert set(profile) == set(DELAYS), f"the {PROFILE} profile changed: {sorted(profile)}"
    out = {}
    for name, table in profile.items():
        port = free_port()
        delay = DELAYS[name]
        interval = float((table.get("health") or {}).get("interval_s", 5.0))
        t: dict[str, Any] = {
            "depends_on": table.get("depends_on", []),
            "required": bool(table.get("required", False)),
            "ports": [port],
            "health": {
                "kind": "http",
                "url": f"http://127.0.0.1:{port}/health",
                "interval_s": interval,
                "timeout_s": 1.0,
            },
        }
        if driver == "docker":
            script = (
                "mkdir -p /tmp/www && echo ok > /tmp/www/health && "
                f"sleep {delay} && exec httpd -f -p 127.0.0.1:{port} -h /tmp/www"
            )
            t |= {
                "driver": "docker",
                "image": _busybox_image(),
                "command": ["sh", "-c", script],
                "network_mode": "host",
            }
        else:
            script = f"sleep {delay} && exec {BUSYBOX_HOST} httpd -f -p 127.0.0.1:{port} -h {www}"
            t |= {"driver": "process", "argv": [BUSYBOX_HOST, "sh", "-c", script]}
        out[name] = parse_spec(name, t)
    return out


def _busybox_image() -> str:
    from tests.support import images

    return images.BUSYBOX_IMAGE


def stats_of(op_updates: list[dict[str, Any]], t0: float) -> dict[str, dict[str, float]]:
    """Per service: created (update "Starting", progress 10), started (50), healthy (100)."""
    out: dict[str, dict[str, float]] = {}
    for u in op_updates:
        row = out.setdefault(u["service_name"], {})
        key = {10: "create", 50: "started", 100: "final"}.get(u["progress"])
        if key and key not in row:
            row[key] = u["ts"] - t0
    return out


class Bench:
    def __init__(self, driver_kind: str, root: Path, docker_host: str | None = None) -> None:
        self.kind = driver_kind
        self.root = root
        self.store = StateStore(root / "state.db")
        self.clusters: list[str] = []
        self.driver: Driver
        if driver_kind == "docker":
            self.driver = DockerDriver(docker_host, timeout_s=60, default_network="host")
        else:
            self.driver = ProcessDriver(root / "services")
        (root / "www").mkdir(exist_ok=True)
        (root / "www" / "health").write_text("ok\n")

    def manager(self, catalog: dict[str, ServiceSpec], max_parallel: int) -> ServiceManager:
        cluster = f"bench-{uuid.uuid4().hex[:10]}"
        self.clusters.append(cluster)
        return ServiceManager(
            catalog,
            {self.kind: self.driver},
            self.store,
            cluster,
            max_parallel=max_parallel,
            health_timeout_s=60.0,
            stop_timeout_s=2.0,
        )

    async def run(self, max_parallel: int, parallel: bool) -> dict[str, Any]:
        catalog = synthetic_catalog(self.kind, self.root / "www")
        m = self.manager(catalog, max_parallel)
        try:
            t0 = time.time()
            p0 = time.perf_counter()
            op = await m.start_and_wait([], parallel=parallel)
            wall = time.perf_counter() - p0
            bad = {
                u["service_name"]: u["message"]
                for u in op.updates
                if u["progress"] == 100 and u["status"] != "healthy"
            }
            if not op.success or bad:
                raise RuntimeError(f"start failed: {bad}")
            per = stats_of(op.updates, t0)
            return {"wall": wall, "per": per}
        finally:
            await m.stop([])
            await m.close()
            self.remove(m.cluster)

    def remove(self, cluster: str) -> None:
        for inst in self.driver.list_owned({LABEL_CLUSTER: cluster}):
            with contextlib.suppress(Exception):
                self.driver.remove(inst.id)

    def close(self) -> None:
        for c in self.clusters:
            self.remove(c)
        if isinstance(self.driver, DockerDriver):
            self.driver.close()
        self.store.close()
        shutil.rmtree(self.root, ignore_errors=True)


def overheads(per: Mapping[str, Mapping[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """(create/start overhead, health-detection lag) per service, in seconds."""
    create = {n: r["started"] - r["create"] for n, r in per.items()}
    lag = {n: r["final"] - r["started"] - DELAYS[n] for n, r in per.items()}
    return create, lag


async def main(args: argparse.Namespace) -> None:
    if args.driver == "docker":
        import docker

        from tests.support import images

        client = (
            docker.DockerClient(base_url=args.docker_host, timeout=120)
            if args.docker_host
            else docker.from_env(timeout=120)
        )
        images.build(client, "busybox")
        client.close()
    profile = load_profile(PROFILE)
    deps = {
        n: [d["service"] if isinstance(d, dict) else d for d in t.get("depends_on", [])]
        for n, t in profile.items()
    }
    cp, chain = critical_path(deps, DELAYS)
    root = Path(tempfile.mkdtemp(prefix="rayinfra-bench-svc-"))
    bench = Bench(args.driver, root, args.docker_host)
    rows: list[tuple[str, float, dict[str, Any]]] = []
    try:
        # warm-up (not counted): first container/process start, imports, probes
        warm = synthetic_catalog(args.driver, root / "www")
        m = bench.manager({"redis": warm["redis"]}, 5)
        await m.start_and_wait(["redis"])
        await m.stop([])
        await m.close()
        for _ in range(args.repeat):
            for label, limit, parallel in (
                ("parallel, max_concurrent_starts=5", 5, True),
                ("parallel, unlimited (0)", 0, True),
                ("sequential (parallel=False)", 5, False),
            ):
                res = await bench.run(limit, parallel)
                rows.append((label, res["wall"], res["per"]))
    finally:
        bench.close()

    seq_ideal = sum(DELAYS.values())
    print(f"\n### Service start ({args.driver} driver, {PROFILE}-shaped stack, 9 services)\n")
    print(
        f"health poll while starting: every max({manager_mod.HEALTH_POLL_MIN_S:g}s, "
        f"{manager_mod.HEALTH_POLL_FRACTION:g} x time waited), at most "
        f"min(interval, {manager_mod.HEALTH_POLL_MAX_S:g}s); "
        f"critical path {' -> '.join(chain)} = {cp:.2f}s; sum of delays {seq_ideal:.2f}s\n"
    )
    print(
        "| run | all healthy (s) | ideal (s) | ideal + measured create/start (s) "
        "| ratio to ideal | ratio to critical path |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for label, wall, per in rows:
        create, _lag = overheads(per)
        if label.startswith("sequential"):
            ideal = seq_ideal
            with_overhead = sum(DELAYS[n] + create[n] for n in DELAYS)
            name = f"{label}; ideal = sum of delays"
        else:
            ideal = cp
            with_overhead = critical_path(deps, {n: DELAYS[n] + create[n] for n in DELAYS})[0]
            name = f"{label}; ideal = critical path"
        print(
            f"| {name} | {wall:.2f} | {ideal:.2f} | {with_overhead:.2f} "
            f"| {wall / ideal:.3f} | {wall / cp:.3f} |"
        )
    print("\nPer-service overhead (mean over the runs above, seconds):\n")
    print("| service | delay | create+start | health-detection lag |")
    print("|---|---:|---:|---:|")
    for n in DELAYS:
        cs = [overheads(per)[0][n] for _, _, per in rows]
        lg = [overheads(per)[1][n] for _, _, per in rows]
        print(f"| {n} | {DELAYS[n]:.1f} | {statistics.mean(cs):.3f} | {statistics.mean(lg):.3f} |")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--driver", choices=("docker", "process"), default="docker")
    ap.add_argument("--repeat", type=int, default=1, help="run each configuration N times")
    ap.add_argument(
        "--docker-host",
        default=os.environ.get("DOCKER_HOST")
        or (f"unix://{CI_SOCKET}" if Path(CI_SOCKET).exists() else None),
        help=f"Docker engine URL (default: $DOCKER_HOST, else unix://{CI_SOCKET} if it "
        "exists, else the SDK default)",
    )
    asyncio.run(main(ap.parse_args()))
