"""The service_registry and health_checker actors in the session runtime: process services
(redis-server, a CPU burner) and a container (tests/integration/conftest.py defines them)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import ray

from rayinfra.raywrap import NAMESPACE
from tests.integration.conftest import SERVICE_PORTS, Runtime
from tests.support import images
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def srt(rt: Runtime) -> Iterator[Runtime]:
    """The session runtime with this module's image built; services stopped afterwards."""
    images.build_on(rt.config.services.docker_host, "busybox")
    yield rt
    with contextlib.suppress(Exception):
        ray.get(registry().stop.remote([], 3))


def registry() -> Any:
    return ray.get_actor("service_registry", namespace=NAMESPACE)


def start(names: list[str], overrides: dict[str, str] | None = None) -> list[dict[str, Any]]:
    reg = registry()
    op = ray.get(reg.start.remote(names, True, overrides or {}))
    seq, out, done = 0, [], False
    while not done:
        seq, ups, done = ray.get(reg.op_updates.remote(op, seq, 10.0))
        out += ups
    return out


def finals(updates: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {u["service_name"]: u for u in updates if u["progress"] == 100}


def test_start_pulls_in_a_dependency_and_runs_a_container(srt: Runtime) -> None:
    f = finals(start(["burner", "boxed"]))
    assert set(f) == {"kv", "burner", "boxed"}
    assert f["kv"]["status"] == "healthy"
    assert f["burner"]["status"] == "healthy"  # running, no health check
    assert f["boxed"]["status"] == "healthy", f["boxed"]
    st = ray.get(registry().status.remote([]))
    assert st["kv"]["status"] == "running" and st["kv"]["ports"] == [SERVICE_PORTS["kv"]]
    assert st["boxed"]["status"] == "running" and len(st["boxed"]["container_id"]) == 64
    assert st["prometheus"]["status"] == "stopped"  # the local profile's, never selected


def test_health_checker_reports_probes_and_cpu(srt: Runtime) -> None:
    start(["burner"])
    reg = registry()
    _, items = ray.get(reg.health_updates.remote(0, ["kv"], 10.0))
    assert items and items[-1]["service"] == "kv" and items[-1]["healthy"] is True
    assert "PONG" in items[-1]["message"]

    def burner_cpu() -> float:
        usage = ray.get(reg.status.remote(["burner"]))["burner"].get("health", {})
        return float(usage.get("resource_usage", {}).get("cpu_percent", 0.0))

    assert wait_until("burner CPU%", lambda: burner_cpu() > 20, 20, 0.2)
    metrics = ray.get(reg.metrics_snapshot.remote())
    assert metrics['env_manager_service_start_total{service_name="kv",status="success"}'] >= 1


def test_logs_tail_and_follow(srt: Runtime) -> None:
    start(["kv"])
    reg = registry()
    sid = ray.get(reg.open_logs.remote("kv", False, 3, None))
    lines, done = [], False
    while not done:
        batch, done = ray.get(reg.read_logs.remote(sid, 5.0))
        lines += batch
    assert 0 < len(lines) <= 3
    assert all(ln["timestamp"] > 1.7e9 and ln["stream"] in ("stdout", "stderr") for ln in lines)
    with pytest.raises(Exception, match="unknown service"):
        ray.get(reg.open_logs.remote("ghost", False, None, None))
    follow = ray.get(reg.open_logs.remote("kv", True, 1, None))
    batch, done = ray.get(reg.read_logs.remote(follow, 5.0))
    assert batch and not done
    assert ray.get(reg.close_logs.remote(follow)) is True


def test_restart_on_unhealthy_through_the_actors(srt: Runtime) -> None:
    assert finals(start(["victim"]))["victim"]["status"] == "healthy"
    reg = registry()
    first = ray.get(reg.status.remote(["victim"]))["victim"]["container_id"]
    pid = int(first.split("-")[0])
    os.kill(pid, signal.SIGSTOP)  # wedged: the port accepts, nothing answers
    try:

        def replaced() -> bool:
            row = ray.get(reg.status.remote(["victim"]))["victim"]
            return bool(row["container_id"] != first and row["status"] == "running")

        wait_until("victim restarted", replaced, 30, 0.2)
    finally:
        with contextlib.suppress(ProcessLookupError):  # normally gone: it was replaced
            os.kill(pid, signal.SIGCONT)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    hc = ray.get_actor("health_checker", namespace=NAMESPACE)
    _, events = ray.get(hc.events.remote(0, None, ["service_restarted"], 100))
    assert any(e["resource_id"] == "victim" and e["data"]["reason"] == "unhealthy" for e in events)


def test_killed_registry_adopts_running_services(srt: Runtime) -> None:
    start(["kv", "boxed"])
    reg = registry()
    before = ray.get(reg.status.remote(["kv"]))["kv"]
    box_before = ray.get(reg.status.remote(["boxed"]))["boxed"]["container_id"]
    pid_before = ray.get(reg.ping.remote())["pid"]
    ray.kill(reg, no_restart=False)  # Ray restarts it (max_restarts=-1)

    def new_incarnation() -> bool:
        try:
            return bool(ray.get(registry().ping.remote(), timeout=5)["pid"] != pid_before)
        except Exception:  # noqa: BLE001 - restarting
            return False

    wait_until("registry restart", new_incarnation, 60, 0.2)
    reg = registry()
    recovered = ray.get(reg.recovered.remote())
    assert recovered["kv"] == recovered["boxed"] == "adopted"
    assert ray.get(reg.status.remote(["boxed"]))["boxed"]["container_id"] == box_before
    after = ray.get(reg.status.remote(["kv"]))["kv"]
    assert after["container_id"] == before["container_id"]
    assert after["status"] == "running"
    f = finals(start(["kv"]))
    assert f["kv"]["status"] == "healthy"
    assert ray.get(reg.status.remote(["kv"]))["kv"]["container_id"] == before["container_id"]


def test_bad_requests_name_the_field(srt: Runtime) -> None:
    reg = registry()
    with pytest.raises(Exception, match="unknown service 'nope'"):
        ray.get(reg.start.remote(["nope"], True, {}))
    with pytest.raises(Exception, match=r"kv\.bogus"):
        ray.get(reg.start.remote(["kv"], True, {"kv.bogus": "1"}))
    with pytest.raises(Exception, match="unknown service"):
        ray.get(reg.restart.remote("nope"))


def test_stop_reports_truthfully(srt: Runtime) -> None:
    start(["burner"])
    reg = registry()
    pid = int(ray.get(reg.status.remote(["kv"]))["kv"]["container_id"].split("-")[0])
    res = ray.get(reg.stop.remote(["burner", "kv"], 3))
    assert list(res) == ["burner", "kv"]
    assert res == {"burner": "stopped", "kv": "stopped"}
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert ray.get(reg.stop.remote(["kv"], 3)) == {"kv": "not running"}
