"""The `rayinfra` CLI as a user runs it: real subprocesses, each with its own head and ports."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from rayinfra.config import CONTROL_ACTOR_NAMES
from rayinfra.connection import pid_alive
from rayinfra.head import session_members
from tests.conftest import NVIDIA_DEVICE, RuntimeSpec
from tests.support.runtime_cli import RAYINFRA, cli

pytestmark = pytest.mark.e2e


def our_processes(head_pid: int, temp_dir: Path) -> list[str]:
    """Live processes left from a head: its session, or anything naming its temp dir."""
    left = [f"{p} (session)" for p in session_members(head_pid)]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or not pid_alive(int(entry.name)):
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(temp_dir) in cmdline:
            left.append(f"{entry.name}: {cmdline[:120]}")
    return left


def wait_gone(head_pid: int, temp_dir: Path, timeout: float = 15.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := our_processes(head_pid, temp_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_start_status_second_start_stop(runtime_spec: RuntimeSpec) -> None:
    started = cli(runtime_spec, "start", "--daemon")
    assert started.returncode == 0, started.stderr
    assert "launched local head" in started.stdout
    conn = json.loads((runtime_spec.state_dir / "connection.json").read_text())
    head_pid, temp_dir = conn["head_pid"], Path(conn["temp_dir"])
    assert pid_alive(head_pid)
    try:
        st = cli(runtime_spec, "status", "--json")
        assert st.returncode == 0, st.stderr
        status = json.loads(st.stdout)
        assert {"ray", "actors", "classes", "dashboard_url"} <= set(status)
        assert status["ray"]["head_pid"] == head_pid
        assert all(a["state"] == "alive" for a in status["actors"].values())
        assert len(status["actors"]) == len(CONTROL_ACTOR_NAMES)

        again = cli(runtime_spec, "start", "--daemon")
        assert again.returncode == 0, again.stderr
        assert "already running" in again.stdout
        assert (
            json.loads((runtime_spec.state_dir / "connection.json").read_text())["head_pid"]
            == head_pid
        )
    finally:
        stopped = cli(runtime_spec, "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "head stopped" in stopped.stdout
    assert wait_gone(head_pid, temp_dir) == []
    assert not (runtime_spec.state_dir / "connection.json").exists()
    after = cli(runtime_spec, "status", "--json")
    assert after.returncode == 1 and json.loads(after.stdout)["running"] is False
    assert cli(runtime_spec, "stop").returncode == 0  # stopping a stopped runtime is fine
    # right away again: the stopped head's ports in TIME_WAIT must not read as busy
    again = cli(runtime_spec, "start", "--daemon")
    assert again.returncode == 0, again.stderr
    assert cli(runtime_spec, "stop").returncode == 0


def test_start_with_a_busy_port_names_it(runtime_spec: RuntimeSpec) -> None:
    port = runtime_spec.ports["node_manager_port"]
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        res = cli(runtime_spec, "start", "--daemon")
    assert res.returncode == 1
    assert f"port {port} (node_manager_port)" in res.stderr
    assert not (runtime_spec.state_dir / "connection.json").exists()


def test_foreground_start_stops_cleanly_on_sigint(runtime_spec: RuntimeSpec) -> None:
    proc = subprocess.Popen(
        [*RAYINFRA, "start"],
        env=runtime_spec.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    conn_file = runtime_spec.state_dir / "connection.json"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if conn_file.exists() and cli(runtime_spec, "status", "--json").returncode == 0:
                break
            time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
        conn = json.loads(conn_file.read_text())
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped" in out
    assert wait_gone(conn["head_pid"], Path(conn["temp_dir"])) == []
    assert not conn_file.exists()


def test_bad_usage_exits_2(runtime_spec: RuntimeSpec) -> None:
    res = cli(runtime_spec, "start", "--bogus")
    assert res.returncode == 2 and "--bogus" in res.stderr
    res = cli(runtime_spec, "stop", "--timeout", "0")
    assert res.returncode == 2 and "--timeout" in res.stderr
    bad = runtime_spec.root / "bad.toml"
    bad.write_text("[scheduler]\nunschedulable_timeout_s = -1\n")
    res = subprocess.run(
        [*RAYINFRA, "status", "--config", str(bad)], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2
    assert "scheduler.unschedulable_timeout_s" in res.stderr and str(bad) in res.stderr


def test_gpu_flag_without_a_gpu_exits_1_with_the_probe_report(runtime_spec: RuntimeSpec) -> None:
    if NVIDIA_DEVICE.exists():  # detection is real here: tests/integration/test_gpu.py runs
        pytest.skip(f"{NVIDIA_DEVICE} exists: the no-GPU path cannot be observed on this host")
    res = cli(runtime_spec, "start", "--gpu", "--daemon")
    assert res.returncode == 1
    assert "no GPU" in res.stderr and "nvidia-smi" in res.stderr
    assert not (runtime_spec.state_dir / "connection.json").exists()


def test_hardware_and_config_commands(runtime_spec: RuntimeSpec, tmp_path: Path) -> None:
    hw = cli(runtime_spec, "hardware", "--json")
    assert hw.returncode == 0, hw.stderr
    data = json.loads(hw.stdout)
    assert data["cpu_count"] >= 1 and data["memory_bytes"] > 0
    assert any(
        a.startswith("--labels=") and "rayinfra.io/role=head" in a for a in data["ray_start_args"]
    )

    target = tmp_path / "c.toml"
    assert cli(runtime_spec, "config", "init", "--path", str(target)).returncode == 0
    assert "[scheduler]" in target.read_text()
    again = cli(runtime_spec, "config", "init", "--path", str(target))
    assert again.returncode == 1 and "--force" in again.stderr
    assert cli(runtime_spec, "config", "init", "--path", str(target), "--force").returncode == 0

    env = {**runtime_spec.env(), "ENV_MANAGER_HEALTH_TIMEOUT": "12", "ENV_RUNNER_URL": "http://x",
           "RAYINFRA_AUTH_TOKEN": "s3cr3t-value"}  # fmt: skip
    shown = subprocess.run(
        [*RAYINFRA, "config", "show", "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert shown.returncode == 0, shown.stderr
    values = json.loads(shown.stdout)
    assert values["values"]["services.health_timeout_s"] == {
        "value": 12.0,
        "source": "env:ENV_MANAGER_HEALTH_TIMEOUT",
    }
    assert values["values"]["ray.gcs_port"]["source"] == f"file:{runtime_spec.config_path}"
    assert values["values"]["gateway.auth"] == {"value": "auto", "source": "default"}
    assert values["values"]["gateway.orchestrator_grpc_addr"]["source"] == (
        f"file:{runtime_spec.config_path}"  # test runtimes serve on ports of their own
    )
    assert "ENV_RUNNER_URL" in values["ignored_env"]
    assert values["values"]["gateway.auth_token"]["value"] == "<redacted>"  # never printed
    assert "s3cr3t-value" not in shown.stdout
    assert os.environ.get("ENV_RUNNER_URL") is None  # the test did not leak its env


def test_submit_and_task_commands(runtime_spec: RuntimeSpec) -> None:
    assert cli(runtime_spec, "start", "--daemon").returncode == 0
    try:
        res = cli(
            runtime_spec, "submit", "--id", "cli-echo", "--wait", '{"type": "echo", "msg": "hi"}'
        )
        assert res.returncode == 0, res.stderr
        st = json.loads(res.stdout)
        assert st["status"] == "completed" and st["result_payload"] == {"msg": "hi"}

        proc = subprocess.run(
            [*RAYINFRA, "submit", "--class", "cpu_long", "--priority", "3", "--timeout", "5", "-"],
            input='{"type": "shell", "argv": ["sh", "-c", "exit 4"]}',
            env=runtime_spec.env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        tid = proc.stdout.strip()
        failed = cli(
            runtime_spec,
            "submit",
            "--id",
            "cli-fail",
            "--wait",
            '{"type": "shell", "argv": ["false"]}',
        )
        assert failed.returncode == 1 and json.loads(failed.stdout)["status"] == "failed"

        status = cli(runtime_spec, "task", "status", tid)
        assert status.returncode == 0 and json.loads(status.stdout)["task_id"] == tid
        listed = cli(runtime_spec, "task", "list", "--json", "--status", "completed")
        assert listed.returncode == 0
        assert "cli-echo" in [t["task_id"] for t in json.loads(listed.stdout)]
        # a page at a time: the cursor of the next page on stderr, --after takes it
        first = cli(runtime_spec, "task", "list", "--json", "--limit", "1")
        assert first.returncode == 0 and len(json.loads(first.stdout)) == 1
        cursor = first.stderr.strip().rpartition("next: ")[2]
        assert cursor, first.stderr
        second = cli(runtime_spec, "task", "list", "--json", "--limit", "1", "--after", cursor)
        assert second.returncode == 0
        assert json.loads(second.stdout)[0]["task_id"] != json.loads(first.stdout)[0]["task_id"]
        bad_after = cli(runtime_spec, "task", "list", "--after", "nope")
        assert bad_after.returncode == 2 and "after" in bad_after.stderr
        assert cli(runtime_spec, "task", "status", "nope").returncode == 1
        assert cli(runtime_spec, "task", "cancel", "cli-echo").returncode == 0
        purge = cli(runtime_spec, "task", "purge", "--older-than", "0")
        assert purge.returncode == 0 and json.loads(purge.stdout)["tasks"] >= 2

        bad_class = cli(runtime_spec, "submit", "--class", "tpu", '{"type": "noop"}')
        assert (
            bad_class.returncode == 2
            and "task_class" in bad_class.stderr
            and "cpu_short" in bad_class.stderr
        )
        bad_json = cli(runtime_spec, "submit", "{nope")
        assert bad_json.returncode == 2 and "PAYLOAD" in bad_json.stderr
        bad_timeout = cli(runtime_spec, "submit", "--timeout", "0", '{"type": "noop"}')
        assert bad_timeout.returncode == 2 and "timeout_s" in bad_timeout.stderr
        bad_status = cli(runtime_spec, "task", "list", "--status", "weird")
        assert bad_status.returncode == 2 and "pending" in bad_status.stderr
    finally:
        assert cli(runtime_spec, "stop").returncode == 0


def test_task_commands_when_not_running(runtime_spec: RuntimeSpec) -> None:
    res = cli(runtime_spec, "submit", '{"type": "noop"}')
    assert res.returncode == 1 and "not running" in res.stderr
    assert not (runtime_spec.state_dir / "connection.json").exists()  # no runtime was started
