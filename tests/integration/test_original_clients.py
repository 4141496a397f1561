"""The original system's clients, unchanged, against the session runtime (issue 15, item 4).

The original client is protoc's output for the original ``.proto`` files
(tests/fixtures/proto_original), unmodified, driven by ``tests/support/original_client.py`` in a
subprocess (one process cannot hold both layouts) the way the original Python clients called it:
no metadata, payload values as strings, ``include_completed=True``, and ``GoOrchestratorClient``'s
wait (one message at a time, each within a 1 s read deadline). rayinfra's own stubs play the
current client (metadata ``rayinfra-api: 2``, ``changes_only``) in-process.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import ray

from rayinfra.actors.gateway import token_path
from rayinfra.api import stubs
from rayinfra.config import dial_addr
from rayinfra.raywrap import NAMESPACE
from rayinfra.services.drivers.procnet import namespace_traffic
from tests.integration.conftest import Runtime
from tests.support import images
from tests.support.original_client import generate_original_client
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration
on_session_loop = pytest.mark.asyncio(loop_scope="session")  # where the async fixtures live

opb, opb_grpc = stubs.orchestrator()
epb, epb_grpc = stubs.env_manager()
ROOT = Path(__file__).resolve().parents[2]
CURRENT = (("rayinfra-api", "2"),)  # a client of the current protos says so


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def addr(rt: Runtime, key: str) -> str:
    return dial_addr(getattr(rt.config.gateway, key))


@pytest.fixture(scope="module")
def gen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_original_client(tmp_path_factory.mktemp("original_client"))


@pytest.fixture(scope="module")
def original(rt: Runtime, gen_dir: Path) -> Any:
    """``original("submit", ...)``: one call of the original client; its result (exit code 0)."""
    base = [
        sys.executable,
        "-m",
        "tests.support.original_client",
        "--gen-dir",
        str(gen_dir),
        "--target",
        addr(rt, "orchestrator_grpc_addr"),
        "--env-target",
        addr(rt, "env_manager_grpc_addr"),
        "--timeout",
        "60",
    ]

    def run(*args: str, code: int = 0) -> Any:
        out = subprocess.run(
            [*base, *args], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
        )
        assert out.returncode == code, out.stdout + out.stderr
        reply = json.loads(out.stdout)
        assert reply["rayinfra_imported"] is False  # only the original layout's modules
        assert reply["modules"]["orchestrator"] == ["orchestrator.v1_pb2", "orchestrator.v1.proto"]
        return reply["result"]

    return run


@pytest.fixture
async def orch(rt: Runtime) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(addr(rt, "orchestrator_grpc_addr")) as ch:
        yield opb_grpc.OrchestratorServiceStub(ch)


def registry() -> Any:
    return ray.get_actor("service_registry", namespace=NAMESPACE)


def start_services(names: list[str]) -> None:
    reg = registry()
    op = ray.get(reg.start.remote(names, True, {}))
    seq, done = 0, False
    while not done:
        seq, _, done = ray.get(reg.op_updates.remote(op, seq, 10.0))


# ----------------------------------------------------------------------------- Done means


def test_the_original_client_unchanged_against_a_live_runtime(rt: Runtime, original: Any) -> None:
    """submit -> status -> stream -> metrics -> env-manager calls with the original client,
    including a 5 s task watched over StreamTaskResults with a 1 s read deadline, and payloads
    without ``type`` (GoOrchestratorClient's)."""
    health = original("health")
    assert health["healthy"] is True and health["services"]["orchestrator"] == "healthy"

    # GoOrchestratorClient._build_payload: no type; every value a str() of the original value
    episode = uid("orig-rl")
    sub = original(
        "submit",
        "--id",
        episode,
        "--class",
        "cpu_short",
        "--priority",
        "10",
        "--payload",
        "task_type=rl_episode",
        "session_id=coordinated_session_1",
        f"episode_id={episode}",
        "timestamp=1700000000.25",
        'config_json={"framework": "puffer", "batch_size": 64}',
        "priority=10",
        "reddb_tracking=True",  # str(True): the original server decoded it to a bool
        "seed=007",
    )
    assert sub == {"success": True, "task_id": episode, "error": ""}
    # a 5 s task, also without a type: its task_type names the sleep handler
    slow = uid("orig-5s")
    assert original("submit", "--id", slow, "--payload", "task_type=sleep", "seconds=5")["success"]
    t0 = time.monotonic()
    watched = original("watch", "--ids", slow, episode, "--read-deadline", "1", "--max-wait", "60")
    elapsed = time.monotonic() - t0
    assert watched["deadlines_missed_at_s"] == [], watched  # never 1 s without a message
    assert {t: r["status"] for t, r in watched["results"].items()} == {
        slow: "completed",
        episode: "completed",
    }
    assert 4.0 < elapsed < 30.0
    running = [m for m in watched["messages"] if m["task_id"] == slow and m["status"] == "running"]
    assert len(running) >= 4, watched["messages"]  # its state re-sent while it ran
    assert watched["max_gap_s"] < 1.0
    assert json.loads(watched["results"][slow]["result"]["slept"]) == 5

    st = original("status", "--id", episode)
    assert st["status"] == "completed" and st["error"] == ""
    # routed to the class's default handler (echo: the payload back, without the type), and
    # decoded as the original server did: "True" -> true, "007" -> 7, config_json an object
    assert st["result"] == {
        "task_type": "rl_episode",
        "session_id": "coordinated_session_1",
        "episode_id": episode,
        "timestamp": "1700000000.25",
        "config_json": '{"framework":"puffer","batch_size":64}',
        "priority": "10",
        "reddb_tracking": "true",
        "seed": "7",
    }
    first = original("stream-results", "--ids", episode, "--include-completed", "--limit", "1")
    assert [(m["task_id"], m["status"]) for m in first] == [(episode, "completed")]

    names = ["tasks_pending", "tasks_running", "tasks_completed", "tasks_tracked_total"]
    metrics = original("metrics", "--names", *names)["metrics"]
    assert set(metrics) == set(names), metrics
    assert metrics["tasks_tracked_total"] >= metrics["tasks_completed"] >= 0
    assert min(metrics.values()) >= 0
    everything = original("metrics")["metrics"]
    assert "env_queue_depth" in everything and set(names) <= set(everything)

    # env-manager
    avail = original("env-resources", "--class", "cpu_short")
    assert avail["available"] is True and avail["capacity"] >= 1
    assert avail["hardware"]["cpu_cores"] >= 1
    executed = original("env-execute", "--id", uid("orig-exec"), "--payload", "x=1", "ok=True")
    assert executed["success"] is True and executed["result"] == {"x": "1", "ok": "true"}
    services = original("env-services")["services"]
    assert {"kv", "burner", "victim", "boxed"} <= set(services)
    assert all(
        set(s["resource_usage"] or {})
        <= {"cpu_percent", "memory_bytes", "network_rx_bytes", "network_tx_bytes"}
        for s in services.values()
    )  # the original layout: field 5 (network_scope) unknown there


@on_session_loop
async def test_untyped_payloads_over_http_are_routed_too(rt: Runtime, orch: Any) -> None:
    tid = uid("http-untyped")
    base = f"http://{addr(rt, 'orchestrator_http_addr')}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        ok = await c.post("/queue/submit", json={"id": tid, "payload": {"x": 1, "flag": "True"}})
        assert ok.status_code == 200, ok.text
        refused = await c.post("/queue/submit", json={"payload": {"command": "id"}})
        assert refused.status_code == 403 and refused.json()["field"] == "payload.command"
        shell = await c.post("/queue/submit", json={"payload": {"command": "a | b"}})
        assert shell.status_code == 400 and shell.json()["field"] == "payload.command"
    st = await _finished(orch, tid)
    # JSON bodies are not string-decoded: "True" stays a string; routed to echo
    assert st.status == "completed" and json.loads(st.result_json) == {"x": 1, "flag": "True"}


async def _finished(orch: Any, tid: str, metadata: Any = ()) -> Any:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        st = await orch.GetTaskStatus(opb.GetTaskStatusRequest(task_id=tid), metadata=metadata)
        if st.status in ("completed", "failed", "cancelled"):
            return st
        await asyncio.sleep(0.1)
    raise AssertionError(f"{tid} did not finish")


# ----------------------------------------------------------------------------- cancelled


@on_session_loop
async def test_a_cancelled_task_is_failed_cancelled_for_original_clients(
    rt: Runtime, orch: Any, original: Any
) -> None:
    tid = uid("orig-cancel")
    assert original("submit", "--id", tid, "--payload", "type=sleep", "seconds=60")["success"]
    token = token_path(rt.config).read_text().strip()
    await orch.CancelTask(
        opb.CancelTaskRequest(task_id=tid), metadata=(("authorization", f"Bearer {token}"),)
    )
    current = await _finished(orch, tid, CURRENT)
    assert current.status == "cancelled"  # a current client: the state as it is
    as_original = await orch.GetTaskStatus(opb.GetTaskStatusRequest(task_id=tid))  # no metadata
    assert as_original.status == "failed" and as_original.error.startswith("cancelled")
    st = await asyncio.to_thread(original, "status", "--id", tid)
    assert st["status"] == "failed" and st["error"].startswith("cancelled")
    # the original client's wait ends on it (it stops on completed or failed only)
    watched = await asyncio.to_thread(original, "watch", "--ids", tid, "--max-wait", "20")
    assert watched["results"][tid]["status"] == "failed"
    assert watched["results"][tid]["error"].startswith("cancelled")
    stream = orch.StreamTaskResults(
        opb.StreamTaskResultsRequest(task_ids=[tid], include_completed=True, changes_only=True),
        metadata=CURRENT,
    )
    first = await asyncio.wait_for(stream.read(), 10)
    stream.cancel()
    assert first.status == "cancelled"


# ----------------------------------------------------------------------------- stream cadence


@on_session_loop
async def test_stream_resends_watched_states_unless_changes_only(orch: Any) -> None:
    tid = uid("cadence")
    req = opb.SubmitTaskRequest(id=tid, payload={"type": "sleep", "seconds": "2.5"})
    await orch.SubmitTask(req)

    async def collect(changes_only: bool) -> list[tuple[float, str]]:
        call = orch.StreamTaskResults(
            opb.StreamTaskResultsRequest(
                task_ids=[tid], include_completed=True, changes_only=changes_only
            ),
            metadata=CURRENT,
        )
        got: list[tuple[float, str]] = []
        t0 = time.monotonic()
        try:
            async for r in call:
                got.append((time.monotonic() - t0, r.status))
                if r.status == "completed":
                    return got
        finally:
            call.cancel()
        return got

    changes, resent = await asyncio.wait_for(asyncio.gather(collect(True), collect(False)), 30)
    # changes only: the current state, then each change (the feed may repeat `running` once,
    # when it started between the snapshot and the subscription); nothing re-sent while it ran
    assert changes[-1][1] == "completed" and len(changes) <= 3, changes
    running = [t for t, s in resent if s == "running"]
    assert resent[-1][1] == "completed", resent
    assert len(running) >= sum(s == "running" for _, s in changes) + 2, resent  # 0.9 s, 1.8 s
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(resent)]
    assert max(gaps) < 1.0, resent  # the default 1 s interval, re-sent a little early


# ----------------------------------------------------------------------------- health


def test_health_stays_healthy_while_an_optional_service_is_down(rt: Runtime) -> None:
    """``victim`` (required = false) wedged: Health answers healthy, with the service's state
    and the degradation in its map, and ``rayinfra status`` (the gateway's runtime_status)
    says degraded."""
    start_services(["victim"])
    reg = registry()
    gateway = ray.get_actor("gateway", namespace=NAMESPACE)
    row = wait_until(
        "victim running",
        lambda: (
            (r := ray.get(reg.status.remote(["victim"]))["victim"])["status"] == "running" and r
        ),
    )
    pid = int(row["container_id"].split("-")[0])
    os.kill(pid, signal.SIGSTOP)  # wedged: probes fail, the health checker restarts it
    try:
        with grpc.insecure_channel(addr(rt, "orchestrator_grpc_addr")) as ch:
            stub = opb_grpc.OrchestratorServiceStub(ch)

            def degraded() -> Any:
                h = stub.Health(opb.HealthRequest(), timeout=10)
                victim = h.services.get("victim")
                if victim and victim != "running":
                    return h
                return None

            h = wait_until("victim down in Health", degraded)
            assert h.healthy, h  # an optional service down: degraded, not unhealthy
            assert (
                h.services["orchestrator"].startswith("degraded: ")
                and "victim" in (h.services["orchestrator"])
            )
            assert h.services["scheduler"] == "healthy"

            def status_degraded() -> Any:
                health = ray.get(gateway.runtime_status.remote([]))["health"]
                return health if health["degraded"] else None

            health = wait_until("status degraded", status_degraded)
            assert health["healthy"] is True and health["summary"].startswith("degraded")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    wait_until(
        "victim back",
        lambda: ray.get(reg.status.remote(["victim"]))["victim"]["status"] == "running",
    )
    ray.get(reg.stop.remote(["victim"], 3))


# ----------------------------------------------------------------------------- resource usage


@pytest.fixture(scope="module")
def busybox(rt: Runtime) -> Iterator[None]:
    images.build_on(rt.config.services.docker_host, "busybox")
    yield


def test_services_report_resource_usage_for_both_drivers(rt: Runtime, busybox: None) -> None:
    """Process services: CPU% and memory of the process tree, network counters of their
    namespace (the host's, scope ``host``); a container without a network of its own
    (``network_mode = "none"``): Docker's CPU and memory, its namespace's counters (0)."""
    before = namespace_traffic(os.getpid())
    assert before is not None and before.scope == "host"
    start_services(["burner", "boxed"])  # burner pulls in kv
    t0 = time.monotonic()
    with grpc.insecure_channel(addr(rt, "env_manager_grpc_addr")) as ch:
        stub = epb_grpc.EnvManagerServiceStub(ch)

        def usage() -> Any:
            res = stub.GetServicesStatus(
                epb.GetServicesStatusRequest(service_names=["kv", "burner", "boxed"]), timeout=10
            )
            if all(s.HasField("resource_usage") for s in res.services.values()):
                return res.services
            return None

        got = wait_until("resource usage of kv, burner and boxed", usage, 30)
        first_seen = time.monotonic() - t0
        burner_busy = wait_until(
            "burner CPU%",
            lambda: (u := usage()) is not None and u["burner"].resource_usage.cpu_percent > 20,
        )
        del burner_busy
    after = namespace_traffic(os.getpid())
    assert after is not None
    assert first_seen < 10  # no long gap of zeros after a start
    kv, boxed = got["kv"].resource_usage, got["boxed"].resource_usage
    assert kv.memory_bytes > 2**20 and kv.network_scope == "host"
    assert before.rx_bytes <= kv.network_rx_bytes <= after.rx_bytes  # the host's counters
    assert before.tx_bytes <= kv.network_tx_bytes <= after.tx_bytes
    assert boxed.memory_bytes > 0 and boxed.network_scope == "namespace"
    assert (boxed.network_rx_bytes, boxed.network_tx_bytes) == (0, 0)  # only loopback there
    ray.get(registry().stop.remote(["burner", "boxed"], 3))
