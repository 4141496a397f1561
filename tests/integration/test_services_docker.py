"""The service manager (no Ray) with the real Docker driver.

Against the private engine at DOCKER_HOST (CI: .ci/setup.d/20-dockerd.sh) and the loopback
registry (30-registry.sh). Every container runs with ``network_mode = "host"`` and binds
127.0.0.1 on a port picked free for the test (never Docker's default bridge). Each test owns a
unique cluster label and removes everything carrying it afterwards (containers, volumes,
networks), by id. Images are the stand-ins of ``tests/support/images.py`` (real binaries under
the ``dspy`` profile's image names), built once per module (a content-labelled no-op when
already built).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from rayinfra.config import ServicesSection
from rayinfra.errors import InvalidArgumentError, QueueFullError
from rayinfra.services.catalog import build_catalog
from rayinfra.services.drivers.base import Driver, LogLine
from rayinfra.services.drivers.docker import DockerDriver
from rayinfra.services.drivers.process import ProcessDriver
from rayinfra.services.manager import Operation, ServiceManager
from rayinfra.services.monitor import HealthMonitor
from rayinfra.services.spec import LABEL_CLUSTER, LABEL_SERVICE, ServiceSpec, parse_spec
from rayinfra.store import StateStore
from tests.conftest import free_port
from tests.support import images
from tests.support.polling import wait_until_async

pytestmark = pytest.mark.integration

CI_SOCKET = "/run/ci-docker.sock"
BUSYBOX = images.BUSYBOX_IMAGE
REDIS = images.REDIS_IMAGE
DSPY_STANDINS = ["busybox", "redis", "reddb", "ollama", "infermesh", "prometheus", "kafka"]
DSPY_STANDINS += ["zookeeper"]


def _base_url() -> str | None:
    if os.environ.get("DOCKER_HOST"):
        return None  # the SDK reads it
    return f"unix://{CI_SOCKET}" if Path(CI_SOCKET).exists() else None


def _registry() -> str:
    return os.environ.get("RAYINFRA_TEST_REGISTRY", "127.0.0.1:5000")


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    url = _base_url()
    c = docker.DockerClient(base_url=url, timeout=120) if url else docker.from_env(timeout=120)
    t0 = time.monotonic()
    images.build_all(c, DSPY_STANDINS)
    print(f"stand-in images ready in {time.monotonic() - t0:.2f}s")
    yield c
    c.close()


class Env:
    """One test's store, drivers and cluster label; cleanup removes all that carries it."""

    def __init__(self, tmp: Path, client: Any) -> None:
        self.tmp = tmp
        self.client = client
        self.store = StateStore(tmp / "state.db")
        self.driver = DockerDriver(_base_url(), timeout_s=60, default_network="host")
        self.cluster = f"t-{uuid.uuid4().hex[:10]}"
        self.managers: list[ServiceManager] = []
        self.process: ProcessDriver | None = None

    def manager(
        self,
        catalog: Mapping[str, ServiceSpec],
        drivers: Mapping[str, Driver] | None = None,
        **kw: Any,
    ) -> ServiceManager:
        kw.setdefault("health_timeout_s", 30.0)
        kw.setdefault("stop_timeout_s", 3.0)
        kw.setdefault("retry_initial_s", 0.05)
        m = ServiceManager(
            dict(catalog),
            dict(drivers) if drivers is not None else {"docker": self.driver},
            self.store,
            self.cluster,
            **kw,
        )
        self.managers.append(m)
        return m

    def owned(self) -> list[dict[str, Any]]:
        flt = {"label": f"{LABEL_CLUSTER}={self.cluster}"}
        return list(self.client.api.containers(all=True, filters=flt))

    async def cleanup(self) -> None:
        for m in self.managers:
            await m.close()
        api = self.client.api
        for c in self.owned():
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_container(c["Id"], force=True, v=False)
        flt = {"label": f"{LABEL_CLUSTER}={self.cluster}"}
        for v in api.volumes(filters=flt).get("Volumes") or []:
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_volume(v["Name"])
        for n in api.networks(filters=flt):
            with contextlib.suppress(docker.errors.NotFound):
                api.remove_network(n["Id"])
        if self.process is not None:
            for inst in self.process.list_owned({LABEL_CLUSTER: self.cluster}):
                self.process.remove(inst.id)
        self.driver.close()
        self.store.close()


@pytest.fixture
async def env(tmp_path: Path, client: Any) -> AsyncIterator[Env]:
    e = Env(tmp_path, client)
    yield e
    await e.cleanup()


def finals(op: Operation) -> dict[str, dict[str, Any]]:
    """The one final (progress 100) update per service; fails on a duplicate."""
    out: dict[str, dict[str, Any]] = {}
    for u in op.updates:
        if u.get("progress") == 100:
            assert u["service_name"] not in out, f"two final updates: {u}"
            out[u["service_name"]] = u
    return out


def first_ts(op: Operation, name: str, progress: int) -> float:
    return float(
        next(u["ts"] for u in op.updates if u["service_name"] == name and u["progress"] == progress)
    )


def redis_spec(
    name: str = "redis", health: Mapping[str, Any] | None = None, **extra: Any
) -> ServiceSpec:
    """The redis stand-in on a free loopback port, host network, a real PING check."""
    port = free_port()
    table: dict[str, Any] = {
        "image": REDIS,
        "command": ["--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        "network_mode": "host",
        "ports": [port],
        "required": True,
        "health": {"kind": "redis", "port": port, "interval_s": 0.5, **(health or {})},
        **extra,
    }
    return parse_spec(name, table)


def busybox_spec(name: str, script: str, **extra: Any) -> ServiceSpec:
    return parse_spec(
        name, {"image": BUSYBOX, "command": ["sh", "-c", script], "network_mode": "host", **extra}
    )


class Monitor:
    """A HealthMonitor wired to one manager, as the health_checker actor does it."""

    def __init__(self, m: ServiceManager) -> None:
        self.m = m
        self.events: list[tuple[str, str]] = []
        self.saved: dict[str, dict[str, Any]] = {}
        self.mon = HealthMonitor(
            m.drivers, self._watch, self._restart, self._publish, self._event, self._save
        )
        self.task: asyncio.Task[None] | None = None

    async def _watch(self) -> dict[str, dict[str, Any]]:
        return {
            n: {"spec": s.spec.model_dump(mode="json"), "instance_id": s.instance.id}
            for n, s in self.m.services.items()
            if s.desired and s.instance is not None
        }

    async def _restart(self, name: str, reason: str) -> tuple[bool, str]:
        return await self.m.restart(name, reason=reason)

    async def _publish(self, items: list[Any]) -> None:
        return None

    async def _event(self, kind: str, name: str, data: dict[str, Any]) -> None:
        self.events.append((kind, name))

    async def _save(self, name: str, view: dict[str, Any]) -> None:
        self.saved[name] = view

    async def __aenter__(self) -> Monitor:
        self.task = asyncio.ensure_future(self.mon.run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task

    def status(self, name: str) -> str:
        return str(self.saved.get(name, {}).get("status", ""))


# ------------------------------------------------------------------------------------------
# The whole dspy profile, every probe kind against a real server
# ------------------------------------------------------------------------------------------


def host_network_overrides(
    catalog: Mapping[str, ServiceSpec], ports: Mapping[str, int]
) -> dict[str, str]:
    """Per-call overrides that move every dspy service onto the host network at ``ports``.

    Each stand-in's listen address is set the way the real image reads it (env or arguments);
    every health check follows its port. Named volumes are dropped (absolute binds, like the
    shipped prometheus.yml, stay).
    """
    j = json.dumps
    ov: dict[str, str] = {}
    for n, spec in catalog.items():
        ov[f"{n}.network_mode"] = j("host")
        ov[f"{n}.networks"] = "[]"
        ov[f"{n}.volumes"] = j([v for v in spec.volumes if v.startswith("/")])
        ov[f"{n}.ports"] = j([ports[n]])
    p = ports
    ov["redis.command"] = j(["--port", str(p["redis"]), "--bind", "127.0.0.1", "--save", ""])
    ov["redis.health.port"] = j(p["redis"])
    ov["redb.env.REDB_HOST"] = "127.0.0.1"
    ov["redb.env.REDB_PORT"] = j(str(p["redb"]))
    ov["redb.health.url"] = f"http://127.0.0.1:{p['redb']}/health"
    ov["ollama.env.OLLAMA_HOST"] = f"127.0.0.1:{p['ollama']}"
    ov["ollama.health.url"] = f"http://127.0.0.1:{p['ollama']}/api/tags"
    for n in ("infermesh-node-a", "infermesh-node-b", "infermesh-router"):
        ov[f"{n}.env.MESH_HOST"] = "127.0.0.1"
        ov[f"{n}.env.MESH_PORT"] = j(str(p[n]))
        ov[f"{n}.env.REDIS_URL"] = f"redis://127.0.0.1:{p['redis']}"
    for n in ("infermesh-node-a", "infermesh-node-b"):
        url = f"http://127.0.0.1:{p[n]}/health"
        ov[f"{n}.health.command"] = j(["wget", "-q", "-O", "/dev/null", url])
    nodes = ",".join(f"127.0.0.1:{p[n]}" for n in ("infermesh-node-a", "infermesh-node-b"))
    ov["infermesh-router.env.MESH_NODES"] = nodes
    ov["infermesh-router.health.url"] = f"http://127.0.0.1:{p['infermesh-router']}/health"
    ov["zookeeper.env.ZOOKEEPER_CLIENT_PORT"] = j(str(p["zookeeper"]))
    ov["zookeeper.env.ZOOKEEPER_CLIENT_PORT_ADDRESS"] = "127.0.0.1"
    ov["zookeeper.health.port"] = j(p["zookeeper"])
    ov["kafka.env.KAFKA_ZOOKEEPER_CONNECT"] = f"127.0.0.1:{p['zookeeper']}"
    ov["kafka.env.KAFKA_LISTENERS"] = f"PLAINTEXT://127.0.0.1:{p['kafka']}"
    ov["kafka.env.KAFKA_ADVERTISED_LISTENERS"] = f"PLAINTEXT://127.0.0.1:{p['kafka']}"
    ov["kafka.health.port"] = j(p["kafka"])
    ov["prometheus.command"] = j(
        [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            f"--web.listen-address=127.0.0.1:{p['prometheus']}",
        ]
    )
    ov["prometheus.health.url"] = f"http://127.0.0.1:{p['prometheus']}/-/healthy"
    return ov


DSPY_KINDS = {
    "redis": "redis",
    "redb": "http",
    "ollama": "http",
    "infermesh-node-a": "command",
    "infermesh-node-b": "command",
    "infermesh-router": "http",
    "zookeeper": "tcp",
    "kafka": "kafka",
    "prometheus": "http",
}


async def test_the_dspy_profile_comes_up_healthy_with_every_probe_kind(env: Env) -> None:
    catalog = build_catalog(ServicesSection(profile="dspy"), env.tmp / "state")
    assert set(catalog) == set(DSPY_KINDS)
    ports = {n: free_port() for n in catalog}
    m = env.manager(catalog, health_timeout_s=45.0)
    op = await m.start_and_wait([], overrides=host_network_overrides(catalog, ports))

    final = finals(op)
    assert set(final) == set(DSPY_KINDS), op.updates
    bad = {n: u["message"] for n, u in final.items() if u["status"] != "healthy"}
    assert not bad, bad
    assert op.success
    # every service: "Preparing" first, its final update last, nothing after it
    for n in DSPY_KINDS:
        mine = [u for u in op.updates if u["service_name"] == n]
        assert mine[0]["progress"] == 0 and mine[-1]["progress"] == 100
        assert [u["progress"] for u in mine] == sorted(u["progress"] for u in mine)
    assert [u["seq"] for u in op.updates] == list(range(1, len(op.updates) + 1))

    # the probe that made each one healthy is the profile's kind, and ran against the server
    seen: dict[str, str] = {}
    for n, u in final.items():
        probe_msg = u["message"].split(" is healthy: ", 1)[1]
        seen[n] = probe_msg.split(" ", 1)[0]
        check = m.services[n].spec.health
        assert check is not None and check.kind == DSPY_KINDS[n]
    assert seen == DSPY_KINDS
    assert set(seen.values()) >= {"redis", "http", "command", "tcp", "kafka"}
    assert "PONG" in final["redis"]["message"]
    assert "Mode:" in final["zookeeper"]["message"]
    assert "HTTP 200" in final["prometheus"]["message"]
    assert "exit code 0" in final["infermesh-node-a"]["message"]

    # dependency conditions: created only after what they wait for reported healthy
    redis_ok = first_ts(op, "redis", 100)
    for node in ("infermesh-node-a", "infermesh-node-b"):
        assert first_ts(op, node, 10) >= redis_ok
        assert first_ts(op, "infermesh-router", 10) >= first_ts(op, node, 100)
    assert first_ts(op, "kafka", 10) >= first_ts(op, "zookeeper", 100)

    # really on the host network, with our labels, the shipped prometheus.yml mounted
    st = m.status()
    for n in DSPY_KINDS:
        assert st[n]["status"] == "running" and st[n]["ports"] == [ports[n]]
        info = env.client.api.inspect_container(st[n]["container_id"])
        assert info["HostConfig"]["NetworkMode"] == "host"
        assert info["Config"]["Labels"][LABEL_SERVICE] == n
        assert info["State"]["Running"]
    prom = env.client.api.inspect_container(st["prometheus"]["container_id"])
    assert [mt["Destination"] for mt in prom["Mounts"]] == ["/etc/prometheus/prometheus.yml"]
    assert len(env.owned()) == 9

    # stop: dependants first, truthful per service, all containers gone
    results = await m.stop([])
    assert set(results.values()) == {"stopped"}
    order = list(results)
    assert order.index("infermesh-router") < order.index("infermesh-node-a")
    assert order.index("infermesh-node-a") < order.index("redis")
    assert order.index("kafka") < order.index("zookeeper")
    assert env.owned() == []


# ------------------------------------------------------------------------------------------
# Adoption and orphans
# ------------------------------------------------------------------------------------------


async def test_a_new_manager_adopts_running_containers_and_removes_orphans(env: Env) -> None:
    redis = redis_spec()
    m1 = env.manager({"redis": redis})
    assert (await m1.start_and_wait(["redis"])).success
    inst = m1.services["redis"].instance
    assert inst is not None
    # a container carrying our cluster label that nobody wants
    stray = busybox_spec("stray", "sleep 60")
    stray_inst = env.driver.start(stray, m1.labels(stray))
    await m1.close()  # the manager goes away; its containers do not
    assert env.driver.inspect(inst.id).state == "running"

    m2 = env.manager({"redis": redis})  # same store, same cluster: as after a registry restart
    outcome = await m2.recover()
    # not in the config: listed as orphaned and left running until pruned (it may be a
    # user's database)
    assert outcome == {"redis": "adopted", "stray": "orphaned"}
    st = m2.status()["redis"]
    assert st["status"] == "running" and st["container_id"] == inst.id
    assert env.driver.inspect(stray_inst.id).state == "running"
    # starting again adopts, never duplicates
    op = await m2.start_and_wait(["redis"])
    assert op.success and finals(op)["redis"]["status"] == "healthy"
    assert await m2.prune() == {"stray": "stopped"}
    assert env.driver.inspect(stray_inst.id).state == "missing"
    assert [c["Id"] for c in env.owned()] == [inst.id]
    assert m2.services["redis"].instance is not None
    assert m2.services["redis"].instance.id == inst.id


def _created_at(env: Env, service: str) -> float:
    """When the engine created ``service``'s one container (unix seconds)."""
    flt = {"label": [f"{LABEL_CLUSTER}={env.cluster}", f"{LABEL_SERVICE}={service}"]}
    found = env.client.api.containers(all=True, filters=flt)
    assert len(found) == 1, [(c["Labels"], c["State"]) for c in env.owned()]
    (c,) = found
    return float(c["Created"])


async def test_a_dependant_is_created_while_its_dependency_starts(env: Env) -> None:
    """The dependant's container exists before the dependency is healthy (its start is then
    a start, not a create and a start), and it is the container that runs."""
    port = free_port()
    first = busybox_spec(
        "first",
        f"sleep 2; exec httpd -f -p 127.0.0.1:{port}",
        health={"kind": "tcp", "port": port, "interval_s": 0.5},
        required=True,
    )
    second = busybox_spec(
        "second", "sleep 60", depends_on=[{"service": "first", "condition": "healthy"}]
    )
    m = env.manager({"first": first, "second": second})
    op = await m.start_and_wait(["first", "second"])
    assert op.success, op.updates
    healthy_at = first_ts(op, "first", 100)
    assert _created_at(env, "second") < healthy_at - 1.0  # created while first slept
    inst = m.services["second"].instance
    assert inst is not None and env.driver.inspect(inst.id).state == "running"
    assert len(env.owned()) == 2  # nothing created twice


async def test_what_was_prepared_for_a_blocked_service_is_removed(env: Env) -> None:
    """A dependency that fails blocks its dependant: the container prepared for the dependant
    does not outlive the operation."""
    first = busybox_spec("first", "sleep 1; exit 3", required=True)
    second = busybox_spec(
        "second",
        "sleep 60",
        depends_on=[{"service": "first", "condition": "completed"}],
    )
    m = env.manager({"first": first, "second": second})
    op = m.ops[await m.start(["first", "second"])]
    seen: set[str] = set()  # what existed while the operation ran
    while not op.done:
        seen |= {c["Labels"][LABEL_SERVICE] for c in env.owned()}
        await asyncio.sleep(0.1)
    assert not op.success
    assert finals(op)["second"]["status"] == "blocked", finals(op)["second"]
    assert seen == {"first", "second"}, seen  # second's container was prepared...
    names = {c["Labels"][LABEL_SERVICE] for c in env.owned()}
    assert names == {"first"}, names  # ...and is gone with the operation


# ------------------------------------------------------------------------------------------
# Restart-on-unhealthy / on-exit through the health monitor
# ------------------------------------------------------------------------------------------


async def test_monitor_replaces_a_killed_and_a_paused_container_then_gives_up(env: Env) -> None:
    spec = redis_spec(
        health={"interval_s": 0.3, "timeout_s": 0.3, "retries": 2},
        restart={
            "backoff_initial_s": 0.1,
            "backoff_max_s": 0.2,
            "max_attempts": 2,
            "window_s": 120,
        },
    )
    m = env.manager({"redis": spec})
    assert (await m.start_and_wait(["redis"])).success
    api = env.client.api

    def current() -> str:
        inst = m.services["redis"].instance
        return inst.id if inst is not None else ""

    def replaced(old: str) -> Any:
        return lambda: (
            current() not in ("", old)
            and m.services["redis"].status == "running"
            and api.inspect_container(current())["State"]["Running"]
        )

    def restarts() -> list[str]:
        """Reasons of the restarts the manager recorded (the registry's service_restarted)."""
        evs = env.store.events(types=["service_restarted"], resource_ids=["redis"])
        return [str(e.data.get("reason")) for e in evs]

    async with Monitor(m) as mon:
        await wait_until_async("first healthy", lambda: mon.status("redis") == "healthy", 10)

        first = current()
        api.kill(first)  # docker kill: the container exits
        await wait_until_async("a new container after docker kill", replaced(first), 20)
        second = current()
        assert ("service_exited", "redis") in mon.events
        # the registry records the restart once the new container is up: it may trail by a moment
        await wait_until_async("the restart recorded", lambda: restarts() == ["exited"], 10)
        with pytest.raises(docker.errors.NotFound):
            api.inspect_container(first)
        await wait_until_async("second healthy", lambda: mon.status("redis") == "healthy", 10)

        api.pause(second)  # wedged: the port accepts, redis never answers PING
        await wait_until_async("a new container after docker pause", replaced(second), 20)
        third = current()
        assert ("service_unhealthy", "redis") in mon.events
        await wait_until_async(
            "the restart recorded", lambda: restarts() == ["exited", "unhealthy"], 10
        )
        with pytest.raises(docker.errors.NotFound):
            api.inspect_container(second)
        await wait_until_async("third healthy", lambda: mon.status("redis") == "healthy", 10)

        # the budget (2 restarts per window) is used up: the next fault leaves it failed
        api.kill(third)
        await wait_until_async("failed", lambda: mon.status("redis") == "failed", 15)
        assert "budget" in mon.saved["redis"]["message"]
        assert ("service_failed", "redis") in mon.events
        await asyncio.sleep(1.0)
        assert current() == third  # not restarted again
        assert restarts() == ["exited", "unhealthy"]
        assert ("service_restart_failed", "redis") not in mon.events


async def test_monitor_reports_cpu_percent_of_a_busy_container(env: Env) -> None:
    busy = busybox_spec("busy", "while :; do :; done")
    m = env.manager({"busy": busy})
    assert (await m.start_and_wait(["busy"])).success
    async with Monitor(m) as mon:
        deadline = time.monotonic() + 10
        cpu = 0.0
        while time.monotonic() < deadline:
            usage = mon.saved.get("busy", {}).get("resource_usage")
            if usage is not None:
                cpu = usage["cpu_percent"]
                if cpu > 20:
                    break
            await asyncio.sleep(0.2)
    assert cpu > 20, mon.saved.get("busy")
    assert usage is not None and usage["memory_bytes"] > 0
    assert mon.saved["busy"]["status"] == "healthy"  # running, no health check


# ------------------------------------------------------------------------------------------
# Logs through the driver
# ------------------------------------------------------------------------------------------

TICKER = "i=0; while :; do i=$((i+1)); echo tick $i; echo warn $i >&2; sleep 0.1; done"


def _ticks(lines: list[LogLine], stream: str = "stdout") -> list[int]:
    return [int(ln.message.split()[1]) for ln in lines if ln.stream == stream]


def _is_ticker_line(ln: LogLine) -> bool:
    word = "tick" if ln.stream == "stdout" else "warn"
    return ln.message.startswith(f"{word} ")


async def test_logs_tail_since_and_follow_for_a_managed_container(env: Env) -> None:
    m = env.manager({"ticker": busybox_spec("ticker", TICKER)})
    t_start = time.time()
    assert (await m.start_and_wait(["ticker"])).success
    inst = m.services["ticker"].instance
    assert inst is not None
    drv = env.driver

    def read(**kw: Any) -> list[LogLine]:
        return list(drv.logs(inst.id, follow=False, **{"tail": None, "since": None, **kw}))

    await wait_until_async("8 ticks", lambda: len(_ticks(read())) >= 8, 10)
    everything = read()
    assert all(_is_ticker_line(ln) for ln in everything), everything[:5]
    out = _ticks(everything)
    assert out == list(range(1, len(out) + 1))  # in order, nothing lost
    assert set(_ticks(everything, "stderr")) <= set(out)
    stamps = [ln.timestamp for ln in everything]
    # each stream is in time order; across stdout and stderr Docker's log file interleaves two
    # pipes read separately, so lines a few microseconds apart may swap
    for stream in ("stdout", "stderr"):
        own = [ln.timestamp for ln in everything if ln.stream == stream]
        assert own == sorted(own), stream
    assert t_start - 1 < min(stamps) <= max(stamps) < time.time() + 1
    assert len({round(s, 6) for s in stamps}) > len(stamps) // 2  # sub-second precision

    tail = read(tail=4)
    assert len(tail) == 4
    assert [ln.timestamp for ln in tail] == sorted(ln.timestamp for ln in tail)
    assert min(_ticks(tail) + _ticks(tail, "stderr")) >= out[-1] - 1  # the latest lines only

    pivot = next(ln for ln in everything if ln.stream == "stdout" and ln.message == "tick 5")
    since = read(since=pivot.timestamp - 1e-4)
    assert since and all(ln.timestamp >= pivot.timestamp - 1e-3 for ln in since)
    assert _ticks(since)[0] == 5 and 1 not in _ticks(since, "stderr")

    # follow: only new lines (tail 0), then the stream ends when the container stops
    got: list[LogLine] = []
    ended = threading.Event()

    def follow() -> None:
        for ln in drv.logs(inst.id, follow=True, tail=0, since=None):
            got.append(ln)
        ended.set()

    seen_before = max(_ticks(read()))
    follower = asyncio.ensure_future(asyncio.to_thread(follow))
    await wait_until_async("5 followed ticks", lambda: len(_ticks(got)) >= 5, 10)
    assert not ended.is_set()
    assert _ticks(got)[0] >= seen_before  # nothing replayed from the start
    followed = _ticks(got)
    assert followed == list(range(followed[0], followed[0] + len(followed)))
    assert "stderr" in {ln.stream for ln in got}
    assert (await m.stop(["ticker"])) == {"ticker": "stopped"}
    await asyncio.wait_for(follower, 10)
    assert ended.is_set()


# ------------------------------------------------------------------------------------------
# PullImages
# ------------------------------------------------------------------------------------------


def _delete_from_registry(ref: str) -> None:
    """Delete the pushed manifest from the loopback registry (delete is enabled in CI)."""
    host, _, rest = ref.partition("/")
    repo, _, tag = rest.rpartition(":")
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    req = urllib.request.Request(
        f"http://{host}/v2/{repo}/manifests/{tag}", method="HEAD", headers={"Accept": accept}
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        digest = r.headers["Docker-Content-Digest"]
    req = urllib.request.Request(f"http://{host}/v2/{repo}/manifests/{digest}", method="DELETE")
    with contextlib.suppress(OSError), urllib.request.urlopen(req, timeout=5):
        pass


async def test_pull_reports_byte_progress_and_names_an_unreachable_registry(env: Env) -> None:
    api = env.client.api
    ref = f"{_registry()}/rayinfra-test/pull-{uuid.uuid4().hex[:12]}:1"
    with tempfile.TemporaryDirectory() as tmp:  # a unique 3 MiB layer, so the pull downloads it
        (Path(tmp) / "blob").write_bytes(os.urandom(3 << 20))
        (Path(tmp) / "Dockerfile").write_text("FROM scratch\nCOPY blob /blob\n")
        env.client.images.build(path=tmp, tag=ref, network_mode="none", rm=True)
    bad = f"127.0.0.1:{free_port()}/x:1"  # nothing listens there
    try:
        for event in api.push(ref, stream=True, decode=True):
            assert "error" not in event, event
        env.client.images.remove(ref)
        with pytest.raises(docker.errors.ImageNotFound):
            env.client.images.get(ref)

        m = env.manager({})
        op_id = await m.pull([ref, bad])
        updates: list[dict[str, Any]] = []
        seq, done = 0, False
        while not done:
            seq, new, done = await m.op_updates(op_id, seq, timeout_s=60)
            updates += new
        op = m.ops[op_id]
        assert op.done and not op.success  # one image failed

        mine = [u for u in updates if u["image_name"] == ref]
        assert [u["status"] for u in mine].count("complete") == 1
        end = mine[-1]
        assert end["status"] == "complete" and end["progress_percent"] == 100
        assert end["current"] == end["total"] > 3 << 20
        moving = [u for u in mine if u["status"] in ("downloading", "extracting")]
        assert moving, mine
        assert all(0 <= u["current"] <= u["total"] == end["total"] for u in moving)
        downloading = [u["current"] for u in mine if u["status"] == "downloading"]
        assert downloading == sorted(downloading)
        assert all(u["status"] != "error" for u in mine)
        env.client.images.get(ref)  # really there now

        theirs = [u for u in updates if u["image_name"] == bad]
        assert [u["status"] for u in theirs] == ["error"]
        assert f"registry {bad.split('/')[0]} is unreachable" in theirs[0]["message"]
        # one image after the other, each ending once
        assert updates.index(mine[-1]) < updates.index(theirs[0])
    finally:
        with contextlib.suppress(docker.errors.ImageNotFound):
            env.client.images.remove(ref)
        with contextlib.suppress(OSError):
            _delete_from_registry(ref)


@contextlib.contextmanager
def _silent_registry() -> Iterator[str]:
    """A registry address that accepts connections and never answers: a pull from it hangs
    (the engine gives up after ~25 s) until the block ends, which closes them all."""
    silent = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(silent.accept()[0])

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"127.0.0.1:{silent.getsockname()[1]}"
    finally:
        stop.set()
        acceptor.join()
        for c in held:  # the engine sees the registry go: the pulls end now
            c.close()
        silent.close()


async def _pulls_end(m: ServiceManager, op_ids: list[str]) -> None:
    for op_id in op_ids:
        seq, done = 0, False
        while not done:
            seq, _, done = await m.op_updates(op_id, seq, timeout_s=60)


async def test_a_flood_of_hanging_pulls_holds_nothing_else_up(env: Env) -> None:
    """Eight pull operations hanging on a silent registry, their callers gone, must not hold
    up a service start: pulls have threads of their own (``PULL_THREADS``). Before, each pull
    took a thread of the event loop's default executor, which the registry's state writes use
    too: the start waited out the pulls (the fuzzer's PullImages flood made every later health
    check take ~10x longer)."""
    env.process = ProcessDriver(env.tmp / "services")
    tick = parse_spec("tick", {"driver": "process", "argv": [sys.executable, "-c", "import time; time.sleep(60)"]})  # fmt: skip
    m = env.manager({"tick": tick}, {"docker": env.driver, "process": env.process})
    try:
        with _silent_registry() as registry:
            pulls = [await m.pull([f"{registry}/hang-{i}:1"]) for i in range(8)]
            await asyncio.sleep(0.5)  # the pulls are under way
            op = await asyncio.wait_for(m.start_and_wait(["tick"]), timeout=15)
            assert finals(op)["tick"]["status"] == "healthy", finals(op)
            assert not any(m.ops[p].done for p in pulls)  # all still hanging meanwhile
    finally:
        with contextlib.suppress(Exception):
            await m.stop(["tick"])


async def test_pulls_queued_are_bounded_and_a_refused_request_queues_nothing(env: Env) -> None:
    """A pull goes on when its caller leaves, so a client that keeps asking (the fuzzer sent
    thousands) must not queue pulls without end: past ``max_queued_pulls`` images queued or
    pulling, PullImages is refused with QueueFullError (RESOURCE_EXHAUSTED) and queues nothing;
    once pulls end there is room again. Before, 3,000 PullImages queued pulls that kept the
    registry actor and dockerd busy for minutes after the last caller left."""
    m = env.manager({}, max_queued_pulls=3)
    with _silent_registry() as registry:
        first = await m.pull([f"{registry}/a:1", f"{registry}/b:1"])
        second = await m.pull([f"{registry}/c:1"])
        with pytest.raises(QueueFullError) as refused:
            await m.pull([f"{registry}/d:1"])
        assert "3 image pulls are queued or running" in str(refused.value)
        assert "services.max_queued_pulls (3)" in str(refused.value)
        with pytest.raises(InvalidArgumentError) as too_many:  # never fits: not a retry
            await m.pull([f"{registry}/e{i}:1" for i in range(4)])
        assert too_many.value.field == "image_names"
        assert len(m.ops) == 2  # the refused requests left nothing behind
    await _pulls_end(m, [first, second])  # the registry went: each pull failed
    assert [u["status"] for u in m.ops[first].updates] == ["error", "error"]
    third = await m.pull([f"127.0.0.1:{free_port()}/x:1" for _ in range(3)])  # room again
    await _pulls_end(m, [third])
    assert [u["status"] for u in m.ops[third].updates] == ["error"] * 3


# ------------------------------------------------------------------------------------------
# Docker engine unreachable
# ------------------------------------------------------------------------------------------


async def test_an_unreachable_engine_fails_docker_services_only(env: Env) -> None:
    bogus = DockerDriver(f"unix:///tmp/rayinfra-no-docker-{uuid.uuid4().hex[:8]}.sock")
    env.process = ProcessDriver(env.tmp / "services")
    port = free_port()
    (env.tmp / "www").mkdir()
    (env.tmp / "www" / "health").write_text("ok\n")
    web = parse_spec(
        "web",
        {
            "driver": "process",
            "argv": [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
            "cwd": str(env.tmp / "www"),
            "ports": [port],
            "health": {"kind": "http", "url": f"http://127.0.0.1:{port}/health", "interval_s": 0.3},
        },
    )
    boxed = busybox_spec("boxed", "sleep 60")
    m = env.manager({"boxed": boxed, "web": web}, {"docker": bogus, "process": env.process})
    t0 = time.monotonic()
    op = await m.start_and_wait([])
    assert time.monotonic() - t0 < 15  # not retried: an unreachable engine fails at once
    final = finals(op)
    assert final["boxed"]["status"] == "failed"
    msg = final["boxed"]["message"]
    assert "docker unavailable" in msg and "rayinfra-no-docker" in msg
    assert "hint: start dockerd or set DOCKER_HOST" in msg
    assert final["web"]["status"] == "healthy", final["web"]
    st = m.status()
    assert st["boxed"]["status"] == "failed" and "docker unavailable" in st["boxed"]["message"]
    assert st["web"]["status"] == "running"
    assert op.success  # neither is required
