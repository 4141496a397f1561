"""rayinfra on a real multi-node Ray cluster on this machine, for the multi-node tests.

A cluster-mode Ray head (:func:`tests.support.cluster.cluster_head`) with no CPUs of its own (the
control actors need none), worker nodes joined with ``rayinfra join`` at loopback addresses of
their own, and rayinfra started on the cluster with ``rayinfra start --address``. Tasks of
:data:`WHERE` report the Ray node they ran on. :func:`rayinfra_on` starts rayinfra and stops it
and every node joined through it, whatever the test did.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from rayinfra.client import AgentInfraSync
from rayinfra.client.grpc_transport import GrpcTransport
from tests.conftest import GATEWAY_ADDR_KEYS, free_port
from tests.support.cluster import ClusterHead, ray_nodes

RAYINFRA = [sys.executable, "-m", "rayinfra.cli.main"]
WHERE = "tests.support.where:node_id"


def root_fixture(prefix: str) -> Any:
    """A fixture (``root = root_fixture("mn-")`` in a test module): a directory under /tmp with
    a short path (Ray's socket paths under it have a ~107 byte limit), removed afterwards."""

    @pytest.fixture
    def _root() -> Iterator[Path]:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        yield path
        shutil.rmtree(path, ignore_errors=True)

    return _root


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([*RAYINFRA, *args], env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"rayinfra {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


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


def run(infra: AgentInfraSync, task_class: str, n: int, seconds: float = 0.0) -> list[str]:
    """``n`` tasks of :data:`WHERE` (each sleeps ``seconds``, then names its node)."""
    payload = {"type": "python", "function": WHERE, "args": [seconds]}
    return [infra.submit_task(payload=payload, task_class=task_class)["task_id"] for _ in range(n)]


def wait(infra: AgentInfraSync, ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    return dict(zip(ids, infra.wait_tasks(ids, timeout=timeout), strict=True))


def connect_client(grpc_addr: str) -> AgentInfraSync:
    """A started gRPC client of the gateway at ``grpc_addr``."""
    return AgentInfraSync(transport=GrpcTransport(grpc_addr, connect_timeout_s=30)).start()


def join(head: ClusterHead, state: Path, ip: str, *args: str) -> None:
    """``rayinfra join`` a worker node at ``ip`` with state dir ``state``."""
    assert head.token_path is not None
    cli(head.env, "join", head.address, "--node-ip-address", ip, "--state-dir", str(state),
        "--token-file", str(head.token_path), *args)  # fmt: skip


@dataclass
class RayinfraCluster:
    """rayinfra running on ``head``'s cluster: ``env`` runs its CLI, ``infra`` is a gRPC
    client of its gateway; :meth:`join` adds worker nodes (state dirs under ``root``)."""

    root: Path
    head: ClusterHead
    env: dict[str, str]
    grpc_addr: str  # the gateway's orchestrator gRPC address
    infra: AgentInfraSync
    joined: list[Path] = field(default_factory=list)

    def client(self) -> AgentInfraSync:
        """Another gRPC client of the gateway, started (stop it)."""
        return connect_client(self.grpc_addr)

    def join(self, name: str, ip: str, *args: str) -> Path:
        """A worker node at ``ip`` (state dir ``root/name``), stopped when the cluster ends."""
        state = self.root / name
        self.joined.append(state)
        join(self.head, state, ip, *args)
        return state

    def leave(self, state: Path) -> None:
        """Stop the worker node of state dir ``state`` (``rayinfra stop --force``): a lost node."""
        cli(self.head.env, "stop", "--force", "--state-dir", str(state))


@contextlib.contextmanager
def rayinfra_on(
    root: Path, head: ClusterHead, *nodes: tuple[str, str, tuple[str, ...]]
) -> Iterator[RayinfraCluster]:
    """Join ``nodes`` (``(name, ip, join args)``), start rayinfra on the cluster and connect a
    client; afterwards stop rayinfra and every node joined (also those joined in the block)."""
    gateway = {k: f"127.0.0.1:{free_port()}" for k in GATEWAY_ADDR_KEYS}
    env = {**head.env, "RAYINFRA_CONFIG": str(config_toml(root, head, gateway))}
    joined: list[Path] = []
    infra: AgentInfraSync | None = None
    try:
        for name, ip, args in nodes:
            joined.append(root / name)
            join(head, root / name, ip, *args)
        cli(env, "start", "--address", head.address, "--daemon")
        infra = connect_client(gateway["orchestrator_grpc_addr"])
        yield RayinfraCluster(root, head, env, gateway["orchestrator_grpc_addr"], infra, joined)
    finally:
        if infra is not None:
            infra.stop()
        subprocess.run([*RAYINFRA, "stop", "--force"], env=env, timeout=180)
        for state in joined:
            subprocess.run(
                [*RAYINFRA, "stop", "--force", "--state-dir", str(state)],
                env=head.env,
                timeout=120,
            )
