"""The gateway over loopback against the session runtime: gRPC (both services), HTTP, auth."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import pytest
import ray

from rayinfra.actors.gateway import token_path
from rayinfra.api import stubs
from rayinfra.client.grpc_transport import ConnectError
from rayinfra.client.services import ServiceNotFoundError, ServicesClient
from rayinfra.config import dial_addr
from rayinfra.errors import InvalidArgumentError
from rayinfra.raywrap import NAMESPACE
from tests.conftest import free_port
from tests.integration.conftest import SERVICE_PORTS, Runtime

# the channels of the async fixtures live on the session loop (asyncio_default_fixture_loop_scope)
pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="session")]

opb, opb_grpc = stubs.orchestrator()
epb, epb_grpc = stubs.env_manager()


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def gw(rt: Runtime) -> Iterator[Runtime]:
    gateway = ray.get_actor("gateway", namespace=NAMESPACE)
    servers = ray.get(gateway.serving.remote())
    assert all(v.startswith("serving") for v in servers.values()), servers
    yield rt


def addr(rt: Runtime, key: str) -> str:
    return dial_addr(getattr(rt.config.gateway, key))


def token(rt: Runtime) -> str:
    return token_path(rt.config).read_text().strip()


@pytest.fixture
async def orch(gw: Runtime) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(addr(gw, "orchestrator_grpc_addr")) as ch:
        yield opb_grpc.OrchestratorServiceStub(ch)


@pytest.fixture
async def env(gw: Runtime) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(addr(gw, "env_manager_grpc_addr")) as ch:
        yield epb_grpc.EnvManagerServiceStub(ch)


async def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    return e.value.code()


async def wait_done(orch: Any, tid: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await orch.GetTaskStatus(opb.GetTaskStatusRequest(task_id=tid))
        if st.status in ("completed", "failed", "cancelled"):
            return st
        await asyncio.sleep(0.1)
    raise AssertionError(f"{tid} did not finish")


# ----------------------------------------------------------------------------- orchestrator


async def test_submit_decodes_payload_and_honours_every_field(orch: Any) -> None:
    tid = uid("g-echo")
    req = opb.SubmitTaskRequest(
        id=tid,
        payload={
            "type": "echo",
            "n": "3",
            "flag": "true",
            "name": "plain",
            "payload_json": '{"deep": {"a": [1]}}',
        },
        priority=7,
        workflow_id="wf-1",
        timeout_seconds=30,
    )
    setattr(req, "class", "cpu_short")
    res = await orch.SubmitTask(req)
    assert (res.success, res.task_id, res.error) == (True, tid, "")
    st = await wait_done(orch, tid)
    assert st.status == "completed"
    assert dict(st.result) == {"n": "3", "flag": "true", "name": "plain", "deep": '{"a":[1]}'}
    st = ray.get(ray.get_actor("scheduler", namespace=NAMESPACE).get.remote([tid]))[tid]
    assert (st.priority, st.workflow_id, st.timeout_s) == (7, "wf-1", 30.0)


@pytest.mark.parametrize(
    ("fields", "code", "text"),
    [
        ({"class": "nope"}, grpc.StatusCode.INVALID_ARGUMENT, "task_class"),
        ({"timeout_seconds": -1}, grpc.StatusCode.INVALID_ARGUMENT, "timeout_seconds"),
        ({"class": "gpu_slurm"}, grpc.StatusCode.PERMISSION_DENIED, "gpu_slurm"),  # runs code
        (
            {"payload": {"type": "shell", "argv": '["true"]'}},
            grpc.StatusCode.PERMISSION_DENIED,
            "token",
        ),
        ({"payload": {"payload_json": "[1]"}}, grpc.StatusCode.INVALID_ARGUMENT, "payload_json"),
    ],
)
async def test_bad_submits_map_to_codes(
    orch: Any, fields: dict[str, Any], code: grpc.StatusCode, text: str
) -> None:
    req = opb.SubmitTaskRequest(id=uid("g-bad"), payload=fields.get("payload", {"type": "noop"}))
    if "class" in fields:
        setattr(req, "class", fields["class"])
    if "timeout_seconds" in fields:
        req.timeout_seconds = fields["timeout_seconds"]
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await orch.SubmitTask(req)
    assert e.value.code() == code
    assert text in (e.value.details() or "")


async def test_duplicate_id_with_another_payload_is_already_exists(orch: Any) -> None:
    tid = uid("g-dup")
    await orch.SubmitTask(opb.SubmitTaskRequest(id=tid, payload={"type": "noop"}))
    again = await orch.SubmitTask(opb.SubmitTaskRequest(id=tid, payload={"type": "noop"}))
    assert again.success  # idempotent repeat
    code = await code_of(orch.SubmitTask(opb.SubmitTaskRequest(id=tid, payload={"type": "echo"})))
    assert code == grpc.StatusCode.ALREADY_EXISTS


async def test_trusted_caller_runs_shell(gw: Runtime, orch: Any) -> None:
    tid = uid("g-shell")
    req = opb.SubmitTaskRequest(id=tid, payload={"type": "shell", "argv": '["echo", "hi"]'})
    await orch.SubmitTask(req, metadata=(("authorization", f"Bearer {token(gw)}"),))
    st = await wait_done(orch, tid)
    assert st.status == "completed" and st.result["stdout"] == "hi\n"


async def test_status_errors(orch: Any) -> None:
    assert (
        await code_of(orch.GetTaskStatus(opb.GetTaskStatusRequest()))
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        await code_of(orch.GetTaskStatus(opb.GetTaskStatusRequest(task_id="no-such")))
        == grpc.StatusCode.NOT_FOUND
    )


async def test_stream_task_results_sends_each_final_state_once(orch: Any) -> None:
    done_id, live_ids = uid("g-s0"), [uid("g-s1"), uid("g-s2"), uid("g-s3")]
    await orch.SubmitTask(opb.SubmitTaskRequest(id=done_id, payload={"type": "noop"}))
    await wait_done(orch, done_id)
    call = orch.StreamTaskResults(
        opb.StreamTaskResultsRequest(task_ids=[done_id, *live_ids], include_completed=True)
    )
    seen: list[tuple[str, str]] = []

    async def read() -> None:
        async for r in call:
            seen.append((r.task_id, r.status))
            finals = {t for t, s in seen if s == "completed"}
            if finals >= {done_id, *live_ids}:
                return

    reader = asyncio.ensure_future(read())
    await asyncio.sleep(0.3)
    *sleepers, quick = live_ids
    for tid in sleepers:
        await orch.SubmitTask(
            opb.SubmitTaskRequest(id=tid, payload={"type": "sleep", "seconds": "0.2"})
        )
    await orch.SubmitTask(opb.SubmitTaskRequest(id=quick, payload={"type": "noop"}))
    await asyncio.wait_for(reader, 30)
    call.cancel()
    finals = [t for t, s in seen if s == "completed"]
    assert sorted(finals) == sorted([done_id, *live_ids])  # each exactly once
    for tid in live_ids:  # a no-op has no task_started event; its stream shows it running
        assert [s for t, s in seen if t == tid][-2:] == ["running", "completed"], seen


async def test_cancelled_streams_leave_no_watchers(gw: Runtime, orch: Any) -> None:
    gateway = ray.get_actor("gateway", namespace=NAMESPACE)
    # streams cancelled by earlier tests unsubscribe asynchronously: start from a settled gateway
    deadline = time.monotonic() + 10
    before = ray.get(gateway.watchers.remote())
    while any(before["subscribers"].values()) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        before = ray.get(gateway.watchers.remote())
    assert not any(before["subscribers"].values()), before
    calls = [orch.StreamTaskResults(opb.StreamTaskResultsRequest()) for _ in range(25)]
    calls += [orch.StreamEvents(opb.StreamEventsRequest()) for _ in range(25)]
    await asyncio.sleep(1.0)
    during = ray.get(gateway.watchers.remote())
    assert during["subscribers"]["tasks"] == before["subscribers"]["tasks"] + 25
    assert during["subscribers"]["events"] == before["subscribers"]["events"] + 25
    for c in calls:
        c.cancel()
    deadline = time.monotonic() + 10
    after = during
    while time.monotonic() < deadline:
        after = ray.get(gateway.watchers.remote())
        if after["subscribers"] == before["subscribers"] and after["tasks"] <= before["tasks"]:
            break
        await asyncio.sleep(0.2)
    assert after["subscribers"] == before["subscribers"]
    assert after["polling"] == before["polling"]
    assert after["tasks"] <= before["tasks"]


async def test_metrics_filter_and_events_replay(orch: Any) -> None:
    m = await orch.GetMetrics(
        opb.GetMetricsRequest(metric_names=["orchestrator_concurrency_limit"])
    )
    assert m.metrics and all(k.startswith("orchestrator_concurrency_limit") for k in m.metrics)
    assert 'orchestrator_concurrency_limit{class="cpu_short"}' in m.metrics
    everything = await orch.GetMetrics(opb.GetMetricsRequest())
    assert (
        "env_queue_depth" in everything.metrics
        and "env_manager_active_services" in everything.metrics
    )
    since = int(time.time()) - 1
    tid = uid("g-ev")
    await orch.SubmitTask(opb.SubmitTaskRequest(id=tid, payload={"type": "noop"}))
    await wait_done(orch, tid)
    call = orch.StreamEvents(
        opb.StreamEventsRequest(event_types=["task_completed"], since_timestamp=since)
    )
    got = []
    async for ev in call:
        got.append(ev)
        if ev.resource_id == tid:
            break
    call.cancel()
    assert all(e.event_type == "task_completed" for e in got)
    assert got[-1].resource_id == tid and got[-1].timestamp >= since


async def test_health_names_every_control_actor(orch: Any) -> None:
    h = await orch.Health(opb.HealthRequest())
    assert h.healthy and h.version
    assert {"scheduler", "service_registry", "health_checker", "workflows", "gateway"} <= set(
        h.services
    )
    code = await code_of(orch.StartWorkflowRun(opb.StartWorkflowRunRequest(workflow_id="w")))
    assert code == grpc.StatusCode.NOT_FOUND


async def test_grpc_health_and_reflection(gw: Runtime) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    async with grpc.aio.insecure_channel(addr(gw, "orchestrator_grpc_addr")) as ch:
        hs = health_pb2_grpc.HealthStub(ch)
        r = await hs.Check(health_pb2.HealthCheckRequest(service=stubs.ORCHESTRATOR_SERVICE))
        assert r.status == health_pb2.HealthCheckResponse.SERVING
        rs = reflection_pb2_grpc.ServerReflectionStub(ch)
        names: list[str] = []
        async for resp in rs.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            names = [s.name for s in resp.list_services_response.service]
            break
        assert stubs.ORCHESTRATOR_SERVICE in names


# ----------------------------------------------------------------------------- env manager


async def test_services_over_grpc(env: Any) -> None:
    updates = [
        u
        async for u in env.StartServices(
            epb.StartServicesRequest(service_names=["kv"], parallel=True)
        )
    ]
    finals = [u for u in updates if u.progress == 100]
    assert [(u.service_name, u.status) for u in finals] == [("kv", "healthy")]
    st = await env.GetServicesStatus(epb.GetServicesStatusRequest(service_names=["kv"]))
    kv = st.services["kv"]
    assert kv.status == "running" and list(kv.ports) == [SERVICE_PORTS["kv"]] and kv.started_at > 0
    assert list(st.services) == ["kv"]  # the filter is honoured
    bad = await code_of(
        env.GetServicesStatus(epb.GetServicesStatusRequest(service_names=["ghost"]))
    )
    assert bad == grpc.StatusCode.INVALID_ARGUMENT
    bad = await code_of(env.RestartService(epb.RestartServiceRequest(service_name="ghost")))
    assert bad == grpc.StatusCode.INVALID_ARGUMENT
    health = env.StreamHealth(epb.StreamHealthRequest(service_names=["kv"]))
    first = await asyncio.wait_for(health.read(), 5)  # probes every 0.5 s: a live feed
    health.cancel()
    assert first.service_name == "kv" and first.healthy and "PONG" in first.message
    assert first.details["kind"] == "redis"
    logs = [e async for e in env.StreamLogs(epb.StreamLogsRequest(service_name="kv", tail=2))]
    assert len(logs) == 2 and all(
        e.timestamp > 0 and e.stream in ("stdout", "stderr") for e in logs
    )
    assert (
        await code_of(env.StreamLogs(epb.StreamLogsRequest()).read())
        == grpc.StatusCode.INVALID_ARGUMENT
    )
    assert (
        await code_of(env.StreamLogs(epb.StreamLogsRequest(service_name="ghost")).read())
        == grpc.StatusCode.NOT_FOUND
    )


async def test_execute_task_and_resources(env: Any) -> None:
    res = await env.ExecuteTask(
        epb.ExecuteTaskRequest(
            task_id=uid("g-exec"),
            workload_class="cpu_short",
            payload={"type": "echo", "x": "1"},
            timeout_seconds=30,
        )
    )
    assert res.success and dict(res.result) == {"x": "1"} and res.latency_ms > 0
    failed = await env.ExecuteTask(
        epb.ExecuteTaskRequest(workload_class="cpu_short", payload={"type": "nope"})
    )
    assert not failed.success and "nope" in failed.error
    avail = await env.GetResourceAvailability(
        epb.GetResourceAvailabilityRequest(workload_class="cpu_short")
    )
    assert (
        avail.capacity >= 1
        and avail.hardware.cpu_cores >= 1
        and avail.hardware.memory_bytes > 2**28
    )
    code = await code_of(
        env.GetResourceAvailability(epb.GetResourceAvailabilityRequest(workload_class="huge"))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def test_pull_from_an_unreachable_registry_fails_clearly(env: Any) -> None:
    ups = [
        u async for u in env.PullImages(epb.PullImagesRequest(image_names=["127.0.0.1:9/none/x:1"]))
    ]
    assert ups[-1].status == "error" and ups[-1].message  # new field 6 says why


def test_services_client_over_the_gateway(gw: Runtime) -> None:
    """ServicesClient, what `rayinfra services ...` and `rayinfra logs` use: each method against
    the gateway, the fields added for them (required, tail_lines, logged_at, PruneServices) and
    its typed errors."""
    reg = ray.get_actor("service_registry", namespace=NAMESPACE)
    with ServicesClient.from_config(gw.config) as sc:
        finals = [u for u in sc.start(["kv", "victim"]) if u["progress"] == 100]
        assert sorted((u["service_name"], u["status"], u["required"]) for u in finals) == [
            ("kv", "healthy", True),
            ("victim", "healthy", False),
        ]
        before = sc.status(["kv"])["kv"]
        assert before["status"] == "running" and before["ports"] == [SERVICE_PORTS["kv"]]
        assert sc.restart("kv", timeout_s=2.5) == (True, "Service kv restarted successfully")
        assert sc.status(["kv"])["kv"]["container_id"] != before["container_id"]
        lines = list(sc.logs("kv", tail=2))
        assert len(lines) == 2 and lines[0]["service_name"] == "kv"
        assert all(ln["timestamp"] % 1 != 0 for ln in lines)  # logged_at keeps the fraction
        assert list(sc.logs("kv", tail=0)) == []  # tail_lines: 0 means none, not all
        follow = sc.logs("kv", follow=True, tail=1)
        assert next(follow)["message"]
        follow.close()  # cancels the stream: the gateway closes the registry's log stream
        deadline = time.monotonic() + 10
        while ray.get(reg.log_streams.remote()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ray.get(reg.log_streams.remote()) == 0
        sched = list(sc.logs("scheduler", tail=3))  # a control actor's log, read by the gateway
        assert 1 <= len(sched) <= 3
        assert all(ln["service_name"] == "scheduler" and ln["timestamp"] == 0 for ln in sched)
        assert sc.stop(["victim"], timeout_s=3) == {"victim": "stopped"}
        assert sc.prune() == {}  # nothing orphaned here (tests/e2e/test_cli_services.py prunes)
        pulled = list(sc.pull(["127.0.0.1:9/none/x:1"]))
        assert pulled[-1]["status"] == "error" and pulled[-1]["message"]

        with pytest.raises(InvalidArgumentError, match="unknown service 'ghost'") as bad:
            list(sc.logs("ghost"))  # NOT_FOUND on the wire, a bad name for the client
        assert bad.value.field == "service_name" and "known:" in bad.value.message
        with pytest.raises(InvalidArgumentError, match="runtime actors: scheduler"):
            list(sc.logs("executor-nope-9"))
        with pytest.raises(ServiceNotFoundError, match=r"^service victim has no instance"):
            list(sc.logs("victim"))  # stopped: no instance to read
        with pytest.raises(InvalidArgumentError, match="ghost"):
            list(sc.start(["ghost"]))
        with pytest.raises(InvalidArgumentError, match="tail_lines"):
            list(sc.logs("kv", tail=-1))
    with pytest.raises(ConnectError, match="no gateway answered"):
        ServicesClient(f"127.0.0.1:{free_port()}", connect_timeout_s=0.3)


# ----------------------------------------------------------------------------- HTTP


def test_http_routes(gw: Runtime) -> None:
    base = f"http://{addr(gw, 'orchestrator_http_addr')}"
    with httpx.Client(base_url=base, timeout=30) as c:
        assert c.get("/health").json()["status"] == "ok"
        metrics = c.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "env_queue_depth" in metrics.text
        ok = c.post("/queue/submit", json={"id": uid("h"), "payload": {"type": "noop"}})
        assert ok.status_code == 200 and ok.json()["ok"] is True
        gen = c.post("/queue/submit", json={})
        assert gen.status_code == 200 and gen.json()["id"]
        bad = c.post(
            "/queue/submit", content=b"{nope", headers={"content-type": "application/json"}
        )
        assert bad.status_code == 400 and bad.json()["field"] == "body"
        cls = c.post("/queue/submit", json={"class": "nope"})
        assert cls.status_code == 400 and cls.json()["field"] == "task_class"
        slurm = c.post("/queue/submit", json={"class": "gpu_slurm"})  # a job runs commands
        assert slurm.status_code == 403 and "gpu_slurm" in slurm.json()["error"]
        shell = c.post("/queue/submit", json={"payload": {"type": "shell", "argv": ["true"]}})
        assert shell.status_code == 403
        q = c.get("/queue/status").json()
        assert {"pending", "done", "submitted", "processed", "completed"} <= set(q)
        assert c.get("/slurm/status/x").status_code == 404
        assert c.get("/workflows").status_code == 200
        assert c.get("/openapi.json").json()["paths"]["/queue/submit"]
    em = f"http://{addr(gw, 'env_manager_http_addr')}"
    with httpx.Client(base_url=em, timeout=30) as c:
        h = c.get("/health").json()
        assert h["status"] == "healthy" and h["service"] == "env-manager"
        assert "env_manager_active_services" in c.get("/metrics").text


async def test_killing_the_scheduler_shows_in_health(orch: Any) -> None:
    sched = ray.get_actor("scheduler", namespace=NAMESPACE)
    ray.kill(sched, no_restart=False)  # Ray restarts it (max_restarts=-1)
    seen_down: dict[str, str] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not seen_down:
        h = await orch.Health(opb.HealthRequest())
        if not h.healthy:
            seen_down = dict(h.services)
        await asyncio.sleep(0.05)
    assert seen_down and seen_down["scheduler"].startswith("unavailable"), seen_down
    while time.monotonic() < deadline:  # and back once Ray restarted it
        h = await orch.Health(opb.HealthRequest())
        if h.healthy:
            break
        await asyncio.sleep(0.2)
    assert h.healthy and h.services["scheduler"] == "healthy"
