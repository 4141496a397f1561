"""`ray up cluster.yaml` for real: the repository's cluster.yaml, launched against this machine.

Two "remote machines", each an sshd in a PID and mount namespace of its own with its own home
and /tmp (tests/support/sshd.py): the head at 127.0.0.2 and a worker at 127.0.0.3. `ray down`'s
`ray stop` sees only what was started on the head. The test YAML is cluster.yaml with only what
a test must change: the addresses, the ssh key and proxy, the cluster name, free ports, and the
install step (rayinfra is already installed in this repo's .venv; `pip install` of the synced copy
into that venv would repoint it, so each node's ~/rayinfra-venv is a link to it instead).

Why 127.0.0.2 and not 127.0.0.1: `rayinfra start --address auto` runs in cluster mode, where Ray
rewrites a node address of 127.0.0.1 to the machine's primary address (and loopback mode, which
prevents that, refuses other nodes); other loopback addresses are left alone. Ray's servers then
listen on all interfaces, as on a real cluster head; rayinfra's gateway stays on 127.0.0.1.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from getpass import getuser
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml  # type: ignore[import-untyped]  # (no types-PyYAML here)

from rayinfra.api import stubs
from rayinfra.head import port_in_use
from tests.conftest import GATEWAY_ADDR_KEYS, free_port, free_port_range
from tests.support.sshd import Sshd, namespaced_sshd

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(660)]

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
RAY = str(Path(sys.executable).with_name("ray"))
HEAD_IP = "127.0.0.2"
WORKER_IP = "127.0.0.3"
CLUSTER_GCS_PORT = 6385  # the port cluster.yaml gives the head's GCS
RAY_UP_TIMEOUT_S = 150.0
RAY_DOWN_TIMEOUT_S = 60.0
HEALTH_TIMEOUT_S = 60.0
GONE_TIMEOUT_S = 30.0
WORKER_JOIN_TIMEOUT_S = 90.0
#: the head's single ports, as `ray start` flags (the test picks each free)
HEAD_PORT_FLAGS = (
    "node-manager-port",
    "object-manager-port",
    "ray-client-server-port",
    "dashboard-port",
    "dashboard-agent-listen-port",
    "dashboard-agent-grpc-port",
    "metrics-export-port",
    "runtime-env-agent-port",
)
GATEWAY_ENV = {  # the documented env vars of the gateway's listen addresses
    "orchestrator_grpc_addr": "ORCHESTRATOR_GRPC_ADDR",
    "orchestrator_http_addr": "ORCHESTRATOR_HTTP_ADDR",
    "env_manager_grpc_addr": "ENV_MANAGER_GRPC_ADDR",
    "env_manager_http_addr": "ENV_MANAGER_METRICS_ADDR",
}

opb, opb_grpc = stubs.orchestrator()


def launch_config(cluster_yaml: dict[str, Any], head: Sshd, name: str, gcs: int) -> dict[str, Any]:
    """cluster.yaml changed only where this machine and test need it (each change asserted to
    apply, so a reworded cluster.yaml fails here rather than testing something else)."""
    cfg = copy.deepcopy(cluster_yaml)
    assert cfg["provider"]["type"] == "local"
    cfg["cluster_name"] = name
    cfg["provider"] = {"type": "local", "head_ip": HEAD_IP, "worker_ips": [WORKER_IP]}
    # the proxy is for this machine reaching the head; Ray drops it for the head's autoscaler,
    # whose ssh reaches the worker through the head's ~/.ssh/config
    cfg["auth"] = {
        "ssh_user": "root",
        "ssh_private_key": str(head.key),
        "ssh_proxy_command": head.proxy_command,
    }
    setup = cfg["setup_commands"]
    installs = [c for c in setup if "pip install" in c]
    assert len(installs) == 1, setup
    # the venv cluster.yaml would create exists (a link to this repo's): its `test -x` skips it
    cfg["setup_commands"] = [
        f"ln -sfn {VENV} ~/rayinfra-venv",
        *(c for c in setup if c not in installs),
    ]
    lo, hi = free_port_range()
    ports = " ".join(f"--{flag}={free_port()}" for flag in HEAD_PORT_FLAGS)
    start = cfg["head_start_ray_commands"]
    assert start[0].count(f"--port={CLUSTER_GCS_PORT}") == 1, start
    start[0] = start[0].replace(
        f"--port={CLUSTER_GCS_PORT}",
        f"--port={gcs} {ports} --min-worker-port={lo} --max-worker-port={hi}",
    )
    assert start[1:] == ["rayinfra start --daemon --address auto"], start
    assert not any("ray stop" in c for c in start + cfg["worker_start_ray_commands"])
    cfg["worker_start_ray_commands"] = [
        c.replace(f":{CLUSTER_GCS_PORT}", f":{gcs}") for c in cfg["worker_start_ray_commands"]
    ]
    return cfg


def home_entries() -> list[str]:
    """What the node's private /root must keep of the real one: the venv's interpreter when it
    lives there (a pyenv Python under /root/.pyenv, say)."""
    keep = set()
    for path in (Path(os.path.realpath(sys.executable)), Path(sys.base_prefix).resolve()):
        if path.is_relative_to("/root"):
            keep.add(path.relative_to("/root").parts[0])
    return sorted(keep)


@dataclass(frozen=True)
class Launcher:
    """The `ray` CLI on this (the launching) machine, for one test cluster: run from the repo's
    top level (cluster.yaml's file_mounts use "."), with a temp dir of its own (TMPDIR: Ray keeps
    the local provider's cluster state, its lock and a config cache there), output appended to
    one log, killed with its process group if it outlasts a timeout."""

    config: Path
    tmp: Path
    log: Path

    def __call__(self, *args: str, timeout: float) -> tuple[int, float]:
        """``(exit code, seconds)`` of ``ray ARGS... CONFIG``; -9 if it had to be killed."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(TMPDIR=str(self.tmp), RAY_USAGE_STATS_ENABLED="0")
        env["RAY_UP_enable_autoscaler_v2"] = "1"  # Ray's default, said out loud (no notice)
        argv = [RAY, *args, str(self.config)]
        t0 = time.monotonic()
        with self.log.open("ab") as out:
            out.write(f"\n=== {' '.join(argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
                code = -9
        return code, time.monotonic() - t0


def wait_health(addr: str) -> Any:
    """The orchestrator Health answer once the gateway serves (it binds in the background)."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    with grpc.insecure_channel(addr) as ch:
        while True:
            try:
                return opb_grpc.OrchestratorServiceStub(ch).Health(opb.HealthRequest(), timeout=5)
            except grpc.RpcError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path}: none)"


def diagnose(root: Path, *nodes: Sshd) -> str:
    """What to look at when a step fails: the launcher's output, then each node's sshd log and
    its newest Ray session's logs."""
    parts = [("ray up / ray down", root / "ray.log")]
    for node in nodes:
        sessions = sorted((node.tmp / "ray").glob("session_2*"), key=lambda p: p.stat().st_mtime)
        names = ("monitor.log", "monitor.err", "raylet.out")
        logs = [sessions[-1] / "logs" / n for n in names] if sessions else []
        worker_log = node.home / ".rayinfra" / "state" / "ray-worker.log"
        parts += [(f"{node.host} {p.name}", p) for p in (node.log, worker_log, *logs[:3])]
        if not sessions:
            parts.append((f"{node.host}: no Ray session", node.tmp / "ray"))
    return "\n".join(f"--- {title} ({path})\n{tail(path)}" for title, path in parts)


@pytest.fixture
def cluster_name() -> Iterator[str]:
    """A unique cluster name; the launcher's ssh control sockets for it (always under /tmp)
    are removed afterwards."""
    name = f"rayinfra-test-{uuid.uuid4().hex[:8]}"
    yield name
    user = hashlib.sha256(getuser().encode()).hexdigest()[:10]
    cluster = hashlib.sha256(name.encode()).hexdigest()[:10]
    shutil.rmtree(f"/tmp/ray_ssh_{user}/{cluster}", ignore_errors=True)


def rayinfra_status(head: Sshd) -> dict[str, Any]:
    """``rayinfra status --json`` asked on the head, as a user would
    (``ray exec cluster.yaml 'rayinfra status --json'``)."""
    answer = head.run("rayinfra status --json")
    assert answer.returncode == 0, answer.stdout + answer.stderr
    status: dict[str, Any] = json.loads(answer.stdout)
    return status


def check_head(head: Sshd, gcs: int, gateway: dict[str, int]) -> None:
    """The head runs Ray at HEAD_IP with the hardware labels, and rayinfra on it in cluster mode
    (Ray token auth), its gateway answering Health on the loopback ports it was given."""
    health = wait_health(f"127.0.0.1:{gateway['orchestrator_grpc_addr']}")
    assert health.healthy, health
    assert {"scheduler", "service_registry", "health_checker", "gateway"} <= set(health.services)
    status = rayinfra_status(head)
    assert status["running"], status
    ray_info = status["ray"]
    assert (ray_info["mode"], ray_info["auth_mode"]) == ("cluster", "token"), ray_info
    assert ray_info["gcs_address"] == f"{HEAD_IP}:{gcs}"
    node = next(n for n in ray_info["nodes"] if n["address"] == HEAD_IP)
    assert node["labels"]["rayinfra.io/role"] == "head"  # `rayinfra hardware`'s labels
    assert node["labels"]["rayinfra.io/accelerator-type"] == "none"
    assert sorted(status["gateway"].values()) == sorted(
        f"serving on 127.0.0.1:{port}" for port in gateway.values()
    )


def check_worker_joins(root: Path, head: Sshd, worker: Sshd) -> None:
    """The head's autoscaler sets the worker up over ssh (the project, the head's Ray token)
    and `rayinfra join`s it: it shows up with its own address and the worker labels."""
    deadline = time.monotonic() + WORKER_JOIN_TIMEOUT_S
    while True:
        nodes = rayinfra_status(head)["ray"]["nodes"]
        joined = [n for n in nodes if n["address"] == WORKER_IP]
        if joined:
            break
        assert time.monotonic() < deadline, f"no worker: {nodes}\n{diagnose(root, head, worker)}"
        time.sleep(1)
    assert joined[0]["labels"]["rayinfra.io/role"] == "worker"
    token = Path(".rayinfra/state/ray_auth_token")
    assert (worker.home / token).read_text() == (head.home / token).read_text()
    # the nodes' login shells carry the token: Ray's own CLI works there
    ray_status = head.run("ray status")
    assert ray_status.returncode == 0, ray_status.stdout + ray_status.stderr


def check_gone(
    node: Sshd, ports: list[int], lingering: tuple[str, ...] = (), timeout: float = GONE_TIMEOUT_S
) -> None:
    """Nothing but sshd (and processes whose command line starts with one of ``lingering``) is
    left on the node, and none of ``ports`` is taken."""

    def left() -> dict[int, str]:
        procs = node.non_sshd_processes()
        return {p: c for p, c in procs.items() if not c.startswith(lingering or ("\0",))}

    deadline = time.monotonic() + timeout
    while (found := left()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not found, f"still running on {node.host} after ray down: {found}"
    busy = [p for p in ports if port_in_use(p, node.host) or port_in_use(p)]
    assert not busy, f"ports still taken after ray down: {busy}"


def test_ray_up_starts_rayinfra_and_ray_down_stops_everything(
    tmp_path: Path, cluster_name: str
) -> None:
    """Twice: the second `ray up` meets what the first left on the nodes (state dirs, token,
    venv links, .bashrc lines, the head's record of its worker)."""
    gateway = {key: free_port() for key in GATEWAY_ADDR_KEYS}
    gcs, head_ssh, worker_ssh = free_port(), free_port(), free_port()
    # the machines' environment: quiet, fast Ray; the gateway on loopback ports of its own; a
    # worker whose head is gone gives up after 5 s rather than a minute
    env = "export RAY_USAGE_STATS_ENABLED=0 RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=1\n"
    env += "export RAY_gcs_rpc_server_reconnect_timeout_s=5\n"
    head_env = env + "".join(f"export {GATEWAY_ENV[k]}=127.0.0.1:{p}\n" for k, p in gateway.items())
    cluster_yaml: dict[str, Any] = yaml.safe_load((REPO / "cluster.yaml").read_text())
    keep = home_entries()
    with (
        namespaced_sshd(
            tmp_path / "head", HEAD_IP, head_ssh, bashrc=head_env, keep=keep,
            peers={WORKER_IP: worker_ssh},
        ) as head,
        namespaced_sshd(
            tmp_path / "worker", WORKER_IP, worker_ssh, bashrc=env, keep=keep, key=head.key
        ) as worker,
    ):  # fmt: skip
        config = tmp_path / "cluster-test.yaml"
        config.write_text(yaml.safe_dump(launch_config(cluster_yaml, head, cluster_name, gcs)))
        (tmp_path / "launcher-tmp").mkdir()
        ray = Launcher(config, tmp_path / "launcher-tmp", tmp_path / "ray.log")
        timings = []
        for _ in range(2):
            code, t_up = ray("up", "-y", "--no-config-cache", "--disable-usage-stats",
                             timeout=RAY_UP_TIMEOUT_S)  # fmt: skip
            assert code == 0, f"ray up exited {code}\n{diagnose(tmp_path, head, worker)}"
            check_head(head, gcs, gateway)
            t0 = time.monotonic()
            check_worker_joins(tmp_path, head, worker)
            t_join = time.monotonic() - t0
            code, t_down = ray("down", "-y", timeout=RAY_DOWN_TIMEOUT_S)
            assert code == 0, f"ray down exited {code}\n{diagnose(tmp_path, head, worker)}"
            check_gone(head, [gcs, *gateway.values()])
            # `ray down` stops Ray on the head only (local provider); the worker's raylet gives
            # up on the lost head (RAY_gcs_rpc_server_reconnect_timeout_s, 5 s here) and its
            # node process ends it all, but for Ray's two agents: they try to report the death
            # to the (gone) head and exit once that times out, a hard-coded 60 s later
            t0 = time.monotonic()
            check_gone(worker, [], lingering=("ray::DashboardAgent", "ray::RuntimeEnvAgent"))
            t_gone = time.monotonic() - t0
            timings.append(
                f"ray up {t_up:.1f}s, worker +{t_join:.1f}s, ray down {t_down:.1f}s, "
                f"worker stopped +{t_gone:.1f}s"
            )
        for node in (head, worker):
            # the whole project was synced, without what rsync_exclude / .gitignore leave out;
            # the login PATH leads to the node's rayinfra venv, put there once
            synced = node.home / "rayinfra"
            assert (synced / "pyproject.toml").is_file() and (synced / "rayinfra").is_dir()
            assert not any((synced / n).exists() for n in (".venv", ".git", "rayinfra.egg-info"))
            which = node.run("command -v rayinfra ray")
            assert which.stdout.split() == [
                f"/root/rayinfra-venv/bin/{c}" for c in ("rayinfra", "ray")
            ]
            assert (node.home / ".bashrc").read_text().count("rayinfra-venv/bin") == 1
        print("; ".join(timings))
