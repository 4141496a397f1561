"""A cluster-mode Ray head on this machine, for tests of nodes joining it.

Ray replaces a node IP of 127.0.0.1 with the machine's address in cluster mode, and in local mode
(``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) ``ray start --address`` refuses to join. Other loopback
addresses are left alone, so the nodes of a test cluster take 127.0.0.2, 127.0.0.3, ...: real
multi-node Ray whose traffic never leaves the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rayinfra.head import (
    READY_MARKER,
    WORKER_PORT_FLAGS,
    ray_executable,
    session_members,
    stop_head,
)
from tests.conftest import free_port, free_port_range

HEAD_IP = "127.0.0.2"


@dataclass(frozen=True)
class ClusterHead:
    address: str  # host:port of the GCS
    pid: int
    token_path: Path | None
    env: dict[str, str]  # what a driver of this cluster needs


@contextlib.contextmanager
def cluster_head(tmp: Path, *, token: bool = True, num_cpus: int = 1) -> Iterator[ClusterHead]:
    """``ray start --head --block`` at :data:`HEAD_IP` with its own ports and temp dir (and an
    auth token unless ``token=False``); stopped by pid, its whole session swept."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="1")
    token_path = None
    if token:
        token_path = tmp / "ray_token"
        token_path.write_text(secrets.token_hex(32))
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path))
    else:
        env["RAY_AUTH_MODE"] = "disabled"
    log_path = tmp / "head.log"
    for attempt in (1, 2):
        ray_tmp = tempfile.mkdtemp(prefix="rh-", dir="/tmp")  # socket paths: at most 107 bytes
        gcs = free_port()
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                _head_argv(gcs, ray_tmp, num_cpus),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            started = _wait_started(proc, log_path, ray_tmp, last_attempt=attempt == 2)
            if started:
                yield ClusterHead(f"{HEAD_IP}:{gcs}", proc.pid, token_path, env)
                return
        finally:
            stop_head(proc.pid, timeout_s=15, force=True)
            proc.wait(timeout=10)
            assert session_members(proc.pid) == []
            shutil.rmtree(ray_tmp, ignore_errors=True)


def _head_argv(gcs: int, ray_tmp: str, num_cpus: int) -> list[str]:
    low, high = free_port_range()
    return [
        ray_executable(),
        "start",
        "--head",
        "--block",
        f"--node-ip-address={HEAD_IP}",
        f"--port={gcs}",
        *(f"--{flag}={free_port()}" for flag in (*WORKER_PORT_FLAGS, "ray-client-server-port")),
        f"--min-worker-port={low}",
        f"--max-worker-port={high}",
        "--include-dashboard=false",
        f"--temp-dir={ray_tmp}",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        "--disable-usage-stats",
    ]


def _wait_started(
    proc: subprocess.Popen[bytes], log_path: Path, ray_tmp: str, *, last_attempt: bool
) -> bool:
    """True once the head is up. A head whose ``ray start`` exits first (its raylet did not
    register within Ray's fixed 30 s: a port taken between :func:`free_port` and the raylet's
    bind, or a machine busy with the previous test's teardown) gets one more try with new ports;
    the second failure fails the test with ``ray start``'s output and the raylet's own log."""
    deadline = time.monotonic() + 90
    while READY_MARKER not in log_path.read_text(errors="replace"):
        if proc.poll() is not None:
            assert not last_attempt, _diagnosis(log_path, ray_tmp)
            return False
        assert time.monotonic() < deadline, _diagnosis(log_path, ray_tmp)
        time.sleep(0.2)
    return True


def _diagnosis(log_path: Path, ray_tmp: str) -> str:
    tails = [log_path.read_text(errors="replace")]
    for log in sorted(Path(ray_tmp).glob("session_latest/logs/raylet.*")):
        tails.append(f"--- {log.name}\n" + log.read_text(errors="replace")[-3000:])
    return "\n".join(tails)


def ray_nodes(head: ClusterHead) -> list[dict[str, object]]:
    """``ray.nodes()`` of the cluster, asked by a driver in a subprocess (this test process may
    already be the driver of another cluster)."""
    code = (
        "import json, ray\n"
        f"ray.init(address={head.address!r}, logging_level='ERROR')\n"
        "print(json.dumps([{'ip': n['NodeManagerAddress'], 'alive': n['Alive'], "
        "'labels': n['Labels'], 'cpus': n['Resources'].get('CPU', 0)} for n in ray.nodes()]))\n"
    )
    out = subprocess.run(
        [str(Path(ray_executable()).with_name("python")), "-c", code],
        env=head.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    nodes: list[dict[str, object]] = json.loads(out.stdout.strip().splitlines()[-1])
    return nodes
