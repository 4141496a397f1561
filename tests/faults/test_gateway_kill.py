"""The gateway actor is killed while clients hold streams open: Ray restarts it, the clients'
streams resume from the last state they saw and end as they would have, and every
acknowledged task completes. A runtime of this module's own (the kill is not for sharing)."""

from __future__ import annotations

import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import ray

from rayinfra import AgentInfraSync, raywrap, runtime
from rayinfra.api import stubs
from rayinfra.config import NAMESPACE, RayinfraConfig, dial_addr, load_config
from rayinfra.connection import read_connection
from tests.conftest import make_runtime_spec

pytestmark = pytest.mark.integration

opb, opb_grpc = stubs.orchestrator()


@pytest.fixture(scope="module")
def cfg() -> Iterator[RayinfraConfig]:
    spec = make_runtime_spec("gwkill")
    config = load_config(env=spec.env()).config
    runtime.start(config)
    info = read_connection(config.state.dir)
    assert info is not None
    raywrap.connect(info)
    try:
        yield config
    finally:
        raywrap.disconnect()
        runtime.stop(config.state.dir, force=True)
        shutil.rmtree(spec.root, ignore_errors=True)


def kill_gateway() -> None:
    ray.kill(ray.get_actor("gateway", namespace=NAMESPACE), no_restart=False)


def healthy(cfg: RayinfraConfig, timeout_s: float = 60) -> bool:
    deadline = time.monotonic() + timeout_s
    with grpc.insecure_channel(dial_addr(cfg.gateway.orchestrator_grpc_addr)) as ch:
        stub = opb_grpc.OrchestratorServiceStub(ch)
        while time.monotonic() < deadline:
            try:
                if stub.Health(opb.HealthRequest(), timeout=5).healthy:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    return False


def test_a_task_stream_resumes_across_a_gateway_kill(cfg: RayinfraConfig) -> None:
    run = uuid.uuid4().hex[:6]
    ids = [f"gk-{run}-{i}" for i in range(6)]
    addr = dial_addr(cfg.gateway.orchestrator_grpc_addr)
    with AgentInfraSync(orchestrator_addr=addr, config=cfg).start() as infra:
        for i, t in enumerate(ids):
            infra.submit_task(t, {"type": "sleep", "seconds": 1.0 + 0.3 * i})
        seen: list[dict[str, Any]] = []
        failed: list[BaseException] = []

        def follow() -> None:
            try:
                seen.extend(infra.stream_task_results(ids))
            except BaseException as e:  # noqa: BLE001 - asserted below
                failed.append(e)

        reader = threading.Thread(target=follow)
        reader.start()
        time.sleep(0.5)
        kill_gateway()
        reader.join(timeout=120)
        assert not reader.is_alive() and failed == [], failed
        finals = [s for s in seen if s["status"] in ("completed", "failed", "cancelled")]
        assert sorted(s["task_id"] for s in finals) == sorted(ids)  # each once
        assert {s["status"] for s in finals} == {"completed"}
    assert healthy(cfg)
