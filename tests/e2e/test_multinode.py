"""Label scheduling across real Ray nodes.

A cluster-mode Ray head with no CPUs of its own (the control actors need none), worker nodes
joined with ``rayinfra join`` (one a fake-GPU node labelled H200), and rayinfra started on the
cluster with ``rayinfra start --address``. Tasks report the Ray node they ran on; the scheduler's
status reports where it placed each executor.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rayinfra.client import AgentInfraSync
from rayinfra.client.grpc_transport import GrpcTransport
from rayinfra.head import WORKER_NODE_FILE
from tests.conftest import GATEWAY_ADDR_KEYS, free_port
from tests.support.cluster import ClusterHead, cluster_head, ray_nodes

pytestmark = pytest.mark.e2e

RAYINFRA = [sys.executable, "-m", "rayinfra.cli.main"]
WHERE = "tests.support.where:node_id"
CPU_A, GPU_NODE, CPU_B = "127.0.0.3", "127.0.0.4", "127.0.0.5"


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([*RAYINFRA, *args], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"rayinfra {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def join(head: ClusterHead, state: Path, ip: str, *args: str) -> None:
    assert head.token_path is not None
    cli(head.env, "join", head.address, "--node-ip-address", ip, "--state-dir", str(state),
        "--token-file", str(head.token_path), *args)  # fmt: skip


def node_ids(head: ClusterHead) -> dict[str, str]:
    """Alive nodes: address -> node id."""
    return {str(n["ip"]): str(n["labels"]["ray.io/node-id"]) for n in ray_nodes(head) if n["alive"]}  # type: ignore[index]


def config_toml(root: Path, head: ClusterHead, gateway: dict[str, str]) -> Path:
    path = root / "config.toml"
    path.write_text(
        f"""
[ray]
token_path = "{head.token_path}"
drain_timeout_s = 1
[state]
dir = "{root / "state"}"
[gateway]
allow_untrusted_code = true
{"".join(f'{k} = "{v}"{chr(10)}' for k, v in gateway.items())}
# CPU work stays off GPU nodes
[classes.cpu_short]
label_selector = {{ "rayinfra.io/accelerator-type" = "none" }}
[classes.cpu_long]
label_selector = {{ "rayinfra.io/accelerator-type" = "none" }}
[classes.h100]
num_gpus = 1
accelerator_type = "H100"
"""
    )
    return path


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="mn-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def run(infra: AgentInfraSync, task_class: str, n: int, seconds: float = 0.0) -> list[str]:
    payload = {"type": "python", "function": WHERE, "args": [seconds]}
    return [infra.submit_task(payload=payload, task_class=task_class)["task_id"] for _ in range(n)]


def wait(infra: AgentInfraSync, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    return dict(zip(ids, infra.wait_tasks(ids, timeout=timeout), strict=True))


def test_label_scheduling_and_a_lost_node(root: Path) -> None:
    with cluster_head(root, num_cpus=0) as head:
        join(head, root / "a", CPU_A, "--num-cpus", "2", "--num-gpus", "0")
        join(head, root / "gpu", GPU_NODE, "--num-cpus", "1", "--num-gpus", "1",
             "--labels", "rayinfra.io/accelerator-type=H200")  # fmt: skip
        gateway = {k: f"127.0.0.1:{free_port()}" for k in GATEWAY_ADDR_KEYS}
        env = {**head.env, "RAYINFRA_CONFIG": str(config_toml(root, head, gateway))}
        cli(env, "start", "--address", head.address, "--daemon")
        infra = AgentInfraSync(
            transport=GrpcTransport(gateway["orchestrator_grpc_addr"], connect_timeout_s=30)
        ).start()
        try:
            nodes = node_ids(head)
            # every node carries the hardware labels; status lists the nodes with them
            status = json.loads(cli(env, "status", "--json"))
            listed = {n["address"]: n["labels"] for n in status["ray"]["nodes"]}
            assert listed[GPU_NODE]["rayinfra.io/accelerator-type"] == "H200"
            assert listed[CPU_A]["rayinfra.io/role"] == "worker"

            # GPU work only on the GPU node, CPU work only elsewhere
            gpu_tasks, cpu_tasks = run(infra, "gpu_short", 3), run(infra, "cpu_short", 4)
            done = wait(infra, gpu_tasks + cpu_tasks, timeout=120)
            assert {done[t]["status"] for t in done} == {"completed"}, done
            assert {done[t]["result_payload"] for t in gpu_tasks} == {nodes[GPU_NODE]}
            assert {done[t]["result_payload"] for t in cpu_tasks} == {nodes[CPU_A]}
            live = json.loads(cli(env, "status", "--json"))["classes"]
            assert set(live["gpu_short"]["live"]["executors"].values()) == {nodes[GPU_NODE]}
            assert set(live["cpu_short"]["live"]["executors"].values()) == {nodes[CPU_A]}

            # a class no node can ever satisfy fails fast, naming the label
            (h100,) = run(infra, "h100", 1)
            failed = infra.wait_task(h100, timeout=60)
            assert failed["status"] == "failed"
            assert "rayinfra.io/accelerator-type=H100" in failed["error"], failed
            assert "H200" in failed["error"]  # what the nodes have

            # a node lost with tasks running: they run again on a node that joined meanwhile
            long_tasks = run(infra, "cpu_long", 2, seconds=10)
            deadline = time.monotonic() + 60
            while {infra.get_task_status(t)["status"] for t in long_tasks} != {"running"}:
                assert time.monotonic() < deadline, "cpu_long tasks never ran"
                time.sleep(0.3)
            join(head, root / "b", CPU_B, "--num-cpus", "2", "--num-gpus", "0")
            cli(head.env, "stop", "--force", "--state-dir", str(root / "a"))
            assert not (root / "a" / WORKER_NODE_FILE).exists()
            finished = wait(infra, long_tasks, timeout=180)
            for t in long_tasks:  # 0 acknowledged tasks lost
                assert finished[t]["status"] == "completed", finished[t]
                assert finished[t]["attempts"] == 2
                assert finished[t]["result_payload"] == node_ids(head)[CPU_B]
        finally:
            infra.stop()
            subprocess.run([*RAYINFRA, "stop", "--force"], env=env, timeout=180)
            for name in ("a", "gpu", "b"):
                subprocess.run(
                    [*RAYINFRA, "stop", "--force", "--state-dir", str(root / name)],
                    env=head.env,
                    timeout=120,
                )
