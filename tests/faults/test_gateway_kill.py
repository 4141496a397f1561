"""The gateway actor is killed while clients hold streams open: Ray restarts it, the clients'
streams resume from the last state they saw and end as they would have, and every
acknowledged task completes; ``rayinfra logs --follow`` of a service goes on after the kill
with every line once. A runtime of this module's own (the kill is not for sharing)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
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
from tests.conftest import RuntimeSpec, make_runtime_spec
from tests.support.polling import wait_until

pytestmark = pytest.mark.integration

opb, opb_grpc = stubs.orchestrator()
RAYINFRA = [sys.executable, "-m", "rayinfra.cli.main"]
#: a service printing numbered lines, several within each second (the resumed stream re-reads
#: the last line's second and must skip what it printed already)
COUNTER = (
    "import time\nn = 0\nwhile True:\n    print('line', n)\n    n += 1\n    time.sleep(0.05)\n"
)


@pytest.fixture(scope="module")
def spec() -> Iterator[RuntimeSpec]:
    spec = make_runtime_spec(
        "gwkill",
        '[services]\nprofile = "none"\n[services.definitions.counter]\ndriver = "process"\n'
        f"argv = {json.dumps([sys.executable, '-u', '-c', COUNTER])}\n",
    )
    yield spec
    shutil.rmtree(spec.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cfg(spec: RuntimeSpec) -> Iterator[RayinfraConfig]:
    config = load_config(env=spec.env()).config
    runtime.start(config)
    info = read_connection(config.state.dir)
    assert info is not None
    raywrap.connect(info)
    try:
        yield config
    finally:
        raywrap.disconnect()
        runtime.stop_services(config.state.dir, timeout_s=5)
        runtime.stop(config.state.dir, force=True)


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


def test_logs_follow_goes_on_across_a_gateway_kill(spec: RuntimeSpec, cfg: RayinfraConfig) -> None:
    env = spec.env()
    subprocess.run([*RAYINFRA, "services", "start", "counter"], env=env, check=True,
                   capture_output=True, timeout=120)  # fmt: skip
    follow = subprocess.Popen(
        [*RAYINFRA, "logs", "counter", "--follow", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[int] = []
    reader = threading.Thread(
        target=lambda: lines.extend(
            int(json.loads(out)["message"].split()[1]) for out in follow.stdout or ()
        ),
        daemon=True,
    )
    reader.start()
    try:
        wait_until("the first lines", lambda: len(lines) >= 20, timeout=60)
        kill_gateway()
        killed_at = len(lines)
        assert healthy(cfg)
        # lines the service printed after the kill arrive: the stream was opened again
        wait_until("lines after the kill", lambda: len(lines) >= killed_at + 60, timeout=60)
    finally:
        follow.send_signal(signal.SIGINT)
        _, err = follow.communicate(timeout=30)
        reader.join(timeout=10)
    assert follow.returncode == 0, err
    assert "unavailable" in err, err  # a warning per attempt while the gateway was down
    # every line once, none missing: the counter's numbers are consecutive
    assert lines == list(range(lines[0], lines[0] + len(lines))), lines
