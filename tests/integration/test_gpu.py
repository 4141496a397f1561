"""Real GPUs: these tests run only where ``/dev/nvidia0`` exists (marker ``gpu``; elsewhere they
are skipped with a reason naming the absent device).

The other test runtimes are pinned to ``num_gpus = 0`` (tests/conftest.py) so that the suite
means the same on a host with GPUs; this module starts a runtime of its own that advertises the
host's GPUs, with the real CLI (``rayinfra start --gpu``), and runs a ``gpu_short`` task on one.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from rayinfra import AgentInfraSync, hardware
from rayinfra.config import RayinfraConfig, dial_addr, load_config
from tests.conftest import RuntimeSpec, make_runtime_spec
from tests.support.runtime_cli import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.gpu]

REPO = Path(__file__).resolve().parents[2]


@dataclass
class GpuRuntime:
    spec: RuntimeSpec
    config: RayinfraConfig
    gpus: int


@pytest.fixture(scope="module")
def gpu_runtime() -> Iterator[GpuRuntime]:
    gpus = len(hardware.detect().gpus)
    assert gpus >= 1, "marker gpu: /dev/nvidia0 exists but no GPU was detected"
    spec = make_runtime_spec("rgpu", ray_lines=(f"num_gpus = {gpus}",))  # not pinned to 0
    env = spec.env()
    env.pop("RAY_ADDRESS", None)  # never join the session runtime's cluster
    started = run_cli(env, "start", "--gpu", "--daemon", timeout=300)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        yield GpuRuntime(spec, load_config(env=env).config, gpus)
    finally:
        stopped = run_cli(env, "stop", timeout=300)
        if stopped.returncode != 0:  # only what this fixture started, by its recorded pid
            run_cli(env, "stop", "--force", timeout=300)
        shutil.rmtree(spec.root, ignore_errors=True)


def test_a_gpu_task_runs_with_a_gpu_of_its_own(gpu_runtime: GpuRuntime) -> None:
    cfg = gpu_runtime.config
    addr = dial_addr(cfg.gateway.orchestrator_grpc_addr)
    with AgentInfraSync(orchestrator_addr=addr, config=cfg) as infra:  # sends the local token
        status = infra.runtime_status()
        assert status["classes"]["gpu_short"]["num_gpus"] == 1.0
        tid = infra.submit_task(
            payload={"type": "python", "function": "os:getenv", "args": ["CUDA_VISIBLE_DEVICES"]},
            task_class="gpu_short",
        )["task_id"]
        done = infra.wait_task(tid, timeout=120)
    assert done["status"] == "completed", done
    visible = done["result_payload"]
    assert isinstance(visible, str) and visible.strip(), done  # Ray gave it a device
