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

``--vs-compose`` (issue 14 item 6; needs ``docker-compose``, Debian's 1.29.2) times, in one
run, the ``rayinfra services start`` CLI against ``docker-compose`` on two nine-service
stacks: the dspy-shaped one above and ``APP_STACK``, written as a new user might (other names,
a five-deep chain, ``started``/``healthy``/``completed`` conditions, tcp/http/command checks,
a one-shot job, a service without a check, intervals of 1-5 s)::

    .venv/bin/python bench/bench_services.py --vs-compose [--repeat 3] [--compose-interval 0.5]

It starts a private runtime (``rayinfra start --daemon``: own state dir, loopback ports,
cluster label, profile ``none`` so the catalog is exactly the two stacks), then per repeat and
stack, alternating: ``rayinfra services start <the nine>`` as a fresh process, timed from
invocation until it returned (it returns once every service reached its final state; that all
are healthy is checked afterwards, untimed); then the same stack as a Compose file generated
from the same definition (same image, command, host network, ``init``, health checks as
in-container commands with the same interval, timeout, retries and start period, same
``depends_on`` conditions) timed from invoking ``docker-compose up -d`` until the engine
reports every container healthy (a job: exited 0; no check: running), polled every 50 ms
(Compose 1.29 has no ``--wait``). Also measured: one container's create + start (the least
any tool pays per service on a chain). Everything started is removed (``docker-compose down``,
containers by label, ``rayinfra stop``, the head by pid).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import print_table
from rayinfra.config import toml_value
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


# ============================================================================================
# --vs-compose: the `rayinfra services start` CLI against docker-compose, same stacks, same run
# ============================================================================================

RAYINFRA = str(Path(sys.executable).with_name("rayinfra"))
COMPOSE_CONDITION = {
    "started": "service_started",
    "healthy": "service_healthy",
    "completed": "service_completed_successfully",
}
#: health-check settings both tools get (rayinfra spec fields; compose healthcheck keys)
CHECK_TIMEOUT_S = 1.0
CHECK_RETRIES = 3
#: failures in this window do not count: compose would otherwise mark a slow service unhealthy
#: after CHECK_RETRIES early failures and fail its dependants, where rayinfra's start waits up
#: to health_timeout_s (60 s) for it
START_PERIOD_S = 60.0
COMPOSE_POLL_S = 0.05  # how often the bench asks the engine whether compose's stack is ready
BENCH_LABEL = "rayinfra.bench"


@dataclass(frozen=True)
class Svc:
    """One service of a bench stack. ``check``: ``http`` (GET /health), ``tcp`` (a connection
    is accepted), ``command`` (``wget`` of /health inside the container), ``none`` (no health
    check: ready once running) or ``job`` (exits 0 after ``delay``; dependants wait for
    ``completed``). ``delay``: seconds from the container's start to ready (or to its exit)."""

    name: str
    delay: float
    deps: tuple[tuple[str, str], ...] = ()  # (service, condition)
    check: str = "http"
    interval: float = 2.0


def dspy_stack() -> list[Svc]:
    """The dspy-shaped synthetic stack: the profile's names, edges, conditions and intervals."""
    out = []
    for name, table in load_profile(PROFILE).items():
        deps = tuple(
            (d, "started") if isinstance(d, str) else (d["service"], d.get("condition", "started"))
            for d in table.get("depends_on", [])
        )
        interval = float((table.get("health") or {}).get("interval_s", 5.0))
        out.append(Svc(name, DELAYS[name], deps, "http", interval))
    return out


#: a nine-service stack as a new user might write it: other names, a five-deep chain, every
#: condition (started, healthy, completed), every kind of check, intervals of 1-5 s
APP_STACK = [
    Svc("postgres", 1.5, (), "tcp", 2.0),
    Svc("cache", 0.5, (), "tcp", 1.0),
    Svc("broker", 2.0, (), "http", 3.0),
    Svc("migrate", 1.0, (("postgres", "healthy"),), "job"),
    Svc(
        "api",
        1.0,
        (("migrate", "completed"), ("cache", "healthy"), ("broker", "started")),
        "http",
        1.0,
    ),
    Svc("worker", 0.8, (("broker", "healthy"), ("migrate", "completed")), "command", 2.0),
    Svc("beat", 0.0, (("broker", "healthy"),), "none"),
    Svc("web", 0.7, (("api", "healthy"),), "http", 1.0),
    Svc("proxy", 0.3, (("web", "healthy"), ("api", "healthy"), ("worker", "started")), "http", 5.0),
]


def ideal_times(stack: Sequence[Svc]) -> tuple[dict[str, float], dict[str, float]]:
    """(start, ready) of each service if nothing cost anything but the services' own delays:
    a service starts when its dependencies meet their conditions (``started``: the
    dependency's start; ``healthy``/``completed``: its ready time) and is ready ``delay``
    later (at once without a health check)."""
    by = {s.name: s for s in stack}
    start: dict[str, float] = {}
    ready: dict[str, float] = {}

    def visit(n: str) -> None:
        if n in ready:
            return
        s = by[n]
        t = 0.0
        for d, cond in s.deps:
            visit(d)
            t = max(t, start[d] if cond == "started" else ready[d])
        start[n] = t
        ready[n] = t + (0.0 if s.check == "none" else s.delay)

    for s in stack:
        visit(s.name)
    return start, ready


def stack_critical_path(stack: Sequence[Svc]) -> tuple[float, list[str]]:
    """The ideal time to all-ready and the chain that sets it."""
    by = {s.name: s for s in stack}
    start, ready = ideal_times(stack)
    n = max(ready, key=lambda k: ready[k])
    chain = [n]
    while by[n].deps:
        n = max(by[n].deps, key=lambda dc: start[dc[0]] if dc[1] == "started" else ready[dc[0]])[0]
        chain.append(n)
    return ready[chain[0]], chain[::-1]


def container_script(s: Svc, port: int) -> str:
    """What the container runs: wait ``delay``, then serve /health (or exit 0: a job)."""
    if s.check == "job":
        return f"sleep {s.delay} && echo done"
    return (
        "mkdir -p /tmp/www && echo ok > /tmp/www/health && "
        f"sleep {s.delay} && exec httpd -f -p 127.0.0.1:{port} -h /tmp/www"
    )


def rayinfra_health(s: Svc, port: int) -> dict[str, Any] | None:
    common = {
        "interval_s": s.interval,
        "timeout_s": CHECK_TIMEOUT_S,
        "retries": CHECK_RETRIES,
        "start_period_s": START_PERIOD_S,
    }
    if s.check == "http":
        return {"kind": "http", "url": f"http://127.0.0.1:{port}/health", **common}
    if s.check == "tcp":
        return {"kind": "tcp", "port": port, **common}
    if s.check == "command":
        argv = ["wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{port}/health"]
        return {"kind": "command", "command": argv, "in_container": True, **common}
    return None


def compose_test(s: Svc, port: int) -> list[str]:
    """The compose healthcheck equivalent to :func:`rayinfra_health` (run in the container)."""
    if s.check == "tcp":
        return ["CMD-SHELL", f"nc -w 1 127.0.0.1 {port} </dev/null"]
    return ["CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{port}/health"]


def rayinfra_toml(stacks: Mapping[str, Sequence[Svc]], ports: Mapping[str, int], image: str) -> str:
    """``[services.definitions.*]`` tables of every stack (profile ``none``: nothing else)."""
    lines = []
    for stack in stacks.values():
        for s in stack:
            t: dict[str, Any] = {
                "driver": "docker",
                "image": image,
                "command": ["sh", "-c", container_script(s, ports[s.name])],
                "network_mode": "host",
                "stop_timeout_s": 1.0,
                "depends_on": [{"service": d, "condition": c} for d, c in s.deps],
            }
            health = rayinfra_health(s, ports[s.name])
            if health is not None:
                t["health"] = health
            lines.append(f"\n[services.definitions.{s.name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in t.items()]
    return "\n".join(lines) + "\n"


def compose_doc(
    stack: Sequence[Svc],
    ports: Mapping[str, int],
    image: str,
    run_label: str,
    interval: float | None = None,
) -> dict[str, Any]:
    """The same stack as a Compose file (the Compose spec: no ``version``): same image,
    command, host network, ``init`` (rayinfra's containers have it too), health checks,
    intervals (or ``interval`` for every check), timeouts, retries and conditions."""
    services: dict[str, Any] = {}
    for s in stack:
        svc: dict[str, Any] = {
            "image": image,
            "command": ["sh", "-c", container_script(s, ports[s.name])],
            "network_mode": "host",
            "init": True,
            "labels": {BENCH_LABEL: run_label},
        }
        if s.check not in ("none", "job"):
            iv = interval if interval is not None else s.interval
            svc["healthcheck"] = {
                "test": compose_test(s, ports[s.name]),
                "interval": f"{round(iv * 1000)}ms",
                "timeout": f"{round(CHECK_TIMEOUT_S * 1000)}ms",
                "retries": CHECK_RETRIES,
                "start_period": f"{round(START_PERIOD_S)}s",
            }
        if s.deps:
            svc["depends_on"] = {d: {"condition": COMPOSE_CONDITION[c]} for d, c in s.deps}
        services[s.name] = svc
    return {"services": services}


def compose_ready(stack: Sequence[Svc], containers: list[dict[str, Any]]) -> bool:
    """Every service ready, from the engine's container list: ``(healthy)`` with a health
    check, exited 0 for a job, running otherwise."""
    by_name = {(c.get("Labels") or {}).get("com.docker.compose.service"): c for c in containers}
    for s in stack:
        c = by_name.get(s.name)
        if c is None:
            return False
        status = str(c.get("Status", ""))
        if s.check == "job":
            if not (c.get("State") == "exited" and status.startswith("Exited (0)")):
                return False
        elif s.check == "none":
            if c.get("State") != "running":
                return False
        elif "(healthy)" not in status:
            return False
    return True


class VsCompose:
    """A private runtime (own state dir, ports, cluster label) and the compose projects."""

    def __init__(self, args: argparse.Namespace, stacks: Mapping[str, Sequence[Svc]]) -> None:
        import docker

        from tests.conftest import make_runtime_spec

        self.args = args
        self.stacks = stacks
        self.client = (
            docker.DockerClient(base_url=args.docker_host, timeout=120)
            if args.docker_host
            else docker.from_env(timeout=120)
        )
        self.image = _busybox_image()
        self.ports = {s.name: free_port() for st in stacks.values() for s in st}
        self.run_label = uuid.uuid4().hex[:10]
        self.cluster = f"bench-{self.run_label}"
        toml = (
            f'[services]\nprofile = "none"\ncluster_name = "{self.cluster}"\n'
            f"health_timeout_s = 60\n"
            + (f'docker_host = "{args.docker_host}"\n' if args.docker_host else "")
            + rayinfra_toml(stacks, self.ports, self.image)
        )
        self.spec = make_runtime_spec("bsvc", toml)
        self.env = {**self.spec.env(), "COLUMNS": "200"}
        if args.docker_host:
            self.env["DOCKER_HOST"] = args.docker_host
        self.projects: list[str] = []
        self.head_pid: int | None = None
        self.engine_version = str(self.client.version().get("Version", "?"))
        self.compose_version = subprocess.run(
            ["docker-compose", "version", "--short"], capture_output=True, text=True, check=True
        ).stdout.strip()

    # -- rayinfra ----------------------------------------------------------------------
    def start_runtime(self) -> None:
        proc = subprocess.run(
            [RAYINFRA, "start", "--daemon"], env=self.env, capture_output=True, text=True,
            timeout=300,
        )  # fmt: skip
        conn = self.spec.state_dir / "connection.json"
        if conn.exists():
            self.head_pid = json.loads(conn.read_text()).get("head_pid")
        if proc.returncode != 0:
            raise RuntimeError(f"rayinfra start failed: {proc.stdout}\n{proc.stderr}")

    def rayinfra_start(self, names: Sequence[str]) -> float:
        """Wall time of ``rayinfra services start NAMES`` (a fresh process, as typed), checked
        afterwards (not timed): every service running, a job stopped after exit 0."""
        t0 = time.perf_counter()
        proc = subprocess.run(
            [RAYINFRA, "services", "start", *names],
            env=self.env, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"services start failed: {proc.stdout}\n{proc.stderr}")
        status = subprocess.run(
            [RAYINFRA, "services", "status", "--json", *names],
            env=self.env, capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        rows = json.loads(status.stdout)
        bad = {
            n: (r["status"], r.get("message"))
            for n, r in rows.items()
            if r["status"] != "running" and "completed" not in str(r.get("message"))
        }
        if bad:
            raise RuntimeError(f"not all healthy after services start: {bad}\n{proc.stdout}")
        return wall

    def rayinfra_stop(self) -> None:
        subprocess.run(
            [RAYINFRA, "services", "stop", "--timeout", "1"],
            env=self.env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        self.remove_labelled({"rayinfra.cluster": self.cluster})

    # -- compose -----------------------------------------------------------------------
    def compose_up(self, stack: Sequence[Svc], interval: float | None = None) -> float:
        """Wall time from invoking ``docker-compose up -d`` to the engine reporting every
        service ready (polled every COMPOSE_POLL_S through the engine API: ``(healthy)``,
        exited 0 for a job, running without a check). Compose 1.29 has no ``--wait``: ``up
        -d`` returns once it started the last service (it waits for ``service_healthy`` /
        ``service_completed_successfully`` dependencies itself, polling every 0.1 s)."""
        project = f"ribench{self.run_label}{len(self.projects)}"
        self.projects.append(project)
        path = self.spec.root / f"{project}.yml"  # JSON is YAML
        doc = compose_doc(stack, self.ports, self.image, self.run_label, interval)
        path.write_text(json.dumps(doc, indent=1))
        api = self.client.api
        label = f"com.docker.compose.project={project}"
        t0 = time.perf_counter()
        up = subprocess.Popen(
            ["docker-compose", "-p", project, "-f", str(path), "up", "-d", "--no-build"],
            env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        while True:
            if up.poll() is not None and up.returncode != 0:
                raise RuntimeError(f"docker-compose up failed: {up.communicate()[0]}")
            if up.returncode == 0 and compose_ready(
                stack, api.containers(all=True, filters={"label": label})
            ):
                wall = time.perf_counter() - t0
                break
            if time.perf_counter() - t0 > 300:
                raise RuntimeError(f"compose stack {project} not ready after 300 s")
            time.sleep(COMPOSE_POLL_S)
        up.communicate()
        self.compose_down(project, path)
        return wall

    def compose_down(self, project: str, path: Path) -> None:
        subprocess.run(
            ["docker-compose", "-p", project, "-f", str(path), "down", "-t", "1"],
            env=self.env, capture_output=True, timeout=120,
        )  # fmt: skip
        self.remove_labelled({"com.docker.compose.project": project})

    def container_start_s(self, samples: int = 5) -> list[float]:
        """Wall time of ``create`` + ``start`` of one stand-in container (host network,
        ``init``), one at a time: what any tool pays at least per service on a chain."""
        api = self.client.api
        out = []
        for _ in range(samples):
            t0 = time.perf_counter()
            cid = api.create_container(
                self.image,
                ["sh", "-c", "sleep 30"],
                host_config=api.create_host_config(network_mode="host", init=True),
                labels={BENCH_LABEL: self.run_label},
            )["Id"]
            api.start(cid)
            out.append(time.perf_counter() - t0)
            api.remove_container(cid, force=True)
        return out

    # -- cleanup -----------------------------------------------------------------------
    def remove_labelled(self, labels: Mapping[str, str]) -> None:
        api = self.client.api
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        for c in api.containers(all=True, filters=filters):
            with contextlib.suppress(Exception):
                api.remove_container(c["Id"], force=True)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.rayinfra_stop()
        subprocess.run(
            [RAYINFRA, "stop", "--force"], env=self.env, capture_output=True, timeout=180
        )
        if self.head_pid and _pid_alive(self.head_pid):  # stop exactly what we started
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.head_pid, signal.SIGKILL)
        self.remove_labelled({"rayinfra.cluster": self.cluster})
        self.remove_labelled({BENCH_LABEL: self.run_label})
        self.client.close()
        shutil.rmtree(self.spec.root, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _fmt_runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def vs_compose(args: argparse.Namespace) -> None:
    """Both stacks, ``--repeat`` times each: rayinfra CLI, then compose (same intervals), then
    (with ``--compose-interval``) compose with every check at that interval."""
    from tests.support import images

    load_before = _load()
    stacks = {"dspy-shaped": dspy_stack(), "app (new user)": APP_STACK}
    bench = VsCompose(args, stacks)
    images.build(bench.client, "busybox")
    timings: dict[tuple[str, str], list[float]] = {}
    try:
        floor = bench.container_start_s()
        bench.start_runtime()
        # warm-up, not counted: first container of each tool, CLI imports, page cache
        first = APP_STACK[1]
        bench.rayinfra_start([first.name])
        bench.rayinfra_stop()
        bench.compose_up([Svc(first.name, first.delay, (), first.check, 0.5)])
        for _ in range(args.repeat):
            for label, stack in stacks.items():
                names = [s.name for s in stack]
                timings.setdefault((label, "rayinfra"), []).append(bench.rayinfra_start(names))
                bench.rayinfra_stop()
                timings.setdefault((label, "compose"), []).append(bench.compose_up(stack))
                if args.compose_interval:
                    timings.setdefault((label, "compose-fast"), []).append(
                        bench.compose_up(stack, args.compose_interval)
                    )
    finally:
        bench.close()

    hop = statistics.median(floor)
    rows: list[tuple[str, str, str]] = [
        (
            "Docker create + start of one container",
            f"{hop:.3f} s",
            f"median of {', '.join(f'{x:.3f}' for x in floor)}: the least any tool pays per "
            "service on a chain",
        )
    ]
    for label, stack in stacks.items():
        cp, chain = stack_critical_path(stack)
        ri = timings[(label, "rayinfra")]
        co = timings[(label, "compose")]
        ri_m, co_m = statistics.median(ri), statistics.median(co)
        intervals = ", ".join(
            f"{s.name} {s.check}" + (f" {s.interval:g}s" if s.check not in ("none", "job") else "")
            for s in stack
        )
        rows += [
            (f"**{label}**: critical path", f"{cp:.2f} s", " -> ".join(chain)),
            (
                f"{label}: critical path + one container start per service on it",
                f"{cp + hop * len(chain):.2f} s",
                f"{len(chain)} x {hop:.3f} s; = {(cp + hop * len(chain)) / cp:.2f}x the "
                "critical path",
            ),
            (f"{label}: checks and intervals (both tools)", "", intervals),
            (
                f"{label}: `rayinfra services start` (CLI, to all healthy)",
                f"{ri_m:.2f} s",
                f"median of {_fmt_runs(ri)}",
            ),
            (
                f"{label}: `docker-compose up -d` + engine reports all healthy",
                f"{co_m:.2f} s",
                f"median of {_fmt_runs(co)}; same intervals",
            ),
            (
                f"{label}: rayinfra / critical path",
                f"**{ri_m / cp:.2f}x**",
                "target <= 1.2x: " + ("met" if ri_m / cp <= 1.2 else "NOT met"),
            ),
            (
                f"{label}: rayinfra / compose",
                f"**{ri_m / co_m:.2f}x**",
                "target <= 0.6x: " + ("met" if ri_m / co_m <= 0.6 else "NOT met"),
            ),
        ]
        fast = timings.get((label, "compose-fast"))
        if fast:
            fm = statistics.median(fast)
            rows += [
                (
                    f"{label}: compose, every check at {args.compose_interval:g}s",
                    f"{fm:.2f} s",
                    f"median of {_fmt_runs(fast)}; rayinfra / this = {ri_m / fm:.2f}x",
                )
            ]
    print_table("services start vs docker-compose", rows)
    print(
        f"\n{args.repeat} run(s) per tool and stack, alternating; load average (1/5/15 min) "
        f"before: {load_before}, after: {_load()}; docker-compose {bench.compose_version}, "
        f"Docker engine {bench.engine_version}; rayinfra probes while starting every "
        f"max({manager_mod.HEALTH_POLL_MIN_S:g}s, {manager_mod.HEALTH_POLL_FRACTION:g} x time "
        "waited) up to the interval; Docker runs a container's first check one interval after "
        "it started, then every interval."
    )


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
    ap.add_argument(
        "--vs-compose",
        action="store_true",
        help="time the `rayinfra services start` CLI against docker-compose on two stacks",
    )
    ap.add_argument(
        "--compose-interval",
        type=float,
        default=None,
        help="with --vs-compose: also run compose with every health check at this interval",
    )
    parsed = ap.parse_args()
    if parsed.vs_compose:
        vs_compose(parsed)
    else:
        asyncio.run(main(parsed))
