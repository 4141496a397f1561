"""A runtime whose Slurm is missing (``slurm.bin_dir`` names a directory without its commands):
``gpu_slurm`` submits are refused naming what is missing, over gRPC (FAILED_PRECONDITION) and
HTTP (503, as its OpenAPI document says); nothing is queued, and the runtime keeps serving."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest

from rayinfra.api import stubs
from rayinfra.config import dial_addr, load_config
from tests.conftest import RuntimeSpec, make_runtime_spec

pytestmark = pytest.mark.e2e

RAYINFRA = [sys.executable, "-m", "rayinfra.cli.main"]
opb, opb_grpc = stubs.orchestrator()


@pytest.fixture
def no_slurm(tmp_path: Path) -> Iterator[RuntimeSpec]:
    empty = tmp_path / "no-slurm-bin"
    empty.mkdir()
    spec = make_runtime_spec("rns", f'[slurm]\nbin_dir = "{empty}"\n')
    run = [*RAYINFRA, "start", "--daemon"]
    started = subprocess.run(run, env=spec.env(), capture_output=True, text=True, timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield spec
    finally:
        subprocess.run([*RAYINFRA, "stop", "--force"], env=spec.env(), timeout=120, check=False)


def test_gpu_slurm_is_refused_with_nothing_queued(no_slurm: RuntimeSpec) -> None:
    config = load_config(env=no_slurm.env()).config
    token = config.gateway_token_path.read_text().strip()
    auth = {"authorization": f"Bearer {token}"}
    base = f"http://{dial_addr(config.gateway.orchestrator_http_addr)}"
    with httpx.Client(base_url=base, timeout=60, headers=auth) as http:
        r = http.post(
            "/queue/submit",
            json={"id": "ns-http", "class": "gpu_slurm", "payload": {"argv": ["true"]}},
        )
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert "gpu_slurm needs Slurm" in error and "scontrol" in error
        assert "nothing was queued" in error
        assert http.get("/tasks/ns-http").status_code == 404
        documented = http.get("/openapi.json").json()["paths"]["/queue/submit"]["post"]
        assert "503" in documented["responses"]
        ok = http.post("/queue/submit", json={"id": "ns-ok", "payload": {"type": "noop"}})
        assert ok.status_code == 200  # the runtime is unharmed
        assert http.get("/health").json()["status"] == "ok"
    with grpc.insecure_channel(dial_addr(config.gateway.orchestrator_grpc_addr)) as ch:
        orch = opb_grpc.OrchestratorServiceStub(ch)
        req = opb.SubmitTaskRequest(
            id="ns-grpc", payload={"argv": json.dumps(["true"])}, **{"class": "gpu_slurm"}
        )
        with pytest.raises(grpc.RpcError) as e:
            orch.SubmitTask(req, timeout=30, metadata=list(auth.items()))
        assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "not installed" in (e.value.details() or "") or "scontrol" in (
            e.value.details() or ""
        )
        with pytest.raises(grpc.RpcError) as gone:
            orch.GetTaskStatus(opb.GetTaskStatusRequest(task_id="ns-grpc"), timeout=30)
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
