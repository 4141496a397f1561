"""``rayinfra slurm up`` on the real single-node Slurm (TESTING.md): one allocation whose job
starts the Ray head with rayinfra plus a worker Ray node through the same srun path a
multi-node allocation uses (``--workers-per-node 2``: each node its own ports and temp dir).

Cluster mode on one machine: node IP 127.0.0.2 (Ray rewrites 127.0.0.1 in cluster mode); the
gateway listens there on ports the job picked. The CLI runs as a user would run it, in a
subprocess, and the submitting environment keeps the loopback setting pytest's process has:
the job must drop it itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rayinfra.client import AgentInfraSync
from rayinfra.client.grpc_transport import GrpcTransport
from tests.support.polling import wait_until
from tests.support.runtime_cli import RAYINFRA
from tests.support.slurm import require_slurm

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

REPO = Path(__file__).resolve().parents[2]
WHERE = "tests.support.where:node_id"
CONNECT = re.compile(
    r"ray: 127\.0\.0\.2:\d+\n"
    r"gateway: 127\.0\.0\.2:\d+ \(orchestrator\.v1\)\n"
    r"env manager: 127\.0\.0\.2:\d+ \(env_manager\.v1\)\n"
    r"http: http://127\.0\.0\.2:\d+\n"
    r"dashboard: http://127\.0\.0\.1:\d+\n"
    r"export RAYINFRA_GATEWAY=127\.0\.0\.2:\d+\n"
    r"export ORCHESTRATOR_GRPC_ADDR=127\.0\.0\.2:\d+\n"
    r"export ENV_MANAGER_GRPC_ADDR=127\.0\.0\.2:\d+\n"
    r"export RAYINFRA_TOKEN_FILE=\S+/gateway\.token\n$"
)


@pytest.fixture
def root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="su-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def rayinfra(env: dict[str, str], *args: str, check: bool = True) -> str:
    done = subprocess.run(
        [*RAYINFRA, *args], env=env, capture_output=True, text=True, timeout=300, cwd=REPO
    )
    if check:
        assert done.returncode == 0, f"rayinfra {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def exports(connect_text: str) -> dict[str, str]:
    return dict(
        line.removeprefix("export ").split("=", 1)
        for line in connect_text.splitlines()
        if line.startswith("export ")
    )


def job_processes(job_id: str) -> list[str]:
    """Command lines of processes that belong to the job's Ray nodes (their temp dirs)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if f"/ri-{job_id}" in cmd:
                found.append(cmd)
    return found


def slurm_steps(job_id: str) -> dict[str, str]:
    """The job's steps: step id -> name (``ray`` the head, ``bash`` the workers)."""
    out = subprocess.run(
        ["squeue", "-h", "-s", "-j", job_id, "-o", "%i %j"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return dict(line.split(maxsplit=1) for line in out.splitlines() if line.strip())


def test_slurm_up_connect_run_lose_a_node_down(root: Path) -> None:
    require_slurm()
    config = root / "rayinfra.toml"
    config.write_text(
        f"""
[slurm]
shared_dir = "{root / "shared"}"
node_ip = "127.0.0.2"
[gateway]
allow_untrusted_code = true   # `python` tasks from this test (the gateway is on loopback)
[ray]
drain_timeout_s = 1
[classes.cpu_short]
executors = 2     # one per Ray node: each node has one CPU
max_attempts = 2  # a task on a lost node runs again
"""
    )
    # the executors import tests.support.where; the loopback setting stays in the environment
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAYINFRA_STATE_DIR": str(root / "client")}
    # another runtime's token in the submitting shell must not reach the job (sbatch exports it)
    stale = {**env, "RAYINFRA_AUTH_TOKEN": "token-of-another-runtime"}
    up = rayinfra(
        stale, "slurm", "up", "-c", str(config), "--nodes", "1", "--workers-per-node", "2",
        "--cpus-per-node", "2", "--timeout", "240",
    )  # fmt: skip
    job_id = re.search(r"submitted cluster job (\d+)", up)
    assert job_id is not None, up
    job = job_id.group(1)
    job_dir = root / "shared" / job
    infra: AgentInfraSync | None = None
    try:
        connect = rayinfra(env, "slurm", "connect", "-c", str(config))
        assert CONNECT.fullmatch(connect), connect
        assert connect in up  # `up` ends with the same lines
        client_env = {**env, **exports(connect)}
        status = json.loads(rayinfra(env, "slurm", "status", "-c", str(config), "--json"))
        assert [(s["job_id"], s["state"], s["rayinfra"]) for s in status] == [
            (job, "running", "running")
        ]

        # two Ray nodes of this job: the head and the worker the srun path started
        runtime = json.loads(rayinfra(client_env, "status", "--json"))
        nodes = runtime["ray"]["nodes"]
        roles = sorted(n["labels"]["rayinfra.io/role"] for n in nodes)
        assert roles == ["head", "worker"], nodes
        assert {n["labels"]["rayinfra.io/slurm-job"] for n in nodes} == {job}
        by_role = {n["labels"]["rayinfra.io/role"]: n["node_id"] for n in nodes}
        conn = json.loads((job_dir / "connection.json").read_text())
        temp_dirs = {Path(conn["temp_dir"]), Path(f"/tmp/ri-{job}-w1.0")}
        assert all(d.is_dir() for d in temp_dirs), temp_dirs

        # 200 tasks through the gateway (gRPC), as the Python client sends them
        infra = AgentInfraSync(
            transport=GrpcTransport(client_env["RAYINFRA_GATEWAY"], connect_timeout_s=30)
        ).start()
        acks = infra.submit_tasks([{"payload": {"type": "echo", "n": i}} for i in range(200)])
        finals = infra.wait_tasks([a["task_id"] for a in acks], timeout=180)
        assert [f["status"] for f in finals] == ["completed"] * 200
        assert sorted(f["result_payload"]["n"] for f in finals) == list(range(200))

        # the original project's gRPC client, given ORCHESTRATOR_GRPC_ADDR
        original = [sys.executable, "-m", "tests.support.original_client", "--target"]
        target = client_env["ORCHESTRATOR_GRPC_ADDR"]

        def original_client(*args: str) -> dict[str, Any]:
            done = subprocess.run(
                [*original, target, *args], capture_output=True, text=True, timeout=120, cwd=REPO
            )
            assert done.returncode == 0, done.stdout + done.stderr
            reply: dict[str, Any] = json.loads(done.stdout)
            assert reply["rayinfra_imported"] is False
            return dict(reply["result"])

        assert original_client("health")["healthy"] is True
        sub = original_client("submit", "--id", "orig-1", "--payload", "type=echo", "k=v")
        assert sub["success"] is True and sub["task_id"] == "orig-1", sub
        assert infra.wait_task("orig-1", timeout=60)["status"] == "completed"
        assert original_client("status", "--id", "orig-1")["status"] == "completed"
        http = re.search(r"^http: (\S+)$", connect, re.M)
        assert http is not None
        with urllib.request.urlopen(f"{http.group(1)}/health", timeout=10) as resp:
            assert json.load(resp)["status"] == "ok"

        # a node of the job lost mid-run (its srun step SIGKILLed, as a crash would): its tasks
        # run again on the other node (attempt 2), none lost, the runtime unharmed; what the
        # killed step left on this machine goes when the job ends
        placed = json.loads(rayinfra(client_env, "status", "--json"))["classes"]["cpu_short"]
        assert set(placed["live"]["executors"].values()) == set(by_role.values()), placed
        sleepers = [
            infra.submit_task(
                payload={"type": "python", "function": WHERE, "args": [12]},
                task_class="cpu_short",
            )["task_id"]
            for _ in range(6)
        ]
        wait_until(
            "the sleepers to run",
            lambda: {infra.get_task_status(t)["status"] for t in sleepers} == {"running"},  # type: ignore[union-attr]
            60,
            0.3,
        )
        steps = slurm_steps(job)
        worker_step = next(s for s, name in steps.items() if name == "bash")
        subprocess.run(["scancel", "--signal=KILL", worker_step], check=True, timeout=30)
        done = dict(zip(sleepers, infra.wait_tasks(sleepers, timeout=180), strict=True))
        assert {d["status"] for d in done.values()} == {"completed"}, done
        rerun = [d for d in done.values() if d["attempts"] == 2]
        assert rerun, "no task ran on the lost worker node"
        assert {d["result_payload"] for d in rerun} == {by_role["head"]}
        alive = json.loads(rayinfra(client_env, "status", "--json"))["ray"]["nodes"]
        assert [n["node_id"] for n in alive] == [by_role["head"]]
        again = infra.submit_task(payload={"type": "echo", "ok": True})
        assert infra.wait_task(again["task_id"], timeout=60)["status"] == "completed"
    finally:
        if infra is not None:
            infra.stop()
        down = subprocess.run(
            [*RAYINFRA, "slurm", "down", job, "-c", str(config)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert down.returncode == 0, down.stdout + down.stderr
    assert f"cluster job {job} stopped" in down.stdout
    # nothing left: no process of the job, no temp dir, no job dir (tokens, connection file)
    wait_until("the job's processes to exit", lambda: not job_processes(job), 30, 0.5)
    assert not any(Path("/tmp").glob(f"ri-{job}*")), list(Path("/tmp").glob(f"ri-{job}*"))
    assert not job_dir.exists()
    assert json.loads(rayinfra(env, "slurm", "status", "-c", str(config), "--json")) == []


def test_slurm_up_refuses_bad_input_and_dry_run_submits_nothing(root: Path) -> None:
    config = root / "rayinfra.toml"
    config.write_text(f'[slurm]\nshared_dir = "{root / "shared"}"\n')
    env = dict(os.environ)
    bad = subprocess.run(
        [*RAYINFRA, "slurm", "up", "-c", str(config), "--partition", "debug; rm -rf /"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "partition" in bad.stderr, bad.stderr
    dry = rayinfra(env, "slurm", "up", "-c", str(config), "--dry-run", "--nodes", "3")
    assert dry.startswith("#!/bin/bash\n") and "#SBATCH --nodes=3" in dry
    subprocess.run(["bash", "-n"], input=dry, text=True, check=True, timeout=10)
    assert not (root / "shared").exists()  # nothing submitted, nothing recorded
    none = subprocess.run(
        [*RAYINFRA, "slurm", "connect", "-c", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert none.returncode == 2 and "0 recorded" in none.stderr, none.stderr
