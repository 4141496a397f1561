"""AgentInfra over gRPC (``orchestrator_addr=`` / ``ORCHESTRATOR_GRPC_ADDR``) against real gateways.

The same pinned surface as over actor handles (tests/integration/test_scheduler.py), through the
session runtime's gateway on loopback; plus transport choice, the token sent automatically,
connect failures, and transparent retry while the gateway and the scheduler restart.
"""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray

from rayinfra import AgentInfraSync, InvalidArgument, TaskNotFound, runtime
from rayinfra.config import RayinfraConfig, dial_addr, load_config
from rayinfra.errors import NotTrusted, PermissionDenied, TaskConflict
from rayinfra.raywrap import NAMESPACE
from tests.conftest import free_port, make_runtime_spec
from tests.integration.conftest import Runtime

pytestmark = pytest.mark.integration


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def gateway_addr(rt: Runtime) -> str:
    return dial_addr(rt.config.gateway.orchestrator_grpc_addr)


@pytest.fixture(scope="module")
def infra(rt: Runtime) -> Iterator[AgentInfraSync]:
    client = AgentInfraSync(orchestrator_addr=gateway_addr(rt), config=rt.config).start()
    try:
        yield client
    finally:
        client.stop()


def remote_config(rt: Runtime, tmp_path: Path, **env: str) -> RayinfraConfig:
    """A client's view from another state dir (no runtime recorded there): only the address."""
    return load_config(env={"RAYINFRA_STATE_DIR": str(tmp_path / "client-state"), **env}).config


def test_same_results_as_over_actors(infra: AgentInfraSync) -> None:
    assert infra._infra.transport == "grpc"
    payload = {"type": "echo", "n": 1, "s": "1", "t": "true", "nested": {"a": [1, None, 2.5]}}
    tid = uid("g-echo")
    assert infra.submit_task(task_id=tid, payload=payload, priority=3) == {
        "success": True,
        "task_id": tid,
        "error": "",
    }
    st = infra.wait_task(tid, timeout=30)
    # native types survive the string map: "1" stays a string, 1 an int
    assert st["result_payload"] == {k: v for k, v in payload.items() if k != "type"}
    assert st["result"] == {"n": "1", "s": "1", "t": "true", "nested": '{"a":[1,null,2.5]}'}
    assert st["status"] == "completed" and st["attempts"] == 1 and st["completed_at"] > 0
    again = infra.get_task_status(tid)
    assert {k: again[k] for k in ("task_id", "status", "result", "result_payload", "error")} == {
        k: st[k] for k in ("task_id", "status", "result", "result_payload", "error")
    }


def test_batch_submit_and_wait(infra: AgentInfraSync) -> None:
    batch = uid("g-batch")
    tasks = [
        {"task_id": f"{batch}-{i}", "payload": {"type": "echo", "i": i}, "priority": i % 5}
        for i in range(300)
    ]
    res = infra.submit_tasks(tasks)
    assert [r["task_id"] for r in res] == [t["task_id"] for t in tasks]
    done = infra.wait_tasks([t["task_id"] for t in tasks], timeout=120)
    assert [d["result_payload"]["i"] for d in done] == list(range(300))
    # a repeat of the same batch is idempotent: nothing runs twice
    infra.submit_tasks(tasks)
    assert all(infra.get_task_status(t["task_id"])["attempts"] == 1 for t in tasks[:20])


def test_generated_ids_and_sync_wait(infra: AgentInfraSync) -> None:
    r = infra.submit_task(payload={"type": "noop"})
    assert r["success"] and len(r["task_id"]) == 32
    assert infra.wait_task(r["task_id"], timeout=30)["status"] == "completed"


def test_shell_runs_with_the_local_token_sent_automatically(infra: AgentInfraSync) -> None:
    tid = uid("g-shell")
    infra.submit_task(task_id=tid, payload={"type": "shell", "argv": ["echo", "$HOME;id"]})
    st = infra.wait_task(tid, timeout=30)
    assert st["result_payload"]["stdout"] == "$HOME;id\n"  # argv runs literally


def test_cancel_list_purge(infra: AgentInfraSync) -> None:
    tid = uid("g-cancel")
    infra.submit_task(task_id=tid, payload={"type": "sleep", "seconds": 60})
    assert infra.cancel_task(tid) == {"task_id": tid, "status": "cancelled", "cancelled": True}
    assert infra.wait_task(tid, timeout=30)["status"] == "cancelled"
    assert infra.cancel_task(tid)["cancelled"] is False
    listed = infra.list_tasks(status="cancelled", limit=1000)
    assert tid in {t["task_id"] for t in listed}
    assert all(t["status"] == "cancelled" for t in listed)
    with pytest.raises(InvalidArgument) as e:
        infra.list_tasks(status="sleeping")
    assert e.value.field == "status"
    purged = infra.purge_tasks(older_than_s=10 * 365 * 86400.0)  # nothing is that old
    assert purged and all(v == 0 for v in purged.values())


def test_streams_end_when_named_tasks_finish(infra: AgentInfraSync) -> None:
    since = int(time.time())
    ids = [uid("g-stream") for _ in range(3)]
    infra.submit_tasks([{"task_id": t, "payload": {"type": "sleep", "seconds": 0.2}} for t in ids])
    seen = list(infra.stream_task_results(ids))
    finals = {s["task_id"]: s for s in seen if s["status"] == "completed"}
    assert set(finals) == set(ids)
    assert all(s["status"] in ("pending", "running", "completed") for s in seen)
    events = []
    for ev in infra.stream_events(["task_submitted", "task_completed"], since):
        if ev["resource_id"] in ids:
            events.append(ev)
        if sum(e["event_type"] == "task_completed" for e in events) == 3:
            break
    assert {e["event_type"] for e in events} == {"task_submitted", "task_completed"}
    completed = next(e for e in events if e["event_type"] == "task_completed")
    assert isinstance(completed["data"]["attempts"], int)  # native JSON, not a string map


def test_errors_are_the_same_types(infra: AgentInfraSync) -> None:
    with pytest.raises(InvalidArgument) as e:
        infra.submit_task(task_id=uid("g-bad"), payload={}, task_class="quantum")
    assert e.value.field == "task_class" and "valid:" in e.value.message
    with pytest.raises(InvalidArgument) as e:
        infra.submit_task(task_id=uid("g-bad"), payload={}, timeout_s=0)
    assert e.value.field == "timeout_s"
    with pytest.raises(InvalidArgument) as e:
        infra.submit_tasks([{"task_id": uid("ok"), "payload": {}}, {"payload": [1]}])
    assert e.value.field == "tasks[1].payload"
    with pytest.raises(InvalidArgument) as e:
        infra.submit_task(task_id=5, payload={})  # type: ignore[arg-type]
    assert e.value.field == "task_id"
    assert infra.submit_tasks([]) == []
    tid = uid("g-dup")
    infra.submit_task(task_id=tid, payload={"type": "noop", "v": 1})
    with pytest.raises(TaskConflict) as c:
        infra.submit_task(task_id=tid, payload={"type": "noop", "v": 2})
    assert c.value.field == "task_id"
    with pytest.raises(TaskNotFound):
        infra.get_task_status(uid("never"))
    with pytest.raises(TaskNotFound):
        infra.wait_task(uid("never"), timeout=5)
    with pytest.raises(TimeoutError):
        slow = uid("g-slow")
        infra.submit_task(task_id=slow, payload={"type": "sleep", "seconds": 30})
        infra.wait_task(slow, timeout=0.5)
    infra.cancel_task(slow)


def test_metrics_and_health(infra: AgentInfraSync) -> None:
    m = infra.get_metrics()
    assert m["queue_tasks_submitted_total"] > 0 and "orchestrator_concurrency_limit" in str(m)
    h = infra.health_check()
    assert h["services"]["scheduler"] == "healthy" and h["services"]["gateway"] == "healthy"
    assert set(h) == {"healthy", "version", "services"}


def test_env_address_is_used_when_no_runtime_is_recorded(rt: Runtime, tmp_path: Path) -> None:
    """ORCHESTRATOR_GRPC_ADDR and another user's state dir: gRPC, and without that runtime's
    token code-running tasks are refused while data tasks run."""
    cfg = remote_config(rt, tmp_path, ORCHESTRATOR_GRPC_ADDR=gateway_addr(rt))
    with AgentInfraSync(config=cfg) as infra:
        assert infra._infra.transport == "grpc"
        tid = uid("g-env")
        infra.submit_task(task_id=tid, payload={"type": "echo", "x": 1})
        assert infra.wait_task(tid, timeout=30)["result_payload"] == {"x": 1}
        with pytest.raises(NotTrusted) as e:
            infra.submit_task(
                task_id=uid("g-untrusted"), payload={"type": "shell", "argv": ["true"]}
            )
        assert e.value.field == "payload.type"
        with pytest.raises(PermissionDenied, match="token"):
            infra.cancel_task(tid)
    # with the runtime's token file, the same client may run code
    cfg = remote_config(
        rt,
        tmp_path,
        ORCHESTRATOR_GRPC_ADDR=gateway_addr(rt),
        RAYINFRA_TOKEN_FILE=str(rt.config.gateway_token_path),
    )
    with AgentInfraSync(config=cfg) as infra:
        tid = uid("g-trusted")
        infra.submit_task(task_id=tid, payload={"type": "shell", "argv": ["true"]})
        assert infra.wait_task(tid, timeout=30)["result_payload"]["exit_code"] == 0


def test_unreachable_gateway_fails_fast_and_says_why(rt: Runtime, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    # a service timeout far beyond the connect timeout: waiting for it would be a bug
    slow = {"DSPY_AGENT_SERVICE_TIMEOUT": "3600"}
    cfg = remote_config(rt, tmp_path, DSPY_AGENT_SKIP_START="1", **slow)
    t0 = time.monotonic()
    with pytest.raises(runtime.RuntimeFailure, match="DSPY_AGENT_SKIP_START"):
        AgentInfraSync(orchestrator_addr=dead, config=cfg).start()
    cfg = remote_config(rt, tmp_path, **slow)
    with pytest.raises(runtime.RuntimeFailure, match="none was started"):
        AgentInfraSync(orchestrator_addr=dead, config=cfg).start()
    assert time.monotonic() - t0 < 600  # the connect timeout (5 s) decided, not the 3600 s one
    assert not (tmp_path / "client-state" / "connection.json").exists()


def test_submits_keep_working_while_gateway_and_scheduler_restart(
    rt: Runtime, infra: AgentInfraSync
) -> None:
    """A client keeps submitting through a gateway kill and a scheduler kill: no call fails,
    every acknowledged task completes once."""
    ids: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def submit_forever() -> None:
        while not stop.is_set():
            tid = uid("g-restart")
            try:
                infra.submit_task(task_id=tid, payload={"type": "echo", "t": tid})
                ids.append(tid)
            except BaseException as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)
            time.sleep(0.01)

    worker = threading.Thread(target=submit_forever)
    worker.start()
    try:
        time.sleep(1.0)
        ray.kill(ray.get_actor("gateway", namespace=NAMESPACE), no_restart=False)
        time.sleep(3.0)
        ray.kill(ray.get_actor("scheduler", namespace=NAMESPACE), no_restart=False)
        time.sleep(3.0)
    finally:
        stop.set()
        worker.join(timeout=120)
    assert errors == [] and len(ids) > 50
    done = infra.wait_tasks(ids, timeout=120)
    assert [d["result_payload"] for d in done] == [{"t": t} for t in ids]
    assert max(d["attempts"] for d in done) <= 2  # at-least-once across the scheduler kill
    gateway = ray.get_actor("gateway", namespace=NAMESPACE)
    assert all(v.startswith("serving") for v in ray.get(gateway.serving.remote()).values())


def test_starts_a_local_runtime_when_its_own_address_is_silent() -> None:
    """``AgentInfra(orchestrator_addr=<this config's gateway>)`` with nothing running starts the
    runtime (as the original ran ``dspy-agent start``), talks gRPC, and stops it on exit."""
    spec = make_runtime_spec("grc")
    try:
        cfg = load_config(env=spec.env()).config
        addr = dial_addr(cfg.gateway.orchestrator_grpc_addr)
        with AgentInfraSync(orchestrator_addr=addr, config=cfg) as infra:
            assert infra._infra.transport == "grpc"
            assert runtime.recorded(cfg.state.dir) is not None
            tid = uid("g-own")
            infra.submit_task(task_id=tid, payload={"type": "echo", "own": True})
            assert infra.wait_task(tid, timeout=60)["result_payload"] == {"own": True}
        assert runtime.recorded(cfg.state.dir) is None
    finally:
        shutil.rmtree(spec.root, ignore_errors=True)
