"""AgentInfra over gRPC (``orchestrator_addr=`` / ``ORCHESTRATOR_GRPC_ADDR``) against real gateways:
transport choice, the token sent automatically, connect failures, and transparent retry while
the gateway and the scheduler restart. (The surface both transports share is
tests/integration/test_client.py.)
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

from rayinfra import AgentInfraSync, connection, runtime
from rayinfra.config import RayinfraConfig, dial_addr, load_config
from rayinfra.errors import NotTrustedError, PermissionDeniedError
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


def test_env_address_is_used_when_no_runtime_is_recorded(rt: Runtime, tmp_path: Path) -> None:
    """ORCHESTRATOR_GRPC_ADDR and another user's state dir: gRPC, and without that runtime's
    token code-running tasks are refused while data tasks run."""
    cfg = remote_config(rt, tmp_path, ORCHESTRATOR_GRPC_ADDR=gateway_addr(rt))
    with AgentInfraSync(config=cfg) as infra:
        assert infra._infra.transport.kind == "grpc"
        tid = uid("g-env")
        infra.submit_task(task_id=tid, payload={"type": "echo", "x": 1})
        assert infra.wait_task(tid, timeout=30)["result_payload"] == {"x": 1}
        with pytest.raises(NotTrustedError) as e:
            infra.submit_task(
                task_id=uid("g-untrusted"), payload={"type": "shell", "argv": ["true"]}
            )
        assert e.value.field == "payload.type"
        with pytest.raises(PermissionDeniedError, match="token"):
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
    with pytest.raises(runtime.RuntimeFailureError, match="DSPY_AGENT_SKIP_START"):
        AgentInfraSync(orchestrator_addr=dead, config=cfg).start()
    cfg = remote_config(rt, tmp_path, **slow)
    with pytest.raises(runtime.RuntimeFailureError, match="none was started"):
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
            assert infra._infra.transport.kind == "grpc"
            assert connection.recorded(cfg.state.dir) is not None
            tid = uid("g-own")
            infra.submit_task(task_id=tid, payload={"type": "echo", "own": True})
            assert infra.wait_task(tid, timeout=60)["result_payload"] == {"own": True}
        assert connection.recorded(cfg.state.dir) is None
    finally:
        shutil.rmtree(spec.root, ignore_errors=True)
