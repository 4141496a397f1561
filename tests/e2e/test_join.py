"""`rayinfra join`: a worker node on this machine joins a real multi-node Ray cluster."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rayinfra.connection import pid_alive
from rayinfra.head import WORKER_NODE_FILE, session_members
from tests.conftest import GATEWAY_ADDR_KEYS, free_port
from tests.support.cluster import ClusterHead, cluster_head, ray_nodes
from tests.support.polling import wait_until

pytestmark = pytest.mark.e2e

RAYINFRA = [sys.executable, "-m", "rayinfra.cli.main"]
WORKER_IP = "127.0.0.3"


def join(head: ClusterHead, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``rayinfra join HEAD`` (a positional in ``args`` replaces the head's address)."""
    target = [] if args and not args[0].startswith("-") else [head.address]
    argv = [*RAYINFRA, "join", *target, *args, "--state-dir", str(state)]
    return subprocess.run(argv, env=head.env or None, capture_output=True, text=True, timeout=120)


def node(head: ClusterHead, ip: str) -> dict[str, object] | None:
    return next((n for n in ray_nodes(head) if n["ip"] == ip and n["alive"]), None)


def test_join_labels_stop(tmp_path: Path) -> None:
    with cluster_head(tmp_path) as head:
        assert head.token_path is not None
        state = tmp_path / "worker-state"
        joined = join(
            head,
            state,
            "--node-ip-address",
            WORKER_IP,
            "--labels",
            "zone=a,rayinfra.io/pool=w1",
            "--labels",
            "rack=r7",
            "--num-cpus",
            "2",
            "--token-file",
            str(head.token_path),
        )
        assert joined.returncode == 0, joined.stderr
        record = json.loads((state / WORKER_NODE_FILE).read_text())
        worker = node(head, WORKER_IP)
        assert worker is not None
        labels = worker["labels"]
        assert isinstance(labels, dict)
        # the hardware labels a head gets, with role worker, plus the given ones
        assert labels["rayinfra.io/role"] == "worker"
        assert labels["rayinfra.io/accelerator-type"] == "none"
        assert (labels["zone"], labels["rayinfra.io/pool"], labels["rack"]) == ("a", "w1", "r7")
        assert worker["cpus"] == 2.0

        again = join(head, state, "--node-ip-address", "127.0.0.4")
        assert again.returncode == 1
        assert "already runs a worker node" in again.stderr

        stopped = subprocess.run(
            [*RAYINFRA, "stop", "--state-dir", str(state)],
            env=head.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert stopped.returncode == 0, stopped.stderr
        assert f"worker node {WORKER_IP}" in stopped.stdout
        assert session_members(record["pid"]) == []
        assert not Path(record["temp_dir"]).exists()
        assert not (state / WORKER_NODE_FILE).exists()
        wait_until("the worker node to leave", lambda: node(head, WORKER_IP) is None, 30, 0.5)


def test_join_refuses_what_cannot_work(tmp_path: Path) -> None:
    """Each is refused before anything starts (no head needed), naming what to change."""
    nobody = ClusterHead("127.0.0.2:1", 0, None, {})
    state = tmp_path / "w"
    loop = join(nobody, state, "--node-ip-address", "127.0.0.1")
    assert loop.returncode == 1
    assert "127.0.0.2" in loop.stderr  # it says which address to use instead
    bad_label = join(nobody, state, "--node-ip-address", WORKER_IP, "--labels", "ray.io/x=1")
    assert bad_label.returncode == 2
    assert "reserved" in bad_label.stderr
    no_eq = join(nobody, state, "--labels", "zone")
    assert no_eq.returncode == 2
    assert "KEY=VALUE" in no_eq.stderr
    nowhere = join(nobody, state, "--interface", "no-such-if0")
    assert nowhere.returncode == 1
    assert "no-such-if0" in nowhere.stderr
    not_an_address = join(nobody, state, "head-without-port")
    assert not_an_address.returncode == 1
    assert "HOST:PORT" in not_an_address.stderr
    assert not (state / WORKER_NODE_FILE).exists()


def test_join_block_is_the_node_process(tmp_path: Path) -> None:
    """--block execs the node (batch scripts, systemd): its pid is Ray's; SIGTERM stops it."""
    with cluster_head(tmp_path, token=False) as head:
        argv = [*RAYINFRA, "join", head.address, "--block", "--node-ip-address", WORKER_IP]
        argv += ["--state-dir", str(tmp_path / "w")]
        with (tmp_path / "block.log").open("wb") as log:
            proc = subprocess.Popen(
                argv, env=head.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_until("the worker node to join", lambda: node(head, WORKER_IP), 60, 0.5)
            assert "ray" in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) is not None
            wait_until("the worker node to leave", lambda: node(head, WORKER_IP) is None, 30, 0.5)
            wait_until("its session to end", lambda: session_members(proc.pid) == [], 30, 0.5)
        finally:
            if pid_alive(proc.pid):
                proc.kill()


def test_start_address_refuses_loopback_127_0_0_1(tmp_path: Path) -> None:
    """Cluster mode and 127.0.0.1 hang in Ray (it dials the machine's address instead)."""
    done = subprocess.run(
        [*RAYINFRA, "start", "--address", "127.0.0.1:6385", "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "127.0.0.2" in done.stderr


def test_start_address_on_a_cluster_without_auth(tmp_path: Path) -> None:
    """``rayinfra start --address`` on a cluster started without auth (RAY_AUTH_MODE=disabled,
    as hand-written sbatch scripts do); without that and without a token it names what to give."""
    with cluster_head(tmp_path, token=False) as head:
        gateway = {k: f"127.0.0.1:{free_port()}" for k in GATEWAY_ADDR_KEYS}
        config = tmp_path / "config.toml"
        config.write_text("[gateway]\n" + "".join(f'{k} = "{v}"\n' for k, v in gateway.items()))
        state = ["--state-dir", str(tmp_path / "state"), "--config", str(config)]
        no_auth = {k: v for k, v in head.env.items() if k != "RAY_AUTH_MODE"}
        refused = subprocess.run(
            [*RAYINFRA, "start", "--address", head.address, "--daemon", *state],
            env=no_auth, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert refused.returncode == 1, refused.stdout + refused.stderr
        assert "no Ray auth token" in refused.stderr and "RAY_AUTH_MODE=disabled" in refused.stderr
        try:
            started = subprocess.run(
                [*RAYINFRA, "start", "--address", head.address, "--daemon", *state],
                env=head.env, capture_output=True, text=True, timeout=180,
            )  # fmt: skip
            assert started.returncode == 0, started.stdout + started.stderr
            status = subprocess.run(
                [*RAYINFRA, "status", "--json", *state],
                env=head.env, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert status.returncode == 0, status.stderr
            assert json.loads(status.stdout)["ray"]["gcs_address"] == head.address
        finally:
            subprocess.run(
                [*RAYINFRA, "stop", "--force", *state], env=head.env, timeout=120, check=False
            )
